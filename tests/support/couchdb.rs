//! The CouchDB server the tests talk to (`COUCHDB_URL`, `COUCHDB_USER`, `COUCHDB_PASSWORD`,
//! written by tools/testbin/start-couchdb.sh), skipping by capability, and unique names.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use couchshare::couch::{Capabilities, CouchClient, CouchConfig, CouchError, CreateDatabase, Credentials, RetryPolicy};

/// An admin client for the test server, or `None` (after saying so) when no server is
/// configured. With `COUCHSHARE_REQUIRE_COUCHDB=1` a missing server fails the test instead.
pub fn client(test: &str) -> Option<CouchClient> {
    let Some(url) = std::env::var("COUCHDB_URL").ok().filter(|u| !u.is_empty()) else {
        if std::env::var("COUCHSHARE_REQUIRE_COUCHDB").as_deref() == Ok("1") {
            panic!(
                "{test}: COUCHSHARE_REQUIRE_COUCHDB=1 but COUCHDB_URL is not set; start a server \
                 with tools/testbin/start-couchdb.sh DIR and source DIR/couchdb.env"
            );
        }
        say_skip(&format!(
            "SKIP {test}: no CouchDB (set COUCHDB_URL, COUCHDB_USER and COUCHDB_PASSWORD, or run \
             tools/testbin/start-couchdb.sh DIR and source DIR/couchdb.env)"
        ));
        return None;
    };
    let user = std::env::var("COUCHDB_USER").expect("COUCHDB_URL is set: COUCHDB_USER must be too");
    let password = std::env::var("COUCHDB_PASSWORD").expect("COUCHDB_URL is set: COUCHDB_PASSWORD must be too");
    let mut config = CouchConfig::new(url, Some(Credentials::new(user, password)));
    config.request_timeout = Duration::from_secs(30);
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        max_total_delay: Duration::from_secs(3),
    };
    Some(CouchClient::new(config).expect("a valid CouchDB client configuration"))
}

/// [`client`], with the system databases made sure of (a fresh node has none).
pub async fn ready_client(test: &str) -> Option<CouchClient> {
    let couch = client(test)?;
    ensure_system_databases(&couch).await;
    Some(couch)
}

