//! Stopping a CouchShare's replications, the first step of revoking or withdrawing it: its
//! replication documents are deleted, and it counts as stopped only once CouchDB runs no job of
//! it on any node. A deleted `_replicator` document does not mean that: on a cluster the job can
//! go on writing on another node for a while, and whatever it writes after a purge comes back.

use std::time::Duration;

use crate::api::CouchShare;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::Connected;
use crate::couch::CouchError;
use crate::plan::share::{jobs_of_share, owner, replication_doc_prefix, replicator_db, stale_replications};

/// How long one pass waits for the jobs to go before it returns `Settling` (reason `Waiting`) and is retried with backoff.
const SCHEDULER_DROP_WAIT: Duration = Duration::from_secs(2);

/// Deletes every replication document of the share (one range read of its replicator
/// database); returns their ids. Revocation then waits for their jobs to go; a share that
/// switches to strategy `OnChange` needs only this.
pub(crate) async fn delete_replication_docs(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
) -> Result<Vec<String>, Error> {
    let url = &connected.server.spec.url;
    let replicator = replicator_db(share);
    let me = owner(share);
    let docs = match connected
        .couch
        .list_replication_docs_with_prefix(&replicator, &replication_doc_prefix(&me.namespace, &me.name))
        .await
    {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(vec![]),
        Err(e) => return Err(Error::couch("listing replication documents", url, e)),
    };
    let ours = stale_replications(&docs, &me, &[]);
    for (id, rev) in &ours {
        ctx.metrics.forget_replication(&me.namespace, &me.name, id);
        match connected.couch.delete_replication_doc(&replicator, id, rev).await {
            Ok(_) | Err(CouchError::NotFound { .. }) => {}
            Err(e) => return Err(Error::couch("deleting a replication document", url, e)),
        }
    }
    Ok(ours.into_iter().map(|(id, _)| id).collect())
}

/// Stops every replication of the share: deletes its documents, then waits until
/// `_scheduler/jobs` — every node's jobs — shows none of the share (without the scheduler,
/// pouchdb-server: until its documents' states are gone). Jobs still there after
/// [`SCHEDULER_DROP_WAIT`] make it `Settling` (backoff): nothing that could flow back is removed before they
/// are gone, and the next pass looks again. Returns how many documents it deleted.
pub(crate) async fn stop_replications(
    ctx: &Context,
    share: &CouchShare,
    connected: &Connected,
) -> Result<usize, Error> {
    let url = connected.server.spec.url.clone();
    let couch = connected.couch.clone();
    let ours = delete_replication_docs(ctx, share, connected).await?;
    let deleted = ours.len();
    let caps = couch.capabilities().await.map_err(|e| Error::couch("reading capabilities", &url, e))?;
    if caps.scheduler {
        let me = owner(share);
        let running = || async {
            let jobs = couch.scheduler_jobs().await.map_err(|e| Error::couch("reading _scheduler/jobs", &url, e))?;
            Ok(jobs_of_share(&jobs, &me.namespace, &me.name))
        };
        wait_dropped(running, SCHEDULER_DROP_WAIT).await?;
        return Ok(deleted);
    }
    // The ids the share's status recorded too: their documents may be gone already.
    let mut ids = ours;
    for recorded in share.status.iter().flat_map(|s| s.replications.iter()) {
        if !ids.contains(&recorded.id) {
            ids.push(recorded.id.clone());
        }
    }
    let replicator = replicator_db(share);
    let running = || async {
        let mut left = Vec::new();
        for id in &ids {
            match couch.replication_status(&replicator, id).await {
                Ok(None) | Err(CouchError::NotFound { .. }) => {}
                Ok(Some(_)) => left.push(id.clone()),
                Err(e) => return Err(Error::couch("waiting for the scheduler", &url, e)),
            }
        }
        Ok(left)
    };
    wait_dropped(running, SCHEDULER_DROP_WAIT).await?;
    Ok(deleted)
}

/// Asks `running` until it names no job, for at most `wait`; then `Settling`, naming the jobs
/// still there.
async fn wait_dropped<F>(running: impl Fn() -> F, wait: Duration) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<Vec<String>, Error>>,
{
    let started = std::time::Instant::now();
    loop {
        let left = running().await?;
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(Error::Settling {
                what: format!("the stopped replication job(s) {} to end on every node", left.join(", ")),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_still_running_makes_revocation_wait_instead_of_carrying_on() {
        let still_there = || async { Ok(vec!["couchshare_ns_s_fwd on node2@127.0.0.1".to_string()]) };
        match wait_dropped(still_there, Duration::from_millis(150)).await {
            Err(Error::Settling { what }) => assert!(what.contains("couchshare_ns_s_fwd on node2"), "{what}"),
            other => panic!("expected Settling, got {other:?}"),
        }
        let gone = || async { Ok(vec![]) };
        assert!(wait_dropped(gone, Duration::from_millis(150)).await.is_ok());
    }
}
