//! The CouchGrant reconciler, and what the database reconciler asks of grants.
//!
//! A grant on a CouchDatabase never writes `_security` itself: the database reconciler merges
//! every grant on it (exactly one writer per database). A grant on an unmanaged database
//! (`couchName`) writes that database's `_security`, adding and removing only what grants
//! contribute, one reconcile per database at a time.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::{Context, now, object_key};
use super::error::Error;
use super::finalize::reconcile_with_finalizer;
use super::servers::{namespace_allowed, resolve, resolve_for_cleanup, server_key};
use super::status::{NewCondition, apply_status, condition_state, set_condition};
use super::tenancy::{database_reference, user_database_reference};
use crate::api::{
    CouchDatabase, CouchGrant, CouchGrantStatus, CouchServer, CouchUser, ServerRef, UserDatabaseRef, condition,
};
use crate::plan::grant::{grants_present, merge_unmanaged};
use crate::plan::security::GrantEntries;
use crate::plan::tenancy::{self, Refused, TrustedAct, grant_needs};

/// A grant's contribution, with the referenced CouchUsers that do not exist.
pub(crate) struct Resolved {
    pub entries: GrantEntries,
    pub missing: Vec<String>,
}

/// Resolves a grant's users to CouchDB usernames, through the CouchUsers the watch knows.
/// Users on another server than the database's count as missing.
pub(crate) fn resolve_grant(grant: &CouchGrant, ctx: &Context, server: &super::ServerKey) -> Resolved {
    let ns = grant.namespace().unwrap_or_default();
    let mut names: Vec<String> = grant.spec.usernames.clone();
    let mut missing = Vec::new();
    let users = ctx.stores.users.state();
    for reference in &grant.spec.users {
        let user_ns = reference.namespace.clone().unwrap_or_else(|| ns.clone());
        let found = users.iter().find(|u| {
            u.namespace().as_deref() == Some(user_ns.as_str())
                && u.name_any() == reference.name
                && u.metadata.deletion_timestamp.is_none()
        });
        match found {
            Some(u) if &server_key(u.as_ref(), &u.spec.server_ref) == server => {
                names.push(u.couch_username().to_string())
            }
            Some(_) => missing.push(format!("{user_ns}/{} (on another CouchServer)", reference.name)),
            None => missing.push(format!("{user_ns}/{}", reference.name)),
        }
    }
    names.sort();
    names.dedup();
    let mut roles = grant.spec.roles.clone();
    roles.sort();
    roles.dedup();
    Resolved { entries: GrantEntries { access: grant.spec.access, names, roles }, missing }
}

/// Whether `grant` targets the CouchDatabase `db`.
pub(crate) fn targets(grant: &CouchGrant, db: &CouchDatabase) -> bool {
    let Some(name) = &grant.spec.database.name else { return false };
    let grant_ns = grant.namespace().unwrap_or_default();
    let ns = grant.spec.database.namespace.as_deref().unwrap_or(&grant_ns);
    db.name_any() == *name && db.namespace().as_deref() == Some(ns)
}

/// The contributions of every live grant on a CouchDatabase whose namespace the server allows.
pub(crate) async fn grants_for_database(
    ctx: &Context,
    db: &CouchDatabase,
    server: &CouchServer,
) -> Result<Vec<GrantEntries>, Error> {
    let key = super::ServerKey::of(server);
    let mut out = Vec::new();
    for grant in ctx.stores.grants.state() {
        if grant.metadata.deletion_timestamp.is_some() || !targets(&grant, db) {
            continue;
        }
        let from = grant.namespace().unwrap_or_default();
        // From another namespace, only with the database's consent: withdrawing it drops the entries.
        if database_reference(db, &from, &grant_needs(grant.spec.access)).is_err()
            || !namespace_allowed(ctx, server, &from).await?
        {
            continue;
        }
        out.push(resolve_grant(&grant, ctx, &key).entries);
    }
    // Shares with scoped credentials need their replication user as a member.
    for share in ctx.stores.shares.state() {
        let from = share.namespace().unwrap_or_default();
        if super::share::wants_access(&share)
            && super::share::touches_database(&share, db)
            && super::share::database_permitted(&share, db)
            && namespace_allowed(ctx, server, &from).await?
        {
            out.push(super::share::contribution(&share));
        }
    }
    Ok(out)
}

