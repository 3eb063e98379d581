//! The CouchUser reconciler: resolve the server and the password → observe `_users` → plan →
//! write the credentials Secret (first, so a generated password is never lost) → write the
//! user → ensure the per-user database → status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::Value;

use super::context::{Context, now, object_key};
use super::error::Error;
use super::finalize::reconcile_with_finalizer;
use super::servers::{Connected, resolve, resolve_for_cleanup, secret_value, server_key};
use super::status::{FIELD_MANAGER, NewCondition, apply_status, condition_state, set_condition};
use crate::api::{CouchUser, CouchUserStatus, DeletionPolicy, condition};
use crate::couch::{CouchClient, CouchError, UserDoc};
use crate::plan::ownership::{self, Claim, Owner};
use crate::plan::tenancy::TrustedAct;
use crate::plan::user::{
    DEFAULT_USERDB_PREFIX, OWNER_FIELD, ObservedUser, UserIntent, UserOutcome, credentials_data, password_fingerprint,
    per_user_database_name, plan_user, with_owner,
};

pub use crate::api::labels::{OWNER_UID_ANNOTATION, ROTATION_ANNOTATION};
/// Length of generated passwords.
pub const GENERATED_PASSWORD_LEN: usize = 40;

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

/// Name of the credentials Secret: `spec.credentialsSecret.name` or `<name>-couchdb`.
pub fn credentials_secret_name(user: &CouchUser) -> String {
    user.spec.credentials_secret.name.clone().unwrap_or_else(|| format!("{}-couchdb", user.name_any()))
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

/// The password the user must have, and whether it was generated just now.
struct Password {
    value: String,
    fresh: bool,
}

async fn desired_password(user: &CouchUser, ctx: &Context, existing: Option<&Secret>) -> Result<Password, Error> {
    let ns = user.namespace().unwrap_or_default();
    if let Some(source) = &user.spec.password {
        let value = secret_value(ctx, &ns, &source.secret_ref.name, &source.secret_ref.key).await?;
        if value.is_empty() {
            return Err(Error::SecretKeyMissing {
                namespace: ns,
                name: source.secret_ref.name.clone(),
                key: source.secret_ref.key.clone(),
            });
        }
        return Ok(Password { value, fresh: false });
    }
    let generation = rotation_generation(user).to_string();
    let reusable = existing.filter(|s| s.annotations().get(ROTATION_ANNOTATION) == Some(&generation)).and_then(|s| {
        s.data.as_ref()?.get("password").and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|p| !p.is_empty())
    });
    match reusable {
        Some(value) => Ok(Password { value, fresh: false }),
        None => {
            let value: String =
                rand::rng().sample_iter(Alphanumeric).take(GENERATED_PASSWORD_LEN).map(char::from).collect();
            Ok(Password { value, fresh: true })
        }
    }
}

fn rotation_generation(user: &CouchUser) -> i64 {
    user.spec.rotation.as_ref().map(|r| r.generation).unwrap_or(0)
}

/// The Secret as the operator wants it: only the keys, labels and annotations it writes.
fn desired_secret(user: &CouchUser, server_url: &str, username: &str, password: &str, userdb: Option<&str>) -> Secret {
    let mut databases = user.spec.credentials_secret.databases.clone();
    if let Some(db) = userdb {
        databases.push(db.to_string());
    }
    let data: BTreeMap<String, ByteString> = credentials_data(server_url, username, password, &databases)
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    let mut labels = user.spec.credentials_secret.labels.clone();
    labels.insert(crate::api::labels::MANAGED_BY_LABEL.into(), crate::api::labels::MANAGED_BY.into());
    let mut annotations = user.spec.credentials_secret.annotations.clone();
    annotations.insert(crate::api::labels::OWNER_ANNOTATION.into(), format!("CouchUser/{}", user.name_any()));
    annotations.insert(OWNER_UID_ANNOTATION.into(), user.uid().unwrap_or_default());
    if user.spec.password.is_none() {
        annotations.insert(ROTATION_ANNOTATION.into(), rotation_generation(user).to_string());
    }
    let mut secret = Secret { data: Some(data), type_: Some("Opaque".into()), ..Default::default() };
    secret.metadata.name = Some(credentials_secret_name(user));
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(annotations);
    secret
}

