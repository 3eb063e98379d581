//! The CouchShare reconciler: validate the selector → resolve endpoints → scoped replication
//! user and its access → sharing document → replication documents (deterministic ids, written
//! only when their spec changed) → state from CouchDB's scheduler → status. Revocation lives in
//! `share_revoke`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::Value;

use super::context::{Context, now, object_key};
use super::error::Error;
use super::finalize::reconcile_with_finalizer;
use super::servers::{Connected, resolve, secret_value};
use super::share_endpoints::{Consent, Place, Sources, managing_server, sources, target};
use super::status::{NewCondition, apply_status, condition_state, set_condition};
use crate::api::{CouchShare, CouchShareStatus, ReplicationStatus, ShareCredentials, ShareMode, condition, labels};
use crate::couch::{CouchClient, ReplicationState, UserDoc};
use crate::plan::grant::grants_present;
use crate::plan::ownership::Owner;
use crate::plan::security::GrantEntries;
use crate::plan::share::{
    Direction, Endpoint, EndpointAuth, EndpointStyle, ReplicationAction, ReplicationSpec, SHARE_FIELD,
    plan_replication, replication_doc_id, replication_doc_prefix, replication_selector, replication_username,
    replications_ready, sharing_doc, sharing_doc_id, sharing_doc_matches, stale_replications, summary_state,
    validate_selector,
};
use crate::plan::tenancy::{EndpointRole, TrustedAct, share_needs};
use crate::plan::user::password_fingerprint;

/// Field of the scoped user's document: fingerprint of the password it was given.
const PASSWORD_FIELD: &str = "couchshare.io/password-fingerprint";

/// Reconciles one CouchShare.
pub async fn reconcile(share: Arc<CouchShare>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(share, &ctx, |s| apply(s, &ctx), |s| super::share_revoke::cleanup(s, &ctx)).await
}

pub(crate) fn owner(share: &CouchShare) -> Owner {
    Owner {
        kind: "CouchShare".into(),
        namespace: share.namespace().unwrap_or_default(),
        name: share.name_any(),
        uid: share.uid().unwrap_or_default(),
    }
}

/// The replicator database of a share.
pub(crate) fn replicator_db(share: &CouchShare) -> String {
    share.spec.replicator_database.clone().unwrap_or_else(|| crate::couch::REPLICATOR_DB.to_string())
}

/// Name of the Secret holding the scoped replication user's password.
pub(crate) fn replication_secret_name(share: &CouchShare) -> String {
    format!("{}-replication", share.name_any())
}

/// Whether the share (still) needs its scoped user's access on local databases: not once it is
/// revoked or being deleted. Access goes at the deletion mark, not when the object is gone: a
/// database reconciled on the deletion event may see the share in another watch's store a moment
/// longer, and taking access away first only stops data flowing earlier.
pub(crate) fn wants_access(share: &CouchShare) -> bool {
    share.spec.credentials == ShareCredentials::Scoped
        && share.metadata.deletion_timestamp.is_none()
        && !share.status.as_ref().is_some_and(|s| s.revoked)
}

/// What a share contributes to a local database's `_security`: its replication user as member.
pub(crate) fn contribution(share: &CouchShare) -> GrantEntries {
    let owner = owner(share);
    GrantEntries {
        access: crate::api::Access::Member,
        names: vec![replication_username(&owner.namespace, &owner.name)],
        roles: vec![],
    }
}

fn state_name(state: &ReplicationState) -> String {
    match state {
        ReplicationState::Initializing => "initializing".into(),
        ReplicationState::Running => "running".into(),
        ReplicationState::Pending => "pending".into(),
        ReplicationState::Crashing => "crashing".into(),
        ReplicationState::Failed => "failed".into(),
        ReplicationState::Completed => "completed".into(),
        ReplicationState::Error => "error".into(),
        ReplicationState::Other(s) => s.clone(),
    }
}

