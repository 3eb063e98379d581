//! What a share checks before it writes anything — its replication user, that user's Secret,
//! a `_security` entry, a replication document: that its ends are two databases, that it may
//! use what it names on the server (admin credentials, a per-tenant replicator database), and,
//! until it replicates, what only CouchDB can say: that its Mango selector is one the replicator
//! takes, and that no replication document under its ids belongs to someone else. A refusal
//! here leaves nothing behind.

use kube::ResourceExt;

use super::places::Place;
use crate::api::{CouchShare, ShareCredentials, ShareStrategy};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::Connected;
use crate::plan::share::{foreign_replication_doc, owner, replication_doc_prefix, replicator_db};
use crate::plan::tenancy::{NameKind, TrustedAct, in_scope};

/// `Ok` unless a source and the target are the same database.
pub(crate) fn distinct_ends<'a>(sources: impl IntoIterator<Item = &'a Place>, target: &Place) -> Result<(), Error> {
    match sources.into_iter().find(|p| p.same_database(target)) {
        Some(same) => Err(Error::InvalidSpec(format!(
            "source and target are the same database ({}): a share replicates between two databases",
            same.database()
        ))),
        None => Ok(()),
    }
}

/// The server-side checks, in order; those that ask CouchDB only while the share does not
/// replicate yet (`replicating`), since a replicating share has shown they pass. Returns the
/// share's replication documents when a check listed them (the pass's observation reads the
/// same range: it takes this listing instead of asking again).
pub(crate) async fn before_writing(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    replicating: bool,
) -> Result<Option<Vec<serde_json::Value>>, Error> {
    let ns = share.namespace().unwrap_or_default();
    let url = &connected.server.spec.url;
    if share.spec.credentials == ShareCredentials::Admin {
        crate::controller::shared::tenancy::require_trust(ctx, &connected.server, &ns, TrustedAct::AdminCredentials)
            .await??;
    }
    // A per-tenant replicator database is a database name like any other: in the namespace's scope.
    if let Some(replicator) = &share.spec.replicator_database
        && replicator != crate::couch::REPLICATOR_DB
    {
        let scope = crate::controller::shared::tenancy::name_scope(ctx, &connected.server, &ns).await?;
        in_scope(&scope, NameKind::Database, replicator, false)?;
    }
    if replicating {
        return Ok(None);
    }
    // A selector CouchDB's Mango refuses is refused here, not by the replicator once the user
    // and its Secret exist.
    if let Some(selector) = &share.spec.selector
        && let Some(reason) = connected
            .couch
            .selector_refusal(crate::couch::REPLICATOR_DB, selector)
            .await
            .map_err(|e| Error::couch("checking the selector", url, e))?
    {
        return Err(Error::InvalidSelector(format!("CouchDB refuses the selector: {reason}")));
    }
    if share.spec.strategy == ShareStrategy::Continuous {
        let me = owner(share);
        let prefix = replication_doc_prefix(&me.namespace, &me.name);
        let docs = match connected.couch.list_replication_docs_with_prefix(&replicator_db(share), &prefix).await {
            Ok(docs) => Some(docs),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Error::couch("listing replication documents", url, e)),
        };
        if let Some(refusal) = docs.as_deref().and_then(|docs| foreign_replication_doc(docs, &me)) {
            return Err(Error::Refused(refusal));
        }
        return Ok(docs);
    }
    Ok(None)
}