/// Requeues the grants on `db` after its reconciler merged them: all of them when it wrote
/// `_security`, else those not Ready yet. Saves them waiting for their poll.
pub(crate) fn requeue_for_database(ctx: &Context, db: &CouchDatabase, security_written: bool) {
    let Some(trigger) = &ctx.grant_trigger else { return };
    for grant in ctx.stores.grants.state() {
        let ready = grant.status.as_ref().is_some_and(|s| {
            condition_state(&s.conditions, condition::READY).is_some_and(|(status, _)| status == "True")
        });
        if targets(&grant, db) && (security_written || !ready) {
            let _ = trigger.send(kube::runtime::reflector::ObjectRef::from_obj(grant.as_ref()));
        }
    }
}

/// The absolute reference of a CouchDatabase's server.
fn server_of(db: &CouchDatabase) -> ServerRef {
    server_key(db, &db.spec.server_ref).to_ref()
}

/// Reconciles one CouchGrant.
pub async fn reconcile(grant: Arc<CouchGrant>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(grant, &ctx, |o| apply(o, &ctx), |o| cleanup(o, &ctx)).await
}

/// What a pass found.
enum Outcome {
    /// Every entry is in `_security`.
    Applied,
    /// The database reconciler has not merged the grant yet.
    Pending,
}

async fn apply(grant: Arc<CouchGrant>, ctx: &Context) -> Result<Action, Error> {
    let ns = grant.namespace().unwrap_or_default();
    let api: Api<CouchGrant> = Api::namespaced(ctx.client.clone(), &ns);
    let current = grant.status.clone();
    let mut status = current.clone().unwrap_or_default();
    let was = condition_state(&status.conditions, condition::READY);
    let result = ensure(&grant, ctx, &mut status).await;
    let generation = grant.metadata.generation;
    status.observed_generation = generation;
    let not_found = (!status.missing_users.is_empty()).then(|| {
        format!(
            "CouchUser(s) not found: {}; the rest of the grant applies, and they are added when they appear",
            status.missing_users.join(", ")
        )
    });
    let action = match (&result, not_found) {
        (Ok(Outcome::Applied), None) => {
            set_condition(
                &mut status.conditions,
                NewCondition::ready("Applied", "entries are in _security"),
                generation,
                now(),
            );
            Action::requeue(ctx.resync())
        }
        (Ok(_), Some(message)) => {
            let cond = NewCondition { type_: condition::READY, status: false, reason: "UserNotFound".into(), message };
            set_condition(&mut status.conditions, cond, generation, now());
            Action::requeue(ctx.resync())
        }
        (Ok(Outcome::Pending), None) => {
            let cond = NewCondition {
                type_: condition::READY,
                status: false,
                reason: "Pending".into(),
                message: "waiting for the database's _security to include the grant".into(),
            };
            set_condition(&mut status.conditions, cond, generation, now());
            // The database reconciler requeues its grants when it has merged them; this poll
            // is only the safety net.
            Action::requeue(std::time::Duration::from_secs(30).min(ctx.resync()))
        }
        (Err(e), _) => {
            set_condition(&mut status.conditions, NewCondition::not_ready(e), generation, now());
            Action::requeue(ctx.resync())
        }
    };
    apply_status(&api, grant.as_ref(), current.as_ref(), &status).await?;
    let is = condition_state(&status.conditions, condition::READY);
    // Pending is the normal moment between a grant and its database's reconcile: no Event.
    if was != is
        && let Some((s, reason)) = &is
        && reason != "Pending"
    {
        let note = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(grant.as_ref(), s != "True", reason, note).await;
    }
    match result {
        Ok(_) => {
            ctx.backoff.reset(&object_key(grant.as_ref()));
            Ok(action)
        }
        Err(e) => Err(e),
    }
}

