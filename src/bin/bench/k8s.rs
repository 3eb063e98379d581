//! The Kubernetes side of the bench: applying manifests, reading readiness and versions, and
//! the operator process.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// Whether an object's status has `Ready=True`.
pub fn ready<K: serde::Serialize>(obj: &K) -> bool {
    let v = serde_json::to_value(obj).unwrap_or_default();
    v["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Server-side apply of one manifest of a kind the bench uses.
pub async fn apply(client: &Client, ns: &str, manifest: Value) -> anyhow::Result<()> {
    let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let params = PatchParams::apply("couchshare-bench").force();
    let patch = Patch::Apply(&manifest);
    macro_rules! patch {
        ($k:ty) => {
            drop(Api::<$k>::namespaced(client.clone(), ns).patch(&name, &params, &patch).await?)
        };
    }
    match kind.as_str() {
        "CouchDatabase" => patch!(CouchDatabase),
        "CouchUser" => patch!(CouchUser),
        "CouchGrant" => patch!(CouchGrant),
        "CouchShare" => patch!(CouchShare),
        "CouchServer" => patch!(CouchServer),
        "Secret" => patch!(Secret),
        other => bail!("unexpected kind {other}"),
    }
    Ok(())
}

/// A couchshare.io manifest.
pub fn manifest(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// Counts of objects not Ready, per kind.
pub async fn not_ready(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    macro_rules! count {
        ($k:ty, $name:literal) => {
            let items = Api::<$k>::namespaced(client.clone(), ns).list(&lp).await?.items;
            out.insert($name, items.iter().filter(|o| !ready(*o)).count());
        };
    }
    count!(CouchDatabase, "CouchDatabase");
    count!(CouchUser, "CouchUser");
    count!(CouchGrant, "CouchGrant");
    count!(CouchShare, "CouchShare");
    Ok(out)
}

/// Every object's resourceVersion, to count API-server writes.
pub async fn versions(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
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

/// Polls `check` every 10 ms until it holds; how long that took.
pub async fn wait<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<Duration>
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

/// `couchshare run`, killed when dropped (so on every exit path of the bench).
pub struct Operator {
    child: Child,
    /// Its metrics page.
    pub metrics_url: String,
}

impl Operator {
    /// Starts the `couchshare` binary next to this one, watching `ns`, logging to `log`.
    pub fn start(ns: &str, concurrency: usize, resync_secs: u64, log: &Path) -> anyhow::Result<Operator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let exe = std::env::current_exe()?.with_file_name("couchshare");
        let log = std::fs::File::create(log)?;
        let mut command = Command::new(exe);
        command
            .args(["run", "--namespace", ns, "--health-addr", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", &concurrency.to_string(), "--resync-interval", &format!("{resync_secs}s")])
            .env("RUST_LOG", std::env::var("COUCHSHARE_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
        // `K=V K=V` for the operator alone: a heap profiler's preload, an allocator setting.
        for pair in std::env::var("COUCHSHARE_BENCH_OPERATOR_ENV").unwrap_or_default().split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                command.env(k, v);
            }
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::from(log)).spawn().context("start couchshare run")?;
        Ok(Operator { child, metrics_url: format!("http://127.0.0.1:{port}/metrics") })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
