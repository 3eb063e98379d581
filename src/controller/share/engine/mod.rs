//! On-change fan-in: one task per CouchShare with strategy `OnChange` (not one per database).
//! It lists its source databases once (a paged `_all_dbs` range read on the prefix, or the
//! selected CouchUsers' databases), then follows `_db_updates`, and replicates a database by a
//! one-shot `POST /_replicate` when the feed says it changed — at most `maxConcurrent` at once,
//! each queued once however many changes arrive ([`FanInQueue`]).
//!
//! Restarts and outages: the feed position and the sources not yet replicated are kept in a
//! checkpoint, `_local/couchshare-onchange-<share uid>` in the target database (a `_local`
//! document never replicates). A new task resumes the feed from there and replicates what the
//! checkpoint lists; without a checkpoint (or one written while more than
//! [`CHECKPOINT_PENDING_MAX`] sources were not replicated yet), or when CouchDB refuses its
//! position, every source is replicated once (CouchDB's own replication checkpoints make that read only what is new).
//! While `_db_updates` cannot be read — a cluster just finished, a server without
//! `_global_changes`, pouchdb-server — new and deleted sources come from an `_all_dbs` diff every
//! few seconds instead (see `db_events`), every source is replicated once per resync, and the
//! status says so; when the feed is back, one full pass catches up.
//!
//! The task publishes counts for the share's status, and requeues the share when they cross a
//! line the conditions show (failing or not, first full sync) or, at most every
//! [`STATUS_EVERY`], when they changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{CouchShare, OnChangeFailure, OnChangeStatus};
use crate::couch::{CouchClient, CouchError};
use crate::plan::onchange::{Ended, FanInQueue, seq_number};

use crate::controller::runtime::backoff::delay;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::requeues::ShareTrigger;
use crate::controller::triggers::db_events::{Batch, DbEvents, EventSource, position};

/// How a one-shot replication may take before it is given up (and retried).
const REPLICATION_WAIT: Duration = Duration::from_secs(600);
/// How often, at most, the checkpoint is written (only when it changed).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How often, at most, changed counts requeue the share for a status write.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);
/// The most sources a checkpoint lists; with more not yet replicated (a first full sync), it
/// records no position instead, and a restart replicates every source once, as without one.
const CHECKPOINT_PENDING_MAX: usize = 1000;
/// Failing sources listed in the status.
const WORST: usize = 5;

/// Which databases are the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Every database whose name starts with this.
    Prefix(String),
    /// These (the per-user databases of the selected CouchUsers; updated in place).
    Names,
}

/// What an engine is started with; a change of anything but the names starts a new one.
pub struct EngineSpec {
    /// `namespace/name` of the share.
    pub key: String,
    /// The share, for requeueing it.
    pub share: ObjectRef<CouchShare>,
    /// Its UID: names the checkpoint.
    pub uid: String,
    pub membership: Membership,
    /// Initial names for [`Membership::Names`].
    pub names: BTreeSet<String>,
    /// The `_replicate` body for one source database.
    pub body: Arc<dyn Fn(&str) -> Value + Send + Sync>,
    /// Fingerprint of everything the bodies depend on.
    pub fingerprint: String,
    /// Admin client of the managed server (feed, listing, `_replicate`).
    pub couch: CouchClient,
    /// Client and database of the target (for the checkpoint).
    pub target: (CouchClient, String),
    /// The most replications at once.
    pub k: usize,
    /// Full pass period without a feed.
    pub resync: Duration,
    /// Wakes the listing of the sources to look for the feed again (see `db_events`).
    pub nudge: Arc<tokio::sync::Notify>,
}

/// What the share's status shows of an engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub status: OnChangeStatus,
    /// Listing the sources or reading the checkpoint failed: the engine retries, the share is
    /// not Ready until it works.
    pub error: Option<String>,
    /// Listed once and running.
    pub started: bool,
}

/// The state an engine shares with the reconciler.
#[derive(Default)]
pub struct Shared {
    snapshot: Mutex<Snapshot>,
    /// The bodies of the replications in progress (cancelled when the share stops).
    running: Mutex<HashMap<String, Value>>,
}

impl Shared {
    /// The latest counts.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Kept {
    fingerprint: String,
    handle: JoinHandle<()>,
    shared: Arc<Shared>,
    names: watch::Sender<BTreeSet<String>>,
    couch: CouchClient,
}

