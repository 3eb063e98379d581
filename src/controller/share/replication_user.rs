//! A share's credentials stage: its scoped replication user (password in a Secret, `_users`
//! document written only when [`replication_user_update`] says so) and that user's access to
//! the local databases it replicates, as CouchDB itself sees it.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::places::Place;
use crate::api::{CouchShare, CouchShareStatus, ShareCredentials, labels};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::Connected;
use crate::controller::shared::users_known;
use crate::plan::grant::grants_present;
use crate::plan::share::{EndpointAuth, replication_user_owned, replication_user_update, replication_username};
use crate::plan::share::{contribution, owner, replication_secret_name};
use crate::plan::user::password_fingerprint;

/// The scoped replication user: its password from its Secret (made when missing), and its
/// `_users` document written only when it is not up to date (then `true`).
pub(crate) async fn ensure_replication_user(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
) -> Result<(EndpointAuth, bool), Error> {
    let url = &connected.server.spec.url;
    let ns = share.namespace().unwrap_or_default();
    let me = owner(share);
    let username = replication_username(&me.namespace, &me.name);
    let secret_name = replication_secret_name(share);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    // The password Secret is this share's, or not touched: an app's Secret of the same name is
    // neither read nor overwritten.
    let stored = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &stored {
        crate::controller::shared::credentials::secret_is_ours(existing, Some(me.uid.as_str()), &ns, &secret_name)?;
    }
    let stored = stored.as_ref().and_then(|s| s.data.as_ref()?.get("password")).map(|b| b.0.clone());
    let stored = stored.and_then(|b| String::from_utf8(b).ok()).filter(|p| !p.is_empty());
    // Found (or made) with this password and owner, and no other revision since: not read again
    // (see `users_known`).
    let key = users_known::feed_key(&connected.server);
    let verdict = |password: &str| users_known::digest(&[&username, &me.uid, &password_fingerprint(&me.uid, password)]);
    if let Some(password) = stored
        .as_ref()
        .filter(|p| ctx.users_known.up_to_date(&key, &username, verdict(p), users_known::max_age(ctx.resync())))
    {
        return Ok((EndpointAuth { username, password: password.clone() }, false));
    }
    let ticket = ctx.users_known.ticket(&key);
    // The user is this share's, or not touched: a `_users` document another object owns (or
    // that someone made by hand) under this name is never written.
    let existing =
        connected.couch.get_user(&username).await.map_err(|e| Error::couch("reading the replication user", url, e))?;
    if let Some(doc) = &existing
        && let Err(holder) = replication_user_owned(doc, &me)
    {
        return Err(Error::Refused(crate::plan::ownership::Refusal::Held {
            what: format!("the replication user {username}"),
            holder,
        }));
    }
    let password = match stored {
        Some(p) => p,
        None => {
            use rand::Rng;
            let p: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect();
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "labels": {(labels::MANAGED_BY_LABEL): labels::MANAGED_BY},
                             "annotations": {(labels::OWNER_ANNOTATION): format!("CouchShare/{}", me.name), (labels::OWNER_UID_ANNOTATION): me.uid}},
                "type": "Opaque",
                "stringData": {"username": username, "password": p},
            });
            secrets
                .patch(
                    &secret_name,
                    &kube::api::PatchParams::apply(crate::controller::runtime::status::FIELD_MANAGER).force(),
                    &kube::api::Patch::Apply(&secret),
                )
                .await?;
            p
        }
    };
    let fingerprint = password_fingerprint(&me.uid, &password);
    let verdict = verdict(&password);
    let update = replication_user_update(existing.as_ref(), &username, &password, &fingerprint, &me);
    match (&update, existing.as_ref().and_then(|d| d.rev.as_deref())) {
        (Some(doc), _) => {
            let others = ctx.users_known.put(&connected.couch, &key, doc, verdict).await;
            // Someone else wrote it too meanwhile: looked at again.
            if others.map_err(|e| Error::couch("writing the replication user", url, e))?
                && let Some(t) = &ctx.share_trigger
            {
                let _ = t.send(kube::runtime::reflector::ObjectRef::from_obj(share));
            }
            tracing::info!(username = %username, "wrote scoped replication user");
        }
        (None, Some(rev)) => ctx.users_known.read_up_to_date(&key, &username, rev, verdict, ticket),
        (None, None) => {}
    }
    Ok((EndpointAuth { username, password }, update.is_some()))
}

