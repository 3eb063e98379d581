//! The operator under test, as a process (`couchshare run`), and what tests need around it:
//! waiting for conditions, the example CouchServer, and a TCP proxy that can make CouchDB
//! "go away" and come back without touching the server other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running `couchshare run`, killed when dropped. Its output goes to a log file.
pub struct Operator {
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator watching `namespace`, with a short backoff for tests and a resync of
    /// ten minutes: no test may pass by the resync's safety net, so whatever a test waits for
    /// must come from a trigger (a watch, a reconciler's requeue, a CouchDB feed). A test about
    /// the resync itself passes a shorter one in `extra`.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        let filter = std::env::var("COUCHSHARE_TEST_LOG").unwrap_or_else(|_| "info,couchshare=debug".into());
        Self::start_logging(namespace, extra, &filter)
    }

    /// Like [`Operator::start`], with `RUST_LOG` set to `filter`.
    pub fn start_logging(namespace: &str, extra: &[&str], filter: &str) -> Self {
        Self::start_with_env(namespace, extra, filter, &[])
    }

    /// Like [`Operator::start_logging`], with more environment variables (a `KUBECONFIG` for
    /// another API server, say).
    pub fn start_with_env(namespace: &str, extra: &[&str], filter: &str, env: &[(&str, &std::path::Path)]) -> Self {
        let mut args = vec!["--namespace", namespace];
        args.extend_from_slice(extra);
        Self::spawn(namespace, &args, filter, env)
    }

    /// The operator watching every namespace (as the chart installs it for a shared server),
    /// against the API server of `kubeconfig`: only for a private control plane, where no other
    /// test's resources live.
    /// Its backup volume is [`Operator::cluster_wide_backup_dir`].
    pub fn start_cluster_wide(kubeconfig: &std::path::Path) -> Self {
        let filter = std::env::var("COUCHSHARE_TEST_LOG").unwrap_or_else(|_| "info,couchshare=debug".into());
        let backups = Self::cluster_wide_backup_dir(kubeconfig);
        Self::spawn("all", &[], &filter, &[("KUBECONFIG", kubeconfig), ("COUCHSHARE_BACKUP_DIR", &backups)])
    }

    /// The backup volume (`--backup-dir`) of the operator of [`Operator::start_cluster_wide`]:
    /// a folder beside its control plane's kubeconfig.
    pub fn cluster_wide_backup_dir(kubeconfig: &std::path::Path) -> PathBuf {
        kubeconfig.parent().unwrap_or(std::path::Path::new(".")).join("backups")
    }

    fn spawn(label: &str, extra: &[&str], filter: &str, env: &[(&str, &std::path::Path)]) -> Self {
        let dir = std::env::var_os("COUCHSHARE_TEST_WORK").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let log = dir.join(format!("operator-{label}-{:08x}.log", rand::random::<u32>()));
        let file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_couchshare"))
            .args(["run", "--resync-interval", "10m", "--max-backoff", "4s"])
            .args(["--deletion-grace", "10s", "--health-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", filter)
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().expect("log file handle")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start couchshare run");
        Operator { child, log }
    }

    /// The operator's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its output, for failure messages.
    pub fn tail(&self) -> String {
        let out = self.output();
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `Ready` condition of an object as `(status, reason, message)`.
pub fn ready<K: Serialize>(obj: &K) -> Option<(String, String, String)> {
    let v = serde_json::to_value(obj).ok()?;
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").map(|c| {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    })
}

/// Polls `name` until `accept` says yes; panics with the last state and the operator's log.
pub async fn wait_for<K>(api: &Api<K>, name: &str, op: &Operator, what: &str, accept: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(obj)) = api.get_opt(name).await {
            if accept(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = last.as_ref().and_then(|o| serde_json::to_value(o).ok()).map(|v| v["status"].clone());
    panic!("timed out waiting for {name}: {what}\nlast status: {status:#?}\noperator log:\n{}", op.tail());
}

/// Waits until `check` says yes, for at most `secs`; panics with `what` and the operator's log.
pub async fn eventually_true(what: &str, op: &Operator, secs: u64, check: impl AsyncFn() -> bool) {
    let ok = super::couchdb::eventually(Duration::from_secs(secs), || async { check().await.then_some(()) }).await;
    assert!(ok.is_some(), "timed out: {what}\noperator log:\n{}", op.tail());
}

/// Waits until the object is `Ready=True`.
pub async fn wait_ready<K>(api: &Api<K>, name: &str, op: &Operator) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    wait_for(api, name, op, "Ready=True", |o| ready(o).is_some_and(|r| r.0 == "True")).await
}

/// Waits until the object is gone (its finalizer let go); panics with the operator's log.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, op: &Operator)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let gone = super::couchdb::eventually(Duration::from_secs(45), || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "{name} was not deleted (finalizer still there?)\n{}", op.tail());
}

/// Waits until the object is `Ready=False` with `reason`.
pub async fn wait_not_ready<K>(api: &Api<K>, name: &str, op: &Operator, reason: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    wait_for(api, name, op, &format!("Ready=False reason={reason}"), |o| {
        ready(o).is_some_and(|r| r.0 == "False" && r.1 == reason)
    })
    .await
}

/// Server-side applies a JSON manifest in `ns`.
pub async fn apply_json<K>(client: &Client, ns: &str, manifest: Value) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = manifest["metadata"]["name"].as_str().expect("manifest has a name").to_string();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&name, &PatchParams::apply("couchshare-tests").force(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// Applies CouchDatabase `name` on server `main`, for a database with a unique name, and waits
/// until it is Ready; returns the database's name on CouchDB.
pub async fn ready_database(client: &Client, ns: &str, name: &str, op: &Operator) -> String {
    let couch_name = super::couchdb::unique_name(name);
    let _: couchshare::api::CouchDatabase = apply_json(
        client,
        ns,
        manifest("CouchDatabase", name, json!({"serverRef": {"name": "main"}, "name": couch_name})),
    )
    .await;
    wait_ready(&Api::<couchshare::api::CouchDatabase>::namespaced(client.clone(), ns), name, op).await;
    couch_name
}

/// Creates the admin Secret `couchdb-admin` from the test server's credentials.
pub async fn admin_secret(client: &Client, ns: &str) {
    let creds = super::couchdb::admin_credentials();
    let _: k8s_openapi::api::core::v1::Secret = apply_json(
        client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "couchdb-admin"},
            "stringData": {"username": creds.username, "password": creds.password}
        }),
    )
    .await;
}

