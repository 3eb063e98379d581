//! The operator's phases: start it, bulk apply → all Ready, steady state, and the latencies
//! (apply → Ready, drift repair, revocation).

use std::time::{Duration, Instant};

use anyhow::bail;
use couchshare::api::{CouchDatabase, CouchServer, CouchShare};
use couchshare::couch::CouchClient;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::baseline::share_ends;
use crate::k8s::{Operator, apply, manifest, not_ready, ready, versions, wait};
use crate::metrics::{Counts, api_writes, audit_reads, couch_requests, counter_by, delta, page, peak_rss_kib};
use crate::{Args, Run};

/// Creates the namespace, starts the operator and waits for its CouchServer to be Ready.
pub async fn start_operator(args: &Args, run: &Run) -> anyhow::Result<Operator> {
    start_operator_with(args, run, json!({})).await
}

/// [`start_operator`], with more of the CouchServer's spec.
pub async fn start_operator_with(args: &Args, run: &Run, server: Value) -> anyhow::Result<Operator> {
    let ns_obj: Namespace = serde_json::from_value(json!({"metadata": {"name": run.ns}}))?;
    Api::<Namespace>::all(run.client.clone()).create(&PostParams::default(), &ns_obj).await?;
    let log = std::env::temp_dir().join(format!("couchshare-bench-{}.log", run.tag));
    let operator = Operator::start(&run.ns, args.concurrency, args.resync_secs, &log)?;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "couchdb-admin"},
        "stringData": {"username": run.couch_user, "password": run.couch_password}});
    apply(&run.client, &run.ns, secret).await?;
    let mut spec = json!({"url": run.couch_url, "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}});
    if let (Some(spec), Some(more)) = (spec.as_object_mut(), server.as_object()) {
        spec.extend(more.clone());
    }
    apply(&run.client, &run.ns, manifest("CouchServer", "main", spec)).await?;
    let servers = Api::<CouchServer>::namespaced(run.client.clone(), &run.ns);
    wait(Duration::from_secs(60), || async { servers.get("main").await.is_ok_and(|s| ready(&s)) }).await?;
    Ok(operator)
}

/// Stops nothing: starts another operator process for the steady phase, with
/// `--steady-resync-secs` (the caller has dropped the bulk's).
pub fn restart_operator(args: &Args, run: &Run) -> anyhow::Result<Operator> {
    let log = std::env::temp_dir().join(format!("couchshare-bench-{}-steady.log", run.tag));
    Operator::start(&run.ns, args.concurrency, args.steady_resync_secs, &log)
}

fn bulk_manifests(n: usize, shares: usize, tag: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let server = json!({"name": "main"});
        out.push(manifest(
            "CouchDatabase",
            &format!("db-{i}"),
            json!({"serverRef": server, "name": format!("op-{tag}-db-{i}")}),
        ));
        out.push(manifest(
            "CouchUser",
            &format!("user-{i}"),
            json!({"serverRef": server, "username": format!("op-{tag}-user-{i}")}),
        ));
        let grant = json!({"database": {"name": format!("db-{i}")}, "users": [{"name": format!("user-{i}")}]});
        out.push(manifest("CouchGrant", &format!("grant-{i}"), grant));
    }
    for j in 0..shares {
        let (a, b) = share_ends(j, n, shares);
        let spec = json!({"source": {"database": {"name": format!("db-{a}")}},
            "target": {"database": {"name": format!("db-{b}")}}, "continuous": false});
        out.push(manifest("CouchShare", &format!("share-{j}"), spec));
    }
    out
}

/// The bulk phase's figures.
pub struct Bulk {
    pub operator_time: Duration,
    pub applied_in: Duration,
    pub rss_kib: u64,
    /// API-server writes by `verb resource`, less the bench's own applies.
    pub api_writes: Counts,
    pub reconciles: Counts,
    pub reconcile_seconds: Counts,
    /// CouchDB requests by method, and their summed seconds.
    pub couch_counts: Counts,
    pub couch_seconds: Counts,
    pub calls: Counts,
    /// `_security` reads of the operator's audit among those requests (a fixed rate, not a
    /// per-object cost).
    pub audit_reads: f64,
}

impl Bulk {
    /// The objects applied: n databases, users and grants, and the shares.
    pub fn objects(&self, run: &Run) -> usize {
        3 * run.n + run.shares
    }
}

