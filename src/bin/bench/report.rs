//! The summary: the table on stdout, issue 13's cost targets next to their figures, and the
//! JSON file.

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

fn targets(run: &Run, baseline: &Baseline, bulk: &Bulk) -> Vec<Target> {
    let objects = bulk.objects(run) as f64;
    let events: f64 = bulk.api_writes.iter().filter(|(k, _)| k.ends_with(" events")).map(|(_, v)| v).sum();
    let reconciles = bulk
        .reconciles
        .iter()
        .filter(|(kind, _)| *kind != "CouchServer")
        .map(|(kind, count)| count / objects_of(run, kind).max(1) as f64)
        .fold(0.0, f64::max);
    vec![
        Target {
            what: "API writes per object (the bench's applies not counted)",
            figure: total(&bulk.api_writes) / objects,
            at_most: 3.0,
        },
        Target { what: "Events per object", figure: events / objects, at_most: 0.5 },
        Target { what: "reconciles per object, the most of any kind", figure: reconciles, at_most: 2.0 },
        Target {
            what: "CouchDB requests, operator (besides the audit) / baseline",
            figure: (total(&bulk.couch_counts) - bulk.audit_reads) / total(&baseline.requests).max(1.0),
            at_most: 2.0,
        },
        Target { what: "time, operator / baseline", figure: ratio(baseline, bulk), at_most: 1.3 },
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

fn target_rows(targets: &[Target]) {
    println!();
    println!("| issue 13 target (at n=300) | figure | target | |");
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
    let targets = targets(run, baseline, bulk);
    let mut figures = json!({
        "n": run.n, "shares": run.shares, "setup": run.setup, "couchdb": couchdb,
        "direct_seconds": baseline.elapsed.as_secs_f64(), "operator_seconds": bulk.operator_time.as_secs_f64(),
        "ratio": ratio(baseline, bulk),
        "baseline_couchdb_requests": baseline.requests, "operator_bulk_couchdb_requests": bulk.couch_counts, "operator_bulk_audit_reads": bulk.audit_reads,
        "bulk_api_writes": bulk.api_writes, "bulk_reconciles": bulk.reconciles,
        "peak_rss_mib_after_bulk": bulk.rss_kib as f64 / 1024.0,
        "targets": targets.iter().map(|t| json!({"what": t.what, "figure": t.figure, "at_most": t.at_most, "met": t.figure <= t.at_most})).collect::<Vec<Value>>(),
    });
    println!("| figure | value |");
    println!("| --- | --- |");
    bulk_rows(run, baseline, bulk);
    if let Some((steady, lat, rss_end)) = rest {
        let (p50, p95) = (ms(percentile(&mut lat.apply_ready, 0.5)), ms(percentile(&mut lat.apply_ready, 0.95)));
        let drift = ms(percentile(&mut lat.drift, 0.5));
        let revocation = ms(percentile(&mut lat.revocation, 0.5));
        println!("| steady state over 2 resyncs: CouchDB writes | {} |", steady.couch_writes);
        println!("| steady state over 2 resyncs: API-server writes | {} |", steady.api_writes);
        println!(
            "| steady state: CouchDB reads per resource per resync (besides the audit) | {:.2} |",
            steady.reads_per_resource_period
        );
        println!(
            "| steady state: `_security` audit reads per second (its cost to CouchDB) | {:.1} |",
            steady.audit_per_second
        );
        println!("| apply → Ready, p50 / p95 ({} samples) | {p50:.0} / {p95:.0} ms |", lat.apply_ready.len());
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
            "apply_ready_p50_ms": p50, "apply_ready_p95_ms": p95,
            "drift_repair_p50_ms": drift, "revocation_p50_ms": revocation,
            "peak_rss_mib_end": rss_end as f64 / 1024.0,
        });
        if let (Some(f), Value::Object(m)) = (figures.as_object_mut(), more) {
            f.extend(m);
        }
    }
    target_rows(&targets);
    std::fs::write(out, serde_json::to_string_pretty(&figures)?)?;
    eprintln!("bench: figures written to {}", out.display());
    Ok(())
}
