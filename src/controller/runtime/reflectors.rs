//! One watch per kind, shared by every controller: each kind's watcher fills one store and
//! fans its events out to the controllers that subscribed, each of which filters them with its
//! own predicate.
//!
//! Not kube-runtime's `Writer::subscribe`: its subscribers are told of applied objects only,
//! never of deletions, and a deleted Secret (or a user gone for good) must still requeue the
//! objects that use it.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::api::{CouchBackup, CouchDatabase, CouchGrant, CouchScheduledBackup, CouchServer, CouchShare, CouchUser};

/// What every watched kind is.
pub(crate) trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Drops `managedFields` before an object is cached: nothing reads them, and at a thousand
/// objects per kind they are most of the memory.
pub(crate) fn forget_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// The API of `K` in the watched namespace, or in all.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What a subscriber is told: an object was applied (listed, created, changed) or deleted.
#[derive(Clone)]
enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

/// One kind's watch: its store, and the subscribers its events go to. Subscribe first, then
/// [`start`](Self::start) it.
pub(crate) struct Shared<K: Watched> {
    reader: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Vec<(bool, UnboundedSender<Change<K>>)>,
}

impl<K: Watched> Shared<K> {
    fn new() -> Self {
        let writer = reflector::store::Writer::default();
        Shared { reader: writer.as_reader(), writer, subscribers: Vec::new() }
    }

    /// The store every subscriber shares.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    fn subscribe(&mut self, deletions: bool) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = unbounded_channel();
        self.subscribers.push((deletions, tx));
        receive(rx)
    }

    /// Objects applied (listed, created, changed): a controller's own trigger.
    pub fn applied(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe(false)
    }

    /// Objects applied or deleted: what a watch of a related kind maps from.
    pub fn touched(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe(true)
    }

    /// Like [`touched`](Self::touched), passing an object only when `predicate` says it changed
    /// (and on first sight).
    pub fn touched_when(
        &mut self,
        predicate: fn(&K) -> Option<u64>,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        super::changed::changed_when(self.touched(), predicate)
    }

    /// Runs `events` (a watch with its own backoff) into the store and out to the subscribers.
    fn start<S>(self, events: S) -> JoinHandle<()>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let Shared { writer, subscribers, .. } = self;
        tokio::spawn(async move {
            let mut events = std::pin::pin!(reflector::reflector(writer, events));
            while let Some(event) = events.next().await {
                let change = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Change::Applied(Arc::new(o)),
                    Ok(watcher::Event::Delete(o)) => Change::Deleted(Arc::new(o)),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    // The watch backs off and retries by itself; the error is only logged.
                    Err(e) => {
                        tracing::debug!(kind = %K::kind(&()), error = %e, "watch error; retrying");
                        continue;
                    }
                };
                for (deletions, tx) in &subscribers {
                    if *deletions || matches!(change, Change::Applied(_)) {
                        // A closed subscriber is a controller that stopped: nothing to tell.
                        let _ = tx.send(change.clone());
                    }
                }
            }
        })
    }
}

/// A subscriber's channel as a trigger stream.
fn receive<K: Clone + Send + Sync + 'static>(
    rx: UnboundedReceiver<Change<K>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        let change = rx.recv().await?;
        let (Change::Applied(o) | Change::Deleted(o)) = change;
        Some((Ok(Arc::unwrap_or_clone(o)), rx))
    })
}

/// The one watch of each kind the operator reads.
pub(crate) struct Reflectors {
    /// CouchServers.
    pub servers: Shared<CouchServer>,
    /// CouchDatabases.
    pub databases: Shared<CouchDatabase>,
    /// CouchUsers.
    pub users: Shared<CouchUser>,
    /// CouchGrants.
    pub grants: Shared<CouchGrant>,
    /// CouchShares.
    pub shares: Shared<CouchShare>,
    /// CouchBackups.
    pub backups: Shared<CouchBackup>,
    /// CouchScheduledBackups.
    pub scheduled_backups: Shared<CouchScheduledBackup>,
    /// Secrets, metadata only: the operator never keeps Secret data in memory.
    pub secrets: Shared<PartialObjectMeta<Secret>>,
}

impl Reflectors {
    /// Reflectors with no subscribers yet.
    pub fn new() -> Self {
        Reflectors {
            servers: Shared::new(),
            databases: Shared::new(),
            users: Shared::new(),
            grants: Shared::new(),
            shares: Shared::new(),
            backups: Shared::new(),
            scheduled_backups: Shared::new(),
            secrets: Shared::new(),
        }
    }

    /// The stores, for the context.
    pub fn stores(&self) -> super::context::Stores {
        super::context::Stores {
            servers: self.servers.store(),
            databases: self.databases.store(),
            users: self.users.store(),
            grants: self.grants.store(),
            shares: self.shares.store(),
            backups: self.backups.store(),
            scheduled_backups: self.scheduled_backups.store(),
            secrets: self.secrets.store(),
        }
    }

    /// Starts the eight watches (in `ns`, or every namespace). Each backs off on its own: after
    /// an API server restart every watch gets `410 Expired` once and relists, and one watch's
    /// errors must not pause the others.
    pub fn start(self, client: &Client, ns: Option<&str>) -> Vec<JoinHandle<()>> {
        fn watch<K: Watched>(
            client: &Client,
            ns: Option<&str>,
        ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
            watcher(scoped::<K>(client, ns), watcher::Config::default()).default_backoff().modify(forget_managed_fields)
        }
        vec![
            self.servers.start(watch(client, ns)),
            self.databases.start(watch(client, ns)),
            self.users.start(watch(client, ns)),
            self.grants.start(watch(client, ns)),
            self.shares.start(watch(client, ns)),
            self.backups.start(watch(client, ns)),
            self.scheduled_backups.start(watch(client, ns)),
            // `Api<PartialObjectMeta<_>>` makes metadata-only requests.
            self.secrets.start(watch(client, ns)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn secret(name: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
            _phantom: Default::default(),
        }
    }

    #[tokio::test]
    async fn deletions_reach_touched_subscribers_only_and_the_store_follows() {
        let mut shared = Shared::<PartialObjectMeta<Secret>>::new();
        let store = shared.store();
        let applied = shared.applied();
        let touched = shared.touched();
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(secret("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Delete(secret("a"))),
            Ok(watcher::Event::Apply(secret("b"))),
        ]);
        shared.start(events).await.ok();
        let names = |s: Vec<Result<PartialObjectMeta<Secret>, watcher::Error>>| {
            s.into_iter().filter_map(|o| o.ok()?.metadata.name).collect::<Vec<_>>()
        };
        assert_eq!(names(applied.collect().await), ["a", "b"]);
        assert_eq!(names(touched.collect().await), ["a", "a", "b"]);
        let left: Vec<_> = store.state().iter().filter_map(|s| s.metadata.name.clone()).collect();
        assert_eq!(left, ["b"]);
    }
}
