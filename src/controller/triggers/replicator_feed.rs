//! The CouchShare trigger from CouchDB's replicator: one task per server and replicator database
//! follows that database's `_changes` and requeues the share whose replication document changed.
//! CouchDB writes a one-shot replication's end (`_replication_state` `completed` or `failed`)
//! into its document as a new revision about a second after the run, and a continuous one's
//! `failed` too: a share whose replications run wakes when CouchDB says so, instead of at the
//! periodic resync. The share's own writes come back through the feed as well; the revisions it
//! wrote are recorded ([`ReplicatorFeeds::written`]) and do not wake it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::api::CouchShare;
use crate::controller::runtime::backoff::delay;
use crate::controller::runtime::clients::Connected;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::requeues::ShareTrigger;
use crate::couch::{ChangesQuery, CouchClient, CouchError, FeedMode};
use crate::plan::share::{replication_doc_owner, replicator_db};

/// The longpoll wait of the feed.
const FEED_WAIT: Duration = Duration::from_secs(25);

/// A server and one of its replicator databases.
type Key = (ServerKey, String);

/// A feed's task and what it follows with: the server's URL and UID, the client's generation.
type Following = (String, u64, JoinHandle<()>);

/// The replicator feeds running in this process, each with what it was started for (URL and
/// server UID), and the document revisions the shares wrote themselves.
#[derive(Default)]
pub struct ReplicatorFeeds {
    running: Mutex<HashMap<Key, Following>>,
    own: std::sync::Arc<OwnRevisions>,
    /// What each share's last pass wrote of its replications (shared with the scheduler watch).
    pub(crate) shown: super::shown::Shown,
}

/// The replication document revisions a share wrote itself (database, id, rev): when the feed
/// brings one back it is not a change of CouchDB's, and the share is not woken for it.
#[derive(Default)]
struct OwnRevisions(Mutex<BTreeSet<(String, String, String)>>);

impl OwnRevisions {
    /// Whether `change` is a revision a share wrote (and forgets it: it comes back once).
    fn take(&self, db: &str, change: &crate::couch::Change) -> bool {
        let Some(rev) = change.changes.first().map(|c| c.rev.clone()) else { return false };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&(db.to_string(), change.id.clone(), rev))
    }
}

impl ReplicatorFeeds {
    /// Records a revision a share wrote to `db` (a replication document put or deleted): the
    /// feed does not wake the share for it.
    pub(crate) fn written(&self, db: &str, id: &str, rev: &str) {
        let mut own = self.own.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a revision whose feed event never came (no feed yet) is not kept forever.
        if own.len() > 100_000 {
            own.clear();
        }
        own.insert((db.to_string(), id.to_string(), rev.to_string()));
    }

    /// Whether a task follows `key` for the same URL and UID (`fingerprint`) with this client
    /// (`generation`) or a newer one.
    fn running(&self, key: &Key, fingerprint: &str, generation: u64) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(key).is_some_and(|(fp, g, handle)| fp == fingerprint && *g >= generation && !handle.is_finished())
    }

    /// Keeps `handle` for `key` unless another task with the same fingerprint and as new a
    /// client started meanwhile (two shares on one replicator database reconciled at once):
    /// then `handle` is aborted.
    fn keep(&self, key: Key, fingerprint: String, generation: u64, handle: JoinHandle<()>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fp, g, old)) = running.get(&key) {
            if *fp == fingerprint && *g >= generation && !old.is_finished() {
                handle.abort();
                return;
            }
            old.abort();
        }
        running.insert(key, (fingerprint, generation, handle));
    }
}

/// Makes sure the replicator database `db` of the connected server is followed. When no task
/// follows it yet, the feed's position is read before this returns, so any change made after
/// it returns — a replication ending after the pass read the scheduler — wakes the share.
/// (`feeds` is the context's, `trigger` its share trigger, `shares` the shares' store: the
/// context holds the feeds, so they do not take it.)
pub(crate) async fn follow(
    feeds: &ReplicatorFeeds,
    trigger: Option<&ShareTrigger>,
    shares: &Store<CouchShare>,
    connected: &Connected,
    db: &str,
) -> Result<(), CouchError> {
    let Some(trigger) = trigger.cloned() else { return Ok(()) };
    let server = ServerKey::of(&connected.server);
    // A feed keeps the client it started with, so one built again for a rotated admin Secret
    // or CA (a newer generation) replaces it.
    let fingerprint = format!("{}|{}", connected.server.spec.url, connected.server.uid().unwrap_or_default());
    let generation = connected.couch.instance();
    let key = (server.clone(), db.to_string());
    if feeds.running(&key, &fingerprint, generation) {
        return Ok(());
    }
    let couch = connected.couch.clone();
    let now = ChangesQuery { feed: FeedMode::Normal, since: Some(json!("now")), ..Default::default() };
    let since = couch.changes(db, &now).await?.last_seq;
    tracing::debug!(server = %server, database = db, "following the replicator database");
    let shares = shares.clone();
    let own = (feeds.own.clone(), feeds.shown.clone());
    let handle = tokio::spawn(run(couch, key.clone(), since, shares, trigger, own));
    feeds.keep(key, fingerprint, generation, handle);
    Ok(())
}