/// The on-change engines of this process, by share.
#[derive(Default)]
pub struct Engines {
    kept: Mutex<HashMap<String, Kept>>,
}

impl Engines {
    /// Keeps one engine for `spec.key`: a running one with the same fingerprint stays (its
    /// names are updated), another is replaced. Returns what the engine shares.
    pub fn keep(&self, spec: EngineSpec, trigger: Option<ShareTrigger>, metrics: Arc<Metrics>) -> Arc<Shared> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kept.get(&spec.key)
            && k.fingerprint == spec.fingerprint
            && !k.handle.is_finished()
        {
            k.names.send_if_modified(|names| {
                let changed = *names != spec.names;
                if changed {
                    names.clone_from(&spec.names);
                }
                changed
            });
            return k.shared.clone();
        }
        if let Some(old) = kept.remove(&spec.key) {
            old.handle.abort();
            cancel_in_background(old);
        }
        let shared = Arc::new(Shared::default());
        let (names_tx, names_rx) = watch::channel(spec.names.clone());
        let key = spec.key.clone();
        let fingerprint = spec.fingerprint.clone();
        let couch = spec.couch.clone();
        let handle = tokio::spawn(run(spec, shared.clone(), names_rx, trigger, metrics));
        kept.insert(key, Kept { fingerprint, handle, shared: shared.clone(), names: names_tx, couch });
        shared
    }

    /// Whether an engine runs for `key`.
    pub fn running(&self, key: &str) -> bool {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).get(key).is_some_and(|k| !k.handle.is_finished())
    }

    /// Stops the engine of `key`, if any, and cancels the replications it had running; returns
    /// how many it cancelled. Nothing of it replicates once this returns.
    pub async fn stop(&self, key: &str) -> Result<usize, CouchError> {
        let Some(old) = self.kept.lock().unwrap_or_else(|e| e.into_inner()).remove(key) else { return Ok(0) };
        old.handle.abort();
        let bodies: Vec<Value> =
            old.shared.running.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, b)| b).collect();
        let mut cancelled = 0;
        for body in &bodies {
            if old.couch.cancel_replicate(body).await? {
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }
}

fn cancel_in_background(old: Kept) {
    let bodies: Vec<Value> =
        old.shared.running.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, b)| b).collect();
    if bodies.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for body in &bodies {
            if let Err(e) = old.couch.cancel_replicate(body).await {
                tracing::debug!(error = %e, "could not cancel a one-shot replication of a replaced engine");
            }
        }
    });
}

/// The checkpoint document's id.
pub fn checkpoint_id(uid: &str) -> String {
    format!("_local/couchshare-onchange-{uid}")
}

/// What the checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Checkpoint {
    since: Option<Value>,
    pending: BTreeSet<String>,
    rev: Option<String>,
}

async fn read_checkpoint(target: &(CouchClient, String), uid: &str) -> Result<Option<Checkpoint>, CouchError> {
    let Some(doc) = target.0.get_document(&target.1, &checkpoint_id(uid)).await? else { return Ok(None) };
    let pending = doc
        .get("pending")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Some(Checkpoint {
        since: doc.get("since").cloned().filter(|s| !s.is_null()),
        pending,
        rev: doc.get("_rev").and_then(Value::as_str).map(str::to_owned),
    }))
}

/// One answer of the feed task.
enum Feed {
    /// Database events, from `_db_updates` or a listing.
    Events(Batch),
    /// Reading them failed (retried with backoff); `None` when it works again.
    Broken(Option<String>),
}

async fn follow_feed(mut events: DbEvents, tx: mpsc::Sender<Feed>) {
    let mut failures = 0u32;
    let mut source = None;
    loop {
        match events.next().await {
            Ok(batch) => {
                if failures > 0 && tx.send(Feed::Broken(None)).await.is_err() {
                    return;
                }
                failures = 0;
                let news = !batch.updates.is_empty() || batch.gap || source != Some(batch.source);
                source = Some(batch.source);
                if news && tx.send(Feed::Events(batch)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if tx.send(Feed::Broken(Some(e.to_string()))).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay(Duration::from_millis(500), Duration::from_secs(30), failures)).await;
            }
        }
    }
}

/// Whether `db` is one of the sources (never a system database, never the target).
fn is_source(membership: &Membership, names: &BTreeSet<String>, target: &str, db: &str) -> bool {
    if db == target || db.starts_with('_') || db.split('/').any(|part| part.starts_with('_')) {
        return false;
    }
    match membership {
        Membership::Prefix(prefix) => db.starts_with(prefix.as_str()),
        Membership::Names => names.contains(db),
    }
}