async fn apply(share: Arc<CouchShare>, ctx: &Context) -> Result<Action, Error> {
    let ns = share.namespace().unwrap_or_default();
    let api: Api<CouchShare> = Api::namespaced(ctx.client.clone(), &ns);
    let current = share.status.clone();
    let mut status = current.clone().unwrap_or_default();
    let generation = share.metadata.generation;
    status.observed_generation = generation;
    let was = condition_state(&status.conditions, condition::READY);
    // A revoked share is never resurrected: nothing is written again.
    if status.revoked {
        return Ok(Action::await_change());
    }
    if share.spec.revoke.as_ref().is_some_and(|r| r.revoked) {
        super::share_revoke::revoke(&share, ctx).await?;
        status.revoked = true;
        status.state = Some("revoked".into());
        status.changes_pending = None;
        status.replications.clear();
        set_condition(
            &mut status.conditions,
            NewCondition {
                type_: condition::READY,
                status: false,
                reason: "Revoked".into(),
                message: "the share was revoked and cleaned up".into(),
            },
            generation,
            now(),
        );
        apply_status(&api, share.as_ref(), current.as_ref(), &status).await?;
        ctx.event(share.as_ref(), false, "Revoked", "replications stopped, sharing document removed".into()).await;
        return Ok(Action::await_change());
    }
    let result = ensure(&share, ctx, &mut status).await;
    // Not (or no longer) permitted: whatever ran while it was is stopped, in revocation order.
    if matches!(result, Err(Error::NotPermitted(_))) {
        super::share_revoke::withdraw(&share, ctx).await?;
        status.replications.clear();
        status.changes_pending = None;
        status.sharing_document_id = None;
        status.state = Some("stopped".into());
    }
    let action = match &result {
        Ok(true) => {
            set_condition(
                &mut status.conditions,
                NewCondition::ready("Replicating", "every replication is running or completed"),
                generation,
                now(),
            );
            Action::requeue(ctx.resync())
        }
        Ok(false) => {
            let state = status.state.clone().unwrap_or_else(|| "unknown".into());
            let error = status.replications.iter().find_map(|r| r.error.clone());
            let message = match error {
                Some(e) => format!("replication is {state}: {e}"),
                None => format!("replication is {state}"),
            };
            let reason = if matches!(state.as_str(), "failed" | "error" | "crashing") {
                "ReplicationFailing"
            } else {
                "ReplicationPending"
            };
            set_condition(
                &mut status.conditions,
                NewCondition { type_: condition::READY, status: false, reason: reason.into(), message },
                generation,
                now(),
            );
            Action::requeue(std::time::Duration::from_secs(2).min(ctx.options.resync))
        }
        Err(e) => {
            set_condition(&mut status.conditions, NewCondition::not_ready(e), generation, now());
            Action::requeue(ctx.resync())
        }
    };
    let previous_state = current.as_ref().and_then(|s| s.state.clone());
    apply_status(&api, share.as_ref(), current.as_ref(), &status).await?;
    if status.state != previous_state
        && let Some(state) = &status.state
    {
        let warn = matches!(state.as_str(), "failed" | "error" | "crashing");
        ctx.event(share.as_ref(), warn, "ReplicationState", format!("replication is now {state}")).await;
    }
    let is = condition_state(&status.conditions, condition::READY);
    if was != is
        && let Err(e) = &result
    {
        ctx.event(share.as_ref(), true, e.reason(), e.to_string()).await;
    }
    match result {
        Ok(_) => {
            ctx.backoff.reset(&object_key(share.as_ref()));
            Ok(action)
        }
        Err(e) => Err(e),
    }
}

/// The scoped replication user: created (or its password restored) only when needed.
async fn ensure_replication_user(
    ctx: &Context,
    share: &CouchShare,
    couch: &CouchClient,
    url: &str,
) -> Result<EndpointAuth, Error> {
    let ns = share.namespace().unwrap_or_default();
    let me = owner(share);
    let username = replication_username(&me.namespace, &me.name);
    let secret_name = replication_secret_name(share);
    let password = match secret_value(ctx, &ns, &secret_name, "password").await {
        Ok(p) if !p.is_empty() => p,
        Ok(_) | Err(Error::SecretNotFound { .. } | Error::SecretKeyMissing { .. }) => {
            use rand::Rng;
            let p: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect();
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "labels": {(labels::MANAGED_BY_LABEL): labels::MANAGED_BY},
                             "annotations": {(labels::OWNER_ANNOTATION): format!("CouchShare/{}", me.name), (labels::OWNER_UID_ANNOTATION): me.uid}},
                "type": "Opaque",
                "stringData": {"username": username, "password": p},
            });
            Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                .patch(
                    &secret_name,
                    &kube::api::PatchParams::apply(super::status::FIELD_MANAGER).force(),
                    &kube::api::Patch::Apply(&secret),
                )
                .await?;
            p
        }
        Err(e) => return Err(e),
    };
    let fingerprint = password_fingerprint(&me.uid, &password);
    let existing = couch.get_user(&username).await.map_err(|e| Error::couch("reading the replication user", url, e))?;
    let up_to_date = existing.as_ref().is_some_and(|d| {
        d.extra.get(PASSWORD_FIELD).and_then(Value::as_str) == Some(fingerprint.as_str())
            && d.extra.get(SHARE_FIELD).and_then(|o| o.get("uid")).and_then(Value::as_str) == Some(me.uid.as_str())
    });
    if !up_to_date {
        let mut doc = existing.unwrap_or_else(|| UserDoc::new(username.clone(), vec![], None));
        doc.password = Some(password.clone());
        doc.extra.insert(PASSWORD_FIELD.into(), Value::String(fingerprint));
        doc.extra.insert(SHARE_FIELD.into(), serde_json::to_value(&me).map_err(|e| Error::InvalidSpec(e.to_string()))?);
        couch.put_user(&doc).await.map_err(|e| Error::couch("writing the replication user", url, e))?;
        tracing::info!(username = %username, "wrote scoped replication user");
    }
    Ok(EndpointAuth { username, password })
}