/// Whether `existing` already carries everything `desired` does (extra keys, labels and
/// annotations of others are not ours to judge).
fn secret_up_to_date(existing: Option<&Secret>, desired: &Secret) -> bool {
    let Some(existing) = existing else { return false };
    let contains = |have: Option<&BTreeMap<String, String>>, want: Option<&BTreeMap<String, String>>| {
        want.into_iter().flatten().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    let data_ok = desired.data.iter().flatten().all(|(k, v)| existing.data.as_ref().and_then(|d| d.get(k)) == Some(v));
    data_ok
        && contains(existing.metadata.labels.as_ref(), desired.metadata.labels.as_ref())
        && contains(existing.metadata.annotations.as_ref(), desired.metadata.annotations.as_ref())
}

/// Server-side applies the operator's part of the Secret under its field manager: keys,
/// labels and annotations written by others are never removed.
async fn apply_secret(ctx: &Context, ns: &str, secret: &Secret) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut body = serde_json::to_value(secret).map_err(|e| Error::InvalidSpec(format!("Secret: {e}")))?;
    body["apiVersion"] = Value::String("v1".into());
    body["kind"] = Value::String("Secret".into());
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
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

async fn userdb_prefix(couch: &CouchClient) -> String {
    let node = match couch.membership().await {
        Ok(m) => m.cluster_nodes.first().or(m.all_nodes.first()).cloned(),
        Err(_) => None,
    };
    match node {
        Some(node) => couch.config_get(&node, "couch_peruser", "database_prefix").await.ok().flatten(),
        None => None,
    }
    .filter(|p| crate::api::validation::is_valid_database_name(&format!("{p}0")))
    .unwrap_or_else(|| DEFAULT_USERDB_PREFIX.to_string())
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
    let ns = user.namespace().unwrap_or_default();
    let api: Api<CouchUser> = Api::namespaced(ctx.client.clone(), &ns);
    let current = user.status.clone();
    let mut status = current.clone().unwrap_or_default();
    let was = condition_state(&status.conditions, condition::READY);
    let result = ensure(&user, ctx, &mut status).await;
    let generation = user.metadata.generation;
    status.observed_generation = generation;
    match &result {
        Ok(_) => {
            set_condition(
                &mut status.conditions,
                NewCondition::ready("Ready", "user matches the declared state"),
                generation,
                now(),
            );
            set_condition(
                &mut status.conditions,
                NewCondition {
                    type_: condition::PASSWORD_SYNCED,
                    status: true,
                    reason: "PasswordSynced".into(),
                    message: "CouchDB has the declared password".into(),
                },
                generation,
                now(),
            );
        }
        Err(e) => set_condition(&mut status.conditions, NewCondition::not_ready(e), generation, now()),
    }
    apply_status(&api, user.as_ref(), current.as_ref(), &status).await?;
    let is = condition_state(&status.conditions, condition::READY);
    match result {
        Ok((outcome, username)) => {
            let event = match outcome {
                UserOutcome::Created => Some(("Created", format!("created user {username}"))),
                UserOutcome::Adopted => Some(("Adopted", format!("adopted existing user {username}"))),
                UserOutcome::Recreated => {
                    Some(("DriftRepaired", format!("user {username} was deleted out of band; recreated")))
                }
                UserOutcome::PasswordChanged => Some(("PasswordChanged", format!("password of {username} changed"))),
                UserOutcome::Updated => Some(("Updated", format!("user {username} updated to the declared roles"))),
                UserOutcome::Unchanged => {
                    (was != is).then(|| ("Ready", format!("user {username} matches the declared state")))
                }
            };
            if let Some((reason, note)) = event {
                ctx.event(user.as_ref(), false, reason, note).await;
            }
            ctx.backoff.reset(&object_key(user.as_ref()));
            Ok(Action::requeue(ctx.resync()))
        }
        Err(e) => {
            if was != is {
                ctx.event(user.as_ref(), true, e.reason(), e.to_string()).await;
            }
            Err(e)
        }
    }
}

async fn ensure(user: &CouchUser, ctx: &Context, status: &mut CouchUserStatus) -> Result<(UserOutcome, String), Error> {
    let ns = user.namespace().unwrap_or_default();
    let username = user.couch_username().to_string();
    if !crate::api::validation::is_valid_username(&username) {
        return Err(Error::InvalidSpec(format!("{username:?} is not a valid CouchDB username")));
    }
    let Connected { server, couch } = resolve(ctx, &ns, &user.spec.server_ref).await?;
    let url = server.spec.url.clone();
    let secret_name = credentials_secret_name(user);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &existing {
        let theirs =
            existing.annotations().get(OWNER_UID_ANNOTATION).is_some_and(|uid| Some(uid) != user.uid().as_ref());
        if theirs {
            return Err(Error::InvalidSpec(format!(
                "Secret {ns}/{secret_name} is written by another CouchUser; choose another credentialsSecret.name"
            )));
        }
    }
    let password = desired_password(user, ctx, existing.as_ref()).await?;
    let me = owner(user);
    let (doc, observed) = observe_user(&couch, &username, &url, ctx, &me).await?;
    let previously_owned = status.username.as_deref() == Some(username.as_str());
    // Adopting needs a namespace the server trusts; asked only when adopting could happen: an
    // existing user this resource does not own yet.
    let not_ours = observed.owner.as_ref().map_or(!previously_owned, |o| o.uid != me.uid);
    let adopt_refused = if user.spec.adopt && observed.exists && not_ours {
        super::tenancy::require_trust(ctx, &server, &ns, TrustedAct::AdoptUser(username.clone())).await?.err()
    } else {
        None
    };
    let fingerprint = password_fingerprint(&me.uid, &password.value);
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

    let userdb_name = if user.spec.per_user_database {
        Some(per_user_database_name(&userdb_prefix(&couch).await, &username))
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
        doc.extra.insert(OWNER_FIELD.into(), serde_json::to_value(&me).map_err(|e| Error::InvalidSpec(e.to_string()))?);
        couch.put_user(&doc).await.map_err(|e| Error::couch("writing the user", &url, e))?;
        tracing::info!(username = %username, password_changed = write.set_password, "wrote user");
    }
    status.username = Some(username.clone());
    status.password_hash = Some(fingerprint);
    status.credentials_secret = Some(secret_name);
    status.rotation_generation = user.spec.password.is_none().then(|| rotation_generation(user));
    status.per_user_database = None;
    if let Some(name) = userdb_name {
        ensure_per_user_database(&couch, &name, &username, &url).await?;
        status.per_user_database = Some(name);
    }
    Ok((plan.outcome, username))
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
        && secret.annotations().get(OWNER_UID_ANNOTATION) == user.uid().as_ref()
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
            connected
                .couch
                .delete_user(&username, &rev)
                .await
                .map_err(|e| Error::couch("deleting the user", &url, e))?;
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
        Err(e) if e.is_transient() && super::database::within_grace(user.as_ref(), ctx) => return Err(e),
        Err(e) => ctx.event(user.as_ref(), true, "CleanupSkipped", format!("user {username} not deleted: {e}")).await,
    }
    Ok(Action::await_change())
}