async fn ensure(grant: &CouchGrant, ctx: &Context, status: &mut CouchGrantStatus) -> Result<Outcome, Error> {
    let ns = grant.namespace().unwrap_or_default();
    let target = &grant.spec.database;
    if let Some(db_name) = &target.name {
        let db_ns = target.namespace.clone().unwrap_or_else(|| ns.clone());
        // From the watch's store, not a GET: the database watch requeues the grant on changes.
        // Only a database not claimed yet is read from the API server, since its reconciler
        // may have claimed it a moment before its watch event arrives.
        let cached = ctx.stores.databases.get(&kube::runtime::reflector::ObjectRef::new(db_name).within(&db_ns));
        let db = match cached {
            Some(db) if db.status.as_ref().is_some_and(|s| s.couch_name.is_some()) => db,
            _ => Api::<CouchDatabase>::namespaced(ctx.client.clone(), &db_ns)
                .get_opt(db_name)
                .await?
                .map(Arc::new)
                .ok_or_else(|| Error::DatabaseNotFound { what: format!("CouchDatabase {db_ns}/{db_name}") })?,
        };
        database_reference(&db, &ns, &grant_needs(grant.spec.access))?;
        let server_ref = server_of(&db);
        let connected = resolve(ctx, &ns, &server_ref).await?;
        let key = super::ServerKey::referenced(db.as_ref(), &server_ref);
        let resolved = resolve_grant(grant, ctx, &key);
        record(status, &resolved, db.couch_name());
        let Some(couch_name) = db.status.as_ref().and_then(|s| s.couch_name.clone()) else {
            return Ok(Outcome::Pending);
        };
        let url = connected.server.spec.url.clone();
        if db.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Pending);
        }
        // What the database's reconciler (the only writer) last left `_security` with; read
        // from CouchDB only when it has not run in this process yet.
        if let Some(security) = ctx.ledger.recorded(&key, &couch_name) {
            return Ok(if grants_present(&security, &resolved.entries) { Outcome::Applied } else { Outcome::Pending });
        }
        // A HEAD first, because pouchdb-server creates a missing database when its `_security`
        // is read.
        if !connected
            .couch
            .database_exists(&couch_name)
            .await
            .map_err(|e| Error::couch("checking the database", &url, e))?
        {
            return Ok(Outcome::Pending);
        }
        let security = match connected.couch.security(&couch_name).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(Outcome::Pending),
            Err(e) => return Err(Error::couch("reading _security", &url, e)),
        };
        return Ok(if grants_present(&security, &resolved.entries) { Outcome::Applied } else { Outcome::Pending });
    }
    if let Some(reference) = &target.user_database {
        let user = user_of(ctx, &ns, reference).await?;
        user_database_reference(&user, &ns, &grant_needs(grant.spec.access))?;
        let key = server_key(user.as_ref(), &user.spec.server_ref);
        let connected = resolve(ctx, &ns, &key.to_ref()).await?;
        let couch_name =
            user.status.as_ref().and_then(|s| s.per_user_database.clone()).ok_or_else(|| Error::Waiting {
                what: format!("the per-user database of CouchUser {}/{}", user_ns(&ns, reference), reference.user),
            })?;
        let resolved = resolve_grant(grant, ctx, &key);
        record(status, &resolved, &couch_name);
        write_unmanaged(ctx, &connected, &key, &couch_name, None).await?;
        return Ok(Outcome::Applied);
    }
    let (Some(couch_name), Some(server_ref)) = (&target.couch_name, &target.server_ref) else {
        return Err(Error::InvalidSpec("database needs name, userDatabase, or couchName with serverRef".into()));
    };
    let connected = resolve(ctx, &ns, server_ref).await?;
    let key = server_key(grant, server_ref);
    if let Some(refused) = couch_name_refusal(ctx, &connected.server, &key, couch_name, &ns).await? {
        // Nothing new is written; what this grant put there while it was allowed is taken back.
        match super::tenancy::database_manager(ctx, &key, couch_name) {
            Some(_) => requeue_managers(ctx, &key, couch_name),
            None => write_unmanaged(ctx, &connected, &key, couch_name, grant.uid().as_deref()).await?,
        }
        return Err(refused.into());
    }
    let resolved = resolve_grant(grant, ctx, &key);
    record(status, &resolved, couch_name);
    write_unmanaged(ctx, &connected, &key, couch_name, None).await?;
    Ok(Outcome::Applied)
}

fn user_ns(grant_ns: &str, reference: &UserDatabaseRef) -> String {
    reference.namespace.clone().unwrap_or_else(|| grant_ns.to_string())
}

/// The CouchUser a `userDatabase` reference names, from the store (or the API server when the
/// store does not have it yet); it must declare a per-user database.
async fn user_of(ctx: &Context, grant_ns: &str, reference: &UserDatabaseRef) -> Result<Arc<CouchUser>, Error> {
    let ns = user_ns(grant_ns, reference);
    let user = super::servers::stored_or_read(ctx, &ctx.stores.users, &ns, &reference.user)
        .await?
        .ok_or_else(|| Error::Waiting { what: format!("CouchUser {ns}/{}", reference.user) })?;
    if !user.spec.per_user_database {
        return Err(Error::InvalidSpec(format!("CouchUser {ns}/{} has no perUserDatabase: true", reference.user)));
    }
    Ok(user)
}

