//! Replication: documents of `_replicator` and `prefix/_replicator` databases, and their state
//! from `_scheduler/docs` or, on servers without the scheduler, from `_replication_*` fields.

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::client::{CouchClient, Request};
use super::documents::AllDocsQuery;
use super::error::CouchError;
use super::path::encode_db;

/// The default replicator database.
pub const REPLICATOR_DB: &str = "_replicator";

/// How far a replication is, in the scheduler's words (CouchDB 1.x's `triggered` reads as
/// `Running`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationState {
    Initializing,
    Running,
    Pending,
    /// Failing, and retried with backoff.
    Crashing,
    /// Failed for good (e.g. an invalid document).
    Failed,
    /// A one-shot replication that finished.
    Completed,
    Error,
    Other(String),
}

impl ReplicationState {
    pub fn parse(state: &str) -> Self {
        match state {
            "initializing" => ReplicationState::Initializing,
            "running" | "triggered" => ReplicationState::Running,
            "pending" => ReplicationState::Pending,
            "crashing" => ReplicationState::Crashing,
            "failed" => ReplicationState::Failed,
            "completed" => ReplicationState::Completed,
            "error" => ReplicationState::Error,
            other => ReplicationState::Other(other.to_owned()),
        }
    }
}

/// Progress counters and the last error of one replication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ReplicationInfo {
    #[serde(default)]
    pub docs_read: u64,
    #[serde(default)]
    pub docs_written: u64,
    #[serde(default)]
    pub doc_write_failures: u64,
    /// Not known on servers without the scheduler.
    #[serde(default)]
    pub changes_pending: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The state of the replication of one replicator document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub doc_id: String,
    /// `None` when the replicator has not looked at the document yet.
    pub state: Option<ReplicationState>,
    pub info: ReplicationInfo,
    pub last_updated: Option<String>,
    pub error_count: u64,
}

#[derive(Deserialize)]
struct SchedulerDocs {
    #[serde(default)]
    total_rows: Option<u64>,
    docs: Vec<SchedulerDoc>,
}

#[derive(Deserialize)]
struct SchedulerDoc {
    doc_id: String,
    #[serde(default)]
    state: Option<String>,
    /// `null`, counters, or `{"error": ...}`; an `error` of another shape is kept as text.
    #[serde(default)]
    info: Option<Value>,
    #[serde(default)]
    last_updated: Option<String>,
    #[serde(default)]
    error_count: u64,
}

impl SchedulerDoc {
    fn into_status(self) -> ReplicationStatus {
        let info = self.info.map(parse_info).unwrap_or_default();
        ReplicationStatus {
            doc_id: self.doc_id,
            state: self.state.as_deref().map(ReplicationState::parse),
            info,
            last_updated: self.last_updated,
            error_count: self.error_count,
        }
    }
}

fn parse_info(info: Value) -> ReplicationInfo {
    let error = info.get("error").map(|e| match e {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let mut parsed: ReplicationInfo = match info {
        Value::Object(mut map) => {
            map.remove("error");
            serde_json::from_value(Value::Object(map)).unwrap_or_default()
        }
        _ => ReplicationInfo::default(),
    };
    parsed.error = error;
    parsed
}

/// The state a server without the scheduler writes into the document itself
/// (`_replication_state`, `_replication_state_reason`, `_replication_stats`).
pub fn status_from_replicator_doc(doc: &Value) -> Option<ReplicationStatus> {
    let doc_id = doc.get("_id")?.as_str()?.to_owned();
    let state = doc.get("_replication_state").and_then(Value::as_str).map(ReplicationState::parse);
    let stats = doc.get("_replication_stats");
    let count = |k: &str| stats.and_then(|s| s.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let failed = matches!(state, Some(ReplicationState::Error | ReplicationState::Failed | ReplicationState::Crashing));
    Some(ReplicationStatus {
        doc_id,
        info: ReplicationInfo {
            docs_read: count("docs_read"),
            docs_written: count("docs_written"),
            doc_write_failures: count("doc_write_failures"),
            changes_pending: None,
            error: doc
                .get("_replication_state_reason")
                .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned)),
        },
        last_updated: doc
            .get("_replication_state_time")
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned)),
        error_count: u64::from(failed),
        state,
    })
}

const SCHEDULER_PAGE: u64 = 500;

