//! What every reconciler shares, in parts with one contract each: the watched objects
//! ([`Stores`]), the CouchDB clients (`clients`), the `_security` ledger (`ledger`), the
//! per-server tasks (`tasks`), the backoff (`backoff`), the `_scheduler/docs` reads
//! (`scheduler`) and the metrics; plus the Kubernetes client, the Event publisher (`events`)
//! and the options.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};

use super::backoff::{Backoff, jitter};
use super::clients::ClientCache;
use super::events::{EventPublisher, Publish};
use super::keys::ServerKey;
use super::metrics::Metrics;
use super::requeues::{DatabaseTrigger, GrantTrigger, ServerTrigger, ShareTrigger, Triggers, UserTrigger};
use super::tasks::{Task, Tasks};
use crate::api::{CouchBackup, CouchDatabase, CouchGrant, CouchScheduledBackup, CouchServer, CouchShare, CouchUser};
use crate::controller::shared::ledger::Ledger;
use crate::controller::triggers::scheduler::SchedulerCache;

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
    /// Where the backup volume is mounted (`--backup-dir`); `None`: no volume destinations.
    pub backup_dir: Option<std::path::PathBuf>,
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
            backup_dir: None,
        }
    }
}

/// The audit's default `_security` reads per second per server: a hand edit is found within
/// 20 s at 1,000 databases, for about 4% of what one CouchDB 3.5 node served in a measurement
/// (1,290 sequential reads a second; see docs/architecture.md).
pub const DEFAULT_SECURITY_AUDIT_RATE: f64 = 50.0;

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
    /// CouchBackups.
    pub backups: Store<CouchBackup>,
    /// CouchScheduledBackups.
    pub scheduled_backups: Store<CouchScheduledBackup>,
    /// Secrets, metadata only (names and resourceVersions; never data).
    pub secrets: Store<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
}