/// The URL the server uses to reach itself in replication endpoints
/// (`COUCHDB_REPLICATION_URL`, default `COUCHDB_URL`).
pub fn replication_url() -> String {
    std::env::var("COUCHDB_REPLICATION_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("COUCHDB_URL").ok())
        .expect("COUCHDB_URL is set")
        .trim_end_matches('/')
        .to_owned()
}

/// The admin credentials of the test server.
pub fn admin_credentials() -> Credentials {
    Credentials::new(
        std::env::var("COUCHDB_USER").expect("COUCHDB_USER"),
        std::env::var("COUCHDB_PASSWORD").expect("COUCHDB_PASSWORD"),
    )
}

/// Prints a skip notice past the test harness's output capture, so that a skip shows in a
/// normal run and never passes silently. `tools/test` lists these lines and counts them in its
/// closing line: `SKIP <test>: why` is a whole test, `SKIP <test> (<what> part): why` a part.
pub fn say_skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// A skip because the CouchDB server lacks something (a capability, a behaviour of Apache
/// CouchDB). With `COUCHSHARE_REQUIRE_CAPABILITIES=1` — for runs against a real CouchDB — it
/// fails the test instead.
pub fn skip_lacking(message: &str) {
    if std::env::var("COUCHSHARE_REQUIRE_CAPABILITIES").as_deref() == Ok("1") {
        panic!("COUCHSHARE_REQUIRE_CAPABILITIES=1, and {message}");
    }
    say_skip(message);
}

/// Whether the server has capability `name` (a field of [`Capabilities`]); when it has not,
/// says which test skips for lack of what.
pub fn require_capability(test: &str, caps: &Capabilities, name: &str) -> bool {
    let has = match name {
        "scheduler" => caps.scheduler,
        "node_config" => caps.node_config,
        "purge" => caps.purge,
        "selector_replication" => caps.selector_replication,
        "auth_object_in_endpoints" => caps.auth_object_in_endpoints,
        "partitioned" => caps.partitioned,
        "peruser" => caps.peruser,
        "db_updates" => caps.db_updates,
        "up" => caps.up,
        "changes_selector" => caps.changes_selector,
        other => panic!("{test}: unknown capability {other:?}"),
    };
    if !has {
        skip_lacking(&format!("SKIP {test}: server lacks capability {name}"));
    }
    has
}

/// A name no other test (or earlier run) uses: `prefix` plus a random suffix, valid as a
/// CouchDB database or user name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Polls `check` until it returns `Some`, or gives up after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `_users`, `_replicator` and `_global_changes` on a real CouchDB that has not been
/// set up yet (a fresh single node has none of them); pouchdb-server has its own.
pub async fn ensure_system_databases(couch: &CouchClient) {
    let info = couch.server_info().await.expect("GET / of the test server");
    if !info.is_couchdb {
        return;
    }
    for db in ["_users", "_replicator", "_global_changes"] {
        match couch.create_database(db, &CreateDatabase::default()).await {
            Ok(()) | Err(CouchError::PreconditionFailed { .. }) => {}
            Err(e) => panic!("creating system database {db}: {e}"),
        }
    }
}

/// A CouchDB of a test's own, started with `tools/testbin/start-couchdb.sh DIR --cluster` (or
/// `--single`) from the build that `tools/test` made: for a test that needs a server nobody has
/// touched yet (a cluster formed by its seedlist and not finished). Stopped when dropped.
pub struct PrivateCouch {
    dir: std::path::PathBuf,
    /// Its URL, admin user and password (from `DIR/couchdb.env`).
    pub url: String,
    pub user: String,
    pub password: String,
}

impl PrivateCouch {
    /// Starts one (`topology`: `cluster` or `single`), or `None` (after a SKIP naming what was
    /// missing) when the scripts cannot start it and the run does not require CouchDB.
    pub fn start(test: &str, topology: &str) -> Option<Self> {
        let parent =
            std::env::var_os("COUCHSHARE_TEST_WORK").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = parent.join(format!("couchdb-{topology}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("CouchDB directory");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/testbin/start-couchdb.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(format!("--{topology}"))
            .env("COUCHDB_URL", "")
            .output();
        let started = match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = started {
            if std::env::var("COUCHSHARE_REQUIRE_COUCHDB").as_deref() == Ok("1") {
                panic!("{test}: a private CouchDB ({topology}) did not start:\n{why}");
            }
            say_skip(&format!(
                "SKIP {test}: no private CouchDB {topology} could be started (the CouchDB build of tools/testbin/build-couchdb.sh): {why}"
            ));
            return None;
        }
        let env = std::fs::read_to_string(dir.join("couchdb.env")).expect("couchdb.env");
        let value = |key: &str| {
            env.lines()
                .find_map(|l| l.trim_start_matches("export ").strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches(['\'', '"']).to_string())
                .unwrap_or_else(|| panic!("{key} in couchdb.env"))
        };
        Some(PrivateCouch {
            url: value("COUCHDB_URL"),
            user: value("COUCHDB_USER"),
            password: value("COUCHDB_PASSWORD"),
            dir,
        })
    }

    /// An admin client for it.
    pub fn client(&self) -> CouchClient {
        let mut config =
            CouchConfig::new(self.url.clone(), Some(Credentials::new(self.user.clone(), self.password.clone())));
        config.request_timeout = Duration::from_secs(30);
        CouchClient::new(config).expect("a valid CouchDB client configuration")
    }
}

impl Drop for PrivateCouch {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/testbin/stop-couchdb.sh");
        let _ = std::process::Command::new("bash").arg(script).arg(&self.dir).output();
    }
}
