//! `--fan-in`: N per-user databases (made as the app makes them: `q=1`, one document each,
//! no `_users` documents — hashing 10,000 passwords would measure PBKDF2, not replication)
//! replicated into one main database, two ways in the same run on the same server:
//!
//! - **baseline**: what the seed's author does, one continuous `_replicator` document per
//!   database (CouchDB runs `replicator/max_jobs` of them and rotates the rest);
//! - **ours**: one CouchShare, `source.perUserDatabases` with `strategy: OnChange`.
//!
//! For each: time to the first full sync, CouchDB requests per second and CPU while idle and
//! under the write load (1% of the databases written per minute, by default), p50/p99 lag
//! from a write to its arrival in the main database, peak replication jobs
//! (`_scheduler/jobs`), and for ours the operator's peak RSS. The bench's own requests are
//! counted and taken off CouchDB's request figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use couchshare::couch::{ChangesQuery, CouchClient, CreateDatabase, FeedMode};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::k8s::{apply, manifest, ready, wait};
use crate::metrics::{peak_rss_kib, percentile};
use crate::{Args, Run};

/// What one way of replicating measured.
#[derive(Debug, Default, Clone)]
pub struct Way {
    pub first_full_sync: Option<Duration>,
    pub idle_rps: Option<f64>,
    pub idle_cpu: Option<f64>,
    pub load_rps: Option<f64>,
    pub load_cpu: Option<f64>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub arrived: usize,
    pub written: usize,
    pub peak_jobs: usize,
    pub peak_rss_mib: Option<f64>,
    /// The operator's CouchDB calls during the idle window, by call.
    pub idle_calls: crate::metrics::Counts,
}

/// Requests the bench itself made to CouchDB (taken off CouchDB's count).
static OWN_REQUESTS: AtomicU64 = AtomicU64::new(0);

fn own(n: u64) {
    OWN_REQUESTS.fetch_add(n, Ordering::Relaxed);
}

fn source_name(tag: &str, i: usize) -> String {
    format!("op-{tag}-userdb-{}", hex::encode(format!("user{i:06}")))
}

