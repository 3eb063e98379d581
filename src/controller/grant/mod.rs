//! The CouchGrant reconciler: resolve the database and the users → check (or, for a database no
//! CouchDatabase manages, write) their entries in `_security` → status.
//!
//! A grant on a CouchDatabase never writes `_security` itself: the database reconciler merges
//! every grant on it (exactly one writer per database; see [`crate::controller::shared::access`]). A grant on an
//! unmanaged database (`couchName`, or a per-user database) goes through
//! [`crate::controller::shared::unmanaged::write_unmanaged`].

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use crate::api::{CouchDatabase, CouchGrant, CouchGrantStatus, CouchUser, ServerRef, UserDatabaseRef, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::finalize::{reconcile_with_finalizer, within_grace};
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::access::{Resolved, grant_in_scope, resolve_grant, user_ns};
use crate::controller::shared::grant_passes::GrantPass;
use crate::controller::shared::servers::{resolve, resolve_for_cleanup, server_key};
use crate::controller::shared::tenancy::{database_reference, user_database_reference};
use crate::controller::shared::unmanaged::{couch_name_refusal, requeue_managers, write_unmanaged};
use crate::plan::grant::grants_present;
use crate::plan::tenancy::grant_needs;

/// The absolute reference of a CouchDatabase's server.
fn server_of(db: &CouchDatabase) -> ServerRef {
    server_key(db, &db.spec.server_ref).to_ref()
}

/// Reconciles one CouchGrant.
pub async fn reconcile(grant: Arc<CouchGrant>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(grant, &ctx, |o| apply(o, &ctx), |o| cleanup(o, &ctx)).await
}

/// What a pass found.
enum Found {
    /// Every entry is in `_security`.
    Applied,
    /// The database reconciler has not merged the grant yet.
    Pending,
}

async fn apply(grant: Arc<CouchGrant>, ctx: &Context) -> Result<Action, Error> {
    let mut pass = Pass::begin(grant.as_ref());
    let result = ensure(&grant, ctx, &mut pass.status).await;
    let missing = pass.status.missing_users.clone();
    let result = result.map(|found| outcome_of(found, &missing, ctx));
    let ready = result.as_ref().is_ok_and(|o| o.ready.status);
    let action = pass.finish(ctx, grant.as_ref(), result).await;
    let last = action.is_ok().then(|| GrantPass { generation: grant.metadata.generation, missing, ready });
    ctx.grant_passes.record(grant.as_ref(), last);
    action
}

/// The tail's outcome. Every change of Ready is an Event but Pending, the normal moment between
/// a grant and its database's reconcile.
fn outcome_of(found: Found, missing_users: &[String], ctx: &Context) -> Outcome {
    let resync = Action::requeue(ctx.resync());
    if !missing_users.is_empty() {
        let message = format!(
            "CouchUser(s) not found or not admitted: {}; the rest of the grant applies, and each is added when it exists and is Ready as the owner of its username",
            missing_users.join(", ")
        );
        let ready = NewCondition {
            type_: condition::READY,
            status: false,
            reason: "UserNotFound".into(),
            message: message.clone(),
        };
        // An Event for a refused user; one still on its way is a wait, said by the condition.
        let outcome = Outcome::new(ready, resync);
        return if missing_users.iter().any(|m| crate::controller::shared::access::missing_is_a_problem(m)) {
            outcome.on_transition(Note::warning("UserNotFound", message))
        } else {
            outcome
        };
    }
    match found {
        Found::Applied => {
            let message = "entries are in _security";
            // No Event: the database's reconciler made the write and reports it.
            Outcome::new(NewCondition::ready("Applied", message), resync)
        }
        Found::Pending => {
            let ready = NewCondition {
                type_: condition::READY,
                status: false,
                reason: "Pending".into(),
                message: "waiting for the database's _security to include the grant".into(),
            };
            // The database reconciler requeues its grants when it has merged them (see
            // `access::requeue_for_database`); the resync is the safety net.
            Outcome::new(ready, resync)
        }
    }
}

async fn ensure(grant: &CouchGrant, ctx: &Context, status: &mut CouchGrantStatus) -> Result<Found, Error> {
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
        grant_in_scope(ctx, grant, &connected.server).await?;
        let key = super::ServerKey::referenced(db.as_ref(), &server_ref);
        let resolved = resolve_grant(grant, ctx, &key);
        record(status, &resolved, db.couch_name());
        let Some(couch_name) = db.status.as_ref().and_then(|s| s.couch_name.clone()) else {
            return Ok(Found::Pending);
        };
        let url = connected.server.spec.url.clone();
        if db.metadata.deletion_timestamp.is_some() {
            return Ok(Found::Pending);
        }
        // What the database's reconciler (the only writer) last left `_security` with; read
        // from CouchDB only when it has not run in this process yet.
        if let Some(security) = ctx.ledger.recorded(&key, &couch_name) {
            return Ok(if grants_present(&security, &resolved.entries) { Found::Applied } else { Found::Pending });
        }
        // A HEAD first, because pouchdb-server creates a missing database when its `_security`
        // is read.
        if !connected
            .couch
            .database_exists(&couch_name)
            .await
            .map_err(|e| Error::couch("checking the database", &url, e))?
        {
            return Ok(Found::Pending);
        }
        let security = match connected.couch.security(&couch_name).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(Found::Pending),
            Err(e) => return Err(Error::couch("reading _security", &url, e)),
        };
        return Ok(if grants_present(&security, &resolved.entries) { Found::Applied } else { Found::Pending });
    }
    if let Some(reference) = &target.user_database {
        let user = user_of(ctx, &ns, reference).await?;
        user_database_reference(&user, &ns, &grant_needs(grant.spec.access))?;
        let key = server_key(user.as_ref(), &user.spec.server_ref);
        let connected = resolve(ctx, &ns, &key.to_ref()).await?;
        grant_in_scope(ctx, grant, &connected.server).await?;
        let couch_name =
            user.status.as_ref().and_then(|s| s.per_user_database.clone()).ok_or_else(|| Error::Waiting {
                what: format!("the per-user database of CouchUser {}/{}", user_ns(&ns, reference), reference.user),
            })?;
        let resolved = resolve_grant(grant, ctx, &key);
        record(status, &resolved, &couch_name);
        write_unmanaged(ctx, &connected, &key, &couch_name, None, None).await?;
        return Ok(Found::Applied);
    }
    let (Some(couch_name), Some(server_ref)) = (&target.couch_name, &target.server_ref) else {
        return Err(Error::InvalidSpec("database needs name, userDatabase, or couchName with serverRef".into()));
    };
    let connected = resolve(ctx, &ns, server_ref).await?;
    grant_in_scope(ctx, grant, &connected.server).await?;
    let key = server_key(grant, server_ref);
    if let Some(refused) = couch_name_refusal(ctx, &connected.server, &key, couch_name, &ns).await? {
        // Nothing new is written; what this grant put there while it was allowed is taken back.
        match crate::controller::shared::tenancy::database_manager(ctx, &key, couch_name) {
            Some(_) => requeue_managers(ctx, &key, couch_name),
            None => write_unmanaged(ctx, &connected, &key, couch_name, grant.uid().as_deref(), None).await?,
        }
        return Err(refused.into());
    }
    let resolved = resolve_grant(grant, ctx, &key);
    record(status, &resolved, couch_name);
    write_unmanaged(ctx, &connected, &key, couch_name, None, None).await?;
    Ok(Found::Applied)
}

