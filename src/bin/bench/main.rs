//! Benchmark: bulk apply → Ready against the operator vs the same CouchDB writes made
//! directly (the baseline, in the same run), steady-state request counts, apply/drift/
//! revocation latencies while every bulk object is there, and the operator's peak memory.
//! Prints a table, the cost targets next to their figures (met or MISSED), and writes JSON.
//!
//! Needs `KUBECONFIG` (with the CRDs installed), `COUCHDB_URL`, `COUCHDB_USER`,
//! `COUCHDB_PASSWORD`, and the `couchshare` binary next to this one. `tools/bench` sets all
//! of that up. Figures are printed, never asserted: these machines are noisy. Whatever the
//! bench created on CouchDB is removed however it ends (success, error, SIGINT, SIGTERM).
//!
//! Phases: set-up ([`setup`]), baseline ([`baseline::run`]), operator bulk
//! ([`phases::bulk`]), steady state and drift ([`phases::steady`], [`phases::latencies`]),
//! report ([`report::report`]), clean-up ([`cleanup::clean`]).
//!
//! `--backup` is another bench, of backup and restore against couchbackup (see [`backup`]);
//! it needs CouchDB, an S3 bucket and couchbackup, not Kubernetes.

mod backup;
mod baseline;
mod cleanup;
mod fanin;
mod k8s;
mod metrics;
mod phases;
mod pin;
mod report;

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Parser;
use couchshare::couch::{CouchClient, CouchConfig, Credentials};
use kube::Client;

#[derive(Parser)]
#[command(about = "couchshare benchmark: operator vs direct CouchDB calls")]
pub struct Args {
    /// CouchDatabases, CouchUsers and CouchGrants each.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// CouchShares (default n/5).
    #[arg(long)]
    shares: Option<usize>,
    /// The 10,000-object run: n=3000 and 1000 shares (overrides --n and --shares).
    #[arg(long)]
    scale: bool,
    /// Samples for the latency figures.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Resync interval of the operator during the bulk, as users run it (the default, 5 min):
    /// every wait ends by a trigger, so the bulk does not depend on it.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
    /// The steady phase restarts the operator with this resync and measures over two of them.
    #[arg(long, default_value_t = 30)]
    steady_resync_secs: u64,
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
    /// Do not pin CouchDB and the rest to separate CPUs (for a CouchDB others use too).
    #[arg(long)]
    no_pin: bool,
    /// Fan-in mode: N per-user databases into one, the on-change share against one continuous
    /// `_replicator` document per database (see `fanin`).
    #[arg(long)]
    fan_in: bool,
    /// Fan-in: source databases.
    #[arg(long, default_value_t = 10_000)]
    dbs: usize,
    /// Fan-in: percent of the databases written per minute under load.
    #[arg(long, default_value_t = 1.0)]
    write_percent: f64,
    /// Fan-in: minutes of write load per way.
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Fan-in: the share's maxConcurrent.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Fan-in: `replicator/startup_jitter` (ms) the CouchServer sets for both ways (CouchDB's
    /// default, 5000, delays every job's start by up to 5 s).
    #[arg(long, default_value_t = 0)]
    startup_jitter_ms: u64,
    /// Fan-in: the longest wait for a first full sync.
    #[arg(long, default_value_t = 900)]
    sync_limit_secs: u64,
    /// Fan-in: how long after the load the last writes may take to arrive (later ones count as not arrived).
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// Fan-in: the idle window the idle figures are measured over.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Backup mode: the operator's backup library against couchbackup/couchrestore on one
    /// database (see `backup`). Needs `COUCHSHARE_S3_*` and `--couchbackup-bin`, not Kubernetes.
    #[arg(long)]
    backup: bool,
    /// Backup: documents in the database backed up.
    #[arg(long, default_value_t = 200_000)]
    backup_docs: usize,
    /// Backup: documents with an inline attachment, per hundred (at most 99).
    #[arg(long, default_value_t = 1)]
    backup_attachment_percent: usize,
    /// Backup: the size of each attachment, KiB.
    #[arg(long, default_value_t = 3)]
    backup_attachment_kib: usize,
    /// Backup: rounds of every backup and restore, in alternating order (couchshare first in
    /// odd rounds, couchbackup first in even ones); the ratios take each tool's best round.
    #[arg(long, default_value_t = 2)]
    backup_rounds: usize,
    /// Backup: the folder holding `couchbackup` and `couchrestore`.
    #[arg(long, env = "COUCHSHARE_BENCH_COUCHBACKUP_BIN")]
    couchbackup_bin: Option<PathBuf>,
    /// Backup, internal: run one library call in this process (`backup` or `restore`) and
    /// print its result as JSON, so that its peak memory is its own.
    #[arg(long, hide = true, requires_all = ["child_db", "child_prefix"])]
    backup_child: Option<String>,
    #[arg(long, hide = true)]
    child_db: Option<String>,
    #[arg(long, hide = true)]
    child_prefix: Option<String>,
    /// With `--backup-child incremental`: the sequence the incremental backup starts after.
    #[arg(long, hide = true)]
    child_since: Option<String>,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
}

