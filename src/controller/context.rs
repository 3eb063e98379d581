//! What every reconciler shares: the Kubernetes client, the Event recorder, the options,
//! per-object failure counts for backoff, caches of CouchDB clients and watched objects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use rand::Rng;

use crate::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use crate::couch::CouchClient;

use super::keys::ServerKey;

/// Tunables of the operator process.
#[derive(Debug, Clone)]
pub struct Options {
    /// Periodic resync of every object (jittered ±10%).
    pub resync: Duration,
    /// First retry delay after a transient error.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a deletion keeps retrying an unreachable server before it lets go.
    pub deletion_grace: Duration,
    /// Timeout of each CouchDB request.
    pub couch_timeout: Duration,
    /// `_security` reads per second per server by the audit (0: no audit).
    pub security_audit_rate: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            deletion_grace: Duration::from_secs(300),
            couch_timeout: Duration::from_secs(10),
            security_audit_rate: DEFAULT_SECURITY_AUDIT_RATE,
        }
    }
}

/// The audit's default `_security` reads per second per server: a hand edit is found within
/// 20 s at 1,000 databases, for about 4% of what one CouchDB 3.5 node served in a measurement
/// (1,290 sequential reads a second; see the README).
pub const DEFAULT_SECURITY_AUDIT_RATE: f64 = 50.0;

/// A CouchDB client built from a CouchServer's URL, Secret and CA, reused while they stay the same.
pub(crate) struct CachedClient {
    pub fingerprint: [u8; 32],
    /// URL and the resourceVersions of the Secrets it was built from, when known: while they
    /// are the same, the client is reused without reading the Secrets again.
    pub versions: Option<String>,
    pub client: CouchClient,
}

/// The `_security` each managed database was last brought to, by server namespace, server name
/// and database.
pub(crate) type RecordedSecurity = HashMap<(ServerKey, String), crate::couch::Security>;

/// A running per-server task (the `_db_updates` follower, the `_security` audit) and what it
/// was started for (URL and server UID).
pub(crate) type Follower = (String, tokio::task::JoinHandle<()>);

/// Keeps one task per CouchServer in `tasks`: a running one started for the same URL and UID
/// stays, one started for another URL or UID (or finished) is replaced by `start()`.
pub(crate) fn keep_task(
    tasks: &Mutex<HashMap<ServerKey, Follower>>,
    server: &CouchServer,
    start: impl FnOnce() -> tokio::task::JoinHandle<()>,
) {
    use kube::ResourceExt;
    let key = ServerKey::of(server);
    let fingerprint = format!("{}|{}", server.spec.url, server.uid().unwrap_or_default());
    let mut tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((fp, handle)) = tasks.get(&key) {
        if *fp == fingerprint && !handle.is_finished() {
            return;
        }
        handle.abort();
    }
    tasks.insert(key, (fingerprint, start()));
}

/// Whether the CouchServer `key` still exists: a per-server task ends when it does not.
pub(crate) fn server_exists(servers: &Store<CouchServer>, key: &ServerKey) -> bool {
    servers.state().iter().any(|s| ServerKey::of(s) == *key)
}

/// The controllers' caches of every watched object, for lookups across kinds.
pub struct Stores {
    /// CouchServers.
    pub servers: Store<CouchServer>,
    /// CouchDatabases.
    pub databases: Store<CouchDatabase>,
    /// CouchUsers.
    pub users: Store<CouchUser>,
    /// CouchGrants.
    pub grants: Store<CouchGrant>,
    /// CouchShares.
    pub shares: Store<CouchShare>,
    /// Secrets, metadata only (names and resourceVersions; never data).
    pub secrets: Store<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
}

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Tunables.
    pub options: Options,
    /// Every CouchDatabase, as last seen by the controller's watch.
    pub databases: Store<CouchDatabase>,
    /// Every CouchServer, as last seen by the controller's watch.
    pub servers: Store<CouchServer>,
    /// Every CouchUser, as last seen by the controller's watch.
    pub users: Store<CouchUser>,
    /// Every CouchGrant, as last seen by the controller's watch.
    pub grants: Store<CouchGrant>,
    /// Every CouchShare, as last seen by the controller's watch.
    pub shares: Store<CouchShare>,
    /// Every Secret's metadata, as last seen by the watch.
    pub secrets: Store<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
    /// One lock per unmanaged database whose `_security` grants write (read-modify-write).
    locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) couch_clients: Mutex<HashMap<String, CachedClient>>,
    /// Requeues CouchDatabases from CouchDB's own feeds (see `drift`).
    pub(crate) database_trigger: Option<super::drift::DatabaseTrigger>,
    /// Requeues CouchGrants when their database's reconciler has merged them into `_security`.
    pub(crate) grant_trigger: Option<GrantTrigger>,
    /// One `_db_updates` follower per CouchServer, with what it was started for.
    pub(crate) followers: Mutex<HashMap<ServerKey, Follower>>,
    /// One `_security` auditor per CouchServer, with what it was started for.
    pub(crate) auditors: Mutex<HashMap<ServerKey, Follower>>,
    failures: Mutex<HashMap<String, u32>>,
    /// The `_security` each managed database was last brought to by its reconciler, by
    /// server namespace, server name and database: grants check themselves against it
    /// instead of reading `_security` again (that reconciler is its only writer).
    pub(crate) security: std::sync::Arc<Mutex<RecordedSecurity>>,
    /// Databases this process created, by server namespace, server name and database, until
    /// `_db_updates` reports their creation: that event is ours, not drift.
    pub(crate) created_here: std::sync::Arc<Mutex<std::collections::HashSet<(ServerKey, String)>>>,
    /// `_scheduler/docs` per server and replicator database, read at most once per
    /// [`SCHEDULER_TTL`] however many shares ask.
    scheduler: tokio::sync::Mutex<HashMap<String, SchedulerRead>>,
}

