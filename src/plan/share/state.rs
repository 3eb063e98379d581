//! A share's summary state from CouchDB's per-replication states.

use serde_json::Value;

use crate::couch::{ReplicationState, ReplicationStatus, SchedulerJob, status_from_replicator_doc};

/// How unhealthy a replication state is: lower is worse.
fn state_rank(state: Option<&str>) -> u8 {
    match state {
        Some("failed") => 0,
        Some("error") => 1,
        Some("crashing") => 2,
        Some("pending" | "initializing") => 3,
        Some("running" | "triggered") => 5,
        Some("completed") => 6,
        // None, and states this version does not know.
        _ => 4,
    }
}

/// Whether a replication state is a failing one (failed, error, crashing).
pub fn is_failing(state: &str) -> bool {
    matches!(state, "failed" | "error" | "crashing")
}

/// Summary across directions for status: the least healthy state wins, in this order (worst first):
/// failed, error, crashing, pending (and initializing), (unknown/None, or an unrecognised state), running (and CouchDB 1.x's
/// triggered), completed. Returns the chosen state string ("unknown" for None, or for no states at all).
pub fn summary_state(states: &[Option<&str>]) -> String {
    states
        .iter()
        .copied()
        .min_by_key(|s| state_rank(*s))
        .flatten()
        .map_or_else(|| "unknown".to_string(), str::to_string)
}

/// Whether a set of per-direction states is Ready: every state is "running" (or CouchDB 1.x's "triggered") or,
/// for one-shot (continuous == false), "completed". Empty → false.
pub fn replications_ready(states: &[Option<&str>], continuous: bool) -> bool {
    !states.is_empty()
        && states.iter().all(|s| match s {
            Some("running" | "triggered") => true,
            Some("completed") => !continuous,
            _ => false,
        })
}

/// The name CouchShare status gives a scheduler state.
pub fn state_name(state: &ReplicationState) -> String {
    match state {
        ReplicationState::Initializing => "initializing".into(),
        ReplicationState::Running => "running".into(),
        ReplicationState::Pending => "pending".into(),
        ReplicationState::Crashing => "crashing".into(),
        ReplicationState::Failed => "failed".into(),
        ReplicationState::Completed => "completed".into(),
        ReplicationState::Error => "error".into(),
        ReplicationState::Other(s) => s.clone(),
    }
}

/// The state of one replication: the scheduler's, unless the replicator document itself already
/// records an end (`_replication_state` `completed` or `failed`, written by CouchDB as a new
/// revision) that the scheduler's answer does not show yet — on a cluster, the node asked can
/// lag behind the node that ran the job. The scheduler's counters are kept when it has them.
pub fn replication_state(scheduled: Option<&ReplicationStatus>, doc: Option<&Value>) -> Option<ReplicationStatus> {
    let ended = |s: &ReplicationStatus| matches!(s.state, Some(ReplicationState::Completed | ReplicationState::Failed));
    let recorded = doc.and_then(status_from_replicator_doc).filter(ended);
    match (scheduled, recorded) {
        (Some(s), _) if ended(s) => Some(s.clone()),
        (Some(s), Some(r)) => Some(ReplicationStatus { state: r.state, last_updated: r.last_updated, ..s.clone() }),
        (Some(s), None) => Some(s.clone()),
        (None, r) => r,
    }
}