/// Whether a share that is not revoked runs on `server` from replicator database `db`.
fn in_use(shares: &Store<CouchShare>, (server, db): &Key) -> bool {
    let server = server.to_string();
    shares.state().iter().any(|s| {
        s.status.as_ref().is_some_and(|st| st.server.as_deref() == Some(server.as_str()) && !st.revoked)
            && replicator_db(s) == *db
    })
}

/// The shares whose replication documents are among `ids`, once each.
fn owners<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<ObjectRef<CouchShare>> {
    let owners: BTreeSet<(String, String)> = ids.filter_map(replication_doc_owner).collect();
    owners.into_iter().map(|(ns, name)| ObjectRef::new(&name).within(&ns)).collect()
}

/// Whether a change is CouchDB recording in the document a state the owning share's status
/// already shows (`_replication_state`, e.g. a one-shot's `completed`, which the scheduler watch
/// woke the share for seconds earlier): another pass would find nothing new. A deletion, an
/// edit by hand (CouchDB drops the `_replication_state` of a document someone else writes) or a
/// state the status does not show yet wakes the share.
fn already_shown(change: &crate::couch::Change, shares: &Store<CouchShare>, shown: &super::shown::Shown) -> bool {
    let Some((ns, name)) = replication_doc_owner(&change.id) else { return false };
    shown_in(change, shown.status(shares, &ObjectRef::new(&name).within(&ns)).as_ref())
}

/// [`already_shown`] against a share's status.
fn shown_in(change: &crate::couch::Change, status: Option<&crate::api::CouchShareStatus>) -> bool {
    let state = change.doc.as_ref().and_then(|d| d.get("_replication_state")).and_then(Value::as_str);
    let (false, Some(state), Some(status)) = (change.deleted, state, status) else { return false };
    status.replications.iter().any(|r| r.id == change.id && r.state.as_deref() == Some(state))
}

/// Follows `db`'s `_changes` from `since` and requeues the shares whose documents changed; ends
/// when the database is gone, or when no share uses it any more — looked at only after a wait
/// with no change, as a new share's status names its server at the end of its first pass, after
/// its first writes came through here.
async fn run(
    couch: CouchClient,
    key: Key,
    mut since: Value,
    shares: Store<CouchShare>,
    trigger: ShareTrigger,
    (own, shown): (std::sync::Arc<OwnRevisions>, super::shown::Shown),
) {
    let mut failures = 0u32;
    loop {
        // With the documents: a change that only records a state the share already shows
        // wakes nobody (see `already_shown`).
        let query = ChangesQuery {
            feed: FeedMode::Longpoll,
            since: Some(since.clone()),
            timeout: Some(FEED_WAIT),
            include_docs: true,
            ..Default::default()
        };
        let quiet = match couch.changes(&key.1, &query).await {
            Ok(changes) => {
                failures = 0;
                let theirs = changes.results.iter().filter(|c| !own.take(&key.1, c));
                let news = theirs.filter(|c| !already_shown(c, &shares, &shown));
                for share in owners(news.map(|c| c.id.as_str())) {
                    tracing::debug!(share = %share, "replication document changed; requeueing");
                    let _ = trigger.send(share);
                }
                since = changes.last_seq;
                changes.results.is_empty()
            }
            Err(e) if e.is_not_found() => {
                tracing::debug!(database = %key.1, "replicator database gone; no longer followed");
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, database = %key.1, "replicator _changes failed; retrying");
                tokio::time::sleep(delay(Duration::from_millis(500), Duration::from_secs(30), failures)).await;
                true
            }
        };
        if quiet && !in_use(&shares, &key) {
            tracing::debug!(database = %key.1, "no share uses the replicator database; no longer followed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_the_status_already_shows_wakes_nobody() {
        let change = |deleted: bool, doc: Value| -> crate::couch::Change {
            serde_json::from_value(json!({"id": "couchshare_inv_a_fwd", "seq": "1", "changes": [{"rev": "2-x"}],
                "deleted": deleted, "doc": doc}))
            .expect("a change")
        };
        let status = |state: &str| -> crate::api::CouchShareStatus {
            serde_json::from_value(json!({"replications": [{"id": "couchshare_inv_a_fwd", "source": "a",
                "target": "b", "state": state}]}))
            .expect("a status")
        };
        let completed = json!({"_id": "couchshare_inv_a_fwd", "_replication_state": "completed"});
        let edited = json!({"_id": "couchshare_inv_a_fwd", "source": "elsewhere"});
        let cases = [
            (change(false, completed.clone()), Some(status("completed")), true),
            (change(false, completed.clone()), Some(status("running")), false),
            (change(false, completed.clone()), None, false),
            (
                change(false, json!({"_id": "couchshare_inv_a_fwd", "_replication_state": "failed"})),
                Some(status("completed")),
                false,
            ),
            (change(false, edited), Some(status("completed")), false),
            (change(true, completed), Some(status("completed")), false),
        ];
        for (i, (change, status, expect)) in cases.into_iter().enumerate() {
            assert_eq!(shown_in(&change, status.as_ref()), expect, "case {i}");
        }
    }

    #[test]
    fn each_share_whose_documents_changed_is_requeued_once() {
        let ids =
            ["couchshare_inv_a_fwd", "couchshare_inv_a_back", "couchshare_inv_b_fwd_626f62", "_design/x", "other"];
        let woken = owners(ids.into_iter());
        let names: Vec<String> =
            woken.iter().map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name)).collect();
        assert_eq!(names, ["inv/a", "inv/b"]);
    }
}
