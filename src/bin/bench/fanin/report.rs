//! The fan-in bench's report: both ways side by side, as text and JSON.

use std::time::Duration;

use serde_json::{Value, json};

use super::Way;
use crate::Args;

pub(super) fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

pub(super) fn num(v: Option<f64>, unit: &str) -> String {
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

pub(super) fn way_json(w: &Way) -> Value {
    json!({
        "first_full_sync_s": w.first_full_sync.map(|d| d.as_secs_f64()),
        "lag_p50_s": w.p50.map(|d| d.as_secs_f64()), "lag_p99_s": w.p99.map(|d| d.as_secs_f64()),
        "arrived": w.arrived, "written": w.written, "peak_jobs": w.peak_jobs,
        "idle_rps": w.idle_rps, "load_rps": w.load_rps, "idle_cpu": w.idle_cpu, "load_cpu": w.load_cpu,
        "peak_rss_mib": w.peak_rss_mib, "idle_calls": w.idle_calls,
    })
}
