//! Prometheus metrics, served on `/metrics`: reconciles by kind, CouchDB requests by call,
//! replication state per share, reachability and replication budget per server.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::couch::RequestRecord;

use super::state_metrics::{Kind, KindReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    method: String,
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallStatus {
    method: String,
    call: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Replication {
    namespace: String,
    share: String,
    replication: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationState {
    namespace: String,
    share: String,
    replication: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Share {
    namespace: String,
    share: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareDatabases {
    namespace: String,
    share: String,
    state: String,
}

/// Lag buckets: 50 ms to about 30 minutes.
fn lag() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Server {
    namespace: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerSource {
    namespace: String,
    server: String,
    source: String,
}

/// The sources a server's database events can come from (see `db_events`).
const EVENT_SOURCES: [&str; 2] = ["_db_updates", "_all_dbs"];

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// What each scrape reads from the watches and leadership (see `state_metrics`).
    pub state: std::sync::Arc<super::state_metrics::State>,
    reconciles: Family<Kind, Counter>,
    reconcile_errors: Family<KindReason, Counter>,
    reconcile_seconds: Family<Kind, Histogram, fn() -> Histogram>,
    couch_requests: Family<CallStatus, Counter>,
    couch_seconds: Family<Call, Histogram, fn() -> Histogram>,
    replication_state: Family<ReplicationState, Gauge>,
    changes_pending: Family<Replication, Gauge>,
    write_failures: Family<Replication, Gauge>,
    server_reachable: Family<Server, Gauge>,
    budget_total: Family<Server, Gauge>,
    budget_used: Family<Server, Gauge>,
    nodes_missing: Family<Server, Gauge>,
    database_events: Family<ServerSource, Gauge>,
    audit_reads: Family<Server, Counter>,
    audit_drift: Family<Server, Counter>,
    audit_cycle_seconds: Family<Server, Gauge<f64, std::sync::atomic::AtomicU64>>,
    audit_databases: Family<Server, Gauge>,
    on_change_lag: Family<Share, Histogram, fn() -> Histogram>,
    on_change_queue: Family<Share, Gauge>,
    on_change_running: Family<Share, Gauge>,
    on_change_failures: Family<Share, Counter>,
    on_change_docs: Family<Share, Counter>,
    on_change_databases: Family<ShareDatabases, Gauge>,
}

/// The states a replication can report, for clearing the ones it left.
const STATES: [&str; 8] = ["initializing", "running", "pending", "crashing", "error", "failed", "completed", "unknown"];

impl Metrics {
    /// The metrics of a process, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("couchshare");
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            couch_requests: Family::default(),
            couch_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            replication_state: Family::default(),
            changes_pending: Family::default(),
            write_failures: Family::default(),
            server_reachable: Family::default(),
            budget_total: Family::default(),
            budget_used: Family::default(),
            nodes_missing: Family::default(),
            database_events: Family::default(),
            audit_reads: Family::default(),
            audit_drift: Family::default(),
            audit_cycle_seconds: Family::default(),
            audit_databases: Family::default(),
            on_change_lag: Family::new_with_constructor(lag as fn() -> Histogram),
            on_change_queue: Family::default(),
            on_change_running: Family::default(),
            on_change_failures: Family::default(),
            on_change_docs: Family::default(),
            on_change_databases: Family::default(),
            registry: Registry::default(),
            state: Default::default(),
        };
        registry.register_collector(Box::new(super::state_metrics::Collector(m.state.clone())));
        registry.register("reconciles", "Reconciles run, by kind", m.reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by kind and reason", m.reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration, by kind", m.reconcile_seconds.clone());
        registry.register("couchdb_requests", "CouchDB requests, by call and status", m.couch_requests.clone());
        registry.register(
            "couchdb_request_duration_seconds",
            "CouchDB request latency, by call",
            m.couch_seconds.clone(),
        );
        registry.register(
            "replication_state",
            "1 for the current state of each replication",
            m.replication_state.clone(),
        );
        registry.register("replication_changes_pending", "Changes not yet replicated", m.changes_pending.clone());
        registry.register(
            "replication_doc_write_failures",
            "Documents that failed to replicate",
            m.write_failures.clone(),
        );
        registry.register(
            "server_reachable",
            "1 when the CouchServer answered its last reconcile",
            m.server_reachable.clone(),
        );
        registry.register("server_replication_budget", "replicator/max_jobs × nodes", m.budget_total.clone());
        registry.register(
            "server_replication_jobs",
            "Replications couchshare runs on the server",
            m.budget_used.clone(),
        );
        registry.register(
            "server_nodes_missing",
            "Cluster nodes configured but not connected, or connected but not answering",
            m.nodes_missing.clone(),
        );
        registry.register(
            "server_database_events",
            "Where a server's database events come from: 1 for the source in use (_db_updates, or an _all_dbs diff while that feed cannot be read)",
            m.database_events.clone(),
        );
        registry.register("security_audit_reads", "_security reads by the audit", m.audit_reads.clone());
        registry.register(
            "security_audit_repairs",
            "Databases the audit found with _security not as declared, and requeued",
            m.audit_drift.clone(),
        );
        registry.register(
            "security_audit_cycle_seconds",
            "How long the last full audit cycle over a server's databases took",
            m.audit_cycle_seconds.clone(),
        );
        registry.register(
            "security_audit_databases",
            "Databases the last full audit cycle covered",
            m.audit_databases.clone(),
        );
        registry.register(
            "onchange_lag_seconds",
            "On-change fan-in: from a source change seen on _db_updates to its replication finished",
            m.on_change_lag.clone(),
        );
        registry.register("onchange_queue_depth", "On-change fan-in: sources queued", m.on_change_queue.clone());
        registry.register(
            "onchange_replications_running",
            "On-change fan-in: one-shot replications running",
            m.on_change_running.clone(),
        );
        registry.register(
            "onchange_replication_failures",
            "On-change fan-in: one-shot replications that failed",
            m.on_change_failures.clone(),
        );
        registry.register(
            "onchange_documents_written",
            "On-change fan-in: documents written to the target",
            m.on_change_docs.clone(),
        );
        registry.register(
            "onchange_databases",
            "On-change fan-in: source databases by state (in_sync, behind, failing)",
            m.on_change_databases.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one reconcile.
    pub fn reconciled(&self, kind: &str, elapsed: Duration, error: Option<&str>) {
        let k = Kind { kind: kind.into() };
        self.reconciles.get_or_create(&k).inc();
        self.reconcile_seconds.get_or_create(&k).observe(elapsed.as_secs_f64());
        if let Some(reason) = error {
            self.reconcile_errors.get_or_create(&KindReason { kind: kind.into(), reason: reason.into() }).inc();
        }
    }

    /// Counts one CouchDB request.
    pub fn couch_request(&self, record: &RequestRecord<'_>) {
        let status = record.status.map(|s| s.to_string()).unwrap_or_else(|| "none".into());
        self.couch_requests
            .get_or_create(&CallStatus { method: record.method.into(), call: record.call.clone(), status })
            .inc();
        self.couch_seconds
            .get_or_create(&Call { method: record.method.into(), call: record.call.clone() })
            .observe(record.elapsed.as_secs_f64());
    }

    /// Records the state of one replication of a share.
    pub fn replication(
        &self,
        namespace: &str,
        share: &str,
        replication: &str,
        state: &str,
        pending: Option<i64>,
        failures: Option<i64>,
    ) {
        let labels = |s: &str| ReplicationState {
            namespace: namespace.into(),
            share: share.into(),
            replication: replication.into(),
            state: s.into(),
        };
        for s in STATES {
            if s != state {
                self.replication_state.remove(&labels(s));
            }
        }
        self.replication_state.get_or_create(&labels(state)).set(1);
        let r = Replication { namespace: namespace.into(), share: share.into(), replication: replication.into() };
        self.changes_pending.get_or_create(&r).set(pending.unwrap_or(0));
        self.write_failures.get_or_create(&r).set(failures.unwrap_or(0));
    }

    /// Forgets a replication that no longer exists.
    pub fn forget_replication(&self, namespace: &str, share: &str, replication: &str) {
        for s in STATES {
            self.replication_state.remove(&ReplicationState {
                namespace: namespace.into(),
                share: share.into(),
                replication: replication.into(),
                state: s.into(),
            });
        }
        let r = Replication { namespace: namespace.into(), share: share.into(), replication: replication.into() };
        self.changes_pending.remove(&r);
        self.write_failures.remove(&r);
    }

    /// Records a CouchServer's reachability and budget.
    pub fn server(&self, namespace: &str, server: &str, reachable: bool, budget: Option<(i32, i32)>) {
        let s = Server { namespace: namespace.into(), server: server.into() };
        self.server_reachable.get_or_create(&s).set(i64::from(reachable));
        if let Some((total, used)) = budget {
            self.budget_total.get_or_create(&s).set(i64::from(total));
            self.budget_used.get_or_create(&s).set(i64::from(used));
        }
    }

    /// How many of a server's cluster nodes are missing (not connected, or not answering).
    pub fn server_nodes_missing(&self, namespace: &str, server: &str, missing: usize) {
        let s = Server { namespace: namespace.into(), server: server.into() };
        self.nodes_missing.get_or_create(&s).set(i64::try_from(missing).unwrap_or(i64::MAX));
    }

    /// Where a server's database events come from now (one of [`EVENT_SOURCES`]).
    pub fn database_events(&self, namespace: &str, server: &str, source: &str) {
        for s in EVENT_SOURCES {
            let label = ServerSource { namespace: namespace.into(), server: server.into(), source: s.into() };
            self.database_events.get_or_create(&label).set(i64::from(s == source));
        }
    }

    /// One `_security` read by the audit.
    pub fn security_audited(&self, namespace: &str, server: &str) {
        self.audit_reads.get_or_create(&Server { namespace: namespace.into(), server: server.into() }).inc();
    }

    /// The audit found a database's `_security` not as declared.
    pub fn security_drift(&self, namespace: &str, server: &str) {
        self.audit_drift.get_or_create(&Server { namespace: namespace.into(), server: server.into() }).inc();
    }

    /// A full audit cycle: how long it took and how many databases it covered.
    pub fn security_audit_cycle(&self, namespace: &str, server: &str, took: std::time::Duration, databases: usize) {
        let s = Server { namespace: namespace.into(), server: server.into() };
        self.audit_cycle_seconds.get_or_create(&s).set(took.as_secs_f64());
        self.audit_databases.get_or_create(&s).set(i64::try_from(databases).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    /// An on-change fan-in's counts.
    pub fn on_change(&self, namespace: &str, share: &str, counts: &crate::plan::onchange::Counts) {
        let key = Share { namespace: namespace.into(), share: share.into() };
        self.on_change_queue.get_or_create(&key).set(counts.queued as i64);
        self.on_change_running.get_or_create(&key).set(counts.running as i64);
        for (state, n) in [("in_sync", counts.in_sync), ("behind", counts.behind), ("failing", counts.failing)] {
            let key = ShareDatabases { namespace: namespace.into(), share: share.into(), state: state.into() };
            self.on_change_databases.get_or_create(&key).set(n as i64);
        }
    }

    /// An on-change replication that closed `lag`.
    pub fn on_change_lag(&self, namespace: &str, share: &str, lag: Duration) {
        let key = Share { namespace: namespace.into(), share: share.into() };
        self.on_change_lag.get_or_create(&key).observe(lag.as_secs_f64());
    }

    /// An on-change replication that failed.
    pub fn on_change_failed(&self, namespace: &str, share: &str) {
        self.on_change_failures.get_or_create(&Share { namespace: namespace.into(), share: share.into() }).inc();
    }

    /// Documents an on-change replication wrote.
    pub fn on_change_written(&self, namespace: &str, share: &str, docs: u64) {
        self.on_change_docs.get_or_create(&Share { namespace: namespace.into(), share: share.into() }).inc_by(docs);
    }

    /// Forgets a share's on-change series.
    pub fn forget_on_change(&self, namespace: &str, share: &str) {
        let key = Share { namespace: namespace.into(), share: share.into() };
        self.on_change_queue.remove(&key);
        self.on_change_running.remove(&key);
        for state in ["in_sync", "behind", "failing"] {
            let key = ShareDatabases { namespace: namespace.into(), share: share.into(), state: state.into() };
            self.on_change_databases.remove(&key);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
