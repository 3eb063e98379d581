//! What requeues what: each controller on its kind's shared watch, and the watches of related
//! kinds (with the predicate each needs) that map a change to the objects it matters to.

use futures::Stream;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{predicates, watcher};

use super::ServerKey;
use super::reflectors::{Reflectors, Shared};
use super::watches::{
    backup_phase, controller_for, database_for_backups, declared, share_for_budget, share_for_databases,
    user_for_grants, user_for_shares,
};
use crate::api::{CouchBackup, CouchDatabase, CouchGrant, CouchScheduledBackup, CouchServer, CouchShare, CouchUser};
use crate::controller::shared::servers::server_key;
use crate::controller::shared::{access, credentials};
use k8s_openapi::api::core::v1::Secret;

/// References to every object in `store` that `related` picks: the mapper of a watch.
fn matching<K>(store: &Store<K>, related: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().into_iter().filter(|o| related(o)).map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// CouchServer changes that matter to the resources on it: spec changes, not status writes
/// (a server's status changes with every share; requeueing every database and user on each
/// would be a reconcile storm).
fn server_spec_changes(
    servers: &mut Shared<CouchServer>,
) -> impl Stream<Item = Result<CouchServer, watcher::Error>> + Send + 'static {
    servers.touched_when(predicates::generation)
}

/// A CouchDatabase just created, that its reconciler has not looked at yet: nothing waiting on
/// it can move before that reconciler has run, and it requeues them when it has (see
/// `access::requeue_for_database`, `access::requeue_shares_for_database`). Waking them now
/// would be a pass for nothing.
fn not_reconciled_yet(db: &CouchDatabase) -> bool {
    db.status.is_none() && db.metadata.deletion_timestamp.is_none()
}

/// A stream of requests from another part of the operator, as a trigger.
fn requests<K: kube::Resource<DynamicType = ()> + Send + Sync + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

fn uses_secret(server: &CouchServer, secret: &str) -> bool {
    server.spec.admin_credentials.secret_ref.name == secret
        || server.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()).is_some_and(|c| c.name == secret)
}

/// Whether a grant names this CouchUser, as a member or admin, or for its per-user database.
fn refers_to_user(grant: &CouchGrant, user: &CouchUser) -> bool {
    let grant_ns = grant.namespace().unwrap_or_default();
    let is_user = |name: &str, ns: Option<&str>| {
        name == user.name_any() && ns.unwrap_or(&grant_ns) == user.namespace().unwrap_or_default()
    };
    grant.spec.users.iter().any(|r| is_user(&r.name, r.namespace.as_deref()))
        || grant.spec.database.user_database.as_ref().is_some_and(|r| is_user(&r.user, r.namespace.as_deref()))
}

/// Whether CouchUser changes matter to a share: a fan-in over its namespace's users, or a
/// per-user database it names (in any namespace: that user's consent can change).
pub(crate) fn uses_user_database(share: &CouchShare, user: &CouchUser) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let names = |r: &Option<crate::api::UserDatabaseRef>| {
        r.as_ref().is_some_and(|r| {
            r.user == user.name_any() && r.namespace.as_deref().unwrap_or(&ns) == user.namespace().unwrap_or_default()
        })
    };
    (share.spec.source.user_databases.is_some() && share.namespace() == user.namespace())
        || names(&share.spec.source.user_database)
        || names(&share.spec.target.user_database)
}

/// Whether a grant names a database on this server directly (`couchName`): the server's trust
/// decides whether it may.
fn grant_on_server(grant: &CouchGrant, key: &ServerKey) -> bool {
    grant.spec.database.server_ref.as_ref().is_some_and(|r| &server_key(grant, r) == key)
}

/// Whether a share runs (or ran) on this server: its allowed and trusted namespaces matter.
fn share_on_server(share: &CouchShare, key: &ServerKey) -> bool {
    let recorded = share.status.as_ref().and_then(|s| s.server.as_deref()) == Some(&key.to_string());
    recorded || share.spec.server_ref.as_ref().is_some_and(|r| &server_key(share, r) == key)
}

/// How long a server's replication budget may lag its shares: the shares' changes within it
/// wake the server once (a bulk apply of 1,000 shares woke it 789 times, each a full pass).
pub(crate) const BUDGET_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The servers to wake for their budget: the server a changed share's status names, at most
/// once per `every` each, at the end of it (never dropped: a change always gets its wake).
fn budget_wakes(
    shares: impl Stream<Item = Result<CouchShare, kube::runtime::watcher::Error>> + Send + 'static,
    every: std::time::Duration,
) -> impl Stream<Item = ObjectRef<CouchServer>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let pending = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let mut shares = std::pin::pin!(shares);
        while let Some(share) = futures::StreamExt::next(&mut shares).await {
            let Ok(share) = share else { continue };
            let Some(server) = share.status.as_ref().and_then(|s| s.server.clone()) else { continue };
            let Some((ns, name)) = server.split_once('/') else { continue };
            let server: ObjectRef<CouchServer> = ObjectRef::new(name).within(ns);
            if !pending.lock().unwrap_or_else(|e| e.into_inner()).insert(server.clone()) {
                continue;
            }
            let (tx, pending) = (tx.clone(), pending.clone());
            tokio::spawn(async move {
                tokio::time::sleep(every).await;
                pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&server);
                let _ = tx.send(server);
            });
        }
    });
    requests(rx)
}

