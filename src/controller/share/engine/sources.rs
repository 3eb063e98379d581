//! An engine's sources: which databases they are, listing them, the start (checkpoint, feed
//! position, first listing) and the full pass that lists them again.

use std::collections::BTreeSet;

use serde_json::Value;

use super::checkpoint::{Checkpoint, read_checkpoint};
use super::spec::{EngineSpec, Membership};
use crate::controller::triggers::db_events::position;
use crate::couch::CouchError;
use crate::plan::onchange::FanInQueue;

/// Whether `db` is one of the sources (never a system database, never the target).
pub(super) fn is_source(membership: &Membership, names: &BTreeSet<String>, target: &str, db: &str) -> bool {
    if db == target || db.starts_with('_') || db.split('/').any(|part| part.starts_with('_')) {
        return false;
    }
    match membership {
        Membership::Prefix(prefix) => db.starts_with(prefix.as_str()),
        Membership::Names => names.contains(db),
    }
}

async fn list(spec: &EngineSpec, names: &BTreeSet<String>) -> Result<Vec<String>, CouchError> {
    let target = &spec.target.1;
    match &spec.membership {
        Membership::Prefix(prefix) => Ok(spec
            .couch
            .databases_with_prefix(prefix)
            .await?
            .into_iter()
            .filter(|db| is_source(&spec.membership, names, target, db))
            .collect()),
        Membership::Names => {
            Ok(names.iter().filter(|db| is_source(&spec.membership, names, target, db)).cloned().collect())
        }
    }
}

/// How the engine task starts: checkpoint, feed position, listing. Retried until it works.
pub(super) async fn start(
    spec: &EngineSpec,
    names: &BTreeSet<String>,
    queue: &mut FanInQueue,
) -> Result<Start, CouchError> {
    let checkpoint = read_checkpoint(&spec.target, &spec.uid).await?;
    // The position is taken before listing, so nothing created meanwhile is missed; without a
    // feed to read (`None`), the sources are listed every few seconds instead.
    let since = match &checkpoint {
        Some(Checkpoint { since: Some(since), .. }) if position(&spec.couch).await?.is_some() => Some(since.clone()),
        _ => position(&spec.couch).await?,
    };
    let feed = since.is_some();
    let listed = list(spec, names).await?;
    let resumed = checkpoint.as_ref().is_some_and(|c| c.since.is_some()) && feed;
    for db in &listed {
        let synced = resumed && checkpoint.as_ref().is_some_and(|c| !c.pending.contains(db));
        queue.discover(db, synced);
    }
    Ok(Start { since, feed, rev: checkpoint.and_then(|c| c.rev), resumed })
}

pub(super) struct Start {
    pub(super) since: Option<Value>,
    pub(super) feed: bool,
    pub(super) rev: Option<String>,
    pub(super) resumed: bool,
}

/// Every source replicated once more (those that are new found by listing again); sources no
/// longer listed are forgotten.
pub(super) async fn full_pass(spec: &EngineSpec, names: &BTreeSet<String>, queue: &mut FanInQueue) {
    match list(spec, names).await {
        Ok(listed) => {
            let listed_set: BTreeSet<&String> = listed.iter().collect();
            for db in queue.states().keys() {
                if !listed_set.contains(db) {
                    queue.deleted(db);
                }
            }
            for db in &listed {
                queue.recheck(db);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing the on-change sources failed; next pass retries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_databases_and_the_target_are_never_sources() {
        let prefix = Membership::Prefix("userdb-".into());
        let none = BTreeSet::new();
        assert!(is_source(&prefix, &none, "analytics", "userdb-6a6f"));
        assert!(!is_source(&prefix, &none, "analytics", "analytics"));
        assert!(!is_source(&prefix, &none, "userdb-all", "userdb-all"), "the target, even when it matches");
        assert!(!is_source(&prefix, &none, "analytics", "_users"));
        assert!(!is_source(&prefix, &none, "analytics", "userdb-x/_replicator"));
        assert!(!is_source(&prefix, &none, "analytics", "other"));
        let names: BTreeSet<String> = ["userdb-61".to_string()].into();
        assert!(is_source(&Membership::Names, &names, "t", "userdb-61"));
        assert!(!is_source(&Membership::Names, &names, "t", "userdb-62"));
    }
}
