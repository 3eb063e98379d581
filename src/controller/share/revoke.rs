//! Revoking a CouchShare, in an order that cannot replicate a deletion back: stop the
//! replications (`stop`: no job of the share left on any node), delete the sharing
//! document from the source, purge — never delete — it (and, when asked, the shared documents)
//! from the target, reading it again for copies that came back (`purge`), then remove the
//! scoped replication user.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;

use super::endpoints::{Consent, Sources, place_client, sources, target};
use super::places::Place;
use super::purge::{Copies, purge_copies};
use super::stop::stop_replications;
use crate::api::{CouchShare, ServerRef};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::{Connected, resolve_for_cleanup};
use crate::plan::share::{owner, replication_secret_name, replication_username};

/// The server whose `_replicator` holds the share's documents: recorded in status, else
/// `serverRef`.
fn server_ref(share: &CouchShare) -> Option<ServerRef> {
    if let Some((namespace, name)) =
        share.status.as_ref().and_then(|s| s.server.as_deref()).and_then(|s| s.split_once('/'))
    {
        return Some(ServerRef { name: name.into(), namespace: Some(namespace.into()) });
    }
    share.spec.server_ref.clone()
}

/// Stops a share that is not (or no longer) permitted — an endpoint's consent withdrawn, the
/// server's trust withdrawn — in the revocation order: replications stopped and dropped by the
/// scheduler first, then the sharing document deleted from the source and purged from the
/// target. The scoped user loses its access as the databases recompute `_security` without the
/// share. Unlike revocation it can resume once permitted again. Writes nothing when nothing of
/// the share is left on CouchDB.
pub(crate) async fn withdraw(share: &CouchShare, ctx: &Context) -> Result<(), Error> {
    let ns = share.namespace().unwrap_or_default();
    let Some(reference) = server_ref(share) else { return Ok(()) };
    let connected = match crate::controller::shared::servers::resolve(ctx, &ns, &reference).await {
        Ok(c) => c,
        // The server is gone or no longer lets this namespace in: nothing it can stop there.
        Err(Error::ServerNotFound { .. } | Error::NotAllowed { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let url = connected.server.spec.url.clone();
    let stopped = stop_replications(ctx, share, &connected).await?;
    let endpoints = endpoints(ctx, share).await;
    if let Some((Sources::One(source), target)) = &endpoints
        && let Some(id) = share.status.as_ref().and_then(|s| s.sharing_document_id.clone())
    {
        let caps = connected.couch.capabilities().await.map_err(|e| Error::couch("reading capabilities", &url, e))?;
        delete_sharing_document(ctx, &connected, source, &id).await?;
        purge_copies(ctx, share, &connected, target, Copies::Ids(vec![id]), caps.purge).await?;
    }
    if let Some(endpoints) = &endpoints {
        take_unmanaged_access(ctx, share, &connected, endpoints).await?;
    }
    if stopped > 0 {
        ctx.event(share, true, "Stopped", format!("{stopped} replication(s) stopped: the share is not permitted"))
            .await;
    }
    Ok(())
}

async fn delete_sharing_document(ctx: &Context, connected: &Connected, source: &Place, id: &str) -> Result<(), Error> {
    let url = connected.server.spec.url.clone();
    let client = place_client(ctx, connected, &source.end())?;
    if let Some(doc) = client
        .get_document(source.database(), id)
        .await
        .map_err(|e| Error::couch("reading the sharing document", &url, e))?
        && let Some(rev) = doc.get("_rev").and_then(|r| r.as_str())
    {
        client
            .delete_document(source.database(), id, rev)
            .await
            .map_err(|e| Error::couch("deleting the sharing document", &url, e))?;
    }
    Ok(())
}

/// What a share ran between — its sources and its target — resolved whatever the consent
/// (revocation stops what ran), or `None` when its source or target is gone.
async fn endpoints(ctx: &Context, share: &CouchShare) -> Option<(Sources, Place)> {
    match (sources(ctx, share, Consent::Ignore).await, target(ctx, share, Consent::Ignore).await) {
        (Ok(sources), Ok(target)) => Some((sources, target)),
        _ => None,
    }
}

/// Recomputes, without this share, the `_security` of every per-user database it used (those
/// are written entry by entry; a CouchDatabase's reconciler drops the share's entry itself).
async fn take_unmanaged_access(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    (sources, target): &(Sources, Place),
) -> Result<(), Error> {
    let mut places: Vec<&Place> = match sources {
        Sources::One(source) => vec![source],
        Sources::FanIn { ready, .. } => ready.iter().map(|(_, p)| p).collect(),
    };
    places.push(target);
    for place in places {
        if let Place::Local { database, managed: false, server } = place {
            crate::controller::shared::unmanaged::write_unmanaged(
                ctx,
                connected,
                server,
                database,
                share.uid().as_deref(),
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// Revokes the share. Tolerates anything already gone; never recreates anything.
pub(crate) async fn revoke(share: &CouchShare, ctx: &Context) -> Result<(), Error> {
    let ns = share.namespace().unwrap_or_default();
    let Some(reference) = server_ref(share) else {
        ctx.event(share, true, "CleanupSkipped", "the share never ran: nothing to revoke".into()).await;
        return Ok(());
    };
    let Some(connected) = resolve_for_cleanup(ctx, share, &ns, &reference, "replications not stopped").await? else {
        return Ok(());
    };
    let url = connected.server.spec.url.clone();
    // 1. Stop replicating, before anything is removed that could flow back: the on-change
    // engine and its one-shots, then the replication documents.
    super::onchange::stop(ctx, share).await?;
    let stopped = stop_replications(ctx, share, &connected).await?;
    tracing::info!(stopped, "replications stopped");

    // 2 and 3. The sharing document: deleted from the source, purged from the target.
    let endpoints = endpoints(ctx, share).await;
    let caps = connected.couch.capabilities().await.map_err(|e| Error::couch("reading capabilities", &url, e))?;
    if let Some((Sources::One(source), target)) = &endpoints
        && let Some(id) = share.status.as_ref().and_then(|s| s.sharing_document_id.clone())
    {
        delete_sharing_document(ctx, &connected, source, &id).await?;
        purge_copies(ctx, share, &connected, target, Copies::Ids(vec![id]), caps.purge).await?;
    }
    // The shared documents, when asked: from one source or a fan-in alike.
    if let Some((_, target)) = &endpoints
        && share.spec.revoke.as_ref().is_some_and(|r| r.purge_shared_documents)
        && let Some(selector) = &share.spec.selector
    {
        purge_copies(ctx, share, &connected, target, Copies::Selected(selector), caps.purge).await?;
    }
    if endpoints.is_none() {
        ctx.event(share, true, "CleanupSkipped", "source or target is gone; sharing document left as it is".into())
            .await;
    }

    // 4. The scoped replication user and its Secret; the databases drop its entries once the
    // share is revoked or gone.
    let me = owner(share);
    let username = replication_username(&me.namespace, &me.name);
    if let Some(doc) =
        connected.couch.get_user(&username).await.map_err(|e| Error::couch("reading the replication user", &url, e))?
        && crate::plan::share::replication_user_owned(&doc, &me).is_ok()
        && let Some(rev) = &doc.rev
    {
        let feed = crate::controller::shared::users_known::feed_key(&connected.server);
        let deleted = ctx.users_known.delete(&connected.couch, &feed, &username, rev).await;
        deleted.map_err(|e| Error::couch("deleting the replication user", &url, e))?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(secret) = secrets.get_opt(&replication_secret_name(share)).await?
        && crate::controller::shared::credentials::secret_is_ours(
            &secret,
            Some(&me.uid),
            &ns,
            &replication_secret_name(share),
        )
        .is_ok()
    {
        secrets.delete(&replication_secret_name(share), &DeleteParams::default()).await?;
    }
    // Per-user databases are written entry by entry: recompute them without this share.
    if let Some(endpoints) = &endpoints {
        take_unmanaged_access(ctx, share, &connected, endpoints).await?;
    }
    requeue_databases(ctx, share);
    Ok(())
}

/// Asks the reconcilers of the CouchDatabases this share touches to recompute `_security`
/// (without its replication user) now, from this controller's own view of the share: their
/// watch of shares may lag behind it.
fn requeue_databases(ctx: &Context, share: &CouchShare) {
    let Some(trigger) = &ctx.database_trigger else { return };
    for db in ctx.stores.databases.state() {
        if crate::plan::share::touches_database(share, &db) {
            let _ = trigger.send(kube::runtime::reflector::ObjectRef::from_obj(db.as_ref()));
        }
    }
}

/// Deleting a CouchShare revokes it (unless it already was).
pub(crate) async fn cleanup(share: Arc<CouchShare>, ctx: &Context) -> Result<Action, Error> {
    ctx.replicator_feeds.shown.record(&share, None);
    if share.status.as_ref().is_some_and(|s| s.revoked) {
        return Ok(Action::await_change());
    }
    match revoke(&share, ctx).await {
        Ok(()) => {
            ctx.event(share.as_ref(), false, "Revoked", "share deleted: replications stopped and cleaned up".into())
                .await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_transient() && crate::controller::runtime::finalize::within_grace(share.as_ref(), ctx) => Err(e),
        Err(e) => {
            ctx.event(share.as_ref(), true, "CleanupSkipped", format!("revocation incomplete: {e}")).await;
            Ok(Action::await_change())
        }
    }
}
