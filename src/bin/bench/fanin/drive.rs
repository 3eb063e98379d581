//! One fan-in run: both ways, one after the other, on the same server.

use std::time::{Duration, Instant};

use couchshare::couch::CouchClient;
use serde_json::{Value, json};

use super::measure::*;
use super::setup::make_sources;
use super::{Way, own, source_name};
use crate::k8s::{apply, manifest, ready, wait};
use crate::metrics::peak_rss_kib;
use crate::{Args, Run};

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