/// Makes sure the scoped user can use a local database: a CouchDatabase's reconciler merges the
/// share's entry (wait for it); a per-user database is written here, entry by entry.
async fn ensure_access(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    place: &Place,
    auth: &EndpointAuth,
) -> Result<(), Error> {
    let Place::Local { database, managed, server } = place else { return Ok(()) };
    let url = connected.server.spec.url.clone();
    if *managed {
        let security =
            connected.couch.security(database).await.map_err(|e| Error::couch("reading _security", &url, e))?;
        if !grants_present(&security, &contribution(share)) {
            return Err(Error::Waiting { what: format!("the replication user's access to {database}") });
        }
    } else {
        super::grant::write_unmanaged(ctx, connected, server, database, None).await?;
    }
    // The user's own view: CouchDB's auth cache follows _users asynchronously.
    let as_user =
        connected.couch.with_credentials(crate::couch::Credentials::new(auth.username.clone(), auth.password.clone()));
    match as_user.database_info(database).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_access_denied() => {
            Err(Error::Waiting { what: format!("the replication user's access to {database}") })
        }
        Err(e) => Err(Error::couch("checking the replication user's access", &url, e)),
    }
}

fn endpoint(place: &Place, local_base: &str, local_auth: &EndpointAuth) -> Endpoint {
    match place {
        Place::Local { database, .. } => {
            Endpoint { base_url: local_base.to_string(), database: database.clone(), auth: Some(local_auth.clone()) }
        }
        Place::Remote { base_url, database, auth } => {
            Endpoint { base_url: base_url.clone(), database: database.clone(), auth: Some(auth.clone()) }
        }
    }
}

