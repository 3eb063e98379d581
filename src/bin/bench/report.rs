//! The summary: the table on stdout, the cost targets next to their figures (met or MISSED,
//! never asserted), and the JSON file.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Run;
use crate::baseline::Baseline;
use crate::metrics::{Counts, percentile, show};
use crate::phases::{Bulk, Latencies, Steady, objects_of};

/// One cost target: a figure, its bound (at most), and whether it is met.
struct Target {
    what: &'static str,
    figure: f64,
    at_most: f64,
}

fn total(c: &Counts) -> f64 {
    c.values().sum()
}

/// The cost targets of the bulk (issue 24's, for n=1,000 on the real single node): reconciles
/// per object for every kind, API writes and Events per object, CouchDB requests and time
/// against the baseline.
fn targets(run: &Run, baseline: &Baseline, bulk: &Bulk) -> Vec<Target> {
    let objects = bulk.objects(run) as f64;
    let events: f64 = bulk.api_writes.iter().filter(|(k, _)| k.ends_with(" events")).map(|(_, v)| v).sum();
    let mut out = Vec::new();
    for (kind, what) in [
        ("CouchDatabase", "reconciles per object, databases"),
        ("CouchUser", "reconciles per object, users"),
        ("CouchGrant", "reconciles per object, grants"),
        ("CouchShare", "reconciles per object, shares"),
    ] {
        let count = bulk.reconciles.get(kind).copied().unwrap_or(0.0);
        out.push(Target { what, figure: count / objects_of(run, kind).max(1) as f64, at_most: 2.0 });
    }
    out.extend([
        Target {
            what: "API writes per object (the bench's applies not counted)",
            figure: total(&bulk.api_writes) / objects,
            at_most: 3.0,
        },
        Target { what: "Events per object", figure: events / objects, at_most: 0.5 },
        Target {
            what: "CouchDB requests, operator (besides the audit) / baseline",
            figure: (total(&bulk.couch_counts) - bulk.audit_reads) / total(&baseline.requests).max(1.0),
            at_most: 1.5,
        },
        Target { what: "time, operator / baseline", figure: ratio(baseline, bulk), at_most: 1.2 },
    ]);
    out
}

/// The targets of a run with every object there (issue 24's, for 10,000 objects): memory, a
/// new object's latency, and the steady state.
fn scale_targets(steady: &Steady, apply_p99_ms: f64, peak_rss_mib: f64) -> Vec<Target> {
    vec![
        Target { what: "peak RSS, MiB", figure: peak_rss_mib, at_most: 100.0 },
        Target { what: "apply → Ready p99 for one more object, ms", figure: apply_p99_ms, at_most: 1000.0 },
        Target { what: "steady state: CouchDB writes over 2 resyncs", figure: steady.couch_writes, at_most: 0.0 },
        Target {
            what: "steady state: API-server writes over 2 resyncs",
            figure: steady.api_writes as f64,
            at_most: 0.0,
        },
        Target {
            what: "steady state: CouchDB reads per object per resync (besides the audit)",
            figure: steady.reads_per_resource_period,
            at_most: 1.0,
        },
    ]
}

fn ratio(baseline: &Baseline, bulk: &Bulk) -> f64 {
    bulk.operator_time.as_secs_f64() / baseline.elapsed.as_secs_f64()
}

fn bulk_rows(run: &Run, baseline: &Baseline, bulk: &Bulk) {
    println!("| setup | {} |", run.setup);
    println!(
        "| bulk: {} databases + users + grants, {} shares → all Ready | {:.1} s |",
        run.n,
        run.shares,
        bulk.operator_time.as_secs_f64()
    );
    println!("| of which applying the objects | {:.1} s |", bulk.applied_in.as_secs_f64());
    println!("| baseline: the operator's CouchDB writes made directly | {:.1} s |", baseline.elapsed.as_secs_f64());
    println!("| **operator / direct** | **{:.2}** |", ratio(baseline, bulk));
    println!("| CouchDB requests, baseline | {:.0} ({}) |", total(&baseline.requests), show(&baseline.requests));
    println!(
        "| CouchDB requests, operator bulk | {:.0} ({}; of which `_security` audit reads {:.0}) |",
        total(&bulk.couch_counts),
        show(&bulk.couch_counts),
        bulk.audit_reads
    );
}

