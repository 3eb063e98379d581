//! Purging a stopped share's copies from its target — the sharing document, and the shared
//! documents when `purgeSharedDocuments` asks — never deleting them (a deletion would replicate
//! back to the source). After a purge the target is read again, and any copy that came back is
//! purged too: a revocation ends with nothing of the share left in the target, or says why not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::endpoints::place_client;
use super::places::Place;
use crate::api::CouchShare;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::Connected;
use crate::couch::{CouchClient, CouchError};

/// How many times the target is read again after a purge before copies that keep coming back
/// make the revocation wait (and retry from the stop).
const PURGE_ROUNDS: usize = 3;
/// The pause before reading the target again after a purge that found copies back.
const REREAD_PAUSE: Duration = Duration::from_millis(500);

/// Which copies to purge.
pub(crate) enum Copies<'a> {
    /// These documents.
    Ids(Vec<String>),
    /// The documents the share's selector picks (never design documents).
    Selected(&'a Value),
}

/// The copies in `db` now.
async fn present(client: &CouchClient, db: &str, copies: &Copies<'_>, url: &str) -> Result<Vec<String>, Error> {
    match copies {
        Copies::Ids(ids) => {
            let mut there = Vec::new();
            for id in ids {
                let revs =
                    client.leaf_revs(db, id).await.map_err(|e| Error::couch("reading leaf revisions", url, e))?;
                if !revs.is_empty() {
                    there.push(id.clone());
                }
            }
            Ok(there)
        }
        Copies::Selected(selector) => {
            let ids = client
                .find_ids(db, selector)
                .await
                .map_err(|e| Error::couch("finding the shared documents", url, e))?;
            Ok(ids.into_iter().filter(|id| !id.starts_with("_design/")).collect())
        }
    }
}

/// Purges `copies` from the target, then reads it again and purges what came back, up to
/// [`PURGE_ROUNDS`] times; copies still there after that make it `Settling` (backoff). A server that
/// cannot purge is said so in an Event, and nothing is deleted instead. A selector the target
/// cannot answer leaves the shared documents in place, said in an Event.
pub(crate) async fn purge_copies(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    target: &Place,
    copies: Copies<'_>,
    local_purge: bool,
) -> Result<(), Error> {
    let url = connected.server.spec.url.clone();
    let client = place_client(ctx, connected, &target.end())?;
    let db = target.database();
    let mut ids = match present(&client, db, &copies, &url).await {
        Ok(ids) => ids,
        Err(e) if matches!(copies, Copies::Selected(_)) => {
            let note = format!("shared documents not purged from {db}: {e}");
            ctx.event(share, true, "PurgeSkipped", note).await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for round in 0..PURGE_ROUNDS {
        if ids.is_empty() {
            return Ok(());
        }
        if round > 0 {
            tracing::warn!(
                copies = ids.len(),
                database = db,
                "copies still or again in the target after the purge (a shard copy behind, or a late write); purging again"
            );
        }
        if !purge_from_target(ctx, share, &client, target, &ids, local_purge, &url).await? {
            return Ok(());
        }
        if round > 0 {
            tokio::time::sleep(REREAD_PAUSE).await;
        }
        ids = present(&client, db, &copies, &url).await?;
    }
    if ids.is_empty() {
        return Ok(());
    }
    Err(Error::Settling { what: format!("{} cop(ies) in {db} that came back after {PURGE_ROUNDS} purges", ids.len()) })
}

/// Purges documents (every leaf revision) from a database; never deletes, which would replicate.
async fn purge(client: &CouchClient, db: &str, ids: &[String], url: &str) -> Result<usize, Error> {
    let mut purged = 0;
    for chunk in ids.chunks(100) {
        let mut request = BTreeMap::new();
        for id in chunk {
            let revs = client.leaf_revs(db, id).await.map_err(|e| Error::couch("reading leaf revisions", url, e))?;
            if !revs.is_empty() {
                request.insert(id.clone(), revs);
            }
        }
        if request.is_empty() {
            continue;
        }
        purged += request.len();
        client.purge(db, &request).await.map_err(|e| Error::couch("purging", url, e))?;
    }
    Ok(purged)
}

/// One purge of `ids`; `false` when the target cannot purge (said in an Event).
async fn purge_from_target(
    ctx: &Context,
    share: &CouchShare,
    client: &CouchClient,
    target: &Place,
    ids: &[String],
    local_purge: bool,
    url: &str,
) -> Result<bool, Error> {
    let unsupported = |what: String| ctx.event(share, true, "PurgeUnsupported", what);
    if matches!(target, Place::Local { .. }) && !local_purge {
        unsupported(format!(
            "this server cannot purge; {} document(s) left in {} (never deleted: a delete would replicate back)",
            ids.len(),
            target.database()
        ))
        .await;
        return Ok(false);
    }
    match purge(client, target.database(), ids, url).await {
        Ok(n) => {
            tracing::info!(purged = n, database = target.database(), "purged from the target");
            Ok(true)
        }
        Err(Error::Couch { source, .. }) if matches!(*source, CouchError::NotSupported { .. }) => {
            unsupported(format!("{} cannot purge; documents left in place", target.database())).await;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