/// The CouchUser a `userDatabase` reference names, from the store (or the API server when the
/// store does not have it yet); it must declare a per-user database.
async fn user_of(ctx: &Context, grant_ns: &str, reference: &UserDatabaseRef) -> Result<Arc<CouchUser>, Error> {
    let ns = user_ns(grant_ns, reference);
    let user = crate::controller::shared::servers::stored_or_read(ctx, &ctx.stores.users, &ns, &reference.user)
        .await?
        .ok_or_else(|| Error::Waiting { what: format!("CouchUser {ns}/{}", reference.user) })?;
    if !user.spec.per_user_database {
        return Err(Error::InvalidSpec(format!("CouchUser {ns}/{} has no perUserDatabase: true", reference.user)));
    }
    Ok(user)
}

fn record(status: &mut CouchGrantStatus, resolved: &Resolved, database: &str) {
    status.database = Some(database.to_string());
    status.usernames = resolved.entries.names.clone();
    status.roles = resolved.entries.roles.clone();
    status.missing_users = resolved.missing.clone();
}

async fn cleanup(grant: Arc<CouchGrant>, ctx: &Context) -> Result<Action, Error> {
    ctx.grant_passes.record(grant.as_ref(), None);
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
    match write_unmanaged(ctx, &connected, &key, couch_name, grant.uid().as_deref(), None).await {
        Ok(()) | Err(Error::DatabaseNotFound { .. }) => {
            ctx.event(grant.as_ref(), false, "Revoked", format!("entries removed from {couch_name}")).await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_transient() && within_grace(grant.as_ref(), ctx) => Err(e),
        Err(e) => {
            ctx.event(grant.as_ref(), true, "CleanupSkipped", format!("entries not removed from {couch_name}: {e}"))
                .await;
            Ok(Action::await_change())
        }
    }
}
