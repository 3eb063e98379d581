//! The queue's behaviour: coalescing, the limit, retries, deletions, discovery.

use super::*;

fn drain(q: &mut FanInQueue, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(db) = q.next(now) {
        out.push(db);
    }
    out
}

#[test]
fn a_burst_on_one_database_is_one_replication_and_at_most_k_run() {
    let t = Instant::now();
    let mut q = FanInQueue::new(2);
    for db in ["a", "b", "c", "a", "a", "b"] {
        q.changed(db, t);
    }
    assert_eq!(drain(&mut q, t), vec!["a", "b"], "k = 2 at once, each once");
    assert_eq!(q.counts().queued, 1);
    assert_eq!(q.counts().running, 2);
    assert_eq!(q.next(t), None);
    q.finished("a", Ended::Done, t + Duration::from_secs(1));
    assert_eq!(drain(&mut q, t), vec!["c"]);
    assert_eq!(q.next(t), None, "nothing is queued twice");
}

#[test]
fn a_change_while_running_replicates_once_more_after_and_its_lag_counts_from_when_it_was_seen() {
    let t = Instant::now();
    let mut q = FanInQueue::new(5);
    q.changed("a", t);
    assert_eq!(q.next(t).as_deref(), Some("a"));
    q.changed("a", t + Duration::from_secs(1));
    q.changed("a", t + Duration::from_secs(2));
    assert_eq!(q.next(t), None, "not twice at once");
    let lag = q.finished("a", Ended::Done, t + Duration::from_secs(3));
    assert_eq!(lag, Some(Duration::from_secs(3)));
    assert_eq!(q.next(t).as_deref(), Some("a"), "the change seen while running");
    let lag = q.finished("a", Ended::Done, t + Duration::from_secs(4));
    assert_eq!(lag, Some(Duration::from_secs(3)), "from the first change seen meanwhile");
    assert!(q.quiet());
    assert_eq!(q.counts(), Counts { discovered: 1, in_sync: 1, ..Default::default() });
}

#[test]
fn a_failing_database_backs_off_without_holding_up_the_queue() {
    let t = Instant::now();
    let mut q = FanInQueue::new(1);
    q.changed("bad", t);
    q.changed("good", t);
    assert_eq!(q.next(t).as_deref(), Some("bad"));
    q.finished("bad", Ended::Failed("unauthorized".into()), t);
    assert_eq!(q.next(t).as_deref(), Some("good"), "the next one runs at once");
    q.finished("good", Ended::Done, t);
    assert_eq!(q.next(t), None, "bad waits for its retry");
    assert_eq!(q.next_retry(), Some(t + RETRY_BASE));
    assert_eq!(q.counts().failing, 1);
    assert_eq!(q.worst(3), vec![Failing { database: "bad".into(), failures: 1, error: "unauthorized".into() }]);
    let retry = t + RETRY_BASE;
    assert_eq!(q.next(retry).as_deref(), Some("bad"));
    q.finished("bad", Ended::Failed("unauthorized".into()), retry);
    assert_eq!(q.next_retry(), Some(retry + RETRY_BASE * 2), "doubled");
    let again = retry + RETRY_BASE * 2;
    assert_eq!(q.next(again).as_deref(), Some("bad"));
    q.finished("bad", Ended::Done, again);
    assert_eq!(q.counts().failing, 0);
    assert!(q.worst(3).is_empty());
    assert_eq!(retry_delay(30), RETRY_MAX);
}

#[test]
fn a_source_whose_changes_were_refused_stays_failing_until_a_run_writes_again() {
    let t = Instant::now();
    let mut q = FanInQueue::new(1);
    q.changed("a", t);
    q.next(t);
    q.finished("a", Ended::Failed("1 document(s) refused by the target".into()), t);
    let retry = t + RETRY_BASE;
    assert_eq!(q.next(retry).as_deref(), Some("a"));
    q.finished("a", Ended::Unchanged, retry);
    assert_eq!(q.counts().failing, 1, "a run with nothing new does not clear it");
    assert_eq!(q.worst(1)[0].failures, 2);
    q.changed("a", retry);
    let later = retry + RETRY_BASE * 2;
    assert_eq!(q.next(later).as_deref(), Some("a"));
    q.finished("a", Ended::Done, later);
    assert_eq!(q.counts().failing, 0);
    q.changed("b", later);
    q.next(later);
    q.finished("b", Ended::Unchanged, later);
    assert_eq!(q.counts().in_sync, 2, "unchanged and never failing: in sync");
}