impl Stores {
    /// Waits until every watch of the seven kinds has listed its objects once. Reconcilers read
    /// each other's stores: a database reconciled before the shares were listed would write
    /// `_security` without their replication users, cutting off running replications. (The
    /// Secret metadata store is not waited for: a client is built from a Secret read when the
    /// store lacks it.)
    pub async fn ready(&self) {
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
            && ready(&self.shares)
            && ready(&self.backups)
            && ready(&self.scheduled_backups))
        {
            if !warned && started.elapsed() > Duration::from_secs(30) {
                tracing::warn!("still waiting for the first list of every watched kind (can the operator list them?)");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the object of an [`object_key`] is in its kind's store (a key of another kind
    /// counts as present: nothing here says it is gone).
    pub fn has(&self, key: &str) -> bool {
        fn within<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: &str, name: &str) -> bool {
            store.get(&ObjectRef::new(name).within(ns)).is_some()
        }
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else { return true };
        match kind {
            "CouchServer" => within(&self.servers, ns, name),
            "CouchDatabase" => within(&self.databases, ns, name),
            "CouchUser" => within(&self.users, ns, name),
            "CouchGrant" => within(&self.grants, ns, name),
            "CouchShare" => within(&self.shares, ns, name),
            "CouchBackup" => within(&self.backups, ns, name),
            "CouchScheduledBackup" => within(&self.scheduled_backups, ns, name),
            _ => true,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub(crate) events: EventPublisher,
    /// Tunables.
    pub options: Options,
    /// Every watched object, as last seen by its kind's one watch.
    pub stores: Stores,
    /// The admin CouchDB client of each CouchServer.
    pub(crate) clients: ClientCache,
    /// The `_security` each managed database was last brought to (one writer: the database
    /// reconciler; see `ledger`).
    pub(crate) ledger: Arc<Ledger>,
    /// The per-server tasks: `_db_updates` follower, `_security` auditor, membership watch,
    /// `_users` follower.
    pub(crate) tasks: Tasks,
    /// What the `_users` followers say of the managed users' documents (see `users_known`).
    pub(crate) users_known: Arc<crate::controller::shared::users_known::UsersKnown>,
    /// The `_changes` followers of the replicator databases shares use (see `replicator_feed`).
    pub(crate) replicator_feeds: crate::controller::triggers::replicator_feed::ReplicatorFeeds,
    /// Per server: the source of its database events, and the nudge to look for the feed again.
    pub(crate) server_feeds: Arc<crate::controller::triggers::db_events::ServerFeeds>,
    /// The on-change fan-in engines, one per CouchShare with strategy `OnChange`.
    pub(crate) engines: crate::controller::share::engine::Engines,
    /// Consecutive failures per object, for the retry delay.
    pub(crate) backoff: Backoff,
    /// `_scheduler/docs` reads, shared by the shares on one replicator database.
    pub(crate) scheduler: SchedulerCache,
    /// What each grant's last pass left in its status, ahead of the grants' store.
    pub(crate) grant_passes: crate::controller::shared::grant_passes::GrantPasses,
    /// The membership each cluster's last pass planned from (see `membership`).
    pub(crate) membership: crate::controller::triggers::membership_views::MembershipWatch,
    /// The shares waiting for their jobs to start, and the reads that wake them.
    pub(crate) scheduler_watch: crate::controller::triggers::scheduler_watch::SchedulerWatch,
    /// The process's metrics (served on `/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// Requeues CouchServers when the source of their database events changes (see `drift`).
    pub(crate) server_trigger: Option<ServerTrigger>,
    /// Requeues CouchDatabases from CouchDB's own feeds (see `drift`).
    pub(crate) database_trigger: Option<DatabaseTrigger>,
    /// Requeues CouchGrants when their database's reconciler has merged them into `_security`.
    pub(crate) grant_trigger: Option<GrantTrigger>,
    /// Requeues CouchShares when a database they use has merged their replication user.
    pub(crate) share_trigger: Option<ShareTrigger>,
    /// Requeues CouchUsers when their server is ready for them (see `wakeups`).
    pub(crate) user_trigger: Option<UserTrigger>,
    /// The Secrets this process wrote, so that their watch events are not taken for changes.
    pub(crate) own_writes: Arc<crate::controller::triggers::own_writes::OwnWrites>,
    /// One lock per unmanaged database whose `_security` grants write (read-modify-write).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    /// A context for the controllers.
    pub fn new(client: Client, options: Options, stores: Stores, triggers: Triggers, metrics: Arc<Metrics>) -> Self {
        Context {
            events: EventPublisher::new(client.clone(), "couchshare", std::env::var("POD_NAME").ok()),
            client,
            backoff: Backoff::new(options.backoff_base, options.backoff_max),
            options,
            stores,
            clients: ClientCache::default(),
            ledger: Arc::default(),
            tasks: Tasks::default(),
            users_known: Arc::default(),
            replicator_feeds: Default::default(),
            server_feeds: Arc::default(),
            engines: Default::default(),
            scheduler: SchedulerCache::default(),
            scheduler_watch: Default::default(),
            membership: Default::default(),
            grant_passes: Default::default(),
            metrics,
            server_trigger: triggers.servers,
            database_trigger: triggers.databases,
            grant_trigger: triggers.grants,
            share_trigger: triggers.shares,
            user_trigger: triggers.users,
            own_writes: Arc::default(),
            locks: Mutex::default(),
        }
    }

    /// Waits until every watch has listed its objects once (see [`Stores::ready`]).
    pub async fn stores_ready(&self) {
        self.stores.ready().await
    }

    /// Notes that this process is creating `database` on `server`, when a `_db_updates`
    /// follower runs for it (it takes the note back when the creation event arrives).
    pub(crate) fn note_created(&self, server: &ServerKey, database: &str) {
        if self.tasks.running(Task::Follower, server) {
            self.ledger.note_created(server, database);
        }
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let event = Publish { regarding: obj.object_ref(&()), warning, reason, note: within_bytes(note, 1024) };
        if let Err(e) = self.events.publish(event).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// The delay before retrying `key` after another transient failure; first forgets the
    /// failures of objects that are gone (deleted while failing: only a success resets).
    pub fn next_backoff(&self, key: &str) -> Duration {
        self.backoff.prune(|k| self.stores.has(k));
        self.backoff.next(key)
    }

    /// The lock serialising `_security` writes to one unmanaged database.
    pub fn database_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }

    /// The next periodic resync, jittered so objects do not resync in lockstep.
    pub fn resync(&self) -> Duration {
        jitter(self.options.resync, 0.1)
    }
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

/// `text` cut at a character boundary to at most `max` bytes (the API server's limit on an
/// Event's note is in bytes).
fn within_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_note_is_cut_to_the_byte_limit_at_a_character_boundary() {
        assert_eq!(super::within_bytes("abc".into(), 1024), "abc");
        let long = "é".repeat(600); // 1,200 bytes
        let cut = super::within_bytes(long, 1024);
        assert_eq!((cut.len(), cut.chars().count()), (1024, 512));
        assert_eq!(super::within_bytes("aé".into(), 2), "a", "not inside the é");
    }
}
