//! What an on-change engine is started with, and what it shares with the share reconciler.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use crate::api::{CouchShare, OnChangeStatus};
use crate::couch::CouchClient;

/// How a one-shot replication may take before it is given up (and retried).
pub(super) const REPLICATION_WAIT: Duration = Duration::from_secs(600);
/// How often, at most, the checkpoint is written (only when it changed).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How often, at most, changed counts requeue the share for a status write.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);
/// The most sources a checkpoint lists; with more not yet replicated (a first full sync), it
/// records no position instead, and a restart replicates every source once, as without one.
pub(super) const CHECKPOINT_PENDING_MAX: usize = 1000;
/// Failing sources listed in the status.
pub(super) const WORST: usize = 5;

/// Which databases are the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Every database whose name starts with this.
    Prefix(String),
    /// These (the per-user databases of the selected CouchUsers; updated in place).
    Names,
}

/// What an engine is started with; a change of anything but the names starts a new one.
pub struct EngineSpec {
    /// `namespace/name` of the share.
    pub key: String,
    /// The share, for requeueing it.
    pub share: ObjectRef<CouchShare>,
    /// Its UID: names the checkpoint.
    pub uid: String,
    pub membership: Membership,
    /// Initial names for [`Membership::Names`].
    pub names: BTreeSet<String>,
    /// The `_replicate` body for one source database.
    pub body: Arc<dyn Fn(&str) -> Value + Send + Sync>,
    /// Fingerprint of everything the bodies depend on.
    pub fingerprint: String,
    /// Admin client of the managed server (feed, listing, `_replicate`).
    pub couch: CouchClient,
    /// Client and database of the target (for the checkpoint).
    pub target: (CouchClient, String),
    /// The most replications at once.
    pub k: usize,
    /// Full pass period without a feed.
    pub resync: Duration,
    /// Wakes the listing of the sources to look for the feed again (see `db_events`).
    pub nudge: Arc<tokio::sync::Notify>,
}

/// What the share's status shows of an engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub status: OnChangeStatus,
    /// Listing the sources or reading the checkpoint failed: the engine retries, the share is
    /// not Ready until it works.
    pub error: Option<String>,
    /// Listed once and running.
    pub started: bool,
}

/// The state an engine shares with the reconciler.
#[derive(Default)]
pub struct Shared {
    pub(super) snapshot: Mutex<Snapshot>,
    /// The bodies of the replications in progress (cancelled when the share stops).
    pub(super) running: Mutex<HashMap<String, Value>>,
}

impl Shared {
    /// The latest counts.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
