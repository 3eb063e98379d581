//! The raw calls a backup reads and a restore writes with: a page of `_changes` with every
//! leaf (`style=all_docs`), every leaf revision of some ids with their history and attachment
//! bytes (`_bulk_get?revs=true&attachments=true`), `_bulk_docs` with `new_edits: false`, and a
//! `_security` object as it is.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{CouchClient, Request};
use super::error::CouchError;
use super::feeds::Changes;
use super::path::encode_db;

/// One id's answer in `_bulk_get`: each element `{"ok": doc}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BulkGetResult {
    pub id: String,
    #[serde(default)]
    pub docs: Vec<BulkGetDoc>,
}

/// One leaf revision of a `_bulk_get` answer, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BulkGetDoc {
    #[serde(default)]
    pub ok: Option<Value>,
    #[serde(default)]
    pub error: Option<BulkGetError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BulkGetError {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Deserialize)]
struct BulkGet {
    results: Vec<BulkGetResult>,
}

impl CouchClient {
    /// `GET /{db}/_changes?style=all_docs&limit=`, from `since` (the start when `None`): every
    /// leaf of each changed document, tombstones included.
    pub async fn changes_all_leaves(&self, db: &str, since: Option<&Value>, limit: u64) -> Result<Changes, CouchError> {
        let mut req = Request::new(Method::GET, format!("/{}/_changes", encode_db(db)))
            .query("style", "all_docs")
            .query("limit", limit)
            // Only the page's last sequence is read: CouchDB need not encode one for every row
            // (on a cluster, a sequence is a list of every shard's; encoding one per row was
            // most of what a backup cost CouchDB in the bench).
            .query("seq_interval", limit);
        if let Some(since) = since {
            let since = match since {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            req = req.query("since", since);
        }
        self.call(req).await
    }

    /// `POST /{db}/_bulk_get?revs=true` with ids and no revisions: CouchDB answers every leaf
    /// of each id (conflicts and deleted leaves included), each with its `_revisions` path;
    /// with `attachments`, their bytes inline (base64 `data`), else stubs with their `length`.
    pub async fn bulk_get_leaves(
        &self,
        db: &str,
        ids: &[&str],
        attachments: bool,
    ) -> Result<Vec<BulkGetResult>, CouchError> {
        let docs: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        let req = Request::new(Method::POST, format!("/{}/_bulk_get", encode_db(db)))
            .query("revs", true)
            .query("attachments", attachments)
            .json(&json!({ "docs": docs }))?;
        let answer: BulkGet = self.call(req).await?;
        Ok(answer.results)
    }

    /// `POST /{db}/_bulk_docs` with `new_edits: false`: the revisions are stored as given
    /// (`_rev` and `_revisions`), beside any leaves already there. CouchDB answers only the
    /// documents it refused, as `{"id","error","reason"}`. Idempotent, so retried.
    pub async fn bulk_docs_replicated(&self, db: &str, docs: &[Value]) -> Result<Vec<Value>, CouchError> {
        let req = Request::new(Method::POST, format!("/{}/_bulk_docs", encode_db(db)))
            .json(&json!({ "docs": docs, "new_edits": false }))?;
        self.call(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_get_answer_with_leaves_and_a_missing_id_parses() {
        let raw = json!({"results": [
            {"id": "c", "docs": [{"ok": {"_id": "c", "_rev": "2-b"}}, {"ok": {"_id": "c", "_rev": "2-c"}}]},
            {"id": "nope", "docs": [{"error": {"rev": "undefined", "reason": "missing", "id": "nope", "error": "not_found"}}]}
        ]});
        let parsed: BulkGet = serde_json::from_value(raw).expect("parses");
        assert_eq!(parsed.results[0].docs.len(), 2);
        let error = parsed.results[1].docs[0].error.as_ref().expect("an error");
        assert_eq!(error.error, "not_found");
    }
}