async fn list(spec: &EngineSpec, names: &BTreeSet<String>) -> Result<Vec<String>, CouchError> {
    let target = &spec.target.1;
    match &spec.membership {
        Membership::Prefix(prefix) => Ok(spec
            .couch
            .databases_with_prefix(prefix)
            .await?
            .into_iter()
            .filter(|db| is_source(&spec.membership, names, target, db))
            .collect()),
        Membership::Names => {
            Ok(names.iter().filter(|db| is_source(&spec.membership, names, target, db)).cloned().collect())
        }
    }
}

/// How the engine task starts: checkpoint, feed position, listing. Retried until it works.
async fn start(spec: &EngineSpec, names: &BTreeSet<String>, queue: &mut FanInQueue) -> Result<Start, CouchError> {
    let checkpoint = read_checkpoint(&spec.target, &spec.uid).await?;
    // The position is taken before listing, so nothing created meanwhile is missed; without a
    // feed to read (`None`), the sources are listed every few seconds instead.
    let since = match &checkpoint {
        Some(Checkpoint { since: Some(since), .. }) if position(&spec.couch).await?.is_some() => Some(since.clone()),
        _ => position(&spec.couch).await?,
    };
    let feed = since.is_some();
    let listed = list(spec, names).await?;
    let resumed = checkpoint.as_ref().is_some_and(|c| c.since.is_some()) && feed;
    for db in &listed {
        let synced = resumed && checkpoint.as_ref().is_some_and(|c| !c.pending.contains(db));
        queue.discover(db, synced);
    }
    Ok(Start { since, feed, rev: checkpoint.and_then(|c| c.rev), resumed })
}

struct Start {
    since: Option<Value>,
    feed: bool,
    rev: Option<String>,
    resumed: bool,
}

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

