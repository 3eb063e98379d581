//! Removing what the bench created on CouchDB, whichever way it ends: the baseline's
//! databases, users and replication documents (all named `base-{tag}-…`), and the operator
//! phase's (`op-{tag}-…` databases and users, `couchshare_{namespace}_…` replication
//! documents, and the scoped replication users whose share record names the namespace).

use couchshare::couch::{AllDocsQuery, CouchClient, USERS_DB};
use couchshare::plan::share::SHARE_FIELD;
use futures::{StreamExt, stream};
use serde_json::Value;

/// How many databases (system ones, which the operator may create, left out) and `_users`
/// documents CouchDB holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub databases: usize,
    pub users: u64,
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} databases (besides system ones), {} _users documents", self.databases, self.users)
    }
}

pub async fn footprint(couch: &CouchClient) -> anyhow::Result<Footprint> {
    let users = couch.all_docs(USERS_DB, &AllDocsQuery { limit: Some(0), ..AllDocsQuery::default() }).await?;
    let databases = couch.all_databases().await?.iter().filter(|d| !d.starts_with('_')).count();
    Ok(Footprint { databases, users: users.total_rows })
}

/// What one run created: its tag and its namespace.
pub struct Created<'a> {
    pub tag: &'a str,
    pub namespace: &'a str,
}

/// Removed by [`clean`].
#[derive(Debug, Default)]
pub struct Removed {
    pub databases: usize,
    pub users: usize,
    pub replications: usize,
}

async fn users_with_prefix(couch: &CouchClient, prefix: &str) -> anyhow::Result<Vec<(String, String, Value)>> {
    let id = format!("org.couchdb.user:{prefix}");
    let query = AllDocsQuery {
        include_docs: true,
        start_key: Some(id.clone()),
        end_key: Some(format!("{id}\u{fff0}")),
        ..AllDocsQuery::default()
    };
    Ok(couch
        .all_docs(USERS_DB, &query)
        .await?
        .rows
        .into_iter()
        .filter_map(|r| {
            let doc = r.doc?;
            let name = doc.get("name")?.as_str()?.to_string();
            Some((name, r.value?.rev, doc))
        })
        .collect())
}

/// What of `created` is on CouchDB: replication documents (id, rev), databases, and users
/// (name, rev).
struct Ours {
    replications: Vec<(String, String)>,
    databases: Vec<String>,
    users: Vec<(String, String)>,
}

async fn ours(couch: &CouchClient, created: &Created<'_>) -> anyhow::Result<Ours> {
    let (base, op) = (format!("base-{}-", created.tag), format!("op-{}-", created.tag));
    let mut replications = Vec::new();
    for prefix in [base.clone(), format!("couchshare_{}_", created.namespace)] {
        for doc in couch.list_replication_docs_with_prefix("_replicator", &prefix).await.unwrap_or_default() {
            if let (Some(id), Some(rev)) = (doc["_id"].as_str(), doc["_rev"].as_str()) {
                replications.push((id.to_string(), rev.to_string()));
            }
        }
    }
    let databases =
        couch.all_databases().await?.into_iter().filter(|d| d.starts_with(&base) || d.starts_with(&op)).collect();
    let mut users = users_with_prefix(couch, &base).await?;
    users.extend(users_with_prefix(couch, &op).await?);
    let repl = users_with_prefix(couch, "couchshare-repl-").await?;
    users.extend(repl.into_iter().filter(|(_, _, doc)| doc[SHARE_FIELD]["namespace"] == created.namespace));
    Ok(Ours { replications, databases, users: users.into_iter().map(|(name, rev, _)| (name, rev)).collect() })
}

/// Deletes everything `created` names on CouchDB (replication documents first, so nothing
/// replicates into a database being deleted); fails if anything is left.
///
/// Requests the operator had in flight when it was stopped can still land (a database
/// creation takes a second on a busy CouchDB), so it looks again, 2 s apart, until two looks
/// in a row find nothing, for up to a minute.
pub async fn clean(couch: &CouchClient, created: &Created<'_>) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let (mut empty_looks, mut last_error) = (0, None);
    for _ in 0..30 {
        let found = ours(couch, created).await?;
        if found.replications.is_empty() && found.databases.is_empty() && found.users.is_empty() {
            empty_looks += 1;
            if empty_looks == 2 {
                return Ok(removed);
            }
        } else {
            empty_looks = 0;
            match remove(couch, found).await {
                Ok(round) => {
                    removed.databases += round.databases;
                    removed.users += round.users;
                    removed.replications += round.replications;
                }
                Err(e) => last_error = Some(e),
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let left = ours(couch, created).await?;
    let error = anyhow::anyhow!(
        "clean-up left {} replication documents, {} databases and {} users (removed {removed:?})",
        left.replications.len(),
        left.databases.len(),
        left.users.len()
    );
    Err(match last_error {
        Some(e) => error.context(format!("{e:#}")),
        None => error,
    })
}

/// One round of deletions.
async fn remove(couch: &CouchClient, found: Ours) -> anyhow::Result<Removed> {
    let mut first_error: Option<anyhow::Error> = None;
    let mut count = |results: Vec<anyhow::Result<()>>| {
        let mut ok = 0;
        for r in results {
            match r {
                Ok(()) => ok += 1,
                Err(e) => drop(first_error.get_or_insert(e)),
            }
        }
        ok
    };
    let replications = stream::iter(found.replications)
        .map(|(id, rev)| async move { Ok(couch.delete_replication_doc("_replicator", &id, &rev).await.map(drop)?) })
        .buffer_unordered(8)
        .collect()
        .await;
    let replications = count(replications);
    let databases = stream::iter(found.databases)
        .map(|db| async move { Ok(couch.delete_database(&db).await?) })
        .buffer_unordered(8)
        .collect()
        .await;
    let databases = count(databases);
    let users = stream::iter(found.users)
        .map(|(name, rev)| async move { Ok(couch.delete_user(&name, &rev).await.map(drop)?) })
        .buffer_unordered(8)
        .collect()
        .await;
    let removed = Removed { databases, users: count(users), replications };
    match first_error {
        Some(e) => Err(e.context(format!("clean-up (removed {removed:?} in this round)"))),
        None => Ok(removed),
    }
}
