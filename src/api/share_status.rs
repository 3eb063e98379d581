//! What the operator reports on a `CouchShare`: its conditions, replications and on-change
//! counts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;

/// Observed state of a CouchShare.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchShareStatus {
    /// Standard conditions; `Ready` is always present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary state across directions (the least healthy one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Changes pending, summed over directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_pending: Option<i64>,
    /// One entry per replication document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replications: Vec<ReplicationStatus>,
    /// `namespace/name` of the CouchServer whose replicator runs the replications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The scoped replication user, with `credentials: Scoped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_user: Option<String>,
    /// Id of the sharing document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_document_id: Option<String>,
    /// Set once the share has been revoked and cleaned up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// With strategy `OnChange`: the source databases, counted (no entry per database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<OnChangeStatus>,
}

/// An on-change fan-in, aggregated over its source databases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnChangeStatus {
    /// The name prefix (or `selected CouchUsers`) the sources come from.
    pub source: String,
    /// One-shot replications allowed at once.
    pub max_concurrent: u32,
    /// Source databases found.
    pub discovered: i64,
    /// Replicated up to their last change seen.
    pub in_sync: i64,
    /// Changed and queued or replicating, or not replicated yet.
    pub behind: i64,
    /// Whose last replication failed (retried with backoff).
    pub failing: i64,
    /// Replications running now.
    pub running: i64,
    /// Whether `_db_updates` drives it (`false`: the server has no feed, and every source is
    /// replicated once per resync instead).
    pub feed: bool,
    /// When every source discovered at start had been replicated once (or caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_full_sync: Option<String>,
    /// The few sources failing longest, with CouchDB's error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<OnChangeFailure>,
}

/// One failing source of an on-change fan-in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnChangeFailure {
    /// Source database.
    pub database: String,
    /// Consecutive failures.
    pub failures: i64,
    /// CouchDB's error, as it said it.
    pub error: String,
}

/// State of one replication, from CouchDB's scheduler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// Replication document id.
    pub id: String,
    /// Source database.
    pub source: String,
    /// Target database.
    pub target: String,
    /// `running`, `pending`, `crashing`, `error`, `failed` or `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Documents read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_read: Option<i64>,
    /// Documents written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_written: Option<i64>,
    /// Document write failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_write_failures: Option<i64>,
    /// Changes not yet replicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_pending: Option<i64>,
    /// When CouchDB last updated the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Last error reported by CouchDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