/// Where a database reconciler asks for its grants to be looked at again.
pub type GrantTrigger = tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<CouchGrant>>;

/// Channels by which one controller requeues another's objects.
#[derive(Default)]
pub struct Triggers {
    /// To the CouchDatabase controller.
    pub databases: Option<super::drift::DatabaseTrigger>,
    /// To the CouchGrant controller.
    pub grants: Option<GrantTrigger>,
}

/// One `_scheduler/docs` read and when it was made.
type SchedulerRead = (std::time::Instant, std::sync::Arc<Vec<crate::couch::ReplicationStatus>>);

/// How long one `_scheduler/docs` read serves every share on the same replicator database.
pub const SCHEDULER_TTL: Duration = Duration::from_secs(1);

impl Context {
    /// A context for the controllers.
    pub fn new(client: Client, options: Options, stores: Stores, triggers: Triggers) -> Self {
        let Stores { servers, databases, users, grants, shares, secrets } = stores;
        let reporter = Reporter { controller: "couchshare".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            options,
            databases,
            servers,
            users,
            grants,
            shares,
            secrets,
            locks: Mutex::default(),
            couch_clients: Mutex::default(),
            database_trigger: triggers.databases,
            grant_trigger: triggers.grants,
            followers: Mutex::default(),
            auditors: Mutex::default(),
            failures: Mutex::default(),
            security: std::sync::Arc::default(),
            created_here: std::sync::Arc::default(),
            scheduler: tokio::sync::Mutex::default(),
        }
    }

    /// Waits until every watch has listed its objects once. Reconcilers read each other's
    /// stores: a database reconciled before the shares were listed would write `_security`
    /// without their replication users, cutting off running replications. (The Secret
    /// metadata store is not waited for: a client is built from a Secret read when the store
    /// lacks it.)
    pub async fn stores_ready(&self) {
        // Polled, not awaited: a store's readiness wakes only one of many waiters, and the
        // others slept until their own timeout.
        fn ready<K: kube::runtime::reflector::Lookup + Clone + 'static>(store: &Store<K>) -> bool
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            futures::FutureExt::now_or_never(store.wait_until_ready()).is_some()
        }
        let started = std::time::Instant::now();
        let mut warned = false;
        while !(ready(&self.servers)
            && ready(&self.databases)
            && ready(&self.users)
            && ready(&self.grants)
            && ready(&self.shares))
        {
            if !warned && started.elapsed() > Duration::from_secs(30) {
                tracing::warn!("still waiting for the first list of every watched kind (can the operator list them?)");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records the `_security` a database reconciler left `database` on `server` with.
    pub(crate) fn record_security(&self, server: &ServerKey, database: &str, security: crate::couch::Security) {
        let key = (server.clone(), database.to_string());
        self.security.lock().unwrap_or_else(|e| e.into_inner()).insert(key, security);
    }

    /// The `_security` recorded for `database` on `server`, if its reconciler ran in this process.
    pub(crate) fn recorded_security(&self, server: &ServerKey, database: &str) -> Option<crate::couch::Security> {
        let key = (server.clone(), database.to_string());
        self.security.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned()
    }

    /// Notes that this process is creating `database` on `server`, when a `_db_updates`
    /// follower runs for it (it takes the note back when the creation event arrives).
    pub(crate) fn note_created(&self, server: &ServerKey, database: &str) {
        let following = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .is_some_and(|(_, handle)| !handle.is_finished());
        if following {
            let key = (server.clone(), database.to_string());
            self.created_here.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
        }
    }

    /// Forgets the `_security` of a database (deleted, or its reconcile failed).
    pub(crate) fn forget_security(&self, server: &ServerKey, database: &str) {
        let key = (server.clone(), database.to_string());
        self.security.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// The delay before retrying `key` after its n-th consecutive transient failure:
    /// exponential from `backoff_base`, capped at `backoff_max`, with ±20% jitter.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = self.options.backoff_base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
        jitter(exp.min(self.options.backoff_max), 0.2)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The replication states of a replicator database: one paged `_scheduler/docs` read
    /// serves every share reconciled within [`SCHEDULER_TTL`].
    pub async fn replication_statuses(
        &self,
        server: &str,
        couch: &crate::couch::CouchClient,
        replicator: &str,
    ) -> Result<std::sync::Arc<Vec<crate::couch::ReplicationStatus>>, crate::couch::CouchError> {
        let key = format!("{server}|{replicator}");
        let mut cache = self.scheduler.lock().await;
        if let Some((at, statuses)) = cache.get(&key)
            && at.elapsed() < SCHEDULER_TTL
        {
            return Ok(statuses.clone());
        }
        let statuses = std::sync::Arc::new(couch.replication_statuses(replicator).await?);
        cache.insert(key, (std::time::Instant::now(), statuses.clone()));
        Ok(statuses)
    }

    /// The lock serialising `_security` writes to one unmanaged database.
    pub fn database_lock(&self, key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }

    /// The next periodic resync, jittered so objects do not resync in lockstep.
    pub fn resync(&self) -> Duration {
        jitter(self.options.resync, 0.1)
    }
}

/// `d` ± `fraction`, uniformly.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    d.mul_f64(factor)
}

/// The time used for conditions.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A stable key for per-object bookkeeping.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}
