//! The CouchShare trigger for what CouchDB's scheduler knows and its replicator documents do
//! not say: a job going from `pending` (or not listed yet) to `running`, or starting to crash.
//! CouchDB writes only a replication's end into its document (see `replicator_feed`), so a share
//! whose replications have not started registers here what it saw; one task per server and
//! replicator database reads `_scheduler/docs` twice a second while any share waits, and wakes
//! each share whose jobs' states moved. The cost is two reads a second per server, whatever
//! the number of waiting shares, plus at most ten per read for one-shots the listing shows as
//! not ended (on a cluster it lags the node that ran them), and none when no share waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::CouchShare;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::requeues::ShareTrigger;
use crate::couch::CouchClient;
use crate::plan::share::state_name;

/// How often a waited-on scheduler is read.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A job's state as a share's status names it (`None`: not listed by the scheduler).
type States = BTreeMap<String, Option<String>>;

/// A server and one of its replicator databases.
type Key = (ServerKey, String);

/// How many one-shot jobs a read asks for by themselves (see [`run`]).
const ONE_SHOTS_PER_READ: usize = 10;

#[derive(Default)]
struct Watched {
    /// Each waiting share, with the states it saw and whether its jobs are one-shots.
    waiting: HashMap<ObjectRef<CouchShare>, (States, bool)>,
    /// The states of the last read (a listing that lags a node is not taken for a change twice).
    last: States,
    /// Whether a task reads for this key.
    running: bool,
    /// The client it reads with ([`CouchClient::instance`]): a newer client (built again for a
    /// rotated admin Secret or CA) starts another task, and the old one ends.
    instance: u64,
}

/// The waiting shares of every server and replicator database.
#[derive(Default)]
pub struct SchedulerWatch {
    keys: Arc<Mutex<HashMap<Key, Watched>>>,
}

/// Which waiting shares to wake after a read: those with a job whose state differs from what
/// the share saw and from the previous read, each with its jobs' states in this read. Updates
/// `last`.
fn moved(watched: &mut Watched, listed: States) -> Vec<(ObjectRef<CouchShare>, States)> {
    let mut woken = Vec::new();
    for (share, (seen, _)) in &watched.waiting {
        let changed = seen.iter().any(|(id, state)| {
            let now = listed.get(id).cloned().flatten();
            let before = watched.last.get(id).cloned().flatten();
            now != *state && (now != before || !watched.last.contains_key(id))
        });
        if changed {
            let now = seen.keys().map(|id| (id.clone(), listed.get(id).cloned().flatten())).collect();
            woken.push((share.clone(), now));
        }
    }
    for (share, _) in &woken {
        watched.waiting.remove(share);
    }
    watched.last = listed;
    woken
}

/// Whether a share's status already shows its jobs in the states `now` (a pass woken by the
/// replicator feed for the same change wrote it meanwhile): another pass would find nothing new.
fn already_shown(now: &States, status: Option<&crate::api::CouchShareStatus>) -> bool {
    let Some(status) = status else { return false };
    !now.is_empty()
        && now.iter().all(|(id, state)| status.replications.iter().any(|r| &r.id == id && &r.state == state))
}

impl SchedulerWatch {
    /// Forgets `share` wherever it waited (each pass registers again when it still waits).
    pub(crate) fn forget(&self, share: &ObjectRef<CouchShare>) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for watched in keys.values_mut() {
            watched.waiting.remove(share);
        }
    }

    /// Registers `share` as waiting for its jobs (`seen`: each job's state as this pass saw it,
    /// and whether they are one-shots)
    /// on `replicator` of `server`, and makes sure a task reads that scheduler (waking through
    /// `trigger`, and looking at the shares' statuses in `shares`).
    pub(crate) fn wait(
        &self,
        server: ServerKey,
        couch: &CouchClient,
        replicator: &str,
        share: ObjectRef<CouchShare>,
        (seen, one_shot): (States, bool),
        (trigger, shares, shown): (Option<ShareTrigger>, &Store<CouchShare>, &super::shown::Shown),
    ) {
        let Some(trigger) = trigger else { return };
        let key = (server, replicator.to_string());
        let start = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let watched = keys.entry(key.clone()).or_default();
            watched.waiting.insert(share, (seen, one_shot));
            let fresh = !watched.running || watched.instance < couch.instance();
            watched.running = true;
            watched.instance = watched.instance.max(couch.instance());
            fresh
        };
        if start {
            tokio::spawn(run(self.keys.clone(), key, couch.clone(), trigger, (shares.clone(), shown.clone())));
        }
    }
}

