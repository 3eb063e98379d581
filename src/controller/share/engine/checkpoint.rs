//! An engine's checkpoint: `_local/couchshare-onchange-<share uid>` in the target database,
//! the feed position and the sources not replicated yet.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::couch::{CouchClient, CouchError};

/// The checkpoint document's id.
pub fn checkpoint_id(uid: &str) -> String {
    format!("_local/couchshare-onchange-{uid}")
}

/// What the checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Checkpoint {
    pub(super) since: Option<Value>,
    pub(super) pending: BTreeSet<String>,
    pub(super) rev: Option<String>,
}

pub(super) async fn read_checkpoint(
    target: &(CouchClient, String),
    uid: &str,
) -> Result<Option<Checkpoint>, CouchError> {
    let Some(doc) = target.0.get_document(&target.1, &checkpoint_id(uid)).await? else { return Ok(None) };
    let pending = doc
        .get("pending")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Some(Checkpoint {
        since: doc.get("since").cloned().filter(|s| !s.is_null()),
        pending,
        rev: doc.get("_rev").and_then(Value::as_str).map(str::to_owned),
    }))
}
