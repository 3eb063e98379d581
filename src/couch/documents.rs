//! Documents of any database as JSON: get, put, delete, leaf revisions, `_all_docs`, `_find`,
//! `_bulk_docs`, `_purge`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{CouchClient, Request};
use super::error::CouchError;
use super::path::{doc_path, encode_db};

/// The answer to a document write.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DocWrite {
    pub id: String,
    pub rev: String,
}

/// `_all_docs` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllDocsQuery {
    /// Only these ids (sent as a `POST` body); missing ones come back as rows with `error`.
    pub keys: Option<Vec<String>>,
    pub include_docs: bool,
    pub start_key: Option<String>,
    pub end_key: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AllDocs {
    #[serde(default)]
    pub total_rows: u64,
    #[serde(default)]
    pub offset: Option<u64>,
    pub rows: Vec<AllDocsRow>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AllDocsRow {
    /// Absent for a requested key that does not exist.
    #[serde(default)]
    pub id: Option<String>,
    pub key: String,
    #[serde(default)]
    pub value: Option<AllDocsValue>,
    /// With `include_docs`; `null` for deleted documents.
    #[serde(default)]
    pub doc: Option<Value>,
    /// `not_found` for a requested key that does not exist.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AllDocsValue {
    pub rev: String,
    #[serde(default)]
    pub deleted: bool,
}

/// One line of a `_bulk_docs` answer: `rev` on success, `error`/`reason` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BulkDocResult {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub rev: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What `_purge` removed: document id → purged revisions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PurgeResult {
    #[serde(default)]
    pub purged: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub purge_seq: Option<Value>,
}

#[derive(Serialize)]
struct Docs<'a> {
    docs: &'a [Value],
}

/// One entry of a `GET /{db}/{id}?open_revs=all` answer.
#[derive(Deserialize)]
struct OpenRev {
    /// A leaf revision, as a document (a deleted leaf carries `_deleted`).
    #[serde(default)]
    ok: Option<Value>,
}

/// A `_find` page, with only what paging needs.
#[derive(Deserialize)]
struct FindPage {
    #[serde(default)]
    docs: Vec<Value>,
    #[serde(default)]
    bookmark: Option<String>,
}

/// Documents per `_find` page in [`CouchClient::find_ids`].
const FIND_PAGE: usize = 1000;

impl CouchClient {
    /// `GET /{db}/{id}`; `None` when the document (or the database) does not exist.
    pub async fn get_document(&self, db: &str, id: &str) -> Result<Option<Value>, CouchError> {
        self.call_opt(Request::new(Method::GET, doc_path(db, id))).await
    }

    /// `PUT /{db}/{id}`; the body carries `_rev` to update. Returns the new revision.
    pub async fn put_document(&self, db: &str, id: &str, doc: &Value) -> Result<String, CouchError> {
        let req = Request::new(Method::PUT, doc_path(db, id)).json(doc)?;
        let written: DocWrite = self.call(req).await?;
        Ok(written.rev)
    }

    /// `DELETE /{db}/{id}?rev=`. Returns the tombstone's revision.
    pub async fn delete_document(&self, db: &str, id: &str, rev: &str) -> Result<String, CouchError> {
        let req = Request::new(Method::DELETE, doc_path(db, id)).query("rev", rev);
        let written: DocWrite = self.call(req).await?;
        Ok(written.rev)
    }

    /// `_all_docs`, as `POST` when `keys` are given.
    pub async fn all_docs(&self, db: &str, query: &AllDocsQuery) -> Result<AllDocs, CouchError> {
        let path = format!("/{}/_all_docs", encode_db(db));
        let mut req = match &query.keys {
            Some(keys) => Request::new(Method::POST, path).json(&json!({ "keys": keys }))?,
            None => Request::new(Method::GET, path),
        };
        if query.include_docs {
            req = req.query("include_docs", true);
        }
        // Keys in the query string are JSON.
        if let Some(k) = &query.start_key {
            req = req.query("startkey", Value::from(k.as_str()));
        }
        if let Some(k) = &query.end_key {
            req = req.query("endkey", Value::from(k.as_str()));
        }
        if let Some(l) = query.limit {
            req = req.query("limit", l);
        }
        self.call(req).await
    }