/// A replication job that runs on some node of the cluster, from `_scheduler/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchedulerJob {
    /// The job's id (the replication id).
    pub id: String,
    /// Its replicator database; `None` for a `POST /_replicate` job.
    #[serde(default)]
    pub database: Option<String>,
    /// Its replicator document; `None` for a `POST /_replicate` job.
    #[serde(default)]
    pub doc_id: Option<String>,
    /// The node that runs it.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Deserialize)]
struct SchedulerJobs {
    #[serde(default)]
    total_rows: Option<u64>,
    jobs: Vec<SchedulerJob>,
}

impl CouchClient {
    /// A replicator document; `None` when missing.
    pub async fn get_replication_doc(&self, db: &str, id: &str) -> Result<Option<Value>, CouchError> {
        self.get_document(db, id).await
    }

    /// Writes a replicator document; returns the new revision. CouchDB refuses an invalid one
    /// (e.g. a bad `selector`) with `Forbidden`.
    pub async fn put_replication_doc(&self, db: &str, id: &str, doc: &Value) -> Result<String, CouchError> {
        self.put_document(db, id, doc).await
    }

    /// Deletes a replicator document, which stops its replication.
    pub async fn delete_replication_doc(&self, db: &str, id: &str, rev: &str) -> Result<String, CouchError> {
        self.delete_document(db, id, rev).await
    }

    /// Every replicator document of `db`, design documents left out.
    pub async fn list_replication_docs(&self, db: &str) -> Result<Vec<Value>, CouchError> {
        self.replication_docs(db, AllDocsQuery { include_docs: true, ..AllDocsQuery::default() }).await
    }

    /// The replicator documents of `db` whose ids start with `prefix`: one range read of
    /// `_all_docs`, however many other documents the database holds.
    pub async fn list_replication_docs_with_prefix(&self, db: &str, prefix: &str) -> Result<Vec<Value>, CouchError> {
        let query = AllDocsQuery {
            include_docs: true,
            start_key: Some(prefix.to_string()),
            end_key: Some(format!("{prefix}\u{fff0}")),
            ..AllDocsQuery::default()
        };
        self.replication_docs(db, query).await
    }

    async fn replication_docs(&self, db: &str, query: AllDocsQuery) -> Result<Vec<Value>, CouchError> {
        let all = self.all_docs(db, &query).await?;
        Ok(all
            .rows
            .into_iter()
            .filter(|r| !r.key.starts_with("_design/"))
            .filter_map(|r| r.doc)
            .filter(|d| d.is_object())
            .collect())
    }

    /// The state of every replication of replicator database `db`: `_scheduler/docs/{db}`
    /// page by page, or the documents' own `_replication_*` fields without the scheduler.
    pub async fn replication_statuses(&self, db: &str) -> Result<Vec<ReplicationStatus>, CouchError> {
        if !self.capabilities().await?.scheduler {
            return Ok(self.list_replication_docs(db).await?.iter().filter_map(status_from_replicator_doc).collect());
        }
        let path = format!("/_scheduler/docs/{}", encode_db(db));
        let mut out = Vec::new();
        loop {
            let req = Request::new(Method::GET, path.clone()).query("limit", SCHEDULER_PAGE).query("skip", out.len());
            let page: SchedulerDocs = self.call(req).await?;
            let got = page.docs.len() as u64;
            out.extend(page.docs.into_iter().map(SchedulerDoc::into_status));
            let past_total = page.total_rows.is_some_and(|t| out.len() as u64 >= t);
            if got < SCHEDULER_PAGE || past_total {
                return Ok(out);
            }
        }
    }

    /// Every replication job that runs now, on every node (`_scheduler/jobs` asks them all),
    /// page by page. A deleted replicator document does not mean that its job has stopped: this
    /// does. `NotSupported` on servers without the scheduler.
    pub async fn scheduler_jobs(&self) -> Result<Vec<SchedulerJob>, CouchError> {
        if !self.capabilities().await?.scheduler {
            return Err(CouchError::not_supported("_scheduler/jobs"));
        }
        let mut out = Vec::new();
        loop {
            let req =
                Request::new(Method::GET, "/_scheduler/jobs").query("limit", SCHEDULER_PAGE).query("skip", out.len());
            let page: SchedulerJobs = self.call(req).await?;
            let got = page.jobs.len() as u64;
            out.extend(page.jobs);
            if got < SCHEDULER_PAGE || page.total_rows.is_some_and(|t| out.len() as u64 >= t) {
                return Ok(out);
            }
        }
    }

