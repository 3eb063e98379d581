//! The reconcile side of a CouchShare with strategy `OnChange`: no replication documents (those
//! a `Continuous` past left are deleted), one engine (see `engine`) kept running with the
//! share's resolved endpoints, and the engine's counts turned into status, conditions and Events.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use sha2::{Digest, Sha256};

use super::endpoints::place_client;
use super::engine::{EngineSpec, Membership};
use crate::api::{CouchShare, CouchShareStatus, OnChangeStatus, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome};
use crate::controller::shared::servers::Connected;
use crate::plan::share::{ShareIntent, on_change_body};

/// The condition that says some sources fail while the others replicate.
pub const DEGRADED: &str = "Degraded";

/// The `namespace/name` key of a share's engine.
pub(crate) fn engine_key(share: &CouchShare) -> String {
    format!("{}/{}", share.namespace().unwrap_or_default(), share.name_any())
}

/// The prefix a `perUserDatabases` source matches: declared, else the server's
/// `couch_peruser/database_prefix` (as the CouchServer declares it, else as CouchDB says it),
/// else `userdb-`.
async fn prefix(share: &CouchShare, connected: &Connected) -> String {
    if let Some(p) = share.spec.source.per_user_databases.as_ref().and_then(|p| p.prefix.clone()) {
        return p;
    }
    let declared = connected.server.spec.config.as_ref().and_then(|c| c.per_user_databases.as_ref());
    if let Some(p) = declared.and_then(|p| p.database_prefix.clone()) {
        return p;
    }
    crate::controller::shared::tenancy::userdb_prefix(&connected.couch).await
}

/// Keeps the engine running and reports it. `names`: the selected CouchUsers' databases, for a
/// `userDatabases` source.
pub(crate) async fn ensure(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
    intent: ShareIntent,
    names: BTreeSet<String>,
    status: &mut CouchShareStatus,
) -> Result<Outcome, Error> {
    // Once, when the engine starts (a switch from Continuous, or a restart), not on every pass.
    if !ctx.engines.running(&engine_key(share)) {
        let deleted = super::stop::delete_replication_docs(ctx, share, connected).await?;
        if !deleted.is_empty() {
            tracing::info!(?deleted, "deleted continuous replication documents: the share replicates on change now");
        }
    }
    let k = share.spec.on_change_concurrency().unwrap_or(crate::api::DEFAULT_MAX_CONCURRENT) as usize;
    let target_db = intent.target.database().to_string();
    let membership = if share.spec.source.per_user_databases.is_some() {
        let prefix = prefix(share, connected).await;
        if target_db.starts_with(&prefix) {
            return Err(Error::InvalidSpec(format!(
                "the target database {target_db} starts with the source prefix {prefix}: pick a target outside it"
            )));
        }
        Membership::Prefix(prefix)
    } else {
        Membership::Names
    };
    let target_client = place_client(ctx, connected, &intent.target)?;
    let url = &connected.server.spec.url;
    let info = connected.couch.cached_server_info().await.map_err(|e| Error::couch("reading GET /", url, e))?;
    // pouchdb-server's `_replicate` takes URL strings only.
    let urls_only = !info.is_couchdb;
    let probe = serde_json::to_string(&on_change_body(&intent, "\u{0}", urls_only)).unwrap_or_default();
    let fingerprint = hex::encode(Sha256::digest(format!("{probe}|{membership:?}|{k}|{}", intent.owner.uid)));
    let intent = Arc::new(intent);
    let body_intent = intent.clone();
    let spec = EngineSpec {
        key: engine_key(share),
        share: kube::runtime::reflector::ObjectRef::from_obj(share),
        uid: intent.owner.uid.clone(),
        membership,
        names,
        body: Arc::new(move |db| on_change_body(&body_intent, db, urls_only)),
        fingerprint,
        couch: connected.couch.clone(),
        target: (target_client, target_db),
        k,
        resync: ctx.options.resync,
        nudge: ctx.server_feeds.nudge(&crate::controller::ServerKey::of(&connected.server)),
    };
    let shared = ctx.engines.keep(spec, ctx.share_trigger.clone(), ctx.metrics.clone());
    let snapshot = shared.snapshot();
    status.replications.clear();
    status.changes_pending = None;
    status.sharing_document_id = None;
    let previous = status.on_change.clone();
    if !snapshot.started {
        status.state = Some("discovering".into());
        let (reason, message) = match &snapshot.error {
            Some(e) => ("SourcesUnavailable", format!("listing the source databases failed: {e}")),
            None => ("Discovering", "listing the source databases".to_string()),
        };
        let ready = NewCondition { type_: condition::READY, status: false, reason: reason.into(), message };
        // The engine requeues the share when its first listing is done (see `engine`).
        return Ok(Outcome::new(ready, Action::requeue(ctx.resync())));
    }
    let now = snapshot.status.clone();
    status.state = Some(summary(&now).into());
    status.on_change = Some(now.clone());
    let mut outcome = match &snapshot.error {
        Some(e) => Outcome::new(
            NewCondition {
                type_: condition::READY,
                status: false,
                reason: "FeedUnavailable".into(),
                message: format!("changes are not seen until the feed works again ({e}); a full pass follows it"),
            },
            Action::requeue(ctx.resync()),
        ),
        None => Outcome::new(NewCondition::ready("Following", message(&now)), Action::requeue(ctx.resync())),
    };
    outcome = outcome.with_condition(degraded(&now));
    let was_failing = previous.as_ref().is_some_and(|p| p.failing > 0);
    if now.failing > 0 && !was_failing {
        let first = now.worst.first().map(|f| format!(": {} ({})", f.database, f.error)).unwrap_or_default();
        outcome =
            outcome.with_event(Note::warning("SourcesFailing", format!("{} source(s) failing{first}", now.failing)));
    } else if now.failing == 0 && was_failing {
        outcome = outcome.with_event(Note::normal("SourcesRecovered", "every source replicates again"));
    }
    if now.first_full_sync.is_some() && previous.as_ref().is_none_or(|p| p.first_full_sync.is_none()) {
        outcome = outcome
            .with_event(Note::normal("InSync", format!("all {} source database(s) replicated once", now.discovered)));
    }
    Ok(outcome)
}