/// One pass. Returns whether every replication is running (or completed, one-shot).
async fn ensure(share: &CouchShare, ctx: &Context, status: &mut CouchShareStatus) -> Result<bool, Error> {
    let ns = share.namespace().unwrap_or_default();
    if let Some(selector) = &share.spec.selector {
        validate_selector(selector).map_err(|e| Error::InvalidSelector(e.to_string()))?;
    }
    // A sharing document that cannot be written as declared is refused before anything is.
    if let Some(sd) = &share.spec.sharing_document {
        sharing_doc(sd.body.as_ref(), share.spec.mode, "", "", &owner(share)).map_err(Error::InvalidSpec)?;
    }
    // Endpoints in another namespace only with their consent: refused before anything is written.
    let sources = sources(ctx, share, Consent::Check).await?;
    let target = target(ctx, share, Consent::Check).await?;
    let mut places: Vec<&Place> = vec![&target];
    let (fan_in, waiting): (Vec<(Option<String>, Place)>, Vec<String>) = match sources {
        Sources::One(p) => (vec![(None, p)], vec![]),
        Sources::FanIn { ready, waiting } => (ready.into_iter().map(|(user, p)| (Some(user), p)).collect(), waiting),
    };
    places.extend(fan_in.iter().map(|(_, p)| p));
    let server_ref = managing_server(share, &places)?;
    let connected = resolve(ctx, &ns, &server_ref).await?;
    if share.spec.credentials == ShareCredentials::Admin {
        super::tenancy::require_trust(ctx, &connected.server, &ns, TrustedAct::AdminCredentials).await??;
    }
    status.server = Some(format!("{}/{}", server_ref.namespace.clone().unwrap_or_default(), server_ref.name));
    let url = connected.server.spec.url.clone();
    let caps = connected.couch.capabilities().await.map_err(|e| Error::couch("reading capabilities", &url, e))?;
    let style = if caps.auth_object_in_endpoints { EndpointStyle::AuthObject } else { EndpointStyle::BasicHeader };
    let local_base =
        connected.server.spec.replication_url.clone().unwrap_or_else(|| url.clone()).trim_end_matches('/').to_string();

    let local_auth = match share.spec.credentials {
        ShareCredentials::Scoped => {
            let auth = ensure_replication_user(ctx, share, &connected.couch, &url).await?;
            for place in &places {
                ensure_access(ctx, share, &connected, place, &auth).await?;
            }
            status.replication_user = Some(auth.username.clone());
            auth
        }
        ShareCredentials::Admin => {
            status.replication_user = None;
            let secret = &connected.server.spec.admin_credentials.secret_ref;
            let server_ns = connected.server.namespace().unwrap_or_default();
            EndpointAuth {
                username: secret_value(ctx, &server_ns, &secret.name, &secret.username_key).await?,
                password: secret_value(ctx, &server_ns, &secret.name, &secret.password_key).await?,
            }
        }
    };

    let me = owner(share);
    let replicator = replicator_db(share);
    // A per-tenant replicator database (`tenant/_replicator`) exists only once someone creates it.
    if replicator != crate::couch::REPLICATOR_DB
        && !connected
            .couch
            .database_exists(&replicator)
            .await
            .map_err(|e| Error::couch("checking the replicator database", &url, e))?
    {
        match connected.couch.create_database(&replicator, &Default::default()).await {
            Ok(()) | Err(crate::couch::CouchError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(Error::couch("creating the replicator database", &url, e)),
        }
    }
    let mut wanted = Vec::new();
    let mut sharing_id = None;
    for (user, source) in &fan_in {
        // The sharing document is written into the source, so the receiving side sees it.
        let doc_id = match (&share.spec.sharing_document, user) {
            (Some(sd), None) => {
                let id = sharing_doc_id(&sd.id, source.database(), target.database());
                ensure_sharing_doc(ctx, &connected, share, source, &target, sd.body.as_ref(), &id).await?;
                sharing_id = Some(id.clone());
                Some(id)
            }
            _ => None,
        };
        let selector = replication_selector(share.spec.selector.as_ref(), doc_id.as_deref());
        let mut directions = vec![Direction::Forward];
        if share.spec.mode == ShareMode::TwoWay {
            directions.push(Direction::Backward);
        }
        for direction in directions {
            let (from, to) = match direction {
                Direction::Forward => (source, &target),
                Direction::Backward => (&target, source),
            };
            let spec = ReplicationSpec {
                id: replication_doc_id(&me.namespace, &me.name, direction, user.as_deref()),
                source: endpoint(from, &local_base, &local_auth),
                target: endpoint(to, &local_base, &local_auth),
                continuous: share.spec.continuous,
                selector: selector.clone(),
                owner: me.clone(),
            };
            let existing = connected
                .couch
                .get_replication_doc(&replicator, &spec.id)
                .await
                .map_err(|e| Error::couch("reading a replication document", &url, e))?;
            match plan_replication(&spec, existing.as_ref(), style)? {
                ReplicationAction::Create(body) => {
                    connected
                        .couch
                        .put_replication_doc(&replicator, &spec.id, &body)
                        .await
                        .map_err(|e| invalid_or(e, &url))?;
                    tracing::info!(id = %spec.id, "wrote replication document");
                }
                ReplicationAction::Update { rev, mut body } => {
                    body["_rev"] = Value::String(rev);
                    connected
                        .couch
                        .put_replication_doc(&replicator, &spec.id, &body)
                        .await
                        .map_err(|e| invalid_or(e, &url))?;
                    tracing::info!(id = %spec.id, "updated replication document");
                }
                ReplicationAction::Keep => {}
            }
            wanted.push((spec.id.clone(), from.database().to_string(), to.database().to_string()));
        }
    }
    // Replications this share no longer wants (a fan-in user gone, TwoWay turned OneWay).
    let docs = connected
        .couch
        .list_replication_docs_with_prefix(&replicator, &replication_doc_prefix(&me.namespace, &me.name))
        .await
        .map_err(|e| Error::couch("listing replication documents", &url, e))?;
    let wanted_ids: Vec<String> = wanted.iter().map(|w| w.0.clone()).collect();
    for (id, rev) in stale_replications(&docs, &me, &wanted_ids) {
        ctx.metrics.forget_replication(&me.namespace, &me.name, &id);
        connected
            .couch
            .delete_replication_doc(&replicator, &id, &rev)
            .await
            .map_err(|e| Error::couch("deleting a replication document", &url, e))?;
        tracing::info!(id = %id, "deleted replication document no longer wanted");
    }
    status.sharing_document_id = sharing_id;

    // State from CouchDB itself: one scheduler read per reconcile of this replicator database.
    let listed = ctx
        .scheduler
        .statuses(&url, &connected.couch, &replicator)
        .await
        .map_err(|e| Error::couch("reading _scheduler/docs", &url, e))?;
    // On a cluster the listing can lag behind the node that runs a job (a one-shot that has
    // completed is missing from it for a while): ask for those documents one by one.
    let mut statuses: Vec<crate::couch::ReplicationStatus> =
        wanted.iter().filter_map(|(id, _, _)| listed.iter().find(|s| &s.doc_id == id).cloned()).collect();
    for (id, _, _) in &wanted {
        if !statuses.iter().any(|s| &s.doc_id == id)
            && let Some(one) = connected
                .couch
                .replication_status(&replicator, id)
                .await
                .map_err(|e| Error::couch("reading _scheduler/docs", &url, e))?
        {
            statuses.push(one);
        }
    }
    status.replications = wanted
        .iter()
        .map(|(id, from, to)| {
            let s = statuses.iter().find(|s| &s.doc_id == id);
            ReplicationStatus {
                id: id.clone(),
                source: from.clone(),
                target: to.clone(),
                state: s.and_then(|s| s.state.as_ref()).map(state_name),
                docs_read: s.and_then(|s| i64::try_from(s.info.docs_read).ok()),
                docs_written: s.and_then(|s| i64::try_from(s.info.docs_written).ok()),
                doc_write_failures: s.and_then(|s| i64::try_from(s.info.doc_write_failures).ok()),
                changes_pending: s.and_then(|s| s.info.changes_pending).and_then(|p| i64::try_from(p).ok()),
                last_updated: s.and_then(|s| s.last_updated.clone()),
                error: s.and_then(|s| s.info.error.clone()),
            }
        })
        .collect();
    for r in &status.replications {
        let state = r.state.as_deref().unwrap_or("unknown");
        ctx.metrics.replication(&me.namespace, &me.name, &r.id, state, r.changes_pending, r.doc_write_failures);
    }
    let states: Vec<Option<&str>> = status.replications.iter().map(|r| r.state.as_deref()).collect();
    status.state = Some(if states.is_empty() { "idle".to_string() } else { summary_state(&states) });
    status.changes_pending = status.replications.iter().filter_map(|r| r.changes_pending).reduce(|a, b| a + b);
    if let Some(budget) = connected.server.status.as_ref().and_then(|s| s.replication_budget.as_ref())
        && i32::try_from(wanted.len()).unwrap_or(i32::MAX) > budget.total
    {
        ctx.event(
            share,
            true,
            "ReplicationBudgetExceeded",
            format!(
                "{} replications exceed the server's budget of {} jobs (replicator/max_jobs × nodes)",
                wanted.len(),
                budget.total
            ),
        )
        .await;
    }
    // A selected user whose per-user database does not exist yet (slow to create on a cluster):
    // the share waits, and retries until it is there — no other event would bring it back.
    if !waiting.is_empty() {
        return Err(Error::Waiting {
            what: format!("the per-user database of CouchUser(s) {} (selected by the fan-in)", waiting.join(", ")),
        });
    }
    // A fan-in with no users yet is Ready: there is nothing to replicate.
    Ok(wanted.is_empty() || replications_ready(&states, share.spec.continuous))
}

fn invalid_or(e: crate::couch::CouchError, url: &str) -> Error {
    if matches!(e, crate::couch::CouchError::Forbidden { .. }) {
        Error::InvalidSelector(format!("CouchDB refused the replication document: {e}"))
    } else {
        Error::couch("writing a replication document", url, e)
    }
}

/// Writes (or corrects) the sharing document in the source database.
async fn ensure_sharing_doc(
    ctx: &Context,
    connected: &Connected,
    share: &CouchShare,
    source: &Place,
    target: &Place,
    body: Option<&Value>,
    id: &str,
) -> Result<(), Error> {
    let client = place_client(ctx, connected, source);
    let url = connected.server.spec.url.clone();
    let wanted = sharing_doc(body, share.spec.mode, source.database(), target.database(), &owner(share))
        .map_err(Error::InvalidSpec)?;
    let existing = client
        .get_document(source.database(), id)
        .await
        .map_err(|e| Error::couch("reading the sharing document", &url, e))?;
    if existing.as_ref().is_some_and(|e| sharing_doc_matches(e, &wanted)) {
        return Ok(());
    }
    let mut body = wanted;
    if let Some(rev) = existing.as_ref().and_then(|e| e.get("_rev")).cloned() {
        body["_rev"] = rev;
    }
    client
        .put_document(source.database(), id, &body)
        .await
        .map_err(|e| Error::couch("writing the sharing document", &url, e))?;
    tracing::info!(id, "wrote sharing document");
    Ok(())
}

/// A client for the server a place is on: the managed server's admin, or the remote's credentials.
pub(crate) fn place_client(_ctx: &Context, connected: &Connected, place: &Place) -> CouchClient {
    match place {
        Place::Local { .. } => connected.couch.clone(),
        Place::Remote { base_url, auth, .. } => {
            let mut config = crate::couch::CouchConfig::new(
                base_url.clone(),
                Some(crate::couch::Credentials::new(auth.username.clone(), auth.password.clone())),
            );
            config.retry = crate::couch::RetryPolicy::none();
            crate::couch::CouchClient::new(config).unwrap_or_else(|_| connected.couch.clone())
        }
    }
}

/// Whether this share touches the CouchDatabase `db` (as source or target).
pub(crate) fn touches_database(share: &CouchShare, db: &crate::api::CouchDatabase) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let matches = |r: &Option<crate::api::ObjectRef>| {
        r.as_ref().is_some_and(|r| {
            r.name == db.name_any() && r.namespace.as_deref().unwrap_or(&ns) == db.namespace().unwrap_or_default()
        })
    };
    matches(&share.spec.source.database) || matches(&share.spec.target.database)
}