/// The jobs among `jobs` (`_scheduler/jobs`, every node's) that run a replication document of
/// the share `namespace`/`name`, as `<document> on <node>`.
pub fn jobs_of_share(jobs: &[SchedulerJob], namespace: &str, name: &str) -> Vec<String> {
    jobs.iter()
        .filter_map(|j| j.doc_id.as_deref().map(|id| (id, j.node.as_deref().unwrap_or("?"))))
        .filter(|(id, _)| super::replication_doc_owner(id).is_some_and(|(ns, n)| ns == namespace && n == name))
        .map(|(id, node)| format!("{id} on {node}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::couch::ReplicationInfo;
    use serde_json::json;

    #[test]
    fn only_the_shares_own_jobs_are_its_jobs() {
        let job = |doc: Option<&str>, node: &str| SchedulerJob {
            id: "x".into(),
            database: doc.map(|_| "_replicator".into()),
            doc_id: doc.map(str::to_owned),
            node: Some(node.into()),
        };
        let jobs = [
            job(Some("couchshare_ns_s_fwd"), "node2@127.0.0.1"),
            job(Some("couchshare_ns_s_back"), "node3@127.0.0.1"),
            job(Some("couchshare_ns_s2_fwd"), "node1@127.0.0.1"),
            job(Some("couchshare_other_s_fwd"), "node1@127.0.0.1"),
            job(None, "node1@127.0.0.1"),
        ];
        assert_eq!(
            jobs_of_share(&jobs, "ns", "s"),
            ["couchshare_ns_s_fwd on node2@127.0.0.1", "couchshare_ns_s_back on node3@127.0.0.1"]
        );
        assert!(jobs_of_share(&jobs, "ns", "gone").is_empty());
    }

    #[test]
    fn an_end_the_document_records_wins_over_a_scheduler_that_lags() {
        let scheduled = |state| ReplicationStatus {
            doc_id: "r".into(),
            state: Some(state),
            info: ReplicationInfo { docs_written: 3, ..Default::default() },
            last_updated: None,
            error_count: 0,
        };
        let completed = json!({"_id": "r", "_replication_state": "completed"});
        let triggered = json!({"_id": "r", "_replication_state": "triggered"});
        let running = scheduled(ReplicationState::Running);
        let s = replication_state(Some(&running), Some(&completed)).expect("known");
        assert_eq!(s.state, Some(ReplicationState::Completed));
        assert_eq!(s.info.docs_written, 3, "the scheduler's counters stay");
        let s = replication_state(None, Some(&completed)).expect("known from the document alone");
        assert_eq!(s.state, Some(ReplicationState::Completed));
        // Only an end counts: a document that says less than the scheduler changes nothing.
        let s = replication_state(Some(&running), Some(&triggered)).expect("known");
        assert_eq!(s.state, Some(ReplicationState::Running));
        assert_eq!(replication_state(None, Some(&triggered)), None);
        assert_eq!(replication_state(None, None), None);
        let failed = scheduled(ReplicationState::Failed);
        let s = replication_state(Some(&failed), Some(&completed)).expect("known");
        assert_eq!(s.state, Some(ReplicationState::Failed), "the scheduler's own end stays");
    }

    #[test]
    fn summary_state_picks_the_least_healthy() {
        let cases: Vec<(Vec<Option<&str>>, &str)> = vec![
            (vec![], "unknown"),
            (vec![Some("running")], "running"),
            (vec![Some("running"), Some("completed")], "running"),
            (vec![Some("completed"), Some("completed")], "completed"),
            (vec![Some("running"), None], "unknown"),
            (vec![None, Some("pending")], "pending"),
            (vec![Some("pending"), Some("crashing")], "crashing"),
            (vec![Some("crashing"), Some("error"), Some("running")], "error"),
            (vec![Some("error"), Some("failed")], "failed"),
            (vec![Some("completed"), Some("somethingnew")], "somethingnew"),
            (vec![Some("triggered"), Some("completed")], "triggered"),
        ];
        for (states, expect) in cases {
            assert_eq!(summary_state(&states), expect, "{states:?}");
        }
    }

    #[test]
    fn replications_ready_table() {
        let cases: Vec<(Vec<Option<&str>>, bool, bool)> = vec![
            (vec![], true, false),
            (vec![], false, false),
            (vec![Some("running")], true, true),
            (vec![Some("running"), Some("running")], true, true),
            (vec![Some("running"), Some("pending")], true, false),
            (vec![Some("running"), None], true, false),
            (vec![Some("completed")], true, false),
            (vec![Some("completed")], false, true),
            (vec![Some("completed"), Some("running")], false, true),
            (vec![Some("completed"), Some("crashing")], false, false),
            (vec![Some("triggered")], true, true),
        ];
        for (states, continuous, expect) in cases {
            assert_eq!(replications_ready(&states, continuous), expect, "{states:?} continuous={continuous}");
        }
    }
}