/// Reads the scheduler of `key` every [`WATCH_EVERY`] until no share waits on it; a share whose
/// status already shows what moved (as its last pass wrote it, or the store) is not woken.
async fn run(
    keys: Arc<Mutex<HashMap<Key, Watched>>>,
    key: Key,
    couch: CouchClient,
    trigger: ShareTrigger,
    (shares, shown): (Store<CouchShare>, super::shown::Shown),
) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let mut listed: Option<States> = match couch.replication_statuses(&key.1).await {
            Ok(listed) => Some(listed.into_iter().map(|s| (s.doc_id, s.state.as_ref().map(state_name))).collect()),
            Err(e) => {
                tracing::debug!(error = %e, database = %key.1, "reading _scheduler/docs for waiting shares failed");
                None
            }
        };
        // On a cluster the listing lags the node that ran a one-shot by seconds, and CouchDB
        // writes its end into the document later still: a few one-shots the listing shows as
        // not ended are asked for by themselves, as the share's own pass does.
        let ask: Vec<String> = {
            let all = keys.lock().unwrap_or_else(|e| e.into_inner());
            let ended = |id: &String| {
                listed
                    .as_ref()
                    .and_then(|l| l.get(id))
                    .cloned()
                    .flatten()
                    .is_some_and(|s| s == "completed" || s == "failed")
            };
            all.get(&key).map_or_else(Vec::new, |w| {
                w.waiting
                    .values()
                    .filter(|(_, one_shot)| *one_shot)
                    .flat_map(|(seen, _)| seen.keys().filter(|id| !ended(id)).cloned())
                    .take(ONE_SHOTS_PER_READ)
                    .collect()
            })
        };
        for id in ask {
            if let (Some(listed), Ok(Some(one))) = (listed.as_mut(), couch.replication_status(&key.1, &id).await) {
                listed.insert(id, one.state.as_ref().map(state_name));
            }
        }
        let (woken, done) = {
            let mut all = keys.lock().unwrap_or_else(|e| e.into_inner());
            let Some(watched) = all.get_mut(&key) else { return };
            if watched.instance != couch.instance() {
                return;
            }
            let woken = listed.map(|listed| moved(watched, listed)).unwrap_or_default();
            let done = watched.waiting.is_empty();
            if done {
                all.remove(&key);
            }
            (woken, done)
        };
        for (share, now) in woken {
            if already_shown(&now, shown.status(&shares, &share).as_ref()) {
                continue;
            }
            tracing::debug!(share = %share, "replication job state moved; requeueing");
            let _ = trigger.send(share);
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(pairs: &[(&str, Option<&str>)]) -> States {
        pairs.iter().map(|(id, s)| (id.to_string(), s.map(str::to_string))).collect()
    }

    #[test]
    fn a_share_wakes_when_its_job_moves_and_not_for_a_lagging_listing_twice() {
        let share = ObjectRef::<CouchShare>::new("s").within("ns");
        let mut w = Watched::default();
        w.waiting.insert(share.clone(), (states(&[("a", Some("pending"))]), false));
        // The first read still says pending: nothing moved.
        assert!(moved(&mut w, states(&[("a", Some("pending"))])).is_empty());
        // Running now: the share wakes, once, and no longer waits.
        assert_eq!(names(moved(&mut w, states(&[("a", Some("running"))]))), vec![share.clone()]);
        assert!(w.waiting.is_empty());
        // A share that saw `running` (a per-document read) while the listing still says
        // `pending` is woken by the first read that differs, then not again for the same lag.
        let mut w = Watched::default();
        w.waiting.insert(share.clone(), (states(&[("a", Some("running"))]), false));
        assert_eq!(names(moved(&mut w, states(&[("a", Some("pending"))]))), vec![share.clone()]);
        w.waiting.insert(share.clone(), (states(&[("a", Some("running"))]), false));
        assert!(moved(&mut w, states(&[("a", Some("pending"))])).is_empty(), "the same lag again");
        assert_eq!(names(moved(&mut w, states(&[("a", Some("crashing"))]))), vec![share.clone()]);
        // A job not listed yet, then listed.
        let mut w = Watched::default();
        w.waiting.insert(share.clone(), (states(&[("a", None)]), false));
        assert!(moved(&mut w, states(&[])).is_empty());
        assert_eq!(
            moved(&mut w, states(&[("a", Some("running")), ("b", Some("pending"))])),
            vec![(share, states(&[("a", Some("running"))]))]
        );
    }

    fn names(woken: Vec<(ObjectRef<CouchShare>, States)>) -> Vec<ObjectRef<CouchShare>> {
        woken.into_iter().map(|(share, _)| share).collect()
    }

    #[test]
    fn a_share_whose_status_shows_what_moved_is_not_woken_again() {
        let status = |pairs: &[(&str, Option<&str>)]| -> crate::api::CouchShareStatus {
            let replications: Vec<serde_json::Value> = pairs
                .iter()
                .map(|(id, s)| serde_json::json!({"id": id, "source": "a", "target": "b", "state": s}))
                .collect();
            serde_json::from_value(serde_json::json!({"replications": replications})).expect("a status")
        };
        let completed = states(&[("a", Some("completed"))]);
        let cases = [
            (completed.clone(), Some(status(&[("a", Some("completed"))])), true),
            (completed.clone(), Some(status(&[("a", Some("running"))])), false),
            (completed.clone(), Some(status(&[])), false),
            (completed.clone(), None, false),
            (
                states(&[("a", Some("completed")), ("b", None)]),
                Some(status(&[("a", Some("completed")), ("b", None)])),
                true,
            ),
            (
                states(&[("a", Some("completed")), ("b", Some("running"))]),
                Some(status(&[("a", Some("completed")), ("b", None)])),
                false,
            ),
            (states(&[]), Some(status(&[])), false),
        ];
        for (i, (now, status, expect)) in cases.into_iter().enumerate() {
            assert_eq!(already_shown(&now, status.as_ref()), expect, "case {i}");
        }
    }
}
