//! The backup bench's summary: one row per tool, phase and round, the ratios couchshare /
//! couchbackup (each tool's best round for time and CouchDB CPU, its highest peak RSS), the
//! restore checks, and the JSON file. Figures only, never asserted.

use couchshare::backup::Manifest;
use couchshare::couch::DatabaseInfo;
use serde_json::{Value, json};

use super::child::Measured;
use super::fill::Filled;

/// One tool's phase.
pub struct Row {
    pub tool: &'static str,
    pub phase: &'static str,
    pub round: usize,
    pub seconds: f64,
    /// Source documents (not leaves) per second.
    pub docs_per_second: f64,
    pub bytes: Option<u64>,
    pub peak_rss_mib: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub couch_cpu_seconds: Option<f64>,
    pub rss_source: &'static str,
    /// Why it has no figures.
    pub failed: Option<String>,
}

impl Row {
    /// A phase that failed (or could not run): no figures, the error's last line.
    pub fn failed(tool: &'static str, phase: &'static str, round: usize, error: &anyhow::Error) -> Row {
        let text = format!("{error:#}");
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string();
        eprintln!("bench: round {round}: {tool} {phase} FAILED: {text}");
        Row {
            tool,
            phase,
            round,
            seconds: f64::NAN,
            docs_per_second: f64::NAN,
            bytes: None,
            peak_rss_mib: None,
            cpu_seconds: None,
            couch_cpu_seconds: None,
            rss_source: "",
            failed: Some(last),
        }
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        match &self.failed {
            Some(why) => format!("{} {} FAILED: {why}", self.tool, self.phase),
            None => format!(
                "{} {} {:.1} s, {} bytes, peak RSS {} MiB",
                self.tool,
                self.phase,
                self.seconds,
                self.bytes.map_or("-".into(), |b| b.to_string()),
                opt(self.peak_rss_mib, 1)
            ),
        }
    }

    pub fn new(
        tool: &'static str,
        phase: &'static str,
        round: usize,
        m: &Measured,
        docs: u64,
        bytes: Option<u64>,
    ) -> Row {
        let seconds = m.elapsed.as_secs_f64();
        Row {
            tool,
            phase,
            round,
            seconds,
            docs_per_second: docs as f64 / seconds.max(1e-9),
            bytes,
            peak_rss_mib: m.peak_rss_kib.map(|k| k as f64 / 1024.0),
            cpu_seconds: m.cpu_seconds,
            couch_cpu_seconds: m.couch_cpu_seconds,
            rss_source: m.rss_source,
            failed: None,
        }
    }
}

/// A restored database against the source.
pub struct Check {
    pub tool: String,
    pub round: usize,
    pub doc_count: u64,
    pub doc_del_count: u64,
    pub counts_match: bool,
    /// Documents compared leaf by leaf (history and attachment bytes included).
    pub sampled: usize,
    pub differing: Vec<String>,
}

/// The run's context for the report.
pub struct Run<'a> {
    pub setup: &'a str,
    pub attachment_kib: usize,
    pub couchdb: String,
    pub filled: Filled,
    pub source: &'a DatabaseInfo,
    pub manifest: &'a Manifest,
    /// Leaves the library's restore wrote, as it reported.
    pub restored_leaves: Option<u64>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

/// `tool`'s figures for `phase` (its first word) over the rounds: the best time and CouchDB
/// CPU, the highest peak RSS; `None` when it did not run.
fn best(rows: &[Row], tool: &str, phase: &str) -> Option<Best> {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.failed.is_none() && r.tool == tool && r.phase.split(' ').next() == Some(phase))
        .collect();
    let fastest = mine.iter().min_by(|a, b| a.seconds.total_cmp(&b.seconds))?;
    let least = |f: fn(&Row) -> Option<f64>| mine.iter().filter_map(|r| f(r)).min_by(f64::total_cmp);
    Some(Best {
        seconds: fastest.seconds,
        peak_rss_mib: mine.iter().filter_map(|r| r.peak_rss_mib).max_by(f64::total_cmp),
        couch_cpu_seconds: least(|r| r.couch_cpu_seconds),
        bytes: fastest.bytes,
    })
}

struct Best {
    seconds: f64,
    peak_rss_mib: Option<f64>,
    couch_cpu_seconds: Option<f64>,
    bytes: Option<u64>,
}