/// A GET of a server-wide path as the admin (`_node/_local/_stats/...`, `_scheduler/jobs`).
async fn get_json(run: &Run, path: &str) -> Option<Value> {
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
async fn couch_request_count(run: &Run) -> Option<f64> {
    let stats = get_json(run, "/_node/_local/_stats/couchdb/httpd/requests").await?;
    stats.get("value").and_then(Value::as_f64)
}

/// CPU seconds used so far by the processes listening on CouchDB's port.
fn couch_cpu_seconds(pids: &[u32]) -> Option<f64> {
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
async fn window_figures(run: &Run, pids: &[u32], window: Duration) -> (Option<f64>, Option<f64>) {
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
async fn jobs(run: &Run) -> usize {
    get_json(run, "/_scheduler/jobs?limit=0").await.and_then(|v| v.get("total_rows")?.as_u64()).unwrap_or(0) as usize
}

/// The number of documents in `db`.
async fn doc_count(couch: &CouchClient, db: &str) -> u64 {
    own(1);
    couch.database_info(db).await.map(|i| i.doc_count).unwrap_or(0)
}

/// Makes the N source databases with one document each.
async fn make_sources(couch: &CouchClient, run: &Run, n: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| async move {
            let db = source_name(&run.tag, i);
            own(2);
            couch.create_database(&db, &CreateDatabase { q: Some(1), ..Default::default() }).await?;
            couch.put_document(&db, &format!("seed-{i}"), &json!({"user": i})).await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.context("making a source database")?;
    }
    Ok(started.elapsed())
}

/// Waits until `target` holds `n` documents (or `limit` passes), sampling the scheduler's jobs.
async fn first_sync(
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
struct Load {
    n: usize,
    per_minute: f64,
    minutes: f64,
    drain: Duration,
}

async fn load(
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

fn summarise(lags: &mut [Duration], written: usize, way: &mut Way) {
    way.arrived = lags.len();
    way.written = written;
    if !lags.is_empty() {
        way.p50 = Some(percentile(lags, 0.50));
        way.p99 = Some(percentile(lags, 0.99));
    }
}

/// The whole fan-in bench.
pub async fn run(args: &Args, run: &Run, couch: &CouchClient, pids: &[u32]) -> anyhow::Result<(Way, Way)> {
    let n = args.dbs;
    let per_minute = n as f64 * args.write_percent / 100.0;
    let sync_limit = Duration::from_secs(args.sync_limit_secs);
    let drain = Duration::from_secs(args.drain_secs);
    let idle = Duration::from_secs(args.idle_secs);
    let shape = Load { n, per_minute, minutes: args.minutes, drain };
    eprintln!("fan-in: making {n} source databases (q=1, one document each, no _users documents)");
    let made = make_sources(couch, run, n, args.concurrency).await?;
    eprintln!("fan-in: made in {made:.1?}");
    // The operator and its CouchServer first, so both ways run under the same server settings.
    let settings = json!({"replicator/startup_jitter": args.startup_jitter_ms.to_string()});
    let server = json!({"trustedNamespaces": {"from": "Same"}, "config": {"settings": settings}});
    let operator = crate::phases::start_operator_with(args, run, server).await?;
    let base_target = format!("base-{}-main", run.tag);
    own(1);
    couch.create_database(&base_target, &Default::default()).await?;

    // Baseline: one continuous _replicator document per database.
    let mut base = Way::default();
    let creds = json!({"basic": {"username": run.couch_user, "password": run.couch_password}});
    let url = run.couch_url.trim_end_matches('/').to_string();
    eprintln!("fan-in: baseline, {n} continuous _replicator documents");
    let started = Instant::now();
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            json!({"_id": format!("base-{}-fan-{i}", run.tag), "continuous": true,
                "source": {"url": format!("{url}/{}", source_name(&run.tag, i)), "auth": creds},
                "target": {"url": format!("{url}/{base_target}"), "auth": creds}})
        })
        .collect();
    for chunk in docs.chunks(500) {
        own(1);
        couch.bulk_docs("_replicator", chunk).await?;
    }
    base.first_full_sync = first_sync(run, couch, &base_target, n as u64, sync_limit, &mut base.peak_jobs)
        .await
        .map(|_| started.elapsed());
    eprintln!("fan-in: baseline first full sync {:?}", base.first_full_sync);
    (base.idle_rps, base.idle_cpu) = window_figures(run, pids, idle).await;
    let load_started = Instant::now();
    let load_figures = window_figures(run, pids, Duration::from_secs_f64(args.minutes * 60.0));
    let ((mut lags, written), (rps, cpu)) =
        tokio::join!(load(couch, run, "base", &base_target, shape, &mut base.peak_jobs), load_figures);
    (base.load_rps, base.load_cpu) = (rps, cpu);
    summarise(&mut lags, written, &mut base);
    eprintln!(
        "fan-in: baseline load done in {:.0?}: {}/{} arrived",
        load_started.elapsed(),
        base.arrived,
        base.written
    );
    // Stop the baseline before ours starts.
    let ids: Vec<String> = (0..n).map(|i| format!("base-{}-fan-{i}", run.tag)).collect();
    for chunk in ids.chunks(500) {
        own(1);
        let all = couch
            .all_docs(
                "_replicator",
                &couchshare::couch::AllDocsQuery { keys: Some(chunk.to_vec()), ..Default::default() },
            )
            .await?;
        let tombstones: Vec<Value> = all
            .rows
            .into_iter()
            .filter_map(|r| Some(json!({"_id": r.id?, "_rev": r.value?.rev, "_deleted": true})))
            .collect();
        own(1);
        couch.bulk_docs("_replicator", &tombstones).await?;
    }
    let stopping = Instant::now();
    while jobs(run).await > 0 && stopping.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Ours: one on-change share.
    let mut ours = Way::default();
    eprintln!("fan-in: ours, one CouchShare with strategy OnChange, maxConcurrent {}", args.k);
    let db = manifest(
        "CouchDatabase",
        "main-db",
        json!({"serverRef": {"name": "main"}, "name": format!("op-{}-main", run.tag)}),
    );
    apply(&run.client, &run.ns, db).await?;
    let target = format!("op-{}-main", run.tag);
    let dbs = kube::Api::<couchshare::api::CouchDatabase>::namespaced(run.client.clone(), &run.ns);
    wait(Duration::from_secs(60), || async { dbs.get("main-db").await.is_ok_and(|d| ready(&d)) }).await?;
    let started = Instant::now();
    let share = manifest(
        "CouchShare",
        "fan-in",
        json!({"source": {"perUserDatabases": {"prefix": format!("op-{}-userdb-", run.tag)}},
               "target": {"database": {"name": "main-db"}}, "strategy": "OnChange",
               "maxConcurrent": args.k, "credentials": "Admin"}),
    );
    apply(&run.client, &run.ns, share).await?;
    ours.first_full_sync =
        first_sync(run, couch, &target, n as u64, sync_limit, &mut ours.peak_jobs).await.map(|_| started.elapsed());
    eprintln!("fan-in: ours first full sync {:?}", ours.first_full_sync);
    let calls = async || {
        let page = crate::metrics::page(&operator.metrics_url).await.unwrap_or_default();
        crate::metrics::counter_by(&page, "couchshare_couchdb_requests_total", "call")
    };
    let before = calls().await;
    (ours.idle_rps, ours.idle_cpu) = window_figures(run, pids, idle).await;
    ours.idle_calls = crate::metrics::delta(&calls().await, &before);
    let load_figures = window_figures(run, pids, Duration::from_secs_f64(args.minutes * 60.0));
    let ((mut lags, written), (rps, cpu)) =
        tokio::join!(load(couch, run, "ours", &target, shape, &mut ours.peak_jobs), load_figures);
    (ours.load_rps, ours.load_cpu) = (rps, cpu);
    summarise(&mut lags, written, &mut ours);
    ours.peak_rss_mib = peak_rss_kib(operator.pid()).map(|k| k as f64 / 1024.0);
    drop(operator);
    Ok((base, ours))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn num(v: Option<f64>, unit: &str) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}{unit}"))
}

/// Prints both ways side by side, the goals, and writes the JSON.
pub fn report(args: &Args, base: &Way, ours: &Way, couchdb: &str, out: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "fan-in bench: {} databases on {couchdb}, {}% written per minute for {} min, maxConcurrent {}",
        args.dbs, args.write_percent, args.minutes, args.k
    );
    println!("{:<38} {:>22} {:>22}", "", "baseline (continuous)", "ours (on change)");
    let row = |name: &str, a: String, b: String| println!("{name:<38} {a:>22} {b:>22}");
    row("first full sync", secs(base.first_full_sync), secs(ours.first_full_sync));
    row("lag p50", secs(base.p50), secs(ours.p50));
    row("lag p99", secs(base.p99), secs(ours.p99));
    row(
        "writes arrived / written",
        format!("{}/{}", base.arrived, base.written),
        format!("{}/{}", ours.arrived, ours.written),
    );
    row("peak replication jobs", base.peak_jobs.to_string(), ours.peak_jobs.to_string());
    row("CouchDB requests/s, idle", num(base.idle_rps, ""), num(ours.idle_rps, ""));
    row("CouchDB requests/s, under load", num(base.load_rps, ""), num(ours.load_rps, ""));
    row("CouchDB CPU (cores), idle", num(base.idle_cpu, ""), num(ours.idle_cpu, ""));
    row("CouchDB CPU (cores), under load", num(base.load_cpu, ""), num(ours.load_cpu, ""));
    row("operator peak RSS", "-".into(), num(ours.peak_rss_mib, " MiB"));
    println!(
        "operator's CouchDB calls in the {} s idle window: {}",
        args.idle_secs,
        crate::metrics::show(&ours.idle_calls)
    );
    let goal = |name: &str, met: Option<bool>, figure: String| {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("goal {name:<52} {figure:>24}  {verdict}");
    };
    let all_arrived = ours.arrived == ours.written;
    goal(
        "p99 lag < 5 s with <= 20 jobs",
        ours.p99.map(|p| p < Duration::from_secs(5) && ours.peak_jobs <= 20 && all_arrived),
        format!("{} / {} jobs", secs(ours.p99), ours.peak_jobs),
    );
    // Idle, the fan-in makes no call but its _db_updates longpoll (the operator's resync and
    // `_security` audit are its own, and counted above).
    let fan_in_idle = ours.idle_calls.keys().filter(|c| matches!(c.as_str(), "/_replicate" | "/_all_dbs")).count();
    goal(
        "idle: the fan-in's only CouchDB call is _db_updates",
        Some(fan_in_idle == 0 && ours.idle_calls.contains_key("/_db_updates")),
        format!("{} req/s in all", num(ours.idle_rps, "")),
    );
    goal("operator RSS < 100 MiB", ours.peak_rss_mib.map(|r| r < 100.0), num(ours.peak_rss_mib, " MiB"));
    let ratio = match (base.p99, ours.p99) {
        (Some(b), Some(o)) if o > Duration::ZERO && base.arrived == base.written => {
            Some(b.as_secs_f64() / o.as_secs_f64())
        }
        _ => None,
    };
    // A baseline whose writes did not all arrive has a p99 beyond the drain time.
    let ratio_text = match ratio {
        Some(r) => format!("{r:.1}x"),
        None if base.arrived < base.written => {
            format!("> {:.1}x", args.drain_secs as f64 / ours.p99.map_or(f64::INFINITY, |p| p.as_secs_f64()))
        }
        None => "n/a".into(),
    };
    let met = ratio.map(|r| r >= 10.0).or_else(|| {
        (base.arrived < base.written)
            .then(|| ours.p99.is_some_and(|p| args.drain_secs as f64 / p.as_secs_f64() >= 10.0))
    });
    goal("p99 lag >= 10x lower than the baseline's", met, ratio_text);
    let json = json!({
        "dbs": args.dbs, "write_percent_per_minute": args.write_percent, "minutes": args.minutes, "k": args.k,
        "couchdb": couchdb,
        "baseline": way_json(base), "ours": way_json(ours),
    });
    std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

fn way_json(w: &Way) -> Value {
    json!({
        "first_full_sync_s": w.first_full_sync.map(|d| d.as_secs_f64()),
        "lag_p50_s": w.p50.map(|d| d.as_secs_f64()), "lag_p99_s": w.p99.map(|d| d.as_secs_f64()),
        "arrived": w.arrived, "written": w.written, "peak_jobs": w.peak_jobs,
        "idle_rps": w.idle_rps, "load_rps": w.load_rps, "idle_cpu": w.idle_cpu, "load_cpu": w.load_cpu,
        "peak_rss_mib": w.peak_rss_mib, "idle_calls": w.idle_calls,
    })
}

/// `replicator/startup_jitter` as the node says it now, to put back after the run.
pub async fn jitter_before(couch: &CouchClient) -> Option<String> {
    couch.config_get("_local", "replicator", "startup_jitter").await.ok().flatten()
}

/// Puts `replicator/startup_jitter` back on every node (the operator is stopped by now).
pub async fn restore_jitter(couch: &CouchClient, before: Option<String>) {
    let nodes = couch.membership().await.map(|m| m.all_nodes).unwrap_or_default();
    for node in nodes {
        let done = match &before {
            Some(v) => couch.config_set(&node, "replicator", "startup_jitter", v).await.map(drop),
            None => couch.config_delete(&node, "replicator", "startup_jitter").await.map(drop),
        };
        if let Err(e) = done {
            eprintln!("bench: could not restore replicator/startup_jitter on {node}: {e}");
        }
    }
}