/// A couchshare resource manifest.
pub fn manifest(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// A CouchServer manifest named `name` at `url`, using the Secret `couchdb-admin`.
pub fn server_manifest(name: &str, url: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"url": url, "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchServer", "metadata": {"name": name}, "spec": spec})
}

/// A TCP proxy on loopback to the test CouchDB: stopping it makes the server unreachable for
/// whoever uses the proxy's URL, without stopping the server.
pub struct Proxy {
    /// The loopback port it listens on (kept across restarts).
    pub port: u16,
    target: String,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`) on a free port.
    pub async fn start(target: &str) -> Self {
        let mut proxy = Proxy { port: 0, target: target.to_string(), tasks: JoinSet::new() };
        proxy.listen().await;
        proxy
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind proxy port");
        self.port = listener.local_addr().expect("proxy address").port();
        let target = self.target.clone();
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }

    /// Stops listening and drops every open connection.
    pub async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.listen().await;
    }
}

/// `host:port` of a URL like `http://127.0.0.1:5984`.
pub fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).expect("COUCHDB_URL is a URL");
    format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port_or_known_default().unwrap_or(80))
}

/// The data of a Secret as UTF-8 strings.
pub async fn secret_data(client: &Client, ns: &str, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get_opt(name).await.ok()??;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// The Events recorded for the object `name` in `ns`: (reason, message).
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}
