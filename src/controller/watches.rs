//! How the controllers watch: one backoff per watch, and predicates that keep a controller from
//! reconciling on writes that cannot change its result (above all, its own status writes).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures::Stream;
use kube::runtime::controller::Controller;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::scoped;
use crate::api::{CouchDatabase, CouchShare};

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

/// Watch events of one kind as a trigger stream. Each watch backs off on its own: after an API
/// server restart every watch gets `410 Expired` once and relists, and one watch's errors must
/// not pause the others (a controller's shared trigger backoff would serialise those relists
/// behind an ever longer pause).
pub(crate) fn watched<K: Watched>(
    client: &Client,
    ns: Option<&str>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    watcher(scoped::<K>(client, ns), watcher::Config::default()).default_backoff().touched_objects()
}

/// Like [`watched`], passing an object only when `predicate` says it changed (and on first sight).
pub(crate) fn watched_when<K: Watched>(
    client: &Client,
    ns: Option<&str>,
    predicate: fn(&K) -> Option<u64>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    watched::<K>(client, ns).predicate_filter(predicate, Default::default())
}

/// A controller for `K` that reconciles an object when what it declares changed — spec
/// (generation), deletion, labels or annotations — and not on its own writes: its status, and
/// the finalizer it adds in the same pass that applies (see `finalize`), would otherwise make
/// every reconcile run twice. The store still sees every write. The periodic resync and the
/// other watches cover the rest.
pub(crate) fn controller_for<K: Watched>(client: &Client, ns: Option<&str>) -> Controller<K> {
    let (reader, writer) = reflector::store();
    let own = watcher(scoped::<K>(client, ns), watcher::Config::default())
        .default_backoff()
        .modify(forget_managed_fields)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(declared::<K>, Default::default());
    Controller::for_stream(own, reader).trigger_backoff(NoPause)
}

/// Drops `managedFields` before an object is cached: nothing reads them, and at a thousand
/// objects per kind they are most of the memory.
pub(crate) fn forget_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// A hash of what an object declares: generation, deletion, labels, annotations.
pub(crate) fn declared<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    Some(h.finish())
}

/// A CouchDatabase as a grant sees it: what it declares, plus the name it holds on CouchDB (a
/// grant waits for that). `_security` changes reach grants through the database reconciler.
pub(crate) fn database_for_grants(db: &CouchDatabase) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(db).hash(&mut h);
    db.status.as_ref().and_then(|s| s.couch_name.as_deref()).hash(&mut h);
    Some(h.finish())
}

/// A CouchShare as a database sees it: what it declares, and whether it was revoked (a revoked
/// share's replication user leaves `_security`).
pub(crate) fn share_for_databases(share: &CouchShare) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(share).hash(&mut h);
    share.status.as_ref().is_some_and(|s| s.revoked).hash(&mut h);
    Some(h.finish())
}

/// The trigger backoff of every controller: none, because each watch already backs off.
struct NoPause;

impl Iterator for NoPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoPause {
    fn reset(&mut self) {}
}