    /// Every leaf revision of a document, deleted leaves and conflicts included:
    /// `GET /{db}/{id}?open_revs=all` (as JSON). Empty when the document, or the database,
    /// does not exist.
    pub async fn leaf_revs(&self, db: &str, id: &str) -> Result<Vec<String>, CouchError> {
        let req = Request::new(Method::GET, doc_path(db, id)).query("open_revs", "all");
        let leaves: Option<Vec<OpenRev>> = self.call_opt(req).await?;
        Ok(leaves
            .unwrap_or_default()
            .into_iter()
            .filter_map(|leaf| leaf.ok?.get("_rev")?.as_str().map(str::to_owned))
            .collect())
    }

    /// Whether CouchDB's Mango accepts `selector`, asked in `db` without reading a document
    /// (`limit: 0`): the replicator refuses a replication document whose selector Mango does not
    /// normalise, so asking first lets a caller refuse before writing anything. `Ok(Some(reason))`
    /// for a selector CouchDB refuses (400), `Ok(None)` for one it takes.
    pub async fn selector_refusal(&self, db: &str, selector: &Value) -> Result<Option<String>, CouchError> {
        let path = format!("/{}/_find", encode_db(db));
        let body = json!({ "selector": selector, "fields": ["_id"], "limit": 0 });
        match self.call::<Value>(Request::new(Method::POST, path).json(&body)?).await {
            Ok(_) => Ok(None),
            Err(CouchError::BadRequest { error, reason, .. }) => Ok(Some(format!("{error}: {reason}"))),
            Err(e) => Err(e),
        }
    }

    /// The ids of every document matching a Mango `selector`: `POST /{db}/_find` page by page,
    /// following `bookmark` until a page comes back short. Servers that answer without a
    /// bookmark (PouchDB) are paged with `skip` instead.
    pub async fn find_ids(&self, db: &str, selector: &Value) -> Result<Vec<String>, CouchError> {
        let path = format!("/{}/_find", encode_db(db));
        let mut ids = Vec::new();
        let mut bookmark: Option<String> = None;
        let mut previous_first: Option<String> = None;
        let mut skip = 0;
        loop {
            let mut body = json!({ "selector": selector, "fields": ["_id"], "limit": FIND_PAGE });
            match &bookmark {
                Some(b) => body["bookmark"] = json!(b),
                None if skip > 0 => body["skip"] = json!(skip),
                None => {}
            }
            let page: FindPage = self.call(Request::new(Method::POST, path.clone()).json(&body)?).await?;
            let got = page.docs.len();
            let first = page.docs.first().and_then(|d| d.get("_id")?.as_str().map(str::to_owned));
            // A page starting where the last one did (`skip` ignored) repeats it: the end.
            if first.is_some() && first == previous_first {
                return Ok(ids);
            }
            ids.extend(page.docs.iter().filter_map(|d| d.get("_id")?.as_str().map(str::to_owned)));
            // CouchDB answers "nil" when there is nothing more; a repeated bookmark would page forever.
            let next = page.bookmark.filter(|b| !b.is_empty() && b != "nil");
            if got < FIND_PAGE || (next.is_some() && next == bookmark) {
                return Ok(ids);
            }
            previous_first = first;
            skip += got;
            bookmark = next;
        }
    }

    /// `POST /{db}/_bulk_docs`; per-document failures are in the results, not an error.
    pub async fn bulk_docs(&self, db: &str, docs: &[Value]) -> Result<Vec<BulkDocResult>, CouchError> {
        let req = Request::new(Method::POST, format!("/{}/_bulk_docs", encode_db(db))).json(&Docs { docs })?;
        self.call(req).await
    }

    /// `POST /{db}/_purge` with `{docid: [revs]}`: the revisions vanish from this database
    /// only, and are not replicated. `NotSupported` on servers without purge.
    pub async fn purge(&self, db: &str, revs: &BTreeMap<String, Vec<String>>) -> Result<PurgeResult, CouchError> {
        if !self.capabilities().await?.purge {
            return Err(CouchError::not_supported("_purge"));
        }
        // Not retried: a purge whose answer was lost has happened.
        let mut req = Request::new(Method::POST, format!("/{}/_purge", encode_db(db))).json(revs)?;
        req.retry = false;
        self.call(req).await
    }
}
