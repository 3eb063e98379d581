//! What the fan-in bench measures: CouchDB's request rate and CPU over a window, replication
//! jobs, the first full sync, and the lag from a write to its arrival under load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use couchshare::couch::{ChangesQuery, CouchClient, FeedMode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{OWN_REQUESTS, Way, own, source_name};
use crate::Run;
use crate::metrics::percentile;

/// A GET of a server-wide path as the admin (`_node/_local/_stats/...`, `_scheduler/jobs`).
pub(super) async fn get_json(run: &Run, path: &str) -> Option<Value> {
    own(1);
    let http = reqwest::Client::new();
    let url = format!("{}{path}", run.couch_url.trim_end_matches('/'));
    let answer = http.get(url).basic_auth(&run.couch_user, Some(&run.couch_password)).send().await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// CouchDB's request counter (`_node/_local/_stats`), summed over the nodes the request
/// reaches; `None` where there is none (pouchdb-server).
pub(super) async fn couch_request_count(run: &Run) -> Option<f64> {
    let stats = get_json(run, "/_node/_local/_stats/couchdb/httpd/requests").await?;
    stats.get("value").and_then(Value::as_f64)
}

/// CPU seconds used so far by the processes listening on CouchDB's port.
pub(super) fn couch_cpu_seconds(pids: &[u32]) -> Option<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// Requests per second and CPU share of CouchDB over `window`, the bench's own requests taken off.
pub(super) async fn window_figures(run: &Run, pids: &[u32], window: Duration) -> (Option<f64>, Option<f64>) {
    let (r0, c0, o0, t0) =
        (couch_request_count(run).await, couch_cpu_seconds(pids), OWN_REQUESTS.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    let (r1, c1, o1) = (couch_request_count(run).await, couch_cpu_seconds(pids), OWN_REQUESTS.load(Ordering::Relaxed));
    let secs = t0.elapsed().as_secs_f64();
    let rps = match (r0, r1) {
        (Some(a), Some(b)) => Some(((b - a) - (o1 - o0) as f64).max(0.0) / secs),
        _ => None,
    };
    let cpu = match (c0, c1) {
        (Some(a), Some(b)) => Some((b - a) / secs),
        _ => None,
    };
    (rps, cpu)
}

/// Replication jobs CouchDB's scheduler holds now.
pub(super) async fn jobs(run: &Run) -> usize {
    get_json(run, "/_scheduler/jobs?limit=0").await.and_then(|v| v.get("total_rows")?.as_u64()).unwrap_or(0) as usize
}

/// The number of documents in `db`.
pub(super) async fn doc_count(couch: &CouchClient, db: &str) -> u64 {
    own(1);
    couch.database_info(db).await.map(|i| i.doc_count).unwrap_or(0)
}

/// Waits until `target` holds `n` documents (or `limit` passes), sampling the scheduler's jobs.
pub(super) async fn first_sync(
    run: &Run,
    couch: &CouchClient,
    target: &str,
    n: u64,
    limit: Duration,
    peak: &mut usize,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        *peak = (*peak).max(jobs(run).await);
        if doc_count(couch, target).await >= n {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// The write load: `per_minute` writes a minute to random sources for `minutes`, while the
/// target's changes feed records when each arrives. Returns (lags, written) after waiting up to
/// `drain` for the stragglers; peak jobs sampled once a second.
/// The write load's shape.
#[derive(Clone, Copy)]
pub(super) struct Load {
    pub(super) n: usize,
    pub(super) per_minute: f64,
    pub(super) minutes: f64,
    pub(super) drain: Duration,
}

pub(super) async fn load(
    couch: &CouchClient,
    run: &Run,
    way: &str,
    target: &str,
    shape: Load,
    peak: &mut usize,
) -> (Vec<Duration>, usize) {
    let Load { n, per_minute, minutes, drain } = shape;
    let written: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    own(1);
    let since = couch
        .changes(target, &ChangesQuery { since: Some(json!("now")), ..Default::default() })
        .await
        .map(|c| c.last_seq)
        .unwrap_or(json!("now"));
    let watcher = {
        let (couch, arrived, target) = (couch.clone(), arrived.clone(), target.to_string());
        tokio::spawn(async move {
            let mut since = since;
            loop {
                own(1);
                let q = ChangesQuery {
                    feed: FeedMode::Longpoll,
                    since: Some(since.clone()),
                    timeout: Some(Duration::from_secs(20)),
                    ..Default::default()
                };
                match couch.changes(&target, &q).await {
                    Ok(c) => {
                        let now = Instant::now();
                        let mut a = arrived.lock().await;
                        for ch in c.results {
                            a.entry(ch.id).or_insert(now);
                        }
                        since = c.last_seq;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    };
    let interval = Duration::from_secs_f64(60.0 / per_minute.max(0.001));
    let total = (per_minute * minutes).round() as usize;
    let mut tick = tokio::time::interval(interval);
    let mut last_sample = Instant::now();
    for w in 0..total {
        tick.tick().await;
        let i = rand::random_range(0..n);
        let id = format!("w-{way}-{w}");
        let couch = couch.clone();
        let db = source_name(&run.tag, i);
        let written = written.clone();
        tokio::spawn(async move {
            own(1);
            let at = Instant::now();
            if couch.put_document(&db, &id, &json!({"w": w})).await.is_ok() {
                written.lock().await.insert(id, at);
            }
        });
        if last_sample.elapsed() >= Duration::from_secs(1) {
            *peak = (*peak).max(jobs(run).await);
            last_sample = Instant::now();
        }
    }
    let deadline = Instant::now() + drain;
    loop {
        let done = {
            let (w, a) = (written.lock().await, arrived.lock().await);
            w.keys().all(|k| a.contains_key(k))
        };
        if done || Instant::now() >= deadline {
            break;
        }
        *peak = (*peak).max(jobs(run).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watcher.abort();
    let (w, a) = (written.lock().await, arrived.lock().await);
    let lags = w.iter().filter_map(|(id, at)| a.get(id).map(|got| got.saturating_duration_since(*at))).collect();
    (lags, w.len())
}

pub(super) fn summarise(lags: &mut [Duration], written: usize, way: &mut Way) {
    way.arrived = lags.len();
    way.written = written;
    if !lags.is_empty() {
        way.p50 = Some(percentile(lags, 0.50));
        way.p99 = Some(percentile(lags, 0.99));
    }
}
