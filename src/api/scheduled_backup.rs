//! `CouchScheduledBackup`: backups of one CouchDatabase on a cron schedule, full or
//! incremental, kept by count and age. Each run is a `CouchBackup` it creates.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::BackupDestination;
use super::common::Condition;

/// Backups of one CouchDatabase on a schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchScheduledBackup",
    namespaced,
    shortname = "csbackup",
    category = "couchshare",
    status = "CouchScheduledBackupStatus",
    doc = "Backups of one CouchDatabase on a cron schedule, full or incremental, with retention.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database"}"#,
    printcolumn = r#"{"name":"Last success","type":"string","jsonPath":".status.lastSuccessfulTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","priority":1,"jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CouchScheduledBackupSpec {
    /// The CouchDatabase to back up, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub database: String,
    /// When to back up: a cron expression of five fields (minute hour day-of-month month
    /// day-of-week, in UTC), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[schemars(length(min = 1, max = 100))]
    pub schedule: String,
    /// `Full` (default): every backup holds the whole database. `Incremental`: a full backup,
    /// then backups of what changed since the one before (deletions included), until
    /// `fullEvery` backups make a new chain.
    #[serde(default)]
    pub mode: BackupMode,
    /// With `Incremental`: one backup in this many is full (the first always is).
    #[serde(default = "default_full_every")]
    #[schemars(range(min = 1, max = 1000))]
    pub full_every: i32,
    /// Where the backups are written.
    pub destination: BackupDestination,
    /// Which completed backups are kept.
    #[serde(default)]
    pub retention: Retention,
    /// Take no new backups while true (retention still applies).
    #[serde(default)]
    pub suspend: bool,
}

fn default_full_every() -> i32 {
    7
}

/// Full or incremental.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupMode {
    /// Every backup is whole.
    #[default]
    Full,
    /// A full backup, then the changes since the one before.
    Incremental,
}

/// Which completed backups of a schedule are kept. The newest completed backup is always kept,
/// and so is every backup a kept incremental needs: a retention never deletes everything, nor
/// half a chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// The newest completed backups kept (at least 1).
    #[schemars(range(min = 1, max = 10000))]
    pub count: i32,
    /// Backups older than this are deleted even within `count`: a number of hours or days,
    /// e.g. `72h`, `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,4}(h|d)$"))]
    pub max_age: Option<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { count: 7, max_age: None }
    }
}

/// Observed state of a CouchScheduledBackup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchScheduledBackupStatus {
    /// Standard conditions; `Ready` is always present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The schedule's last occurrence that started a backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The next occurrence (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// The newest completed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When it completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// Seconds between two occurrences of the schedule (for the missed-backup alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i64>,
    /// The CouchBackups of this schedule, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
}

/// A cron expression the schedule field accepts, as a regular expression (RE2, case
/// insensitive): five fields of numbers in range, names, `*`, ranges, lists and steps, or a
/// nickname. Checked at apply time by a CEL rule; the operator parses it again.
pub fn cron_pattern() -> String {
    fn field(value: &str) -> String {
        let term = format!("([*]|({value})(-({value}))?)(/[1-9][0-9]?)?");
        format!("{term}(,{term})*")
    }
    let fields = [
        "[0-5]?[0-9]",
        "[01]?[0-9]|2[0-3]",
        "0?[1-9]|[12][0-9]|3[01]",
        "0?[1-9]|1[0-2]|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec",
        "[0-7]|sun|mon|tue|wed|thu|fri|sat",
    ]
    .map(field);
    format!("(?i)^(({})|@(yearly|annually|monthly|weekly|daily|hourly))$", fields.join(") +("))
}
