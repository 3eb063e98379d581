//! One-shot replications run by `POST /_replicate` (the request answers when the replication
//! has finished), their cancellation, and the paged listing of databases by name prefix that
//! on-change fan-in discovers its sources with.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{CouchClient, Request};
use super::error::CouchError;

/// What a finished one-shot replication reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Replicated {
    /// `true` when it ran to the end.
    #[serde(default)]
    pub ok: bool,
    /// Nothing was new since the checkpoint.
    #[serde(default)]
    pub no_changes: bool,
    /// The source sequence it got to.
    #[serde(default)]
    pub source_last_seq: Value,
    /// Documents written by this run.
    #[serde(skip)]
    pub docs_written: u64,
    /// Documents the target refused in this run (a `validate_doc_update`, a size limit). The
    /// replicator moves its checkpoint past them: they are not tried again until they change.
    #[serde(skip)]
    pub doc_write_failures: u64,
}

/// Databases listed per page of `_all_dbs`.
pub const ALL_DBS_PAGE: usize = 1000;

impl CouchClient {
    /// `POST /_replicate` with `body` (a one-shot: `continuous` is forced off), waiting up to
    /// `wait` for it to finish. Never retried: a retry would run it twice.
    pub async fn replicate(&self, body: &Value, wait: Duration) -> Result<Replicated, CouchError> {
        let mut body = body.clone();
        if let Some(o) = body.as_object_mut() {
            o.insert("continuous".into(), Value::Bool(false));
        }
        let mut req = Request::new(Method::POST, "/_replicate").json(&body)?;
        req.timeout = Some(wait);
        req.retry = false;
        let answer: Value = self.call(req).await?;
        let mut replicated: Replicated =
            serde_json::from_value(answer.clone()).map_err(|e| CouchError::decode("POST", "/_replicate", e))?;
        // pouchdb-server answers with this run's counts at the top and no history.
        let top = |key: &str| answer.get(key).and_then(Value::as_u64);
        if let (Some(read), Some(written)) = (top("docs_read"), top("docs_written")) {
            replicated.no_changes = read == 0;
            if let Some(last) = answer.get("last_seq") {
                replicated.source_last_seq = last.clone();
            }
            replicated.docs_written = written;
            replicated.doc_write_failures = top("doc_write_failures").unwrap_or(0);
            return Ok(replicated);
        }
        // CouchDB's history counts are cumulative over the replication's runs (restored from its
        // checkpoint): this run's are the newest entry's less the one before.
        if !replicated.no_changes
            && let Some(history) = answer.get("history").and_then(Value::as_array)
        {
            let count =
                |i: usize, key: &str| history.get(i).and_then(|h| h.get(key)).and_then(Value::as_u64).unwrap_or(0);
            replicated.docs_written = count(0, "docs_written").saturating_sub(count(1, "docs_written"));
            replicated.doc_write_failures =
                count(0, "doc_write_failures").saturating_sub(count(1, "doc_write_failures"));
        }
        Ok(replicated)
    }

    /// Cancels the one-shot replication started with `body`; `Ok(false)` when none runs.
    pub async fn cancel_replicate(&self, body: &Value) -> Result<bool, CouchError> {
        let mut body = body.clone();
        if let Some(o) = body.as_object_mut() {
            o.insert("continuous".into(), Value::Bool(false));
            o.insert("cancel".into(), Value::Bool(true));
        }
        let mut req = Request::new(Method::POST, "/_replicate").json(&body)?;
        req.retry = false;
        match self.call::<Value>(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of the databases starting with `prefix`, in order: `_all_dbs` with
    /// `startkey`/`endkey`, [`ALL_DBS_PAGE`] at a time. Names outside the range are dropped
    /// here too, for servers that ignore the range (pouchdb-server).
    pub async fn databases_with_prefix(&self, prefix: &str) -> Result<Vec<String>, CouchError> {
        let mut out: Vec<String> = Vec::new();
        let mut start = prefix.to_string();
        let mut skip = 0;
        loop {
            let req = Request::new(Method::GET, "/_all_dbs")
                .query("startkey", json!(start).to_string())
                .query("endkey", json!(format!("{prefix}\u{fff0}")).to_string())
                .query("limit", ALL_DBS_PAGE)
                .query("skip", skip);
            let page: Vec<String> = self.call(req).await?;
            let full = page.len() >= ALL_DBS_PAGE;
            let last = page.last().cloned();
            out.extend(page.into_iter().filter(|n| n.starts_with(prefix)));
            match last {
                Some(last) if full && last.starts_with(prefix) => {
                    start = last;
                    skip = 1;
                }
                _ => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