/// A share between two CouchDatabases that have not claimed their names yet: its scoped
/// replication user is written now, after the checks a pass makes before writing it, so that
/// each database lets it in with its first `_security` (instead of a second write, and a second
/// pass of the share, once the share names it). Nothing for another kind of end, admin
/// credentials, a database the watch does not hold, or a server not resolved: the share's pass
/// once its databases are there does it as before.
pub(crate) async fn ahead_of_databases(
    ctx: &Context,
    share: &CouchShare,
    status: &mut CouchShareStatus,
) -> Result<(), Error> {
    if share.spec.credentials != ShareCredentials::Scoped {
        return Ok(());
    }
    let Some(ends) = crate::plan::share::database_ends(share) else { return Ok(()) };
    let mut places = Vec::new();
    for (ns, name) in &ends {
        let Some(db) = ctx.stores.databases.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns)) else {
            return Ok(());
        };
        if db.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let server = crate::controller::shared::servers::server_key(db.as_ref(), &db.spec.server_ref);
        places.push(Place::Local { database: db.couch_name().to_string(), managed: true, server });
    }
    let [source, target] = places.as_slice() else { return Ok(()) };
    super::checks::distinct_ends([source], target)?;
    let server_ref = super::endpoints::managing_server(share, &[target, source])?;
    let connected =
        match crate::controller::shared::servers::resolve(ctx, &share.namespace().unwrap_or_default(), &server_ref)
            .await
        {
            Ok(connected) => connected,
            Err(e) if e.waits_for_trigger() => return Ok(()),
            Err(e) => return Err(e),
        };
    super::checks::before_writing(ctx, share, &connected, false).await?;
    let (auth, _) = ensure_replication_user(ctx, share, &connected).await?;
    status.server = Some(format!("{}/{}", server_ref.namespace.clone().unwrap_or_default(), server_ref.name));
    status.replication_user = Some(auth.username);
    Ok(())
}

/// The local databases the scoped user cannot use yet. A CouchDatabase's reconciler merges the
/// share's entry (the share waits for it); a per-user database is written here, entry by
/// entry. Then CouchDB is asked as the user, for each database not in `shown` — those a share
/// already replicating with an unchanged user has shown it can use: asking costs CouchDB a
/// password check, and its auth cache follows `_users` asynchronously. A database whose
/// `_security` grants the user while CouchDB still refuses it (the auth cache, or a cluster's
/// shard copies not agreeing yet) is `Settling`, retried with backoff: nothing announces that.
pub(crate) async fn access_missing(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    places: &[&Place],
    auth: &EndpointAuth,
    shown: &[&str],
) -> Result<Vec<String>, Error> {
    let url = &connected.server.spec.url;
    let user_client =
        connected.couch.with_credentials(crate::couch::Credentials::new(auth.username.clone(), auth.password.clone()));
    let mut missing = Vec::new();
    for place in places {
        let Place::Local { database, managed, server } = place else { continue };
        if *managed {
            // What the database's reconciler (its only writer) last wrote, when it ran in this
            // process: no read, and no stale shard copy on a cluster.
            let security = match ctx.ledger.recorded(server, database) {
                Some(security) => security,
                None => {
                    connected.couch.security(database).await.map_err(|e| Error::couch("reading _security", url, e))?
                }
            };
            if !grants_present(&security, &contribution(share)) {
                missing.push(database.clone());
                continue;
            }
        } else {
            crate::controller::shared::unmanaged::write_unmanaged(
                ctx,
                connected,
                server,
                database,
                None,
                share.uid().as_deref(),
            )
            .await?;
        }
        if shown.contains(&database.as_str()) {
            continue;
        }
        match user_client.database_info(database).await {
            Ok(_) => {}
            // Its `_security` holds the user (the ledger, a read, or this share's own write),
            // yet CouchDB refuses it: on a cluster the shard copies take a moment to agree, and
            // nothing announces when they do. Retried with backoff, not left to a trigger.
            Err(e) if e.is_access_denied() => {
                return Err(Error::Settling {
                    what: format!("the replication user's access to {database}, which its _security already grants"),
                });
            }
            Err(e) => return Err(Error::couch("checking the replication user's access", url, e)),
        }
    }
    Ok(missing)
}