/// `a / b` of the rows' figures, when both are there.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Prints the table, the ratios and the checks; writes the JSON figures to `out`.
pub fn report(run: &Run<'_>, rows: &[Row], checks: &[Check], out: &std::path::Path) -> anyhow::Result<()> {
    let f = &run.filled;
    println!(
        "backup bench: {} documents ({} with a {} KiB attachment, {} with two conflicting leaves; {} leaves) on {}",
        f.docs, f.attachments, run.attachment_kib, f.conflicts, f.leaves, run.couchdb
    );
    println!("setup: {}", run.setup);
    println!(
        "fill (_bulk_docs, batches of up to 1000 documents and 16 MiB, 4 in flight): {:.1} s, {:.0} docs/s",
        f.elapsed.as_secs_f64(),
        f.docs as f64 / f.elapsed.as_secs_f64().max(1e-9)
    );
    println!();
    println!("| tool | phase | round | seconds | docs/s | bytes | peak RSS MiB | CPU s | CouchDB CPU s |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        if let Some(why) = &r.failed {
            println!("| {} | {} | {} | FAILED: {why} | | | | | |", r.tool, r.phase, r.round);
            continue;
        }
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
            r.tool,
            r.phase,
            r.round,
            r.seconds,
            r.docs_per_second,
            r.bytes.map_or("-".into(), |b| b.to_string()),
            opt(r.peak_rss_mib, 1),
            opt(r.cpu_seconds, 1),
            opt(r.couch_cpu_seconds, 1)
        );
    }
    let mut ratios = serde_json::Map::new();
    println!();
    println!(
        "| couchshare / couchbackup | time (best rounds) | peak RSS (highest) | CouchDB CPU (best rounds) | bytes |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (phase, theirs) in [("backup", "couchbackup"), ("restore", "couchrestore")] {
        let (Some(a), Some(b)) = (best(rows, "couchshare", phase), best(rows, theirs, phase)) else { continue };
        let time = ratio(Some(a.seconds), Some(b.seconds));
        let rss = ratio(a.peak_rss_mib, b.peak_rss_mib);
        let couch_cpu = ratio(a.couch_cpu_seconds, b.couch_cpu_seconds);
        let bytes = ratio(a.bytes.map(|v| v as f64), b.bytes.map(|v| v as f64));
        println!(
            "| {phase} | **{}** | **{}** | {} | {} |",
            opt(time, 2),
            opt(rss, 2),
            opt(couch_cpu, 2),
            bytes.map_or("-".into(), |v| format!("{v:.2}"))
        );
        ratios.insert(
            phase.into(),
            json!({"time": time, "peak_rss": rss, "couchdb_cpu": couch_cpu, "bytes": bytes,
                "couchshare_seconds": a.seconds, "couchbackup_seconds": b.seconds,
                "couchshare_peak_rss_mib": a.peak_rss_mib, "couchbackup_peak_rss_mib": b.peak_rss_mib}),
        );
    }
    for phase in ["backup", "restore"] {
        if !ratios.contains_key(phase) {
            println!("| {phase} | no ratio: a tool has no successful round | | | |");
        }
    }
    // The incremental backup against the full one, both the library's.
    if let (Some(incremental), Some(full)) =
        (best(rows, "couchshare", "incremental"), best(rows, "couchshare", "backup"))
    {
        let time = ratio(Some(incremental.seconds), Some(full.seconds));
        println!();
        println!(
            "incremental / full backup (couchshare, 1 % of the documents changed): time {}, {:.1} s against {:.1} s",
            opt(time, 3),
            incremental.seconds,
            full.seconds
        );
        ratios.insert(
            "incremental_over_full".into(),
            json!({"time": time, "incremental_seconds": incremental.seconds, "full_seconds": full.seconds}),
        );
    }
    println!();
    println!(
        "source: doc_count {} doc_del_count {}; couchshare manifest: {} leaves, {} bytes; couchshare restore wrote {} leaves",
        run.source.doc_count,
        run.source.doc_del_count,
        run.manifest.documents,
        run.manifest.bytes,
        run.restored_leaves.map_or("?".into(), |n| n.to_string())
    );
    for c in checks {
        let sample = if c.differing.is_empty() {
            format!("{} sampled documents identical (every leaf, history, attachment bytes)", c.sampled)
        } else {
            format!("{} of {} sampled documents DIFFER: {}", c.differing.len(), c.sampled, c.differing.join(", "))
        };
        println!(
            "restored by {} (round {}): doc_count {} doc_del_count {} ({}); {sample}",
            c.tool,
            c.round,
            c.doc_count,
            c.doc_del_count,
            if c.counts_match { "matches the source" } else { "DOES NOT MATCH the source" }
        );
    }
    if let Some(r) = rows.iter().find(|r| r.failed.is_none()) {
        println!(
            "peak RSS: {} of each child process; CPU s: the child's user + system time; CouchDB CPU s: \
             its processes' over the same span (/proc/<pid>/stat); docs/s counts source documents, not leaves",
            r.rss_source
        );
    }
    let figures = json!({
        "mode": "backup",
        "setup": run.setup,
        "couchdb": run.couchdb,
        "documents": f.docs, "attachments": f.attachments, "attachment_kib": run.attachment_kib, "conflicts": f.conflicts, "leaves": f.leaves,
        "fill_seconds": f.elapsed.as_secs_f64(),
        "source": {"doc_count": run.source.doc_count, "doc_del_count": run.source.doc_del_count},
        "manifest": {"documents": run.manifest.documents, "bytes": run.manifest.bytes},
        "phases": rows.iter().map(|r| json!({
            "tool": r.tool, "phase": r.phase, "round": r.round, "seconds": r.seconds, "docs_per_second": r.docs_per_second,
            "bytes": r.bytes, "peak_rss_mib": r.peak_rss_mib, "peak_rss_source": r.rss_source,
            "cpu_seconds": r.cpu_seconds, "couchdb_cpu_seconds": r.couch_cpu_seconds, "failed": r.failed,
        })).collect::<Vec<Value>>(),
        "ratios_couchshare_over_couchbackup": ratios,
        "restored": checks.iter().map(|c| json!({
            "tool": c.tool, "round": c.round, "doc_count": c.doc_count, "doc_del_count": c.doc_del_count,
            "counts_match": c.counts_match, "sampled": c.sampled, "differing": c.differing,
        })).collect::<Vec<Value>>(),
        "couchshare_restore_leaves": run.restored_leaves,
    });
    std::fs::write(out, serde_json::to_string_pretty(&figures)?)?;
    eprintln!("bench: figures written to {}", out.display());
    Ok(())
}