/// Applies every object at once and waits until all are Ready.
pub async fn bulk(run: &Run, operator: &Operator) -> anyhow::Result<Bulk> {
    let api_before = api_writes(&run.client).await?;
    let before = page(&operator.metrics_url).await?;
    let started = Instant::now();
    let applied: Vec<anyhow::Result<()>> = stream::iter(bulk_manifests(run.n, run.shares, &run.tag))
        .map(|m| apply(&run.client, &run.ns, m))
        .buffer_unordered(32)
        .collect()
        .await;
    applied.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let applied_in = started.elapsed();
    eprintln!("bench: {} objects applied to the API server in {applied_in:?}", 3 * run.n + run.shares);
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let counts = not_ready(&run.client, &run.ns).await?;
        eprintln!("bench: {:>6.1} s not Ready: {counts:?}", started.elapsed().as_secs_f64());
        if counts.values().all(|c| *c == 0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("not Ready after an hour: {counts:?}");
        }
        // Listing thousands of objects is work for the API server too: poll gently.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let operator_time = started.elapsed();
    let rss_kib = peak_rss_kib(operator.pid()).unwrap_or(0);
    let mut writes = delta(&api_writes(&run.client).await?, &api_before);
    for (kind, count) in
        [("couchdatabases", run.n), ("couchusers", run.n), ("couchgrants", run.n), ("couchshares", run.shares)]
    {
        if let Some(v) = writes.get_mut(&format!("APPLY {kind}")) {
            *v -= count as f64;
        }
    }
    writes.retain(|_, v| *v > 0.0);
    let after = page(&operator.metrics_url).await?;
    let grew =
        |family: &str, label: &str| delta(&counter_by(&after, family, label), &counter_by(&before, family, label));
    Ok(Bulk {
        operator_time,
        applied_in,
        rss_kib,
        api_writes: writes,
        reconciles: grew("couchshare_reconciles_total", "kind"),
        reconcile_seconds: grew("couchshare_reconcile_duration_seconds_sum", "kind"),
        couch_counts: grew("couchshare_couchdb_request_duration_seconds_count", "method"),
        couch_seconds: grew("couchshare_couchdb_request_duration_seconds_sum", "method"),
        calls: grew("couchshare_couchdb_request_duration_seconds_count", "method+call"),
        audit_reads: grew("couchshare_security_audit_reads_total", "namespace").values().sum::<f64>().max(0.0),
    })
}

/// How many objects of `kind` the bulk applied (the CouchServer: one).
pub fn objects_of(run: &Run, kind: &str) -> usize {
    match kind {
        "CouchShare" => run.shares,
        "CouchServer" => 1,
        _ => run.n,
    }
}

/// Where the bulk time went, on stderr.
pub fn print_profile(run: &Run, bulk: &Bulk) {
    let objects = bulk.objects(run) as f64;
    eprintln!("bench: operator bulk {:?}, peak RSS {} KiB", bulk.operator_time, bulk.rss_kib);
    for (what, count) in &bulk.api_writes {
        eprintln!("bench: bulk API-server writes {what}: {count} ({:.2} per object)", count / objects);
    }
    for (kind, count) in &bulk.reconciles {
        let mean = bulk.reconcile_seconds.get(kind).copied().unwrap_or(0.0) / count * 1000.0;
        let per = count / objects_of(run, kind).max(1) as f64;
        eprintln!("bench: bulk reconciles {kind}: {count} ({per:.2} per object, mean {mean:.0} ms)");
    }
    // Where the requests went, most first: what observation costs, call by call.
    let mut calls: Vec<(&String, &f64)> = bulk.calls.iter().collect();
    calls.sort_by(|a, b| b.1.total_cmp(a.1));
    for (call, count) in calls {
        eprintln!("bench: bulk CouchDB call {call}: {count} ({:.2} per object)", count / objects);
    }
    for (method, count) in &bulk.couch_counts {
        let mean = bulk.couch_seconds.get(method).copied().unwrap_or(0.0) / count * 1000.0;
        eprintln!("bench: bulk CouchDB {method}: {count} (mean {mean:.1} ms)");
    }
    eprintln!("bench: bulk CouchDB `_security` audit reads (among the GETs): {}", bulk.audit_reads);
}

/// Steady state over two resync periods with nothing changing.
pub struct Steady {
    pub couch_writes: f64,
    pub api_writes: usize,
    pub reads_per_resource_period: f64,
    pub reconciles_per_resource_period: f64,
    pub audit_per_second: f64,
    /// The restarted operator's first look at everything: reconciles and CouchDB writes.
    pub restart_reconciles: f64,
    pub restart_couch_writes: f64,
}

