//! The fan-in bench's setup: the source databases, and `replicator/startup_jitter` taken off
//! for the run and put back after.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use couchshare::couch::{CouchClient, CreateDatabase};
use futures::{StreamExt, stream};
use serde_json::json;

use super::{own, source_name};
use crate::Run;

/// Makes the N source databases with one document each.
pub(super) async fn make_sources(
    couch: &CouchClient,
    run: &Run,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| async move {
            let db = source_name(&run.tag, i);
            own(2);
            couch.create_database(&db, &CreateDatabase { q: Some(1), ..Default::default() }).await?;
            couch.put_document(&db, &format!("seed-{i}"), &json!({"user": i})).await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.context("making a source database")?;
    }
    Ok(started.elapsed())
}

/// `replicator/startup_jitter` as the node says it now, to put back after the run.
pub async fn jitter_before(couch: &CouchClient) -> Option<String> {
    couch.config_get("_local", "replicator", "startup_jitter").await.ok().flatten()
}

/// Puts `replicator/startup_jitter` back on every node (the operator is stopped by now).
pub async fn restore_jitter(couch: &CouchClient, before: Option<String>) {
    let nodes = couch.membership().await.map(|m| m.all_nodes).unwrap_or_default();
    for node in nodes {
        let done = match &before {
            Some(v) => couch.config_set(&node, "replicator", "startup_jitter", v).await.map(drop),
            None => couch.config_delete(&node, "replicator", "startup_jitter").await.map(drop),
        };
        if let Err(e) = done {
            eprintln!("bench: could not restore replicator/startup_jitter on {node}: {e}");
        }
    }
}
