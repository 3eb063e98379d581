//! The `_security` writer of databases no CouchDatabase manages (`couchName` and per-user
//! databases): it adds and removes only what live grants and shares contribute, one write per
//! database at a time, and leaves every other entry alone.

use kube::ResourceExt;

use super::servers::{Connected, server_key};
use crate::api::CouchServer;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::plan::access::{Tenants, UnmanagedWorld, unmanaged_contributions};
use crate::plan::grant::merge_unmanaged;
use crate::plan::tenancy::{self, Refused, TrustedAct};

/// Why a `couchName` grant from namespace `from` may not touch `couch_name`: a resource manages
/// it (whatever the namespace), or the server does not trust `from` with unmanaged databases.
pub(crate) async fn couch_name_refusal(
    ctx: &Context,
    server: &CouchServer,
    key: &super::ServerKey,
    couch_name: &str,
    from: &str,
) -> Result<Option<Refused>, Error> {
    let what = format!("database {couch_name}");
    if let Err(refused) = tenancy::unmanaged(&what, super::tenancy::database_manager(ctx, key, couch_name).as_deref()) {
        return Ok(Some(refused));
    }
    Ok(super::tenancy::require_trust(ctx, server, from, TrustedAct::UnmanagedDatabase(couch_name.into())).await?.err())
}

/// Asks the reconciler of the CouchDatabase naming `couch_name` on `server` to rewrite its
/// `_security` (it is its only writer, and drops what no permitted grant contributes).
pub(crate) fn requeue_managers(ctx: &Context, server: &super::ServerKey, couch_name: &str) {
    let Some(trigger) = &ctx.database_trigger else { return };
    for db in ctx.stores.databases.state() {
        if db.couch_name() == couch_name && &server_key(db.as_ref(), &db.spec.server_ref) == server {
            let _ = trigger.send(kube::runtime::reflector::ObjectRef::from_obj(db.as_ref()));
        }
    }
}

/// Applies every live grant (and share) on an unmanaged database, except `leaving` (a grant or
/// share being deleted). A grant's names must be in its namespace's scope and its users
/// admitted; a share's replication user enters once its status names it, or when it is
/// `arriving` (the UID of the share whose pass passed its checks and made the user just now).
pub(crate) async fn write_unmanaged(
    ctx: &Context,
    connected: &Connected,
    server: &super::ServerKey,
    couch_name: &str,
    leaving: Option<&str>,
    arriving: Option<&str>,
) -> Result<(), Error> {
    let url = connected.server.spec.url.clone();
    let lock = ctx.database_lock(&format!("{server}/{couch_name}"));
    let _held = lock.lock().await;
    let (grants, users, shares) = (ctx.stores.grants.state(), ctx.stores.users.state(), ctx.stores.shares.state());
    let databases = ctx.stores.databases.state();
    // The namespaces a grant or share that may aim here comes from, and their labels where a
    // policy reads them.
    let from: std::collections::BTreeSet<String> = grants
        .iter()
        .filter(|g| {
            g.spec.database.couch_name.as_deref() == Some(couch_name) || g.spec.database.user_database.is_some()
        })
        .map(|g| g.namespace().unwrap_or_default())
        .chain(
            shares
                .iter()
                .filter(|s| {
                    let (source, target) = (&s.spec.source, &s.spec.target);
                    source.user_database.is_some() || source.user_databases.is_some() || target.user_database.is_some()
                })
                .map(|s| s.namespace().unwrap_or_default()),
        )
        .collect();
    let server_spec = &connected.server.spec;
    let mut labels = std::collections::BTreeMap::new();
    for ns in from {
        let policies = [&server_spec.allowed_namespaces, &server_spec.trusted_namespaces];
        if let Some(l) = super::tenancy::labels_for(ctx, &connected.server, &policies, &ns).await? {
            labels.insert(ns, l);
        }
    }
    let tenants = Tenants {
        server: &connected.server,
        grants: &grants,
        users: &users,
        shares: &shares,
        namespace_labels: &labels,
    };
    let world = UnmanagedWorld { leaving, arriving, ..UnmanagedWorld::new(tenants, couch_name, &databases) };
    let contributions = unmanaged_contributions(&world).entries;
    let actual = connected.couch.security(couch_name).await.map_err(|e| {
        if e.is_not_found() {
            Error::DatabaseNotFound { what: format!("database {couch_name} on the server") }
        } else {
            Error::couch("reading _security", &url, e)
        }
    })?;
    if let Some(updated) = merge_unmanaged(&actual, &contributions) {
        connected
            .couch
            .put_security(couch_name, &updated)
            .await
            .map_err(|e| Error::couch("writing _security", &url, e))?;
        tracing::info!(database = couch_name, "updated grant entries in _security");
    }
    Ok(())
}
