//! The on-change engines of this process, by share: kept while their spec stays the same,
//! replaced (their replications cancelled) when it changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::spec::{EngineSpec, Shared};
use super::task::run;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::requeues::ShareTrigger;
use crate::couch::{CouchClient, CouchError};

struct Kept {
    fingerprint: String,
    handle: JoinHandle<()>,
    shared: Arc<Shared>,
    names: watch::Sender<BTreeSet<String>>,
    couch: CouchClient,
}

/// The on-change engines of this process, by share.
#[derive(Default)]
pub struct Engines {
    kept: Mutex<HashMap<String, Kept>>,
}

impl Engines {
    /// Keeps one engine for `spec.key`: a running one with the same fingerprint stays (its
    /// names are updated), another is replaced. Returns what the engine shares.
    pub fn keep(&self, spec: EngineSpec, trigger: Option<ShareTrigger>, metrics: Arc<Metrics>) -> Arc<Shared> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kept.get(&spec.key)
            && k.fingerprint == spec.fingerprint
            && !k.handle.is_finished()
        {
            k.names.send_if_modified(|names| {
                let changed = *names != spec.names;
                if changed {
                    names.clone_from(&spec.names);
                }
                changed
            });
            return k.shared.clone();
        }
        if let Some(old) = kept.remove(&spec.key) {
            old.handle.abort();
            cancel_in_background(old);
        }
        let shared = Arc::new(Shared::default());
        let (names_tx, names_rx) = watch::channel(spec.names.clone());
        let key = spec.key.clone();
        let fingerprint = spec.fingerprint.clone();
        let couch = spec.couch.clone();
        let handle = tokio::spawn(run(spec, shared.clone(), names_rx, trigger, metrics));
        kept.insert(key, Kept { fingerprint, handle, shared: shared.clone(), names: names_tx, couch });
        shared
    }

    /// Whether an engine runs for `key`.
    pub fn running(&self, key: &str) -> bool {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).get(key).is_some_and(|k| !k.handle.is_finished())
    }

    /// Stops the engine of `key`, if any, and cancels the replications it had running; returns
    /// how many it cancelled. Nothing of it replicates once this returns.
    pub async fn stop(&self, key: &str) -> Result<usize, CouchError> {
        let Some(old) = self.kept.lock().unwrap_or_else(|e| e.into_inner()).remove(key) else { return Ok(0) };
        old.handle.abort();
        let bodies: Vec<Value> =
            old.shared.running.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, b)| b).collect();
        let mut cancelled = 0;
        for body in &bodies {
            if old.couch.cancel_replicate(body).await? {
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }
}

fn cancel_in_background(old: Kept) {
    let bodies: Vec<Value> =
        old.shared.running.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, b)| b).collect();
    if bodies.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for body in &bodies {
            if let Err(e) = old.couch.cancel_replicate(body).await {
                tracing::debug!(error = %e, "could not cancel a one-shot replication of a replaced engine");
            }
        }
    });
}