/// A change to an admin or CA Secret requeues the servers that use it (metadata only); a share
/// whose replications change requeues the server its status names (its budget counts them), at
/// most once per [`BUDGET_EVERY`]; the drift follower requeues its server when the source of its
/// database events changes (`requested`).
pub(crate) fn servers(
    r: &mut Reflectors,
    config: Config,
    requested: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<CouchServer>>,
) -> Controller<CouchServer> {
    let servers = r.servers.store();
    controller_for(&mut r.servers)
        .watches_stream(r.secrets.touched(), move |secret: PartialObjectMeta<Secret>| {
            let (sns, sname) = (secret.namespace(), secret.name_any());
            matching(&servers, |s| s.namespace() == sns && uses_secret(s, &sname))
        })
        .reconcile_on(budget_wakes(r.shares.touched_when(share_for_budget), BUDGET_EVERY))
        .reconcile_on(requests(requested))
        .with_config(config)
}

/// A database follows its server's spec, the grants and users whose entries its `_security`
/// holds, the shares whose replication users it holds, the backups its `restoreFrom` names (one
/// completing), and CouchDB's own feeds (`requested`:
/// `_db_updates` and the `_security` audit).
pub(crate) fn databases(
    r: &mut Reflectors,
    config: Config,
    requested: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<CouchDatabase>>,
) -> Controller<CouchDatabase> {
    let (databases, grants) = (r.databases.store(), r.grants.store());
    let (by_server, restoring) = (databases.clone(), databases.clone());
    controller_for(&mut r.databases)
        .watches_stream(server_spec_changes(&mut r.servers), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&by_server, |d| server_key(d, &d.spec.server_ref) == key)
        })
        .watches_stream(r.grants.touched_when(declared), |grant: CouchGrant| access::database_refs(&grant))
        .watches_stream(r.users.touched_when(user_for_grants), move |user: CouchUser| {
            grants
                .state()
                .into_iter()
                .filter(|g| refers_to_user(g, &user))
                .filter_map(|g| access::database_refs(&g))
                .collect::<Vec<_>>()
        })
        .watches_stream(r.shares.touched_when(share_for_databases), move |share: CouchShare| {
            matching(&databases, |d| crate::plan::share::touches_database(&share, d))
        })
        .watches_stream(r.backups.touched_when(backup_phase), move |backup: CouchBackup| {
            let (ns, name) = (backup.namespace(), backup.name_any());
            let schedule = backup.labels().get(crate::api::labels::SCHEDULED_BACKUP_LABEL).cloned();
            matching(&restoring, |d| {
                let from = d.spec.restore_from.as_ref();
                d.namespace() == ns
                    && (from.and_then(|f| f.backup.as_deref()) == Some(name.as_str())
                        || (schedule.is_some() && from.and_then(|f| f.scheduled_backup.clone()) == schedule))
                    && d.status.as_ref().and_then(|s| s.restore.as_ref()).is_none_or(|r| r.completed_at.is_none())
            })
        })
        .reconcile_on(requests(requested))
        .with_config(config)
}

/// A user follows its password and credentials Secrets (edited, deleted), its server's spec, and
/// its server's reconciler (`requested`: the server became Ready, or created its system
/// databases). Its own writes of its credentials Secret coming back through the watch are not
/// changes.
pub(crate) fn users(
    r: &mut Reflectors,
    config: Config,
    own_writes: std::sync::Arc<crate::controller::triggers::own_writes::OwnWrites>,
    requested: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<CouchUser>>,
) -> Controller<CouchUser> {
    let by_secret = r.users.store();
    let by_server = by_secret.clone();
    controller_for(&mut r.users)
        .watches_stream(r.secrets.touched(), move |secret: PartialObjectMeta<Secret>| {
            let (sns, sname) = (secret.namespace(), secret.name_any());
            let version = secret.metadata.resource_version.as_deref();
            if own_writes.is_own(sns.as_deref().unwrap_or_default(), &sname, version) {
                return Vec::new();
            }
            matching(&by_secret, |u| {
                u.namespace() == sns
                    && (u.spec.password.as_ref().is_some_and(|p| p.secret_ref.name == sname)
                        || credentials::credentials_secret_name(u) == sname)
            })
        })
        .watches_stream(server_spec_changes(&mut r.servers), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&by_server, |u| server_key(u, &u.spec.server_ref) == key)
        })
        .reconcile_on(requests(requested))
        .with_config(config)
}