/// The engine task.
async fn run(
    spec: EngineSpec,
    shared: Arc<Shared>,
    mut names_rx: watch::Receiver<BTreeSet<String>>,
    trigger: Option<ShareTrigger>,
    metrics: Arc<Metrics>,
) {
    let (ns, name) = spec.key.split_once('/').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or_default();
    let source_text = match &spec.membership {
        Membership::Prefix(p) => format!("prefix {p}"),
        Membership::Names => "selected CouchUsers".to_string(),
    };
    let requeue = |trigger: &Option<ShareTrigger>| {
        if let Some(t) = trigger {
            let _ = t.send(spec.share.clone());
        }
    };
    let mut queue = FanInQueue::new(spec.k);
    let mut names = names_rx.borrow_and_update().clone();
    let mut attempt = 0u32;
    let started = loop {
        match start(&spec, &names, &mut queue).await {
            Ok(s) => break s,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                shared.snapshot.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e.to_string());
                if attempt == 1 {
                    requeue(&trigger);
                }
                queue = FanInQueue::new(spec.k);
                tokio::time::sleep(delay(Duration::from_millis(500), Duration::from_secs(30), attempt)).await;
            }
        }
    };
    tracing::info!(share = %spec.key, sources = queue.counts().discovered, resumed = started.resumed, feed = started.feed, "on-change fan-in started");
    let (feed_tx, mut feed_rx) = mpsc::channel::<Feed>(16);
    let prefix = match &spec.membership {
        Membership::Prefix(p) => p.clone(),
        Membership::Names => String::new(),
    };
    let events = DbEvents::new(spec.couch.clone(), prefix, started.since.clone(), spec.nudge.clone());
    let _feed_guard = AbortOnDrop(Some(tokio::spawn(follow_feed(events, feed_tx))));
    let mut feed = started.feed;
    let mut feed_error: Option<String> = None;
    let mut since = started.since.clone();
    let mut rev = started.rev.clone();
    // The feed position and queue version the checkpoint was last written at.
    let mut written: Option<(Option<Value>, u64)> = None;
    let mut last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
    let mut first_full_sync = None;
    let mut last_status = Instant::now() - STATUS_EVERY;
    let mut published: Option<OnChangeStatus> = None;
    let mut dirty = false;
    let mut next_pass = Instant::now() + spec.resync;
    let mut workers: JoinSet<(String, Ended, u64, Option<u64>)> = JoinSet::new();
    loop {
        let now = Instant::now();
        // Hand out what may run.
        while let Some(db) = queue.next(now) {
            tracing::debug!(database = %db, "on-change replication starts");
            let body = (spec.body)(&db);
            shared.running.lock().unwrap_or_else(|e| e.into_inner()).insert(db.clone(), body.clone());
            let couch = spec.couch.clone();
            let known = queue.replicated(&db);
            workers.spawn(async move {
                // The replicator's own checkpoint in the source is a `_local` write, which
                // `_db_updates` reports too: a source whose sequence has not moved since the
                // last run is not replicated again (one GET instead of a replication).
                if let Some(known) = known
                    && let Ok(info) = couch.database_info(&db).await
                    && seq_number(&info.update_seq) == Some(known)
                {
                    return (db, Ended::Unchanged, 0, Some(known));
                }
                let (ended, docs, seq) = match couch.replicate(&body, REPLICATION_WAIT).await {
                    Ok(r) if r.doc_write_failures > 0 => (
                        Ended::Failed(format!(
                            "{} document(s) refused by the target (they stay out until they change at the source)",
                            r.doc_write_failures
                        )),
                        r.docs_written,
                        seq_number(&r.source_last_seq),
                    ),
                    Ok(r) if r.no_changes => (Ended::Unchanged, 0, seq_number(&r.source_last_seq)),
                    Ok(r) => (Ended::Done, r.docs_written, seq_number(&r.source_last_seq)),
                    Err(e) if e.is_not_found() => match couch.database_exists(&db).await {
                        Ok(false) => (Ended::SourceGone, 0, None),
                        _ => (Ended::Failed(e.to_string()), 0, None),
                    },
                    Err(e) => (Ended::Failed(e.to_string()), 0, None),
                };
                (db, ended, docs, seq)
            });
        }
        // Publish.
        let counts = queue.counts();
        if first_full_sync.is_none() && queue.all_synced() {
            first_full_sync = Some(now_text());
        }
        let status = OnChangeStatus {
            source: source_text.clone(),
            max_concurrent: u32::try_from(spec.k).unwrap_or(u32::MAX),
            discovered: counts.discovered as i64,
            in_sync: counts.in_sync as i64,
            behind: counts.behind as i64,
            failing: counts.failing as i64,
            running: counts.running as i64,
            feed,
            first_full_sync: first_full_sync.clone(),
            worst: queue
                .worst(WORST)
                .into_iter()
                .map(|f| OnChangeFailure { database: f.database, failures: i64::from(f.failures), error: f.error })
                .collect(),
        };
        metrics.on_change(&ns, &name, &counts);
        // The snapshot always shows the latest; the share is requeued (to write it into its
        // status) when it changed since the last requeue: at once when it crossed a line the
        // conditions show, else at most every STATUS_EVERY.
        {
            let mut snap = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            if snap.status != status || !snap.started || snap.error != feed_error {
                snap.status = status.clone();
                snap.started = true;
                snap.error = feed_error.clone();
                dirty = true;
            }
        }
        let crossed = published.as_ref().is_none_or(|p| {
            (p.failing > 0) != (status.failing > 0)
                || p.first_full_sync.is_some() != status.first_full_sync.is_some()
                || p.feed != status.feed
        });
        if dirty && (crossed || last_status.elapsed() >= STATUS_EVERY) {
            requeue(&trigger);
            last_status = Instant::now();
            published = Some(status.clone());
            dirty = false;
        }
        // Checkpoint: the feed position with what is not done yet (built only when due).
        let checkpoint_stale = written.as_ref().is_none_or(|(s, v)| *s != since || *v != queue.version());
        if checkpoint_stale && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            let version = queue.version();
            let mut doc = if queue.pending_count() > CHECKPOINT_PENDING_MAX {
                json!({"since": null, "pending": [], "share": spec.key, "written": now_text()})
            } else {
                json!({"since": since, "pending": queue.pending(), "share": spec.key, "written": now_text()})
            };
            if let Some(r) = &rev {
                doc["_rev"] = json!(r);
            }
            match spec.target.0.put_document(&spec.target.1, &checkpoint_id(&spec.uid), &doc).await {
                Ok(r) => {
                    rev = Some(r);
                    written = Some((since.clone(), version));
                }
                Err(e) if e.is_conflict() => {
                    rev = read_checkpoint(&spec.target, &spec.uid).await.ok().flatten().and_then(|c| c.rev);
                }
                Err(e) => tracing::debug!(error = %e, "could not write the on-change checkpoint"),
            }
            last_checkpoint = Instant::now();
        }
        let retry_at = queue.next_retry();
        let status_due = dirty;
        let wake = [
            retry_at,
            written
                .as_ref()
                .is_none_or(|(s, v)| *s != since || *v != queue.version())
                .then(|| last_checkpoint + CHECKPOINT_EVERY),
            status_due.then(|| last_status + STATUS_EVERY),
            (!feed).then_some(next_pass),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                let Ok((db, ended, docs, seq)) = done else { continue };
                tracing::debug!(database = %db, ended = ?ended, docs, "on-change replication ended");
                queue.replicated_to(&db, seq);
                shared.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&db);
                if let Ended::Failed(error) = &ended {
                    tracing::debug!(database = %db, error = %error, "one-shot replication failed; retried with backoff");
                    metrics.on_change_failed(&ns, &name);
                }
                metrics.on_change_written(&ns, &name, docs);
                if let Some(lag) = queue.finished(&db, ended, Instant::now()) {
                    metrics.on_change_lag(&ns, &name, lag);
                }
            }
            Some(event) = feed_rx.recv() => match event {
                Feed::Events(batch) => {
                    let on_feed = batch.source == EventSource::Feed;
                    if on_feed != feed {
                        feed = on_feed;
                        next_pass = Instant::now() + spec.resync;
                    }
                    if batch.gap {
                        full_pass(&spec, &names, &mut queue).await;
                    }
                    let at = Instant::now();
                    for u in batch.updates {
                        if !is_source(&spec.membership, &names, &spec.target.1, &u.db_name) {
                            continue;
                        }
                        match u.kind.as_str() {
                            "deleted" => queue.deleted(&u.db_name),
                            _ => {
                                queue.changed(&u.db_name, at);
                            }
                        }
                    }
                    since = batch.position;
                }
                Feed::Broken(error) => {
                    // Back again: whatever changed while it was down is found by a full pass.
                    if error.is_none() && feed_error.is_some() {
                        full_pass(&spec, &names, &mut queue).await;
                    }
                    feed_error = error.map(|e| format!("_db_updates: {e}"));
                    shared.snapshot.lock().unwrap_or_else(|p| p.into_inner()).error = feed_error.clone();
                    requeue(&trigger);
                }
            },
            Ok(()) = names_rx.changed() => {
                let new = names_rx.borrow_and_update().clone();
                for gone in names.difference(&new) {
                    queue.deleted(gone);
                }
                let added: Vec<String> = new.difference(&names).cloned().collect();
                names = new;
                for db in added {
                    if is_source(&spec.membership, &names, &spec.target.1, &db) {
                        queue.discover(&db, false);
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if !feed && Instant::now() >= next_pass {
                    full_pass(&spec, &names, &mut queue).await;
                    next_pass = Instant::now() + spec.resync;
                }
            }
        }
    }
}

