//! A restore that fails half-way (CouchDB unreachable for a while) leaves its database partly
//! filled, which the emptiness check would then refuse for good. So a restore first writes a
//! `_local` document naming the data it restores, and removes it once done: a database that
//! holds documents but also that marker, for the same data (same sha256), is an interrupted
//! restore of it, and the restore may go on (`new_edits: false` writes are idempotent).
//! `_local` documents are not counted in `doc_count`, not replicated, and not backed up.

use serde_json::{Value, json};

use super::error::BackupError;
use crate::couch::CouchClient;

/// The marker's document id.
pub const RESTORE_MARKER: &str = "_local/couchshare-restore";

/// Whether `db` may receive a restore of the data whose sha256 is `sha256`: it is empty, or
/// holds the marker of a restore of that same data. `None`: any marker will do for now (the
/// data's hash is not known yet; ask again once it is). Else `NotEmpty`.
pub(crate) async fn may_restore(couch: &CouchClient, db: &str, sha256: Option<&str>) -> Result<(), BackupError> {
    let info = couch.database_info(db).await?;
    let documents = info.doc_count + info.doc_del_count;
    if documents == 0 {
        return Ok(());
    }
    let marker = couch.get_document(db, RESTORE_MARKER).await?;
    let same =
        marker.is_some_and(|m| sha256.is_none_or(|sha| m.get("data_sha256").and_then(Value::as_str) == Some(sha)));
    if same {
        tracing::info!(database = db, "going on with an interrupted restore of the same data");
        return Ok(());
    }
    Err(BackupError::NotEmpty { database: db.to_owned(), documents })
}

/// Writes the marker before the first document.
pub(crate) async fn mark(couch: &CouchClient, db: &str, sha256: &str) -> Result<(), BackupError> {
    let existing = couch.get_document(db, RESTORE_MARKER).await?;
    if existing.as_ref().and_then(|m| m.get("data_sha256")).and_then(Value::as_str) == Some(sha256) {
        return Ok(());
    }
    let mut marker = json!({ "data_sha256": sha256, "started_at": jiff::Timestamp::now().to_string() });
    if let Some(rev) = existing.as_ref().and_then(|m| m.get("_rev")) {
        marker["_rev"] = rev.clone();
    }
    couch.put_document(db, RESTORE_MARKER, &marker).await?;
    Ok(())
}

/// Removes the marker once everything is written.
pub(crate) async fn unmark(couch: &CouchClient, db: &str) -> Result<(), BackupError> {
    let existing = couch.get_document(db, RESTORE_MARKER).await?;
    if let Some(rev) = existing.as_ref().and_then(|m| m.get("_rev")).and_then(Value::as_str) {
        couch.delete_document(db, RESTORE_MARKER, rev).await?;
    }
    Ok(())
}
