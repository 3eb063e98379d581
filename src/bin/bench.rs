//! Benchmark: bulk apply → Ready against the operator vs the same CouchDB calls made directly
//! (the baseline, in the same run), steady-state request counts, apply/drift/revocation
//! latencies and the operator's peak memory. Prints a table and writes JSON.
//!
//! Needs `KUBECONFIG` (with the CRDs installed), `COUCHDB_URL`, `COUCHDB_USER`,
//! `COUCHDB_PASSWORD`, and the `couchshare` binary next to this one. `tools/bench` sets all
//! of that up. Figures are printed, never asserted: these machines are noisy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::couch::{CouchClient, CouchConfig, CreateDatabase, Credentials, UserDoc};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "couchshare benchmark: operator vs direct CouchDB calls")]
struct Args {
    /// CouchDatabases, CouchUsers and CouchGrants each; CouchShares are n/5.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Samples for the latency figures.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Resync interval given to the operator (steady state is measured over two of them).
    #[arg(long, default_value_t = 10)]
    resync_secs: u64,
    /// Drift-repair samples (each one waits for the resync where the server has no
    /// `_db_updates`, as pouchdb-server).
    #[arg(long, default_value_t = 20)]
    drift_samples: usize,
    /// Requests in flight at once (operator concurrency and the baseline's).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop after the bulk phase (for profiling it; no latency or steady-state figures).
    #[arg(long)]
    bulk_only: bool,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
}

fn couch() -> anyhow::Result<CouchClient> {
    let url = std::env::var("COUCHDB_URL").context("COUCHDB_URL")?;
    let user = std::env::var("COUCHDB_USER").context("COUCHDB_USER")?;
    let password = std::env::var("COUCHDB_PASSWORD").context("COUCHDB_PASSWORD")?;
    Ok(CouchClient::new(CouchConfig::new(url, Some(Credentials::new(user, password))))?)
}

