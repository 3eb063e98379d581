//! Wake-ups that no watch event carries: a CouchServer that becomes Ready, or that has just
//! finished its cluster or created a missing system database, wakes every object on it that is
//! not Ready. Those objects wait for the server (its `_users` or `_replicator`, a first
//! connection) with no timer of their own but the resync: this is what ends their wait.

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{CouchDatabase, CouchGrant, CouchShare, CouchUser};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::status::is_ready;
use crate::controller::shared::servers::server_key;

/// The objects on `server` that are not Ready, by kind.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Waiting {
    pub databases: Vec<ObjectRef<CouchDatabase>>,
    pub users: Vec<ObjectRef<CouchUser>>,
    pub grants: Vec<ObjectRef<CouchGrant>>,
    pub shares: Vec<ObjectRef<CouchShare>>,
}

/// Which objects of the stores wait on `server`. A grant or share is on the server when a
/// database or user it names is (or, for a share, when its `serverRef` or recorded server is).
pub(crate) fn waiting_on(
    server: &ServerKey,
    databases: &[std::sync::Arc<CouchDatabase>],
    users: &[std::sync::Arc<CouchUser>],
    grants: &[std::sync::Arc<CouchGrant>],
    shares: &[std::sync::Arc<CouchShare>],
) -> Waiting {
    let on_server: Vec<&CouchDatabase> =
        databases.iter().map(|d| d.as_ref()).filter(|d| &server_key(*d, &d.spec.server_ref) == server).collect();
    let users_on: Vec<&CouchUser> =
        users.iter().map(|u| u.as_ref()).filter(|u| &server_key(*u, &u.spec.server_ref) == server).collect();
    let names_user =
        |ns: &str, name: &str| users_on.iter().any(|u| u.namespace().as_deref() == Some(ns) && u.name_any() == name);
    let mut out = Waiting {
        databases: on_server
            .iter()
            .filter(|d| !is_ready(d.status.as_ref().map(|s| s.conditions.as_slice())))
            .map(|d| ObjectRef::from_obj(*d))
            .collect(),
        users: users_on
            .iter()
            .filter(|u| !is_ready(u.status.as_ref().map(|s| s.conditions.as_slice())))
            .map(|u| ObjectRef::from_obj(*u))
            .collect(),
        ..Waiting::default()
    };
    for grant in grants.iter().filter(|g| !is_ready(g.status.as_ref().map(|s| s.conditions.as_slice()))) {
        let ns = grant.namespace().unwrap_or_default();
        let direct = grant.spec.database.server_ref.as_ref().is_some_and(|r| &server_key(grant.as_ref(), r) == server);
        let database = on_server.iter().any(|d| crate::controller::shared::access::targets(grant, d));
        let user_database = grant
            .spec
            .database
            .user_database
            .as_ref()
            .is_some_and(|r| names_user(&crate::controller::shared::access::user_ns(&ns, r), &r.user));
        let user = grant.spec.users.iter().any(|r| names_user(r.namespace.as_deref().unwrap_or(&ns), &r.name));
        if direct || database || user_database || user {
            out.grants.push(ObjectRef::from_obj(grant.as_ref()));
        }
    }
    for share in shares.iter().filter(|s| !is_ready(s.status.as_ref().map(|s| s.conditions.as_slice()))) {
        let key = server.to_string();
        let recorded = share.status.as_ref().and_then(|s| s.server.as_deref()) == Some(key.as_str());
        let declared = share.spec.server_ref.as_ref().is_some_and(|r| &server_key(share.as_ref(), r) == server);
        let database = on_server.iter().any(|d| crate::plan::share::touches_database(share, d));
        let user = users_on.iter().any(|u| crate::controller::runtime::wiring::uses_user_database(share, u));
        if recorded || declared || database || user {
            out.shares.push(ObjectRef::from_obj(share.as_ref()));
        }
    }
    out
}

/// Requeues every object on `server` that is not Ready, through each kind's trigger.
pub(crate) fn wake_server_objects(ctx: &Context, server: &ServerKey, why: &str) {
    let waiting = waiting_on(
        server,
        &ctx.stores.databases.state(),
        &ctx.stores.users.state(),
        &ctx.stores.grants.state(),
        &ctx.stores.shares.state(),
    );
    let counts = (waiting.databases.len(), waiting.users.len(), waiting.grants.len(), waiting.shares.len());
    if counts == (0, 0, 0, 0) {
        return;
    }
    tracing::info!(server = %server, why, databases = counts.0, users = counts.1, grants = counts.2, shares = counts.3, "waking the objects waiting on the server");
    if let Some(t) = &ctx.database_trigger {
        waiting.databases.into_iter().for_each(|r| drop(t.send(r)));
    }
    if let Some(t) = &ctx.user_trigger {
        waiting.users.into_iter().for_each(|r| drop(t.send(r)));
    }
    if let Some(t) = &ctx.grant_trigger {
        waiting.grants.into_iter().for_each(|r| drop(t.send(r)));
    }
    if let Some(t) = &ctx.share_trigger {
        waiting.shares.into_iter().for_each(|r| drop(t.send(r)));
    }
}
