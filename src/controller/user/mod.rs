//! The CouchUser reconciler: resolve the server and the password → observe `_users` → plan →
//! write the credentials Secret (first, so a generated password is never lost) → write the
//! user → ensure the per-user database → status.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;

use crate::api::{CouchServer, CouchUser, CouchUserStatus, DeletionPolicy, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::finalize::{reconcile_with_finalizer, within_grace};
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::credentials::{
    Password, apply_secret, credentials_secret_name, desired_password, desired_secret, rotation_generation,
    secret_up_to_date,
};
use crate::controller::shared::servers::{Connected, resolve, resolve_for_cleanup, server_key};
use crate::controller::shared::users_known;
use crate::couch::{CouchClient, CouchError, UserDoc};
use crate::plan::ownership::{self, Claim, Owner};
use crate::plan::tenancy::{self, NameKind, TrustedAct};
use crate::plan::user::{
    OWNER_FIELD, ObservedUser, UserIntent, UserOutcome, UserPlan, password_fingerprint, per_user_database_name,
    plan_user, with_owner,
};

/// Reconciles one CouchUser.
pub async fn reconcile(user: Arc<CouchUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(user, &ctx, |o| apply(o, &ctx), |o| cleanup(o, &ctx)).await
}

fn owner(user: &CouchUser) -> Owner {
    Owner {
        kind: "CouchUser".into(),
        namespace: user.namespace().unwrap_or_default(),
        name: user.name_any(),
        uid: user.uid().unwrap_or_default(),
    }
}

fn claim(user: &CouchUser) -> Claim {
    let created = user.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    Claim { owner: owner(user), created }
}

fn earlier_claimant(user: &CouchUser, ctx: &Context) -> Option<Owner> {
    let me = (server_key(user, &user.spec.server_ref), user.couch_username().to_string());
    let others = ctx
        .stores
        .users
        .state()
        .into_iter()
        .filter(|u| u.metadata.deletion_timestamp.is_none())
        .filter(|u| (server_key(u.as_ref(), &u.spec.server_ref), u.couch_username().to_string()) == me)
        .map(|u| claim(&u))
        .collect::<Vec<_>>();
    ownership::earlier_claimant(&claim(user), others)
}

async fn observe_user(
    couch: &CouchClient,
    username: &str,
    url: &str,
    ctx: &Context,
    me: &Owner,
) -> Result<(Option<UserDoc>, ObservedUser), Error> {
    let doc = couch.get_user(username).await.map_err(|e| Error::couch("reading the user", url, e))?;
    let recorded = |field: &str| -> Option<Owner> {
        doc.as_ref().and_then(|d| d.extra.get(field)).and_then(|o| serde_json::from_value(o.clone()).ok())
    };
    // A CouchUser's record, or a CouchShare's on its scoped replication user: both are managed.
    let owner = recorded(OWNER_FIELD).or_else(|| recorded(crate::plan::share::SHARE_FIELD));
    let owner_alive = owner.as_ref().is_some_and(|o| {
        o.uid != me.uid
            && match o.kind.as_str() {
                "CouchShare" => ctx.stores.shares.state().iter().any(|s| s.uid().as_deref() == Some(&o.uid)),
                _ => ctx.stores.users.state().iter().any(|u| u.uid().as_deref() == Some(&o.uid)),
            }
    });
    let observed = ObservedUser {
        exists: doc.is_some(),
        roles: doc.as_ref().map(|d| d.roles.clone()).unwrap_or_default(),
        owner,
        owner_alive,
    };
    Ok((doc, observed))
}

/// Makes sure the user's private database exists with the owner as admin and member. A
/// database CouchDB's own `couch_peruser` created first is accepted as this user's.
async fn ensure_per_user_database(couch: &CouchClient, db: &str, username: &str, url: &str) -> Result<(), Error> {
    if !couch.database_exists(db).await.map_err(|e| Error::couch("checking the per-user database", url, e))? {
        match couch.create_database(db, &Default::default()).await {
            Ok(()) | Err(CouchError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(Error::couch("creating the per-user database", url, e)),
        }
    }
    let security = couch.security(db).await.map_err(|e| Error::couch("reading per-user _security", url, e))?;
    if let Some(updated) = with_owner(&security, username) {
        couch.put_security(db, &updated).await.map_err(|e| Error::couch("writing per-user _security", url, e))?;
    }
    Ok(())
}

async fn apply(user: Arc<CouchUser>, ctx: &Context) -> Result<Action, Error> {
    let mut pass = Pass::begin(user.as_ref());
    let result = ensure(&user, ctx, &mut pass.status).await;
    let result = result.map(|(outcome, username)| outcome_of(outcome, &username, ctx));
    pass.finish(ctx, user.as_ref(), result).await
}

/// The tail's outcome: Ready and PasswordSynced, an Event for what the pass did, or for a
/// transition when it did nothing.
fn outcome_of(outcome: UserOutcome, username: &str, ctx: &Context) -> Outcome {
    let synced = NewCondition {
        type_: condition::PASSWORD_SYNCED,
        status: true,
        reason: "PasswordSynced".into(),
        message: "CouchDB has the declared password".into(),
    };
    let ready =
        Outcome::new(NewCondition::ready("Ready", "user matches the declared state"), Action::requeue(ctx.resync()))
            .with_condition(synced);
    let did = match outcome {
        UserOutcome::Created => Note::normal("Created", format!("created user {username}")),
        UserOutcome::Adopted => Note::normal("Adopted", format!("adopted existing user {username}")),
        UserOutcome::Recreated => {
            Note::normal("DriftRepaired", format!("user {username} was deleted out of band; recreated"))
        }
        UserOutcome::PasswordChanged => Note::normal("PasswordChanged", format!("password of {username} changed")),
        UserOutcome::Updated => Note::normal("Updated", format!("user {username} updated to the declared roles")),
        UserOutcome::Unchanged => {
            return ready.on_transition(Note::normal("Ready", format!("user {username} matches the declared state")));
        }
    };
    ready.with_event(did)
}

async fn ensure(user: &CouchUser, ctx: &Context, status: &mut CouchUserStatus) -> Result<(UserOutcome, String), Error> {
    let ns = user.namespace().unwrap_or_default();
    let username = user.couch_username().to_string();
    if !crate::api::validation::is_valid_username(&username) {
        return Err(Error::InvalidSpec(format!("{username:?} is not a valid CouchDB username")));
    }
    tenancy::username_not_reserved(&username)?;
    let Connected { server, couch } = resolve(ctx, &ns, &user.spec.server_ref).await?;
    // Usernames and roles are server-wide: a namespace the server does not trust declares only
    // its own, before anything is written.
    let scope = crate::controller::shared::tenancy::name_scope(ctx, &server, &ns).await?;
    tenancy::in_scope(&scope, NameKind::Username, &username, false)?;
    tenancy::all_in_scope(&scope, NameKind::Role, &user.spec.roles, false)?;
    let url = server.spec.url.clone();
    let secret_name = credentials_secret_name(user);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &existing {
        crate::controller::shared::credentials::secret_is_ours(existing, user.uid().as_deref(), &ns, &secret_name)?;
    }
    let password = desired_password(user, ctx, existing.as_ref()).await?;
    let me = owner(user);
    let previously_owned = status.username.as_deref() == Some(username.as_str());
    let fingerprint = password_fingerprint(&me.uid, &password.value);
    // What decides the write: a user found (or made) as declared need not be read again while
    // the `_users` follower brings no other revision of it (see `users_known`).
    let key = users_known::feed_key(&server);
    let verdict = users_known::digest(&[&username, &me.uid, &fingerprint, &user.spec.roles.join("\n")]);
    let applied = !password.fresh && status.password_hash.as_deref() == Some(fingerprint.as_str());
    let (doc, plan) = if previously_owned
        && applied
        && ctx.users_known.up_to_date(&key, &username, verdict, users_known::max_age(ctx.resync()))
    {
        (None, UserPlan { write: None, outcome: UserOutcome::Unchanged })
    } else {
        let ticket = ctx.users_known.ticket(&key);
        let (doc, plan) = observe_and_plan(user, ctx, (&couch, &server), &password, &me, status).await?;
        if plan.write.is_none()
            && let Some(rev) = doc.as_ref().and_then(|d| d.rev.as_deref())
        {
            ctx.users_known.read_up_to_date(&key, &username, rev, verdict, ticket);
        }
        (doc, plan)
    };
    let userdb_name = if user.spec.per_user_database {
        Some(per_user_database_name(&crate::controller::shared::tenancy::userdb_prefix(&couch).await, &username))
    } else {
        None
    };
    // The Secret first: a generated password is stored before CouchDB has it, so a crash in
    // between leaves a Secret whose password the next reconcile applies, never a lost one.
    let desired = desired_secret(user, &url, &username, &password.value, userdb_name.as_deref());
    if !secret_up_to_date(existing.as_ref(), &desired) {
        apply_secret(ctx, &ns, &desired).await?;
    }
    if let Some(write) = plan.write {
        let mut doc = doc.unwrap_or_else(|| UserDoc::new(username.clone(), vec![], None));
        doc.roles = user.spec.roles.clone();
        doc.password = write.set_password.then(|| password.value.clone());
        doc.extra.insert(
            OWNER_FIELD.into(),
            serde_json::to_value(&me).map_err(|e| Error::Internal(format!("encoding the owner record: {e}")))?,
        );
        let others = ctx.users_known.put(&couch, &key, &doc, verdict).await;
        // Someone else wrote it too meanwhile: looked at again.
        if others.map_err(|e| Error::couch("writing the user", &url, e))?
            && let Some(t) = &ctx.user_trigger
        {
            let _ = t.send(kube::runtime::reflector::ObjectRef::from_obj(user));
        }
        tracing::info!(username = %username, password_changed = write.set_password, "wrote user");
    }
    status.username = Some(username.clone());
    status.password_hash = Some(fingerprint);
    status.credentials_secret = Some(secret_name);
    status.rotation_generation = user.spec.password.is_none().then(|| rotation_generation(user));
    status.per_user_database = None;
    if let Some(name) = userdb_name {
        // A CouchDatabase that claims the name (under a prefix configured by hand, which its own
        // reconciler could not know) keeps it: the user does not take it as its private database.
        let claimed = ctx.stores.databases.state().into_iter().find(|d| {
            d.metadata.deletion_timestamp.is_none()
                && d.status.as_ref().and_then(|s| s.couch_name.as_deref()) == Some(name.as_str())
                && server_key(d.as_ref(), &d.spec.server_ref) == server_key(user, &user.spec.server_ref)
        });
        if let Some(d) = claimed {
            return Err(Error::InvalidSpec(format!(
                "the per-user database {name} is claimed by CouchDatabase {}/{}; it is not made this user's private database",
                d.namespace().unwrap_or_default(),
                d.name_any()
            )));
        }
        ensure_per_user_database(&couch, &name, &username, &url).await?;
        status.per_user_database = Some(name);
    }
    Ok((plan.outcome, username))
}

/// Reads the user's document and decides what to write (see `plan_user`).
async fn observe_and_plan(
    user: &CouchUser,
    ctx: &Context,
    (couch, server): (&CouchClient, &CouchServer),
    password: &Password,
    me: &Owner,
    status: &CouchUserStatus,
) -> Result<(Option<UserDoc>, UserPlan), Error> {
    let ns = user.namespace().unwrap_or_default();
    let username = user.couch_username().to_string();
    let (doc, observed) = observe_user(couch, &username, &server.spec.url, ctx, me).await?;
    let previously_owned = status.username.as_deref() == Some(username.as_str());
    let fingerprint = password_fingerprint(&me.uid, &password.value);
    // Adopting needs a namespace the server trusts; asked only when adopting could happen: an
    // existing user this resource does not own yet.
    let not_ours = observed.owner.as_ref().map_or(!previously_owned, |o| o.uid != me.uid);
    let adopt_refused = if user.spec.adopt && observed.exists && not_ours {
        crate::controller::shared::tenancy::require_trust(ctx, server, &ns, TrustedAct::AdoptUser(username.clone()))
            .await?
            .err()
    } else {
        None
    };
    let intent = UserIntent {
        me: me.clone(),
        username: username.clone(),
        roles: user.spec.roles.clone(),
        password_fingerprint: fingerprint.clone(),
        applied_fingerprint: if password.fresh { None } else { status.password_hash.clone() },
        previously_owned,
        adopt: user.spec.adopt,
        adopt_refused,
        earlier_claimant: if previously_owned { None } else { earlier_claimant(user, ctx) },
    };
    let plan = plan_user(&intent, &observed)?;
    Ok((doc, plan))
}

async fn cleanup(user: Arc<CouchUser>, ctx: &Context) -> Result<Action, Error> {
    let ns = user.namespace().unwrap_or_default();
    let username = user.couch_username().to_string();
    if user.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(user.as_ref(), false, "Retained", format!("user {username} kept (deletionPolicy: Retain)")).await;
        return Ok(Action::await_change());
    }
    // The credentials Secret goes whatever the server's state, if it is ours.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret_name = credentials_secret_name(&user);
    if let Some(secret) = secrets.get_opt(&secret_name).await?
        && crate::controller::shared::credentials::secret_is_ours(&secret, user.uid().as_deref(), &ns, &secret_name)
            .is_ok()
    {
        secrets.delete(&secret_name, &DeleteParams::default()).await?;
    }
    let Some(connected) =
        resolve_for_cleanup(ctx, user.as_ref(), &ns, &user.spec.server_ref, &format!("user {username} not deleted"))
            .await?
    else {
        return Ok(Action::await_change());
    };
    let url = connected.server.spec.url.clone();
    let me = owner(&user);
    let previously_owned = user.status.as_ref().and_then(|s| s.username.as_deref()) == Some(username.as_str());
    let result = async {
        let (doc, observed) = observe_user(&connected.couch, &username, &url, ctx, &me).await?;
        let ours = match &observed.owner {
            Some(o) => o.uid == me.uid,
            None => previously_owned,
        };
        if ours && let Some(rev) = doc.and_then(|d| d.rev) {
            let feed = users_known::feed_key(&connected.server);
            let deleted = ctx.users_known.delete(&connected.couch, &feed, &username, &rev).await;
            deleted.map_err(|e| Error::couch("deleting the user", &url, e))?;
        }
        if user.spec.per_user_database
            && ours
            && let Some(db) = user.status.as_ref().and_then(|s| s.per_user_database.clone())
        {
            match connected.couch.delete_database(&db).await {
                Ok(()) | Err(CouchError::NotFound { .. }) => {}
                Err(e) => return Err(Error::couch("deleting the per-user database", &url, e)),
            }
        }
        Ok::<_, Error>(ours)
    }
    .await;
    match result {
        Ok(true) => ctx.event(user.as_ref(), false, "Deleted", format!("user {username} deleted")).await,
        Ok(false) => {
            ctx.event(
                user.as_ref(),
                false,
                "Retained",
                format!("user {username} was not created by this resource; left in place"),
            )
            .await
        }
        Err(e) if e.is_transient() && within_grace(user.as_ref(), ctx) => return Err(e),
        Err(e) => ctx.event(user.as_ref(), true, "CleanupSkipped", format!("user {username} not deleted: {e}")).await,
    }
    Ok(Action::await_change())
}