/// The same CouchDB calls the operator makes for one database, user, grant (and share).
async fn baseline(couch: &CouchClient, n: usize, concurrency: usize, tag: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| async move {
            let db = format!("base-{tag}-db-{i}");
            let user = format!("base-{tag}-user-{i}");
            couch.create_database(&db, &CreateDatabase::default()).await?;
            couch.put_document(&db, "_local/couchshare.io-owner", &json!({"owner": {"kind": "bench"}})).await?;
            let mut security = couch.security(&db).await?;
            security.members.names = vec![user.clone()];
            security.members.roles = vec![];
            couch.put_security(&db, &security).await?;
            couch.put_user(&UserDoc::new(&user, vec!["bench".into()], Some(format!("pw-{i}-{tag}")))).await?;
            if i % 5 == 0 && i > 0 {
                let source = format!("base-{tag}-db-{}", i - 1);
                let doc = json!({"source": {"url": format!("{}/{source}", couch.base_url().as_str().trim_end_matches('/'))},
                                 "target": {"url": format!("{}/{db}", couch.base_url().as_str().trim_end_matches('/'))},
                                 "continuous": false, "create_target": false});
                couch.put_replication_doc("_replicator", &format!("base-{tag}-{i}"), &doc).await?;
            }
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(started.elapsed())
}

fn ready<K: serde::Serialize>(obj: &K) -> bool {
    let v = serde_json::to_value(obj).unwrap_or_default();
    v["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn apply(client: &Client, ns: &str, manifest: Value) -> anyhow::Result<()> {
    let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let params = PatchParams::apply("couchshare-bench").force();
    let patch = Patch::Apply(&manifest);
    match kind.as_str() {
        "CouchDatabase" => {
            drop(Api::<CouchDatabase>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?)
        }
        "CouchUser" => drop(Api::<CouchUser>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?),
        "CouchGrant" => drop(Api::<CouchGrant>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?),
        "CouchShare" => drop(Api::<CouchShare>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?),
        "CouchServer" => drop(Api::<CouchServer>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?),
        "Secret" => drop(Api::<Secret>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?),
        other => bail!("unexpected kind {other}"),
    }
    Ok(())
}

fn manifest(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// Counts of objects not Ready, per kind.
async fn not_ready(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    out.insert(
        "CouchDatabase",
        Api::<CouchDatabase>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|o| !ready(*o))
            .count(),
    );
    out.insert(
        "CouchUser",
        Api::<CouchUser>::namespaced(client.clone(), ns).list(&lp).await?.items.iter().filter(|o| !ready(*o)).count(),
    );
    out.insert(
        "CouchGrant",
        Api::<CouchGrant>::namespaced(client.clone(), ns).list(&lp).await?.items.iter().filter(|o| !ready(*o)).count(),
    );
    out.insert(
        "CouchShare",
        Api::<CouchShare>::namespaced(client.clone(), ns).list(&lp).await?.items.iter().filter(|o| !ready(*o)).count(),
    );
    Ok(out)
}

/// Every object's resourceVersion, to count API-server writes.
async fn versions(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    macro_rules! add {
        ($k:ty) => {
            for o in Api::<$k>::namespaced(client.clone(), ns).list(&lp).await?.items {
                out.insert(format!("{}/{}", <$k>::kind(&()), o.name_any()), o.resource_version().unwrap_or_default());
            }
        };
    }
    add!(CouchServer);
    add!(CouchDatabase);
    add!(CouchUser);
    add!(CouchGrant);
    add!(CouchShare);
    add!(Secret);
    Ok(out)
}

/// CouchDB requests by method, from the operator's metrics.
async fn couch_requests(metrics_url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = reqwest::get(metrics_url).await?.text().await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("couchshare_couchdb_requests_total{")) {
        let method = line.split("method=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_string();
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(method).or_default() += value;
    }
    Ok(out)
}

/// `_security` reads made by the operator's audit so far, from its metrics.
async fn audit_reads(metrics_url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(metrics_url).await?.text().await?;
    Ok(counter_by(&text, "couchshare_security_audit_reads_total", "namespace", |_| true).values().sum())
}

/// A counter family from a Prometheus text page, summed by the values of `label`, for the
/// samples whose line passes `keep`.
fn counter_by(text: &str, family: &str, label: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{family}{{")) && keep(l)) {
        let key = line.split(&format!("{label}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(key.to_string()).or_default() += value;
    }
    out
}

/// Writes the API server has served (POST, PUT, PATCH, DELETE), by `verb resource`, from its
/// own metrics: who made them is not recorded, so the caller subtracts its own.
async fn api_writes(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(format!("{verb} {resource}")).or_default() += value;
    }
    Ok(out)
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

async fn wait<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("timed out after {timeout:?}")
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    couchshare::couch::install_crypto_provider();
    let args = Args::parse();
    let couch = couch()?;
    let client = Client::try_default().await.context("KUBECONFIG")?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let ns = format!("bench-{tag}");
    let shares = args.n / 5;
    eprintln!("bench: n={} shares={shares} namespace={ns}", args.n);

    // Baseline: the same CouchDB calls, made directly, in the same run.
    let direct = baseline(&couch, args.n, args.concurrency, &tag).await?;
    eprintln!("bench: direct baseline {direct:?}");

    // The operator.
    let ns_obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns_obj).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe()?.with_file_name("couchshare");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("couchshare-bench-{tag}.log")))?;
    let operator = Operator(
        Command::new(exe)
            .args(["run", "--namespace", &ns, "--health-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--concurrency",
                &args.concurrency.to_string(),
                "--resync-interval",
                &format!("{}s", args.resync_secs),
            ])
            .env("RUST_LOG", std::env::var("COUCHSHARE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("start couchshare run")?,
    );
    let pid = operator.0.id();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let url = std::env::var("COUCHDB_URL")?;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "couchdb-admin"},
        "stringData": {"username": std::env::var("COUCHDB_USER")?, "password": std::env::var("COUCHDB_PASSWORD")?}}),
    )
    .await?;
    apply(
        &client,
        &ns,
        manifest(
            "CouchServer",
            "main",
            json!({"url": url, "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}}),
        ),
    )
    .await?;
    let servers = Api::<CouchServer>::namespaced(client.clone(), &ns);
    wait(Duration::from_secs(60), || async { servers.get("main").await.is_ok_and(|s| ready(&s)) }).await?;

    let mut manifests = Vec::new();
    for i in 0..args.n {
        manifests.push(manifest(
            "CouchDatabase",
            &format!("db-{i}"),
            json!({"serverRef": {"name": "main"}, "name": format!("op-{tag}-db-{i}")}),
        ));
        manifests.push(manifest(
            "CouchUser",
            &format!("user-{i}"),
            json!({"serverRef": {"name": "main"}, "username": format!("op-{tag}-user-{i}")}),
        ));
        manifests.push(manifest(
            "CouchGrant",
            &format!("grant-{i}"),
            json!({"database": {"name": format!("db-{i}")}, "users": [{"name": format!("user-{i}")}]}),
        ));
    }
    for i in 0..shares {
        let (a, b) = (i * 5, i * 5 + 1);
        manifests.push(manifest(
            "CouchShare",
            &format!("share-{i}"),
            json!({"source": {"database": {"name": format!("db-{a}")}},
            "target": {"database": {"name": format!("db-{b}")}}, "continuous": false}),
        ));
    }
    let api_before = api_writes(&client).await?;
    let reconciles_before = reqwest::get(&metrics_url).await?.text().await?;
    let started = Instant::now();
    let applied: Vec<anyhow::Result<()>> =
        stream::iter(manifests).map(|m| apply(&client, &ns, m)).buffer_unordered(32).collect().await;
    for r in applied {
        r?;
    }
    let applied_in = started.elapsed();
    eprintln!("bench: {} objects applied to the API server in {applied_in:?}", 3 * args.n + shares);
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let counts = not_ready(&client, &ns).await?;
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
    let rss_bulk = peak_rss_kib(pid).unwrap_or(0);
    eprintln!("bench: operator bulk {operator_time:?}, peak RSS {rss_bulk} KiB");
    // Where the bulk time went: the API server's writes (less the bench's own applies) and the
    // reconciles, per resource.
    let bulk_resources = (3 * args.n + shares) as f64;
    let mut bulk_writes = delta(&api_writes(&client).await?, &api_before);
    for kind in ["couchdatabases", "couchusers", "couchgrants", "couchshares"] {
        let count = if kind == "couchshares" { shares } else { args.n } as f64;
        if let Some(v) = bulk_writes.get_mut(&format!("APPLY {kind}")) {
            *v -= count;
        }
    }
    bulk_writes.retain(|_, v| *v > 0.0);
    let reconciles_after = reqwest::get(&metrics_url).await?.text().await?;
    let reconciles = delta(
        &counter_by(&reconciles_after, "couchshare_reconciles_total", "kind", |_| true),
        &counter_by(&reconciles_before, "couchshare_reconciles_total", "kind", |_| true),
    );
    for (what, count) in &bulk_writes {
        eprintln!("bench: bulk API-server writes {what}: {count} ({:.2} per resource)", count / bulk_resources);
    }
    let seconds = |family: &str, label: &str| {
        delta(
            &counter_by(&reconciles_after, family, label, |_| true),
            &counter_by(&reconciles_before, family, label, |_| true),
        )
    };
    let reconcile_seconds = seconds("couchshare_reconcile_duration_seconds_sum", "kind");
    for (kind, count) in &reconciles {
        let mean = reconcile_seconds.get(kind).copied().unwrap_or(0.0) / count * 1000.0;
        eprintln!(
            "bench: bulk reconciles {kind}: {count} ({:.2} per object, mean {mean:.0} ms)",
            count / args.n as f64
        );
    }
    if std::env::var_os("COUCHSHARE_BENCH_CALLS").is_some() {
        for (call, count) in seconds("couchshare_couchdb_request_duration_seconds_count", "call") {
            eprintln!("bench: bulk CouchDB call {call}: {count}");
        }
    }
    let couch_seconds = seconds("couchshare_couchdb_request_duration_seconds_sum", "method");
    let couch_counts = seconds("couchshare_couchdb_request_duration_seconds_count", "method");
    for (method, count) in &couch_counts {
        let mean = couch_seconds.get(method).copied().unwrap_or(0.0) / count * 1000.0;
        eprintln!("bench: bulk CouchDB {method}: {count} (mean {mean:.1} ms)");
    }
    if args.bulk_only {
        let ratio = operator_time.as_secs_f64() / direct.as_secs_f64();
        println!("| bulk → all Ready | {:.1} s |", operator_time.as_secs_f64());
        println!("| of which applying the objects | {:.1} s |", applied_in.as_secs_f64());
        println!("| baseline | {:.1} s |", direct.as_secs_f64());
        println!("| **operator / direct** | **{ratio:.2}** |");
        return Ok(());
    }

    // Steady state: two resync periods with nothing changing.
    tokio::time::sleep(Duration::from_secs(args.resync_secs)).await;
    let before_requests = couch_requests(&metrics_url).await?;
    let before_audit = audit_reads(&metrics_url).await?;
    let before_versions = versions(&client, &ns).await?;
    let steady_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2 * args.resync_secs)).await;
    let after_requests = couch_requests(&metrics_url).await?;
    let after_audit = audit_reads(&metrics_url).await?;
    let steady_seconds = steady_started.elapsed().as_secs_f64();
    let after_versions = versions(&client, &ns).await?;
    let delta =
        |m: &str| after_requests.get(m).copied().unwrap_or(0.0) - before_requests.get(m).copied().unwrap_or(0.0);
    let couch_writes = delta("PUT") + delta("POST") + delta("DELETE");
    // The `_security` audit's reads are its own figure: what it costs CouchDB, per second.
    let audit = after_audit - before_audit;
    let audit_per_second = audit / steady_seconds;
    let couch_reads = delta("GET") + delta("HEAD") - audit;
    let changed: Vec<&String> =
        after_versions.iter().filter(|(k, v)| before_versions.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    if !changed.is_empty() {
        eprintln!("bench: written at steady state: {changed:?}");
    }
    let api_writes = changed.len();
    let resources = (3 * args.n + shares + 1) as f64;
    let reads_per_resource_period = couch_reads / resources / 2.0;

    // Latencies.
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    let mut apply_ready = Vec::new();
    for i in 0..args.samples {
        let name = format!("lat-{i}");
        let t = Instant::now();
        apply(
            &client,
            &ns,
            manifest(
                "CouchDatabase",
                &name,
                json!({"serverRef": {"name": "main"}, "name": format!("op-{tag}-lat-{i}")}),
            ),
        )
        .await?;
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
    let share_api = Api::<CouchShare>::namespaced(client.clone(), &ns);
    let mut revocation = Vec::new();
    for i in 0..(args.samples / 2).min(10) {
        let name = format!("rev-{i}");
        apply(
            &client,
            &ns,
            manifest(
                "CouchShare",
                &name,
                json!({"source": {"database": {"name": format!("lat-{}", 2 * i)}},
            "target": {"database": {"name": format!("lat-{}", 2 * i + 1)}}}),
            ),
        )
        .await?;
        wait(Duration::from_secs(60), || async { share_api.get(&name).await.is_ok_and(|s| ready(&s)) }).await?;
        let id = format!("couchshare_{ns}_{name}_fwd");
        let t = Instant::now();
        share_api.delete(&name, &DeleteParams::default()).await?;
        wait(Duration::from_secs(60), || async {
            couch.get_replication_doc("_replicator", &id).await.is_ok_and(|d| d.is_none())
        })
        .await?;
        revocation.push(t.elapsed());
    }
    let rss_peak = peak_rss_kib(pid).unwrap_or(0);
    drop(operator);

    let ratio = operator_time.as_secs_f64() / direct.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let figures = json!({
        "n": args.n, "shares": shares, "concurrency": args.concurrency, "resync_secs": args.resync_secs,
        "direct_seconds": direct.as_secs_f64(), "operator_seconds": operator_time.as_secs_f64(), "ratio": ratio,
        "steady_couchdb_writes": couch_writes, "steady_api_writes": api_writes,
        "steady_couchdb_reads_per_resource_per_period": reads_per_resource_period,
        "steady_security_audit_reads_per_second": audit_per_second,
        "apply_ready_p50_ms": ms(percentile(&mut apply_ready, 0.5)), "apply_ready_p95_ms": ms(percentile(&mut apply_ready, 0.95)),
        "drift_repair_p50_ms": ms(percentile(&mut drift, 0.5)), "revocation_p50_ms": ms(percentile(&mut revocation, 0.5)),
        "peak_rss_mib_after_bulk": rss_bulk as f64 / 1024.0, "peak_rss_mib_end": rss_peak as f64 / 1024.0,
        "couchdb": couch.server_info().await.map(|i| format!("{} {}", i.vendor.unwrap_or_default(), i.version)).unwrap_or_default(),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&figures)?)?;
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| bulk: {} databases + users + grants, {shares} shares → all Ready | {:.1} s |",
        args.n,
        operator_time.as_secs_f64()
    );
    println!("| baseline: the same CouchDB calls made directly | {:.1} s |", direct.as_secs_f64());
    println!("| **operator / direct** | **{ratio:.2}** |");
    println!("| steady state over 2 resyncs: CouchDB writes | {couch_writes} |");
    println!("| steady state over 2 resyncs: API-server writes | {api_writes} |");
    println!(
        "| steady state: CouchDB reads per resource per resync (besides the audit) | {reads_per_resource_period:.2} |"
    );
    println!("| steady state: `_security` audit reads per second (its cost to CouchDB) | {audit_per_second:.1} |");
    println!(
        "| apply → Ready, p50 / p95 ({} samples) | {:.0} / {:.0} ms |",
        apply_ready.len(),
        ms(percentile(&mut apply_ready, 0.5)),
        ms(percentile(&mut apply_ready, 0.95))
    );
    println!("| drift repair (database deleted by hand), p50 | {:.0} ms |", ms(percentile(&mut drift, 0.5)));
    println!(
        "| revocation (share deleted → replication docs gone), p50 | {:.0} ms |",
        ms(percentile(&mut revocation, 0.5))
    );
    println!(
        "| operator peak RSS after bulk / at end | {:.1} / {:.1} MiB |",
        rss_bulk as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    eprintln!("bench: figures written to {}", args.out.display());
    Ok(())
}
