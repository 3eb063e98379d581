//! What one pass of a CouchShare takes (the share's intent, what was observed on CouchDB) and
//! what it gives (the steps, the outcome, the report, or a refusal); [`plan_share`](super::plan_share)
//! decides between them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{EndpointAuth, EndpointStyle};
use crate::api::{ReplicationStatus, ShareMode};
use crate::couch;
use crate::plan::ownership::{Owner, Refusal};

/// One end of a replication, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A database on the managed server (reached by the replicator at the intent's `local_base`).
    Local {
        /// Its CouchDB name.
        database: String,
    },
    /// A database on another CouchDB.
    Remote {
        /// Server URL, no credentials, no trailing slash.
        base_url: String,
        /// Database name.
        database: String,
        /// The credentials the share was given for it.
        auth: EndpointAuth,
    },
}

impl End {
    /// The database name.
    pub fn database(&self) -> &str {
        match self {
            End::Local { database } | End::Remote { database, .. } => database,
        }
    }
}

/// What a share wants, with every reference resolved.
#[derive(Debug, Clone)]
pub struct ShareIntent {
    /// The CouchShare.
    pub owner: Owner,
    /// One-way or two-way.
    pub mode: ShareMode,
    /// Continuous or one-shot.
    pub continuous: bool,
    /// The share's Mango selector, if any.
    pub selector: Option<Value>,
    /// The sharing document: id template and declared body.
    pub sharing_document: Option<(String, Option<Value>)>,
    /// The replicator database.
    pub replicator: String,
    /// How the server takes endpoint credentials.
    pub style: EndpointStyle,
    /// The managed server's URL as the replicator reaches it.
    pub local_base: String,
    /// The credentials the replicator uses on the managed server.
    pub local_auth: EndpointAuth,
    /// The sources: one, or one per fan-in user (with that user's CouchDB name).
    pub sources: Vec<(Option<String>, End)>,
    /// The target.
    pub target: End,
    /// Fan-in users whose per-user database does not exist yet.
    pub waiting: Vec<String>,
    /// The server's replication budget (replicator/max_jobs × nodes), when known.
    pub budget: Option<i32>,
}

/// What was read from CouchDB for one pass.
#[derive(Debug, Clone, Default)]
pub struct ObservedShare {
    /// Local databases the replication user cannot use yet (always empty with admin credentials).
    pub access_missing: Vec<String>,
    /// Whether the replicator database exists.
    pub replicator_exists: bool,
    /// The sharing document as read from each source, by (database, id); `None`: missing.
    pub sharing_docs: BTreeMap<(String, String), Option<Value>>,
    /// The share's replication documents, as listed from the replicator database.
    pub replication_docs: Vec<Value>,
    /// The scheduler's state of the share's replications (missing ones are not known yet).
    pub statuses: Vec<couch::ReplicationStatus>,
}

/// One write, in the order they are made.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareStep {
    /// Create the (per-tenant) replicator database.
    CreateReplicator(String),
    /// Write the sharing document into a source (`body` carries `_rev` when it replaces one).
    PutSharingDocument {
        /// The source it goes into.
        end: End,
        /// Its id.
        id: String,
        /// The whole body.
        body: Value,
    },
    /// Write a replication document (`body` carries `_rev` when it replaces one).
    PutReplication {
        /// Its id.
        id: String,
        /// The whole body.
        body: Value,
    },
    /// Delete a replication document the share no longer wants.
    DeleteReplication {
        /// Its id.
        id: String,
        /// Its revision.
        rev: String,
    },
}

/// How the pass ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareOutcome {
    /// Every replication is running, or completed (one-shot); or there is nothing to replicate.
    Replicating,
    /// Not there yet: `reason` is `ReplicationPending` or `ReplicationFailing`.
    Pending {
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
    },
    /// Something the share needs is not there yet (named).
    Waiting(String),
}

/// The status one pass reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareReport {
    /// Per replication, its state from the scheduler.
    pub replications: Vec<ReplicationStatus>,
    /// The least healthy state (`idle` with no replications).
    pub state: String,
    /// Changes still to replicate, summed.
    pub changes_pending: Option<i64>,
    /// The sharing document's id, when there is one.
    pub sharing_document_id: Option<String>,
}

/// A whole pass.
#[derive(Debug, Clone, PartialEq)]
pub struct SharePlan {
    /// The writes, in order.
    pub steps: Vec<ShareStep>,
    /// The status to report; `None` keeps the one reported before (the pass stopped early).
    pub report: Option<ShareReport>,
    /// How it ends.
    pub outcome: ShareOutcome,
    /// Replications wanted and the budget they exceed.
    pub over_budget: Option<(usize, i32)>,
}

/// Why a share cannot run as declared (nothing is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareRefusal {
    /// The selector is not a valid Mango selector.
    #[error("{0}")]
    InvalidSelector(String),
    /// The sharing document cannot be written as declared.
    #[error("{0}")]
    InvalidSharingDocument(String),
    /// A replication document of the same id belongs to someone else.
    #[error(transparent)]
    Refused(#[from] Refusal),
}
