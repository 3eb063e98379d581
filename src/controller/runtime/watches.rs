//! How the controllers watch their kinds' shared streams: predicates that keep a controller from
//! reconciling on writes that cannot change its result (above all, its own status writes).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Controller;

use super::reflectors::{Shared, Watched};
use crate::api::{CouchBackup, CouchDatabase, CouchShare, CouchUser};

/// A controller for `K` on its kind's shared watch, reconciling an object when what it declares
/// changed — spec (generation), deletion, labels or annotations — and not on its own writes: its
/// status, and the finalizer it adds in the same pass that applies (see `finalize`), would
/// otherwise make every reconcile run twice. The store still sees every write. The periodic
/// resync and the other watches cover the rest.
pub(crate) fn controller_for<K: Watched>(shared: &mut Shared<K>) -> Controller<K> {
    let own = super::changed::changed_when(shared.applied(), declared::<K>);
    // Each watch backs off on its own (see `reflectors`): a controller's shared trigger backoff
    // would serialise the relists after an API server restart behind an ever longer pause.
    Controller::for_stream(own, shared.store()).trigger_backoff(NoPause)
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

/// A CouchUser as a share sees it: what it declares, plus its per-user database (a fan-in or a
/// `userDatabase` endpoint waits for that).
pub(crate) fn user_for_shares(user: &CouchUser) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(user).hash(&mut h);
    user.status.as_ref().and_then(|s| s.per_user_database.as_deref()).hash(&mut h);
    Some(h.finish())
}

/// A CouchShare as a database sees it: what it declares, whether it was revoked (a revoked
/// share's replication user leaves `_security`), and whether it is admitted (its status names
/// its replication user, and it is not refused).
pub(crate) fn share_for_databases(share: &CouchShare) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(share).hash(&mut h);
    share.status.as_ref().is_some_and(|s| s.revoked).hash(&mut h);
    crate::controller::shared::access::share_admitted(share).hash(&mut h);
    Some(h.finish())
}

/// A CouchUser as a grant or a database sees it: what it declares, and whether it is admitted
/// (it owns its username and is not refused), which decides whether `_security` holds it.
pub(crate) fn user_for_grants(user: &CouchUser) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(user).hash(&mut h);
    crate::controller::shared::access::user_admitted(user).hash(&mut h);
    Some(h.finish())
}

/// A CouchShare as its server's replication budget sees it: the server its status names, and
/// the replications it counts for there.
pub(crate) fn share_for_budget(share: &CouchShare) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let status = share.status.as_ref();
    status.and_then(|s| s.server.as_deref()).hash(&mut h);
    status.map(crate::plan::server::replications_of).hash(&mut h);
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

/// What a backup waits for in its database: what it declares, whether it is Ready, its name.
pub(crate) fn database_for_backups(db: &CouchDatabase) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(db).hash(&mut h);
    let status = db.status.as_ref();
    crate::controller::runtime::status::is_ready(status.map(|s| s.conditions.as_slice())).hash(&mut h);
    status.and_then(|s| s.couch_name.as_deref()).hash(&mut h);
    Some(h.finish())
}

/// What a restore waits for in a backup: its phase.
pub(crate) fn backup_phase(backup: &CouchBackup) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    declared(backup).hash(&mut h);
    backup.status.as_ref().and_then(|s| s.phase).hash(&mut h);
    Some(h.finish())
}