    /// The state of one replication; `None` when the document is unknown.
    pub async fn replication_status(&self, db: &str, id: &str) -> Result<Option<ReplicationStatus>, CouchError> {
        if !self.capabilities().await?.scheduler {
            return Ok(self.get_document(db, id).await?.as_ref().and_then(status_from_replicator_doc));
        }
        let path = format!("/_scheduler/docs/{}/{}", encode_db(db), super::path::encode_doc_id(id));
        let doc: Option<SchedulerDoc> = self.call_opt(Request::new(Method::GET, path)).await?;
        Ok(doc.map(SchedulerDoc::into_status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduler_docs_map_counters_and_errors() {
        let running: SchedulerDoc = serde_json::from_value(json!({
            "database": "_replicator", "doc_id": "r1", "id": "abc+continuous", "state": "running",
            "info": {"revisions_checked": 5, "missing_revisions_found": 5, "docs_read": 5,
                     "docs_written": 5, "changes_pending": 0, "doc_write_failures": 0,
                     "checkpointed_source_seq": "5-g1AAAA"},
            "error_count": 0, "last_updated": "2026-01-01T00:00:00Z"
        }))
        .expect("parses");
        let s = running.into_status();
        assert_eq!(s.state, Some(ReplicationState::Running));
        assert_eq!(s.info.docs_written, 5);
        assert_eq!(s.info.changes_pending, Some(0));

        let crashing: SchedulerDoc = serde_json::from_value(json!({
            "doc_id": "r2", "state": "crashing", "info": {"error": "db_not_found: could not open"},
            "error_count": 3
        }))
        .expect("parses");
        let s = crashing.into_status();
        assert_eq!(s.state, Some(ReplicationState::Crashing));
        assert_eq!(s.info.error.as_deref(), Some("db_not_found: could not open"));
        assert_eq!(s.error_count, 3);

        let fresh: SchedulerDoc =
            serde_json::from_value(json!({"doc_id": "r3", "state": null, "info": null})).expect("parses");
        assert_eq!(fresh.into_status().state, None);
    }

    #[test]
    fn scheduler_jobs_parse_with_and_without_a_document() {
        let page: SchedulerJobs = serde_json::from_value(json!({"total_rows": 2, "offset": 0, "jobs": [
            {"database": "_replicator", "id": "a1+continuous", "pid": "<0.1.0>", "source": "http://h/a/",
             "target": "http://h/b/", "user": null, "doc_id": "couchshare_ns_s_fwd", "info": null,
             "history": [], "node": "node2@127.0.0.1", "start_time": "2026-01-01T00:00:00Z"},
            {"database": null, "id": "b2", "doc_id": null, "node": "node1@127.0.0.1"}
        ]}))
        .expect("parses");
        assert_eq!(page.jobs[0].doc_id.as_deref(), Some("couchshare_ns_s_fwd"));
        assert_eq!(page.jobs[0].node.as_deref(), Some("node2@127.0.0.1"));
        assert_eq!(page.jobs[1].doc_id, None);
    }

    #[test]
    fn replication_state_fields_map_like_the_scheduler() {
        let doc = json!({
            "_id": "rep1", "source": "a", "target": "b",
            "_replication_state": "completed", "_replication_state_time": "2026-11-23T15:38:11.568Z",
            "_replication_stats": {"docs_read": 2, "docs_written": 2, "doc_write_failures": 0}
        });
        let s = status_from_replicator_doc(&doc).expect("has an id");
        assert_eq!(s.state, Some(ReplicationState::Completed));
        assert_eq!(s.info.docs_read, 2);
        assert_eq!(s.error_count, 0);
        assert_eq!(s.last_updated.as_deref(), Some("2026-11-23T15:38:11.568Z"));

        let failed = json!({"_id": "rep2", "_replication_state": "error",
                            "_replication_state_reason": "unauthorized"});
        let s = status_from_replicator_doc(&failed).expect("has an id");
        assert_eq!(s.state, Some(ReplicationState::Error));
        assert_eq!(s.info.error.as_deref(), Some("unauthorized"));
        assert_eq!(s.error_count, 1);

        let triggered = json!({"_id": "rep3", "_replication_state": "triggered"});
        let s = status_from_replicator_doc(&triggered).expect("has an id");
        assert_eq!(s.state, Some(ReplicationState::Running));
        assert_eq!(status_from_replicator_doc(&json!({"_id": "x"})).and_then(|s| s.state), None);
    }
}