/// What every phase shares.
pub struct Run {
    client: Client,
    couch_url: String,
    couch_user: String,
    couch_password: String,
    n: usize,
    shares: usize,
    tag: String,
    ns: String,
    /// The CPU setup, as printed with the figures.
    setup: String,
}

/// Set-up: the clients and names; CPU pinning.
async fn setup(args: &Args) -> anyhow::Result<(Run, CouchClient, pin::Pinning)> {
    let var = |name: &str| std::env::var(name).with_context(|| name.to_string());
    let (couch_url, couch_user, couch_password) = (var("COUCHDB_URL")?, var("COUCHDB_USER")?, var("COUCHDB_PASSWORD")?);
    let credentials = Credentials::new(couch_user.clone(), couch_password.clone());
    let couch = CouchClient::new(CouchConfig::new(couch_url.clone(), Some(credentials)))?;
    let config = kube::Config::infer().await.context("KUBECONFIG")?;
    let api_url = config.cluster_url.to_string();
    let client = Client::try_from(config)?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let (n, shares) = if args.scale { (3000, 1000) } else { (args.n, args.shares.unwrap_or(args.n / 5)) };
    // Each share replicates one database into another, never one a share of its own uses.
    anyhow::ensure!(2 * shares <= n, "--shares {shares} needs at least {} databases (--n)", 2 * shares);
    let pinning = pin::pin(&couch_url, &api_url, !args.no_pin && !args.fan_in);
    let run = Run {
        client,
        couch_url,
        couch_user,
        couch_password,
        n,
        shares,
        ns: format!("bench-{tag}"),
        tag,
        setup: pinning.setup.clone(),
    };
    Ok((run, couch, pinning))
}

/// Every phase up to the report. Dropping this future stops the operator.
async fn measure(args: &Args, run: &Run, couch: &CouchClient) -> anyhow::Result<()> {
    if args.fan_in {
        let pids = pin::couch_pids(&run.couch_url);
        eprintln!("bench: fan-in, {} databases, namespace={} (CouchDB pids {pids:?})", args.dbs, run.ns);
        let (base, ours) = fanin::run(args, run, couch, &pids).await?;
        let info = couch.server_info().await.map(|i| format!("{} {}", i.vendor.unwrap_or_default(), i.version));
        return fanin::report(args, &base, &ours, &info.unwrap_or_default(), &args.out);
    }
    eprintln!("bench: n={} shares={} namespace={} ({})", run.n, run.shares, run.ns, run.setup);
    let baseline = baseline::run(couch, run.n, run.shares, args.concurrency, &run.tag).await?;
    eprintln!("bench: direct baseline {:?}, CouchDB {}", baseline.elapsed, metrics::show(&baseline.requests));
    let operator = phases::start_operator(args, run).await?;
    let bulk = phases::bulk(run, &operator).await?;
    phases::print_profile(run, &bulk);
    let info = couch.server_info().await.map(|i| format!("{} {}", i.vendor.unwrap_or_default(), i.version));
    let couchdb = info.unwrap_or_default();
    if args.bulk_only {
        return report::report(run, &baseline, &bulk, None, couchdb, &args.out);
    }
    // The steady phase's operator: restarted with a short resync, so that what a resync costs
    // is measured in minutes rather than in the default's hours.
    drop(operator);
    let operator = phases::restart_operator(args, run)?;
    let steady = phases::steady(args, run, &operator).await?;
    let mut latencies = phases::latencies(args, run, couch).await?;
    let rss_end = metrics::peak_rss_kib(operator.pid()).unwrap_or(0);
    drop(operator);
    report::report(run, &baseline, &bulk, Some((&steady, &mut latencies, rss_end)), couchdb, &args.out)
}

/// The first SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    couchshare::couch::install_crypto_provider();
    let args = Args::parse();
    if let Some(what) = &args.backup_child {
        return backup::child(what, &args).await;
    }
    if args.backup {
        return backup::main(&args).await;
    }
    let (run, couch, mut pinning) = setup(&args).await?;
    let before = cleanup::footprint(&couch).await;
    let jitter = if args.fan_in { fanin::jitter_before(&couch).await } else { None };
    let outcome = tokio::select! {
        r = measure(&args, &run, &couch) => r,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    // Clean-up, whatever the outcome: the operator is stopped by now.
    let created = cleanup::Created { tag: &run.tag, namespace: &run.ns };
    let cleaned = cleanup::clean(&couch, &created).await;
    if args.fan_in {
        fanin::restore_jitter(&couch, jitter).await;
    }
    pinning.undo();
    let after = cleanup::footprint(&couch).await;
    match (&cleaned, before, after) {
        (Ok(removed), Ok(before), Ok(after)) => eprintln!(
            "bench: clean-up removed {} databases, {} users, {} replication documents; CouchDB held {before} before, {after} after",
            removed.databases, removed.users, removed.replications
        ),
        (Err(e), ..) => eprintln!("bench: clean-up failed: {e:#}"),
        _ => eprintln!("bench: clean-up done; CouchDB's database or user count could not be read"),
    }
    outcome.and(cleaned.map(drop))
}
