//! One on-change engine's run: list the sources, follow `_db_updates` (or a listing), replicate
//! each changed source by a one-shot `_replicate`, checkpoint, publish counts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::checkpoint::{checkpoint_id, read_checkpoint};
use super::sources::{full_pass, is_source, start};
use super::spec::*;
use crate::api::{OnChangeFailure, OnChangeStatus};
use crate::controller::runtime::backoff::delay;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::requeues::ShareTrigger;
use crate::controller::triggers::db_events::{Batch, DbEvents, EventSource};
use crate::plan::onchange::{Ended, FanInQueue, seq_number};

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

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

/// The engine task.
pub(super) async fn run(
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

struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}