fn summary(s: &OnChangeStatus) -> &'static str {
    if s.failing > 0 {
        "degraded"
    } else if s.first_full_sync.is_none() {
        "catching-up"
    } else if !s.feed {
        "polling"
    } else {
        "following"
    }
}

fn message(s: &OnChangeStatus) -> String {
    let how = if s.feed {
        "on each change _db_updates reports".to_string()
    } else {
        "once per resync, new databases within seconds (_db_updates cannot be read; _all_dbs is compared instead)"
            .to_string()
    };
    format!(
        "{} source database(s): {} in sync, {} behind, {} failing; replicated {how}, at most {} at once",
        s.discovered, s.in_sync, s.behind, s.failing, s.max_concurrent
    )
}

fn degraded(s: &OnChangeStatus) -> NewCondition {
    if s.failing > 0 {
        let worst: Vec<String> = s.worst.iter().map(|f| format!("{}: {}", f.database, f.error)).collect();
        NewCondition {
            type_: DEGRADED,
            status: true,
            reason: "SourcesFailing".into(),
            message: format!("{} source(s) failing (retried with backoff); {}", s.failing, worst.join("; ")),
        }
    } else {
        NewCondition { type_: DEGRADED, status: false, reason: "AllReplicating".into(), message: String::new() }
    }
}

/// Stops a share's engine (revocation, withdrawal, strategy `Continuous` again, deletion) and
/// cancels what it had running.
pub(crate) async fn stop(ctx: &Context, share: &CouchShare) -> Result<(), Error> {
    let key = engine_key(share);
    let cancelled = ctx.engines.stop(&key).await.map_err(|e| Error::couch("cancelling replications", "", e))?;
    if cancelled > 0 {
        tracing::info!(cancelled, "cancelled on-change replications in progress");
    }
    ctx.metrics.forget_on_change(&share.namespace().unwrap_or_default(), &share.name_any());
    Ok(())
}