/// Every source replicated once more (those that are new found by listing again); sources no
/// longer listed are forgotten.
async fn full_pass(spec: &EngineSpec, names: &BTreeSet<String>, queue: &mut FanInQueue) {
    match list(spec, names).await {
        Ok(listed) => {
            let listed_set: BTreeSet<&String> = listed.iter().collect();
            for db in queue.states().keys() {
                if !listed_set.contains(db) {
                    queue.deleted(db);
                }
            }
            for db in &listed {
                queue.recheck(db);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing the on-change sources failed; next pass retries"),
    }
}

struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_databases_and_the_target_are_never_sources() {
        let prefix = Membership::Prefix("userdb-".into());
        let none = BTreeSet::new();
        assert!(is_source(&prefix, &none, "analytics", "userdb-6a6f"));
        assert!(!is_source(&prefix, &none, "analytics", "analytics"));
        assert!(!is_source(&prefix, &none, "userdb-all", "userdb-all"), "the target, even when it matches");
        assert!(!is_source(&prefix, &none, "analytics", "_users"));
        assert!(!is_source(&prefix, &none, "analytics", "userdb-x/_replicator"));
        assert!(!is_source(&prefix, &none, "analytics", "other"));
        let names: BTreeSet<String> = ["userdb-61".to_string()].into();
        assert!(is_source(&Membership::Names, &names, "t", "userdb-61"));
        assert!(!is_source(&Membership::Names, &names, "t", "userdb-62"));
    }
}