/// Why a `couchName` grant from namespace `from` may not touch `couch_name`: a resource manages
/// it (whatever the namespace), or the server does not trust `from` with unmanaged databases.
async fn couch_name_refusal(
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
fn requeue_managers(ctx: &Context, server: &super::ServerKey, couch_name: &str) {
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
    connected: &super::servers::Connected,
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

fn record(status: &mut CouchGrantStatus, resolved: &Resolved, database: &str) {
    status.database = Some(database.to_string());
    status.usernames = resolved.entries.names.clone();
    status.roles = resolved.entries.roles.clone();
    status.missing_users = resolved.missing.clone();
}

/// Applies every live grant (and share) on an unmanaged database, except `leaving` (a grant or
/// share being deleted).
pub(crate) async fn write_unmanaged(
    ctx: &Context,
    connected: &super::servers::Connected,
    server: &super::ServerKey,
    couch_name: &str,
    leaving: Option<&str>,
) -> Result<(), Error> {
    let url = connected.server.spec.url.clone();
    let lock = ctx.database_lock(&format!("{server}/{couch_name}"));
    let _held = lock.lock().await;
    let mut contributions = Vec::new();
    for g in ctx.stores.grants.state() {
        let live = g.metadata.deletion_timestamp.is_none() && g.uid().as_deref() != leaving;
        if live && contributes_to(ctx, &g, connected, server, couch_name).await? {
            contributions.push(resolve_grant(&g, ctx, server).entries);
        }
    }
    for share in ctx.stores.shares.state() {
        let live = share.uid().as_deref() != leaving && super::share::wants_access(&share);
        if live && super::share::touches_user_database(&share, ctx, server, couch_name) {
            contributions.push(super::share::contribution(&share));
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

async fn cleanup(grant: Arc<CouchGrant>, ctx: &Context) -> Result<Action, Error> {
    let ns = grant.namespace().unwrap_or_default();
    // Grants on a CouchDatabase: its reconciler drops the grant's entries (it watches grants).
    // On a per-user database, the user names the database and the server.
    let (couch_name, server_ref) = match (&grant.spec.database.couch_name, &grant.spec.database.server_ref) {
        (Some(name), Some(r)) => (name.clone(), r.clone()),
        _ => {
            let user = grant.spec.database.user_database.as_ref().and_then(|r| {
                ctx.stores.users.get(&kube::runtime::reflector::ObjectRef::new(&r.user).within(&user_ns(&ns, r)))
            });
            let Some((name, user)) =
                user.and_then(|u| u.status.as_ref().and_then(|s| s.per_user_database.clone()).map(|n| (n, u)))
            else {
                return Ok(Action::await_change());
            };
            (name, server_key(user.as_ref(), &user.spec.server_ref).to_ref())
        }
    };
    let (couch_name, server_ref) = (&couch_name, &server_ref);
    let Some(connected) =
        resolve_for_cleanup(ctx, grant.as_ref(), &ns, server_ref, &format!("entries not removed from {couch_name}"))
            .await?
    else {
        return Ok(Action::await_change());
    };
    let key = server_key(grant.as_ref(), server_ref);
    match write_unmanaged(ctx, &connected, &key, couch_name, grant.uid().as_deref()).await {
        Ok(()) | Err(Error::DatabaseNotFound { .. }) => {
            ctx.event(grant.as_ref(), false, "Revoked", format!("entries removed from {couch_name}")).await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_transient() && super::database::within_grace(grant.as_ref(), ctx) => Err(e),
        Err(e) => {
            ctx.event(grant.as_ref(), true, "CleanupSkipped", format!("entries not removed from {couch_name}: {e}"))
                .await;
            Ok(Action::await_change())
        }
    }
}

/// The CouchDatabases whose `_security` a grant feeds.
pub(crate) fn database_refs(grant: &CouchGrant) -> Option<kube::runtime::reflector::ObjectRef<CouchDatabase>> {
    let name = grant.spec.database.name.as_ref()?;
    let ns = grant.spec.database.namespace.clone().or_else(|| grant.meta().namespace.clone())?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(&ns))
}