fn target_rows(objects: usize, targets: &[Target]) {
    println!();
    println!("| target ({objects} objects) | figure | target | |");
    println!("| --- | --- | --- | --- |");
    for t in targets {
        let mark = if t.figure <= t.at_most { "met" } else { "MISSED" };
        println!("| {} | {:.2} | ≤ {} | {mark} |", t.what, t.figure, t.at_most);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints the table (and the targets) and writes the JSON figures; `rest` is `None` with
/// `--bulk-only`.
pub fn report(
    run: &Run,
    baseline: &Baseline,
    bulk: &Bulk,
    rest: Option<(&Steady, &mut Latencies, u64)>,
    couchdb: String,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let mut targets = targets(run, baseline, bulk);
    let mut figures = json!({
        "n": run.n, "shares": run.shares, "setup": run.setup, "couchdb": couchdb,
        "direct_seconds": baseline.elapsed.as_secs_f64(), "operator_seconds": bulk.operator_time.as_secs_f64(),
        "ratio": ratio(baseline, bulk),
        "baseline_couchdb_requests": baseline.requests, "operator_bulk_couchdb_requests": bulk.couch_counts, "operator_bulk_audit_reads": bulk.audit_reads,
        "bulk_api_writes": bulk.api_writes, "bulk_reconciles": bulk.reconciles,
        "peak_rss_mib_after_bulk": bulk.rss_kib as f64 / 1024.0,
    });
    println!("| figure | value |");
    println!("| --- | --- |");
    bulk_rows(run, baseline, bulk);
    if let Some((steady, lat, rss_end)) = rest {
        let (p50, p99) = (ms(percentile(&mut lat.apply_ready, 0.5)), ms(percentile(&mut lat.apply_ready, 0.99)));
        let drift = ms(percentile(&mut lat.drift, 0.5));
        let revocation = ms(percentile(&mut lat.revocation, 0.5));
        println!("| steady state over 2 resyncs: CouchDB writes | {} |", steady.couch_writes);
        println!("| steady state over 2 resyncs: API-server writes | {} |", steady.api_writes);
        println!(
            "| steady state: CouchDB reads per resource per resync (besides the audit) | {:.2} |",
            steady.reads_per_resource_period
        );
        println!("| steady state: reconciles per resource per resync | {:.2} |", steady.reconciles_per_resource_period);
        println!(
            "| steady state: `_security` audit reads per second (its cost to CouchDB) | {:.1} |",
            steady.audit_per_second
        );
        println!(
            "| restart: the first resync period of a new operator process: reconciles / CouchDB writes | {:.0} / {:.0} |",
            steady.restart_reconciles, steady.restart_couch_writes
        );
        println!(
            "| apply → Ready of one more database while all the above are there, p50 / p99 ({} samples) | {p50:.0} / {p99:.0} ms |",
            lat.apply_ready.len()
        );
        println!("| drift repair (database deleted by hand), p50 | {drift:.0} ms |");
        println!("| revocation (share deleted → replication docs gone), p50 | {revocation:.0} ms |");
        println!(
            "| operator peak RSS after bulk / at end | {:.1} / {:.1} MiB |",
            bulk.rss_kib as f64 / 1024.0,
            rss_end as f64 / 1024.0
        );
        let more = json!({
            "steady_couchdb_writes": steady.couch_writes, "steady_api_writes": steady.api_writes,
            "steady_couchdb_reads_per_resource_per_period": steady.reads_per_resource_period,
            "steady_security_audit_reads_per_second": steady.audit_per_second,
            "steady_reconciles_per_resource_per_period": steady.reconciles_per_resource_period,
            "restart_reconciles": steady.restart_reconciles, "restart_couchdb_writes": steady.restart_couch_writes,
            "apply_ready_p50_ms": p50, "apply_ready_p99_ms": p99,
            "drift_repair_p50_ms": drift, "revocation_p50_ms": revocation,
            "peak_rss_mib_end": rss_end as f64 / 1024.0,
        });
        if let (Some(f), Value::Object(m)) = (figures.as_object_mut(), more) {
            f.extend(m);
        }
        let peak = (bulk.rss_kib.max(rss_end)) as f64 / 1024.0;
        targets.extend(scale_targets(steady, p99, peak));
    }
    let listed: Vec<Value> = targets
        .iter()
        .map(|t| json!({"what": t.what, "figure": t.figure, "at_most": t.at_most, "met": t.figure <= t.at_most}))
        .collect();
    if let Some(f) = figures.as_object_mut() {
        f.insert("targets".into(), Value::Array(listed));
    }
    target_rows(bulk.objects(run), &targets);
    std::fs::write(out, serde_json::to_string_pretty(&figures)?)?;
    eprintln!("bench: figures written to {}", out.display());
    Ok(())
}
