//! The `_security` writer of databases no CouchDatabase manages (`couchName` and per-user
//! databases): it adds and removes only what live grants and shares contribute, one write per
//! database at a time, and leaves every other entry alone.

use kube::ResourceExt;

use super::access::{resolve_grant, user_ns};
use super::servers::{Connected, namespace_allowed, server_key};
use super::tenancy::user_database_reference;
use crate::api::{CouchGrant, CouchServer};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::plan::grant::merge_unmanaged;
use crate::plan::tenancy::{self, Refused, TrustedAct, grant_needs};

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

/// Whether a live grant may contribute to the unmanaged or per-user database `couch_name` on
/// `server`, and so whether `write_unmanaged` keeps its entries.
async fn contributes_to(
    ctx: &Context,
    grant: &CouchGrant,
    connected: &Connected,
    server: &super::ServerKey,
    couch_name: &str,
) -> Result<bool, Error> {
    let from = grant.namespace().unwrap_or_default();
    let target = &grant.spec.database;
    if let (Some(name), Some(r)) = (&target.couch_name, &target.server_ref) {
        // The trust check covers `allowedNamespaces` too.
        return Ok(name == couch_name
            && &server_key(grant, r) == server
            && couch_name_refusal(ctx, &connected.server, server, couch_name, &from).await?.is_none());
    }
    let Some(reference) = &target.user_database else { return Ok(false) };
    let ns = user_ns(&from, reference);
    let user = ctx.stores.users.get(&kube::runtime::reflector::ObjectRef::new(&reference.user).within(&ns));
    let aimed = user.is_some_and(|u| {
        u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(couch_name)
            && &server_key(u.as_ref(), &u.spec.server_ref) == server
            && user_database_reference(&u, &from, &grant_needs(grant.spec.access)).is_ok()
    });
    Ok(aimed && namespace_allowed(ctx, &connected.server, &from).await?)
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
    let mut contributions = Vec::new();
    for g in ctx.stores.grants.state() {
        let live = g.metadata.deletion_timestamp.is_none() && g.uid().as_deref() != leaving;
        if live
            && contributes_to(ctx, &g, connected, server, couch_name).await?
            && super::access::grant_in_scope(ctx, &g, &connected.server).await.is_ok()
        {
            contributions.push(resolve_grant(&g, ctx, server).entries);
        }
    }
    for share in ctx.stores.shares.state() {
        let admitted = arriving.is_some_and(|uid| share.uid().as_deref() == Some(uid))
            || super::access::share_admitted(&share).is_ok();
        let live = share.uid().as_deref() != leaving && crate::plan::share::wants_access(&share) && admitted;
        if live && super::share_refs::touches_user_database(&share, ctx, server, couch_name) {
            contributions.push(crate::plan::share::contribution(&share));
        }
    }
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
