//! Metrics read at each scrape from what the process holds, not counted as reconciles go:
//! `resources{kind}`, the objects of each kind in the watches; `resources_not_ready{kind,reason}`,
//! those whose Ready condition is not True, by its reason (`NotReconciled` when no pass has
//! written one yet); and `leader`, 1 while this process runs the controllers. A standby serves
//! `leader 0` and no resources (it watches nothing until it leads). And the backups':
//! `backup_last_success_timestamp_seconds`, `backup_last_duration_seconds` and
//! `backup_last_bytes` per database (its newest completed backup), and per schedule
//! `scheduled_backup_interval_seconds` and `scheduled_backup_last_success_timestamp_seconds` (the
//! end of its newest completed backup, or its creation while it has none: what the missed-backup
//! alert compares with twice the interval).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::api::Condition;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct KindReason {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BackedUp {
    pub namespace: String,
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Scheduled {
    pub namespace: String,
    pub schedule: String,
    pub database: String,
}

/// The newest completed backup of a database: when it ended (Unix seconds), how long it took,
/// its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct LastBackup {
    pub ended: f64,
    pub seconds: f64,
    pub bytes: i64,
}

/// What the backup metrics show, read at a scrape.
#[derive(Default)]
pub struct BackupFigures {
    /// Per database (namespace, CouchDatabase name).
    pub databases: Vec<(BackedUp, LastBackup)>,
    /// Per schedule: its interval in seconds and the end of its newest completed backup (or
    /// its creation), Unix seconds.
    pub schedules: Vec<(Scheduled, i64, f64)>,
}

/// The backup figures, read at each scrape.
pub type BackupCensus = Box<dyn Fn() -> BackupFigures + Send + Sync>;

/// Each kind with its objects and those not Ready by reason (see [`count`]), read at a scrape.
pub type Census = Box<dyn Fn() -> Vec<(&'static str, (i64, BTreeMap<String, i64>))> + Send + Sync>;

/// The reason given to an object that no pass has written a Ready condition for.
pub const NOT_RECONCILED: &str = "NotReconciled";

/// What the scrape reads: the watches' census once the controllers run, and leadership.
#[derive(Default)]
pub struct State {
    census: OnceLock<Census>,
    backups: OnceLock<BackupCensus>,
    leading: AtomicBool,
}

impl State {
    /// Reads `census` at each scrape from now on.
    pub fn watch(&self, census: Census) {
        let _ = self.census.set(census);
    }

    /// Reads `backups` at each scrape from now on.
    pub fn watch_backups(&self, backups: BackupCensus) {
        let _ = self.backups.set(backups);
    }

    /// Says whether this process runs the controllers.
    pub fn leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }
}

/// How many objects there are, and how many are not Ready by reason, from each object's
/// conditions (`None`: no status yet).
pub fn count<'a>(objects: impl Iterator<Item = Option<&'a [Condition]>>) -> (i64, BTreeMap<String, i64>) {
    let mut total = 0;
    let mut not_ready = BTreeMap::new();
    for conditions in objects {
        total += 1;
        let ready = conditions.and_then(|c| super::status::condition_state(c, crate::api::condition::READY));
        match ready {
            Some((status, _)) if status == "True" => {}
            Some((_, reason)) if !reason.is_empty() => *not_ready.entry(reason).or_default() += 1,
            _ => *not_ready.entry(NOT_RECONCILED.to_string()).or_default() += 1,
        }
    }
    (total, not_ready)
}

/// The collector registered with the process's registry.
pub struct Collector(pub Arc<State>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("state_metrics::Collector").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let leader: Gauge = Gauge::default();
        leader.set(i64::from(self.0.leading.load(Ordering::Relaxed)));
        leader.encode(encoder.encode_descriptor(
            "leader",
            "1 while this process leads and runs the controllers",
            None,
            leader.metric_type(),
        )?)?;
        let Some(census) = self.0.census.get() else { return Ok(()) };
        let kinds = census();
        let total: Family<Kind, Gauge> = Family::default();
        let not_ready: Family<KindReason, Gauge> = Family::default();
        for (kind, (n, reasons)) in kinds {
            total.get_or_create(&Kind { kind: kind.into() }).set(n);
            for (reason, n) in reasons {
                not_ready.get_or_create(&KindReason { kind: kind.into(), reason }).set(n);
            }
        }
        total.encode(encoder.encode_descriptor(
            "resources",
            "Objects watched, by kind",
            None,
            total.metric_type(),
        )?)?;
        not_ready.encode(encoder.encode_descriptor(
            "resources_not_ready",
            "Objects whose Ready condition is not True, by kind and reason",
            None,
            not_ready.metric_type(),
        )?)?;
        if let Some(backups) = self.0.backups.get() {
            encode_backups(&backups(), &mut encoder)?;
        }
        Ok(())
    }
}

fn encode_backups(figures: &BackupFigures, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;
    let ended: Family<BackedUp, Seconds> = Family::default();
    let took: Family<BackedUp, Seconds> = Family::default();
    let bytes: Family<BackedUp, Gauge> = Family::default();
    for (labels, last) in &figures.databases {
        ended.get_or_create(labels).set(last.ended);
        took.get_or_create(labels).set(last.seconds);
        bytes.get_or_create(labels).set(last.bytes);
    }
    let interval: Family<Scheduled, Gauge> = Family::default();
    let success: Family<Scheduled, Seconds> = Family::default();
    for (labels, every, last) in &figures.schedules {
        interval.get_or_create(labels).set(*every);
        success.get_or_create(labels).set(*last);
    }
    let help = [
        ("backup_last_success_timestamp_seconds", "When the newest completed backup of a database ended"),
        ("backup_last_duration_seconds", "How long the newest completed backup of a database took"),
    ];
    for ((name, text), family) in help.into_iter().zip([&ended, &took]) {
        family.encode(encoder.encode_descriptor(name, text, None, family.metric_type())?)?;
    }
    bytes.encode(encoder.encode_descriptor(
        "backup_last_bytes",
        "Bytes written by the newest completed backup of a database",
        None,
        bytes.metric_type(),
    )?)?;
    interval.encode(encoder.encode_descriptor(
        "scheduled_backup_interval_seconds",
        "Seconds between two occurrences of a backup schedule",
        None,
        interval.metric_type(),
    )?)?;
    success.encode(encoder.encode_descriptor(
        "scheduled_backup_last_success_timestamp_seconds",
        "When the newest completed backup of a schedule ended, or when the schedule was created while it has none",
        None,
        success.metric_type(),
    )?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str, reason: &str) -> Vec<Condition> {
        vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            observed_generation: None,
        }]
    }

    #[test]
    fn objects_not_ready_are_counted_by_reason_and_one_without_status_is_not_reconciled() {
        let a = ready("True", "Ready");
        let b = ready("False", "ServerUnavailable");
        let c = ready("False", "ServerUnavailable");
        let d = ready("Unknown", "");
        let objects = [Some(a.as_slice()), Some(b.as_slice()), Some(c.as_slice()), Some(d.as_slice()), None];
        let (total, not_ready) = count(objects.into_iter());
        assert_eq!(total, 5);
        assert_eq!(not_ready.get("ServerUnavailable"), Some(&2));
        assert_eq!(not_ready.get(NOT_RECONCILED), Some(&2));
        assert_eq!(not_ready.len(), 2);
    }
}
