//! Change feeds: a database's `_changes` and the server's `_db_updates`, normal or longpoll.
//! Sequences are opaque JSON (integers on pouchdb-server and CouchDB 1.x, strings on 2+).

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{CouchClient, Request};
use super::error::CouchError;
use super::path::encode_db;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeedMode {
    /// Answers at once with what has changed.
    #[default]
    Normal,
    /// Waits up to `timeout` for a change.
    Longpoll,
}

impl FeedMode {
    fn as_str(self) -> &'static str {
        match self {
            FeedMode::Normal => "normal",
            FeedMode::Longpoll => "longpoll",
        }
    }
}

/// `_changes` options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangesQuery {
    pub feed: FeedMode,
    /// A `last_seq` from an earlier answer, or `"now"`; `None` means from the start.
    pub since: Option<Value>,
    /// Longpoll wait.
    pub timeout: Option<Duration>,
    pub limit: Option<u64>,
    pub include_docs: bool,
    /// A Mango selector (`filter=_selector`); `NotSupported` on servers without it.
    pub selector: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Changes {
    pub results: Vec<Change>,
    pub last_seq: Value,
    #[serde(default)]
    pub pending: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Change {
    pub id: String,
    pub seq: Value,
    #[serde(default)]
    pub changes: Vec<ChangeRev>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub doc: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeRev {
    pub rev: String,
}

/// `_db_updates` options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbUpdatesQuery {
    pub feed: FeedMode,
    pub since: Option<Value>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DbUpdates {
    pub results: Vec<DbUpdate>,
    pub last_seq: Value,
}

/// A database created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DbUpdate {
    pub db_name: String,
    /// `created`, `updated` or `deleted`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub seq: Value,
}

/// A sequence as a query parameter: strings as they are, anything else as JSON text.
fn seq_param(seq: &Value) -> String {
    match seq {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl CouchClient {
    /// Sets up a feed request's mode, `since` and wait. A longpoll request gets the feed's
    /// wait on top of the request timeout and is not retried, so a waiting feed is not
    /// taken for a dead server.
    fn feed_request(
        &self,
        mut req: Request,
        feed: FeedMode,
        since: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Request {
        req = req.query("feed", feed.as_str());
        if let Some(since) = since {
            req = req.query("since", seq_param(since));
        }
        if let Some(t) = timeout {
            req = req.query("timeout", t.as_millis());
        }
        if feed == FeedMode::Longpoll {
            req.timeout = Some(timeout.unwrap_or(Duration::from_secs(60)) + self.request_timeout());
            req.retry = false;
        }
        req
    }

    /// `GET` (or `POST` with a selector) `/{db}/_changes`.
    ///
    /// A longpoll that gets no answer before its deadline returns no changes and `since` as
    /// `last_seq` (pouchdb-server ignores `timeout` and holds the request open until a change).
    pub async fn changes(&self, db: &str, query: &ChangesQuery) -> Result<Changes, CouchError> {
        let path = format!("/{}/_changes", encode_db(db));
        let mut req = match &query.selector {
            Some(selector) => {
                if !self.capabilities().await?.changes_selector {
                    return Err(CouchError::not_supported("_changes filter=_selector"));
                }
                Request::new(Method::POST, path).json(&json!({ "selector": selector }))?.query("filter", "_selector")
            }
            None => Request::new(Method::GET, path),
        };
        req = self.feed_request(req, query.feed, query.since.as_ref(), query.timeout);
        if let Some(l) = query.limit {
            req = req.query("limit", l);
        }
        if query.include_docs {
            req = req.query("include_docs", true);
        }
        match self.call(req).await {
            Err(e) if query.feed == FeedMode::Longpoll && e.is_timeout() => Ok(Changes {
                results: Vec::new(),
                last_seq: query.since.clone().unwrap_or_else(|| json!("now")),
                pending: None,
            }),
            other => other,
        }
    }

    /// `GET /_db_updates`; `NotSupported` on servers without it (pouchdb-server).
    pub async fn db_updates(&self, query: &DbUpdatesQuery) -> Result<DbUpdates, CouchError> {
        if !self.capabilities().await?.db_updates {
            return Err(CouchError::not_supported("_db_updates"));
        }
        let req = self.feed_request(
            Request::new(Method::GET, "/_db_updates"),
            query.feed,
            query.since.as_ref(),
            query.timeout,
        );
        match self.call(req).await {
            Err(e) if query.feed == FeedMode::Longpoll && e.is_timeout() => {
                Ok(DbUpdates { results: Vec::new(), last_seq: query.since.clone().unwrap_or_else(|| json!("now")) })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_pass_through_as_query_text() {
        assert_eq!(seq_param(&json!(12)), "12");
        assert_eq!(seq_param(&json!("12-g1AAAA")), "12-g1AAAA");
        assert_eq!(seq_param(&json!("now")), "now");
    }

    #[test]
    fn changes_of_both_sequence_kinds_parse() {
        let pouch: Changes = serde_json::from_value(json!({
            "results": [{"id": "d", "changes": [{"rev": "1-a"}], "seq": 1}], "last_seq": 1
        }))
        .expect("parses");
        assert_eq!(pouch.last_seq, json!(1));
        let couch: Changes = serde_json::from_value(json!({
            "results": [{"seq": "2-g1", "id": "d", "changes": [{"rev": "2-b"}], "deleted": true}],
            "last_seq": "2-g1", "pending": 0
        }))
        .expect("parses");
        assert!(couch.results[0].deleted);
        let updates: DbUpdates = serde_json::from_value(json!({
            "results": [{"db_name": "a", "type": "created", "seq": "1-x"}], "last_seq": "1-x"
        }))
        .expect("parses");
        assert_eq!(updates.results[0].kind, "created");
    }
}
