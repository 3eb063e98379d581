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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            deletion_grace: Duration::from_secs(300),
            couch_timeout: Duration::from_secs(10),
        }
    }
}

/// A CouchDB client built from a CouchServer's URL, Secret and CA, reused while they stay the same.
pub(crate) struct CachedClient {
    pub fingerprint: [u8; 32],
    pub client: CouchClient,
}

/// A running `_db_updates` follower and what it was started for (URL and server UID).
pub(crate) type Follower = (String, tokio::task::JoinHandle<()>);

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
    /// One lock per unmanaged database whose `_security` grants write (read-modify-write).
    locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) couch_clients: Mutex<HashMap<String, CachedClient>>,
    /// Requeues CouchDatabases from CouchDB's own feeds (see `drift`).
    pub(crate) database_trigger: Option<super::drift::DatabaseTrigger>,
    /// One `_db_updates` follower per CouchServer, with what it was started for.
    pub(crate) followers: Mutex<HashMap<(String, String), Follower>>,
    failures: Mutex<HashMap<String, u32>>,
    /// `_scheduler/docs` per server and replicator database, read at most once per
    /// [`SCHEDULER_TTL`] however many shares ask.
    scheduler: tokio::sync::Mutex<HashMap<String, SchedulerRead>>,
}

/// One `_scheduler/docs` read and when it was made.
type SchedulerRead = (std::time::Instant, std::sync::Arc<Vec<crate::couch::ReplicationStatus>>);

/// How long one `_scheduler/docs` read serves every share on the same replicator database.
pub const SCHEDULER_TTL: Duration = Duration::from_secs(1);

impl Context {
    /// A context for the controllers.
    pub fn new(
        client: Client,
        options: Options,
        stores: Stores,
        database_trigger: Option<super::drift::DatabaseTrigger>,
    ) -> Self {
        let Stores { servers, databases, users, grants, shares } = stores;
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
            locks: Mutex::default(),
            couch_clients: Mutex::default(),
            database_trigger,
            followers: Mutex::default(),
            failures: Mutex::default(),
            scheduler: tokio::sync::Mutex::default(),
        }
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
