//! The share's pass against CouchDB: what CouchDB holds for the share (observe), and the plan's
//! steps applied in order (execute).

use serde_json::Value;

use super::endpoints::place_client;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::Connected;
use crate::couch::CouchError;
use crate::plan::share::{
    ObservedShare, ShareIntent, ShareStep, replication_doc_prefix, wanted_ids, wanted_sharing_docs,
};

/// What CouchDB holds for the share: the replicator database, the sharing documents, the
/// share's replication documents (one range read, or `listed`: the same range as this pass's
/// checks read it) and their scheduler states.
pub(super) async fn observe(
    ctx: &Context,
    connected: &Connected,
    intent: &ShareIntent,
    access_missing: Vec<String>,
    listed: Option<Vec<Value>>,
) -> Result<ObservedShare, Error> {
    let url = &connected.server.spec.url;
    let couch = &connected.couch;
    let replicator = &intent.replicator;
    let mut observed = ObservedShare { access_missing, ..Default::default() };
    if !observed.access_missing.is_empty() {
        return Ok(observed);
    }
    observed.replicator_exists = replicator == crate::couch::REPLICATOR_DB
        || couch
            .database_exists(replicator)
            .await
            .map_err(|e| Error::couch("checking the replicator database", url, e))?;
    for (end, id) in wanted_sharing_docs(intent) {
        let doc = place_client(ctx, connected, &end)?
            .get_document(end.database(), &id)
            .await
            .map_err(|e| Error::couch("reading the sharing document", url, e))?;
        observed.sharing_docs.insert((end.database().to_string(), id), doc);
    }
    if !observed.replicator_exists {
        return Ok(observed);
    }
    // Followed before the scheduler is read: a replication that ends after this pass wakes it.
    crate::controller::triggers::replicator_feed::follow(
        &ctx.replicator_feeds,
        ctx.share_trigger.as_ref(),
        &ctx.stores.shares,
        connected,
        replicator,
    )
    .await
    .map_err(|e| Error::couch("following the replicator database", url, e))?;
    let prefix = replication_doc_prefix(&intent.owner.namespace, &intent.owner.name);
    observed.replication_docs = match listed {
        Some(docs) => docs,
        None => couch
            .list_replication_docs_with_prefix(replicator, &prefix)
            .await
            .map_err(|e| Error::couch("listing replication documents", url, e))?,
    };
    let listed = ctx
        .scheduler
        .statuses(url, couch, replicator)
        .await
        .map_err(|e| Error::couch("reading _scheduler/docs", url, e))?;
    for id in wanted_ids(intent) {
        let ended = |s: &crate::couch::ReplicationStatus| {
            matches!(s.state, Some(crate::couch::ReplicationState::Completed | crate::couch::ReplicationState::Failed))
        };
        let in_listing = listed.iter().find(|s| s.doc_id == id);
        if let Some(s) = in_listing
            && (intent.continuous || ended(s))
        {
            observed.statuses.push(s.clone());
            continue;
        }
        // On a cluster the listing lags behind the node that runs a job: a one-shot it shows as
        // not ended, or one missing from it (completed a moment ago), is asked for by itself,
        // and that node answers at once.
        let exists = in_listing.is_some()
            || observed.replication_docs.iter().any(|d| d.get("_id").and_then(Value::as_str) == Some(&id));
        if !exists {
            continue;
        }
        let one = couch
            .replication_status(replicator, &id)
            .await
            .map_err(|e| Error::couch("reading _scheduler/docs", url, e))?;
        if let Some(one) = one.or_else(|| in_listing.cloned()) {
            observed.statuses.push(one);
        }
    }
    Ok(observed)
}

/// Makes the plan's writes, in order.
pub(super) async fn execute(
    ctx: &Context,
    connected: &Connected,
    intent: &ShareIntent,
    steps: &[ShareStep],
) -> Result<(), Error> {
    let url = &connected.server.spec.url;
    let couch = &connected.couch;
    let replicator = &intent.replicator;
    for step in steps {
        match step {
            ShareStep::CreateReplicator(db) => match couch.create_database(db, &Default::default()).await {
                Ok(()) | Err(CouchError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(Error::couch("creating the replicator database", url, e)),
            },
            ShareStep::PutSharingDocument { end, id, body } => {
                place_client(ctx, connected, end)?
                    .put_document(end.database(), id, body)
                    .await
                    .map_err(|e| Error::couch("writing the sharing document", url, e))?;
                tracing::info!(id = %id, "wrote sharing document");
            }
            ShareStep::PutReplication { id, body } => {
                let rev =
                    couch.put_replication_doc(replicator, id, body).await.map_err(|e| replication_refused(e, url))?;
                ctx.replicator_feeds.written(replicator, id, &rev);
                tracing::info!(id = %id, "wrote replication document");
            }
            ShareStep::DeleteReplication { id, rev } => {
                ctx.metrics.forget_replication(&intent.owner.namespace, &intent.owner.name, id);
                let deleted = couch
                    .delete_replication_doc(replicator, id, rev)
                    .await
                    .map_err(|e| Error::couch("deleting a replication document", url, e))?;
                ctx.replicator_feeds.written(replicator, id, &deleted);
                tracing::info!(id = %id, "deleted replication document no longer wanted");
            }
        }
    }
    Ok(())
}

/// A replication document CouchDB refused: its replicator's own check (`before_doc_update`)
/// answers 403 for a selector it cannot use — the spec's selector — and for anything else it
/// rejects (an endpoint it cannot parse, another user's document), said as CouchDB says it.
fn replication_refused(e: CouchError, url: &str) -> Error {
    match &e {
        CouchError::Forbidden { reason, .. } if reason.contains("selector") => {
            Error::InvalidSelector(format!("CouchDB refused the replication document: {reason}"))
        }
        CouchError::Forbidden { reason, .. } => Error::ReplicationRefused(reason.clone()),
        _ => Error::couch("writing a replication document", url, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(reason: &str) -> CouchError {
        CouchError::Forbidden { method: "PUT".into(), path: "/_replicator/x".into(), reason: reason.into() }
    }

    #[test]
    fn only_a_refused_selector_is_the_selectors_fault() {
        let e = replication_refused(forbidden("parameter `selector` must be a JSON object"), "http://c");
        assert_eq!(e.reason(), "InvalidSelector");
        let e = replication_refused(forbidden("Can't update replication documents from other users."), "http://c");
        assert_eq!(e.reason(), "ReplicationRefused");
        assert!(e.to_string().contains("other users"), "says what CouchDB said: {e}");
        let e = replication_refused(forbidden("Could not parse `source` URL"), "http://c");
        assert_eq!(e.reason(), "ReplicationRefused");
    }
}
