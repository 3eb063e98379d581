//! A real Prometheus server on loopback, scraping the operator under test every second with
//! the alert rules loaded; its HTTP API; and pictures of its own graph page, drawn by headless
//! Chromium. The tools come from `tools/testbin/install-monitoring.sh` (Debian's `prometheus`,
//! which brings `promtool`, and `chromium`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A tool the monitoring tests need: `COUCHSHARE_<VAR>` if set, else `name` on `PATH`.
pub fn tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// A running `prometheus`, stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data, configuration and log.
    pub dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) as job `couchshare` every second, with
    /// `rules` loaded and evaluated every second. `honor_labels` as the chart's ServiceMonitor
    /// sets it: the metrics' own `namespace` label stays theirs.
    pub fn start(binary: &Path, dir: &Path, target: &str, rules: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: couchshare\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), dir: dir.to_path_buf() }
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until it answers `/-/ready`.
    pub async fn ready(&self) {
        for _ in 0..150 {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url)).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus did not become ready:\n{}", self.log());
    }

    /// An instant query through the HTTP API: `Err` with Prometheus's error for an invalid one,
    /// else the result vector (each element's `metric` labels and `value`).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/query: {e}"))?;
        let body: Value = response.json().await.map_err(|e| format!("query answer: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![body["data"]["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// The label sets of every series matching `selector` that Prometheus holds.
    pub async fn series(&self, selector: &str) -> Vec<serde_json::Map<String, Value>> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/series", self.url))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("GET /api/v1/series")
            .json()
            .await
            .expect("series answer");
        body["data"].as_array().into_iter().flatten().filter_map(|s| s.as_object().cloned()).collect()
    }

    /// The alerts its rule manager holds now: (alertname, state).
    pub async fn alerts(&self) -> Vec<(String, String)> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .expect("GET /api/v1/alerts")
            .json()
            .await
            .expect("alerts answer");
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// A PNG of Prometheus's own graph page for `expr` over the last `range`, drawn by
    /// headless Chromium into `out`.
    pub fn screenshot(&self, chromium: &Path, expr: &str, range: &str, out: &Path) -> Result<(), String> {
        let page = url::Url::parse_with_params(
            &format!("{}/graph", self.url),
            &[
                ("g0.expr", expr),
                ("g0.tab", "0"),
                ("g0.range_input", range),
                ("g0.stacked", "0"),
                ("g0.show_exemplars", "0"),
            ],
        )
        .map_err(|e| e.to_string())?;
        let profile = self.dir.join("chromium-profile");
        let status = Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
            .args(["--window-size=1280,820", "--virtual-time-budget=15000"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", out.display()))
            .arg(page.as_str())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running {}: {e}", chromium.display()))?;
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        if !status.success() || size < 10_000 {
            return Err(format!("chromium exited {status}, wrote {size} bytes to {}", out.display()));
        }
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