#[test]
fn a_deleted_database_is_forgotten_even_mid_run() {
    let t = Instant::now();
    let mut q = FanInQueue::new(3);
    q.changed("a", t);
    q.changed("b", t);
    assert_eq!(q.next(t).as_deref(), Some("a"));
    q.deleted("a");
    q.deleted("b");
    assert_eq!(q.next(t), None, "b is not replicated after its deletion");
    assert_eq!(q.finished("a", Ended::Done, t), None);
    assert_eq!(q.counts(), Counts::default());
    q.changed("c", t);
    assert_eq!(q.next(t).as_deref(), Some("c"));
    q.finished("c", Ended::SourceGone, t);
    assert!(!q.contains("c"));
    assert!(q.quiet());
}

#[test]
fn a_database_deleted_and_created_again_mid_run_is_replicated_again_after_and_never_twice_at_once() {
    let t = Instant::now();
    let mut q = FanInQueue::new(3);
    q.changed("a", t);
    assert_eq!(q.next(t).as_deref(), Some("a"));
    q.deleted("a");
    assert!(!q.changed("a", t), "the new database waits for the old run");
    assert_eq!(q.next(t), None);
    assert_eq!(q.counts().running, 1);
    q.finished("a", Ended::Done, t);
    assert_eq!(q.next(t).as_deref(), Some("a"), "then it is replicated");
    q.finished("a", Ended::Done, t);
    assert!(q.quiet());
    assert_eq!(q.counts().in_sync, 1);
}

#[test]
fn sequence_numbers_of_both_kinds_of_server() {
    assert_eq!(seq_number(&serde_json::json!(12)), Some(12));
    assert_eq!(seq_number(&serde_json::json!("12-g1AAAABPeJzLYWBgYMxgTmEQ")), Some(12));
    assert_eq!(seq_number(&serde_json::json!("now")), None);
    assert_eq!(seq_number(&serde_json::Value::Null), None);
    let mut q = FanInQueue::new(1);
    q.discover("a", true);
    q.replicated_to("a", Some(7));
    q.replicated_to("a", None);
    assert_eq!(q.replicated("a"), Some(7), "an unknown sequence keeps the known one");
}

#[test]
fn a_recheck_queues_without_a_lag_sample() {
    let t = Instant::now();
    let mut q = FanInQueue::new(1);
    q.discover("a", true);
    q.recheck("a");
    q.recheck("a");
    assert_eq!(q.next(t).as_deref(), Some("a"));
    assert_eq!(q.next(t), None);
    assert_eq!(q.finished("a", Ended::Done, t + Duration::from_secs(9)), None);
}

#[test]
fn discovery_queues_each_unsynced_source_once_and_the_checkpoint_lists_what_is_not_done() {
    let t = Instant::now();
    let mut q = FanInQueue::new(2);
    q.discover("a", true);
    q.discover("b", false);
    q.discover("c", false);
    q.discover("b", false);
    assert!(!q.all_synced());
    assert_eq!(q.pending().into_iter().collect::<Vec<_>>(), vec!["b", "c"]);
    assert_eq!(q.pending_count(), 2);
    assert_eq!(drain(&mut q, t), vec!["b", "c"]);
    assert_eq!(q.finished("b", Ended::Done, t), None, "no change seen: no lag sample");
    q.finished("c", Ended::Done, t);
    assert!(q.all_synced());
    assert!(q.pending().is_empty());
    assert_eq!(q.pending_count(), 0);
    assert_eq!(q.counts(), Counts { discovered: 3, in_sync: 3, ..Default::default() });
}
