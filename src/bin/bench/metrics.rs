//! Figures read from Prometheus text pages (the operator's and the API server's), and the
//! arithmetic on them.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;

/// Counts (or sums) keyed by a label value.
pub type Counts = BTreeMap<String, f64>;

/// The operator's metrics page.
pub async fn page(metrics_url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(metrics_url).await?.text().await?)
}

/// CouchDB requests by method, from the operator's metrics.
pub async fn couch_requests(metrics_url: &str) -> anyhow::Result<Counts> {
    Ok(counter_by(&page(metrics_url).await?, "couchshare_couchdb_requests_total", "method"))
}

/// `_security` reads made by the operator's audit so far, from its metrics.
pub async fn audit_reads(metrics_url: &str) -> anyhow::Result<f64> {
    Ok(counter_by(&page(metrics_url).await?, "couchshare_security_audit_reads_total", "namespace").values().sum())
}

/// A counter family from a Prometheus text page, summed by the values of `label` (several
/// labels joined by `+`, as `method+call`: their values joined by a space).
pub fn counter_by(text: &str, family: &str, label: &str) -> Counts {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{family}{{"))) {
        let value_of = |label: &str| {
            line.split(&format!("{label}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_string()
        };
        let key = label.split('+').map(value_of).collect::<Vec<_>>().join(" ");
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(key).or_default() += value;
    }
    out
}

/// Writes the API server has served (POST, PUT, PATCH, DELETE), by `verb resource`, from its
/// own metrics: who made them is not recorded, so the caller subtracts its own.
pub async fn api_writes(client: &Client) -> anyhow::Result<Counts> {
    // kube takes `http` requests; axum re-exports the same crate.
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

/// `after - before`, keeping only what grew.
pub fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// `{GET: 3, PUT: 5}` as `GET 3, PUT 5`.
pub fn show(counts: &Counts) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

/// The high-water mark of a process's resident memory, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The `p` quantile (0..=1) of `samples`; zero for none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}