pub async fn steady(args: &Args, run: &Run, operator: &Operator) -> anyhow::Result<Steady> {
    let period = Duration::from_secs(args.steady_resync_secs);
    wait(Duration::from_secs(60), || async { page(&operator.metrics_url).await.is_ok() }).await?;
    tokio::time::sleep(period).await;
    let restarted = page(&operator.metrics_url).await?;
    let before_requests = couch_requests(&operator.metrics_url).await?;
    let before_audit = audit_reads(&operator.metrics_url).await?;
    let before_versions = versions(&run.client, &run.ns).await?;
    let started = Instant::now();
    tokio::time::sleep(2 * period).await;
    let after = page(&operator.metrics_url).await?;
    let after_requests = couch_requests(&operator.metrics_url).await?;
    let after_audit = audit_reads(&operator.metrics_url).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after_versions = versions(&run.client, &run.ns).await?;
    let grew = |m: &str| after_requests.get(m).copied().unwrap_or(0.0) - before_requests.get(m).copied().unwrap_or(0.0);
    // The `_security` audit's reads are their own figure: what it costs CouchDB, per second.
    let audit = after_audit - before_audit;
    let changed: Vec<&String> =
        after_versions.iter().filter(|(k, v)| before_versions.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    if !changed.is_empty() {
        eprintln!("bench: written at steady state: {changed:?}");
    }
    let resources = (3 * run.n + run.shares + 1) as f64;
    let reconciles = |p: &str| counter_by(p, "couchshare_reconciles_total", "kind").values().sum::<f64>();
    let writes_in = |p: &str| {
        let by = counter_by(p, "couchshare_couchdb_request_duration_seconds_count", "method");
        ["PUT", "POST", "DELETE"].iter().map(|m| by.get(*m).copied().unwrap_or(0.0)).sum::<f64>()
    };
    Ok(Steady {
        couch_writes: grew("PUT") + grew("POST") + grew("DELETE"),
        api_writes: changed.len(),
        reads_per_resource_period: (grew("GET") + grew("HEAD") - audit) / resources / 2.0,
        reconciles_per_resource_period: (reconciles(&after) - reconciles(&restarted)) / resources / 2.0,
        audit_per_second: audit / seconds,
        restart_reconciles: reconciles(&restarted),
        restart_couch_writes: writes_in(&restarted),
    })
}

/// Latency samples.
pub struct Latencies {
    pub apply_ready: Vec<Duration>,
    pub drift: Vec<Duration>,
    pub revocation: Vec<Duration>,
}

/// Apply → Ready for new databases, repair of databases deleted by hand, and revocation.
pub async fn latencies(args: &Args, run: &Run, couch: &CouchClient) -> anyhow::Result<Latencies> {
    let (client, ns, tag) = (&run.client, &run.ns, &run.tag);
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), ns);
    let mut apply_ready = Vec::new();
    for i in 0..args.samples {
        let name = format!("lat-{i}");
        let t = Instant::now();
        let spec = json!({"serverRef": {"name": "main"}, "name": format!("op-{tag}-lat-{i}")});
        apply(client, ns, manifest("CouchDatabase", &name, spec)).await?;
        wait(Duration::from_secs(60), || async { dbs.get(&name).await.is_ok_and(|d| ready(&d)) }).await?;
        apply_ready.push(t.elapsed());
    }
    let mut drift = Vec::new();
    for i in 0..args.samples.min(args.drift_samples) {
        let db = format!("op-{tag}-lat-{i}");
        couch.delete_database(&db).await?;
        drift.push(
            wait(Duration::from_secs(120), || async { couch.database_exists(&db).await.unwrap_or(false) }).await?,
        );
    }
    let shares = Api::<CouchShare>::namespaced(client.clone(), ns);
    let mut revocation = Vec::new();
    for i in 0..(args.samples / 2).min(10) {
        let name = format!("rev-{i}");
        let spec = json!({"source": {"database": {"name": format!("lat-{}", 2 * i)}},
            "target": {"database": {"name": format!("lat-{}", 2 * i + 1)}}});
        apply(client, ns, manifest("CouchShare", &name, spec)).await?;
        wait(Duration::from_secs(60), || async { shares.get(&name).await.is_ok_and(|s| ready(&s)) }).await?;
        let id = format!("couchshare_{ns}_{name}_fwd");
        let t = Instant::now();
        shares.delete(&name, &DeleteParams::default()).await?;
        wait(Duration::from_secs(60), || async {
            couch.get_replication_doc("_replicator", &id).await.is_ok_and(|d| d.is_none())
        })
        .await?;
        revocation.push(t.elapsed());
    }
    Ok(Latencies { apply_ready, drift, revocation })
}