/// A grant follows its users (appearing, renamed, deleted), its database's state, its server's
/// trust, and the database reconciler's merges (`requested`).
pub(crate) fn grants(
    r: &mut Reflectors,
    config: Config,
    requested: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<CouchGrant>>,
) -> Controller<CouchGrant> {
    let by_user = r.grants.store();
    let (by_database, by_server) = (by_user.clone(), by_user.clone());
    controller_for(&mut r.grants)
        // A grant on a CouchDatabase is requeued by that database's reconciler once it merged
        // the user's change (see `access::requeue_for_database`): only the grants that write
        // `_security` themselves (an unmanaged database) follow their users directly.
        .watches_stream(r.users.touched_when(user_for_grants), move |user: CouchUser| {
            matching(&by_user, |g| g.spec.database.name.is_none() && refers_to_user(g, &user))
        })
        .watches_stream(r.databases.touched_when(declared), move |db: CouchDatabase| {
            if not_reconciled_yet(&db) {
                return Vec::new();
            }
            matching(&by_database, |g| access::targets(g, &db))
        })
        .watches_stream(server_spec_changes(&mut r.servers), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&by_server, |g| grant_on_server(g, &key))
        })
        .reconcile_on(requests(requested))
        .with_config(config)
}

/// A share follows what its databases declare, the users whose
/// databases it replicates (what they declare, and their per-user database), its server's spec,
/// and the database reconciler's passes (`requested`: it requeues the shares not Ready yet,
/// which wait for the name it claims and for their replication user's entry).
pub(crate) fn shares(
    r: &mut Reflectors,
    config: Config,
    requested: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<CouchShare>>,
) -> Controller<CouchShare> {
    let by_database = r.shares.store();
    let (by_user, by_server) = (by_database.clone(), by_database.clone());
    controller_for(&mut r.shares)
        .watches_stream(r.databases.touched_when(declared), move |db: CouchDatabase| {
            if not_reconciled_yet(&db) {
                return Vec::new();
            }
            matching(&by_database, |s| crate::plan::share::touches_database(s, &db))
        })
        .watches_stream(r.users.touched_when(user_for_shares), move |user: CouchUser| {
            matching(&by_user, |s| uses_user_database(s, &user))
        })
        .watches_stream(server_spec_changes(&mut r.servers), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&by_server, |s| share_on_server(s, &key))
        })
        .reconcile_on(requests(requested))
        .with_config(config)
}

/// A backup that has not completed follows the CouchDatabase it names (it waits for that
/// database to exist and be Ready), the backup it is incremental from (to complete), and its
/// bucket's Secret (a key that was refused, fixed); a group backup (`selector`) its members,
/// and the databases of its namespace until it has picked them.
pub(crate) fn backups(r: &mut Reflectors, config: Config) -> Controller<CouchBackup> {
    let by_database = r.backups.store();
    let (by_secret, by_base) = (by_database.clone(), by_database.clone());
    let unfinished =
        |b: &CouchBackup| b.status.as_ref().and_then(|s| s.phase) != Some(crate::api::BackupPhase::Completed);
    controller_for(&mut r.backups)
        .watches_stream(r.secrets.touched(), move |secret: PartialObjectMeta<Secret>| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            matching(&by_secret, |b| {
                b.namespace() == ns
                    && unfinished(b)
                    && b.spec.destination.s3.as_ref().is_some_and(|s3| s3.credentials_secret_ref.name == name)
            })
        })
        .watches_stream(r.backups.touched_when(backup_phase), move |base: CouchBackup| {
            let (ns, name) = (base.namespace(), base.name_any());
            matching(&by_base, |b| {
                b.namespace() == ns && b.spec.incremental_from.as_deref() == Some(name.as_str()) && unfinished(b)
            })
        })
        // A group backup follows its members: each status write, and a deletion (it makes the
        // member again while the group has not completed).
        .watches_stream(r.backups.touched(), |member: CouchBackup| {
            let ns = member.namespace().unwrap_or_default();
            member
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "CouchBackup")
                .map(|o| ObjectRef::new(&o.name).within(&ns))
        })
        .watches_stream(r.databases.touched_when(database_for_backups), move |db: CouchDatabase| {
            let (ns, name) = (db.namespace(), db.name_any());
            // The backups of it, and the groups that have not picked their databases yet.
            matching(&by_database, |b| {
                b.namespace() == ns
                    && unfinished(b)
                    && (b.spec.database.as_deref() == Some(name.as_str())
                        || (b.spec.selector.is_some() && b.status.as_ref().is_none_or(|s| s.backups.is_empty())))
            })
        })
        .with_config(config)
}

/// A schedule follows its backups (one completing is the next one's base, or lets the next
/// start); its own requeue waits for the next occurrence.
pub(crate) fn scheduled_backups(r: &mut Reflectors, config: Config) -> Controller<CouchScheduledBackup> {
    controller_for(&mut r.scheduled_backups)
        .watches_stream(r.backups.touched_when(backup_phase), |backup: CouchBackup| {
            let schedule = backup.labels().get(crate::api::labels::SCHEDULED_BACKUP_LABEL).cloned();
            schedule.map(|name| ObjectRef::new(&name).within(&backup.namespace().unwrap_or_default()))
        })
        .with_config(config)
}