/// Whether `share` may use the CouchDatabase `db` in every role it gives it (its own namespace,
/// or the database's consent), so whether the database keeps its replication user's access.
pub(crate) fn database_permitted(share: &CouchShare, db: &crate::api::CouchDatabase) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let names = |r: &Option<crate::api::ObjectRef>| {
        r.as_ref().is_some_and(|r| {
            r.name == db.name_any() && r.namespace.as_deref().unwrap_or(&ns) == db.namespace().unwrap_or_default()
        })
    };
    [(&share.spec.source.database, EndpointRole::Source), (&share.spec.target.database, EndpointRole::Target)]
        .into_iter()
        .filter(|(r, _)| names(r))
        .all(|(_, role)| super::tenancy::database_reference(db, &ns, &share_needs(role, share.spec.mode)).is_ok())
}

/// Whether this share touches the per-user database `couch_name` on `server` (and may: a user
/// in another namespace must consent).
pub(crate) fn touches_user_database(
    share: &CouchShare,
    ctx: &Context,
    server: &super::ServerKey,
    couch_name: &str,
) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let users = ctx.stores.users.state();
    let user_db = |user_ns: &str, name: &str, role: EndpointRole| {
        users.iter().any(|u| {
            u.namespace().as_deref() == Some(user_ns)
                && u.name_any() == name
                && &super::servers::server_key(u.as_ref(), &u.spec.server_ref) == server
                && u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(couch_name)
                && super::tenancy::user_database_reference(u, &ns, &share_needs(role, share.spec.mode)).is_ok()
        })
    };
    let refs = [
        (&share.spec.source.user_database, EndpointRole::Source),
        (&share.spec.target.user_database, EndpointRole::Target),
    ];
    if refs
        .iter()
        .any(|(r, role)| r.as_ref().is_some_and(|r| user_db(r.namespace.as_deref().unwrap_or(&ns), &r.user, *role)))
    {
        return true;
    }
    super::share_endpoints::fan_in_users(ctx, share).is_ok_and(|list| {
        list.iter().any(
            |(_, p)| matches!(p, Place::Local { database, server: s, .. } if database == couch_name && s == server),
        )
    })
}
