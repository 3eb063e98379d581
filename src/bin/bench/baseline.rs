//! The baseline: the CouchDB writes the operator makes for the same objects, made directly.
//!
//! For every database: create it, record its owner, read and write `_security` once, with the
//! grant's user and the replication users of the shares that touch it as members. For every
//! user: its `_users` document. For every share: its scoped replication user (one more
//! password to hash, as the operator's `couchshare-repl-…`) and its replication document,
//! with that user's credentials. Every request is counted by method.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use couchshare::couch::{CouchClient, CreateDatabase, RequestRecord, UserDoc};
use couchshare::plan::database::OWNER_DOC_ID;
use couchshare::plan::ownership::Owner;
use couchshare::plan::share::{Endpoint, EndpointAuth, EndpointStyle, ReplicationSpec, SHARE_FIELD, replication_doc};
use couchshare::plan::user::OWNER_FIELD;
use futures::{StreamExt, stream};
use serde_json::json;

use crate::metrics::Counts;

/// What the baseline took, and the requests it made, by method.
pub struct Baseline {
    pub elapsed: Duration,
    pub requests: Counts,
}

/// The names the baseline gives its objects: all start with `base-{tag}-`.
struct Names<'a> {
    tag: &'a str,
}

impl Names<'_> {
    fn db(&self, i: usize) -> String {
        format!("base-{}-db-{i}", self.tag)
    }
    fn user(&self, i: usize) -> String {
        format!("base-{}-user-{i}", self.tag)
    }
    fn repl_user(&self, share: usize) -> String {
        format!("base-{}-repl-{share}", self.tag)
    }
    fn replication(&self, share: usize) -> String {
        format!("base-{}-{share}", self.tag)
    }
}

/// Share `j` of `shares` replicates database `sj` into `sj + 1` (in both phases), with the
/// stride `s` the spread of n databases allows: 5 when there are n/5 shares or fewer, down to 2
/// (n/2 shares: every database in one). More shares than n/2 is refused by `main`.
pub fn share_ends(j: usize, n: usize, shares: usize) -> (usize, usize) {
    let stride = (n / shares.max(1)).clamp(2, 5);
    (stride * j, stride * j + 1)
}

fn owner(kind: &str, name: &str) -> Owner {
    Owner {
        kind: kind.into(),
        namespace: "bench-baseline".into(),
        name: name.into(),
        uid: format!("{:032x}", rand::random::<u128>()),
    }
}

fn password() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect()
}

/// Runs the baseline for `n` databases, users and grants and `shares` shares.
pub async fn run(
    couch: &CouchClient,
    n: usize,
    shares: usize,
    concurrency: usize,
    tag: &str,
) -> anyhow::Result<Baseline> {
    let caps = couch.capabilities().await?;
    let style = if caps.auth_object_in_endpoints { EndpointStyle::AuthObject } else { EndpointStyle::BasicHeader };
    let counts = Arc::new(Mutex::new(Counts::new()));
    let seen = counts.clone();
    let couch = &couch.with_observer(Arc::new(move |r: &RequestRecord<'_>| {
        if let Ok(mut c) = seen.lock() {
            *c.entry(r.method.to_string()).or_default() += 1.0;
        }
    }));
    let names = &Names { tag };
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| async move {
            let db = names.db(i);
            let user = names.user(i);
            couch.create_database(&db, &CreateDatabase::default()).await?;
            let record = json!({"owner": owner("CouchDatabase", &format!("db-{i}"))});
            couch.put_document(&db, OWNER_DOC_ID, &record).await?;
            let mut security = couch.security(&db).await?;
            let mut members = vec![user.clone()];
            members.extend(
                (0..shares)
                    .filter(|j| [share_ends(*j, n, shares).0, share_ends(*j, n, shares).1].contains(&i))
                    .map(|j| names.repl_user(j)),
            );
            members.sort();
            security.members.names = members;
            security.members.roles = vec![];
            couch.put_security(&db, &security).await?;
            let mut doc = UserDoc::new(&user, vec![], Some(password()));
            doc.extra.insert(OWNER_FIELD.into(), serde_json::to_value(owner("CouchUser", &format!("user-{i}")))?);
            couch.put_user(&doc).await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let base = couch.base_url().as_str().trim_end_matches('/').to_string();
    let base = &base;
    let results: Vec<anyhow::Result<()>> = stream::iter(0..shares)
        .map(|j| async move {
            let me = owner("CouchShare", &format!("share-{j}"));
            let auth = EndpointAuth { username: names.repl_user(j), password: password() };
            let mut user = UserDoc::new(&auth.username, vec![], Some(auth.password.clone()));
            user.extra.insert(SHARE_FIELD.into(), serde_json::to_value(&me)?);
            couch.put_user(&user).await?;
            let (a, b) = share_ends(j, n, shares);
            let end = |i| Endpoint { base_url: base.clone(), database: names.db(i), auth: Some(auth.clone()) };
            let spec = ReplicationSpec {
                id: names.replication(j),
                source: end(a),
                target: end(b),
                continuous: false,
                selector: None,
                owner: me,
            };
            couch.put_replication_doc("_replicator", &spec.id, &replication_doc(&spec, style)).await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let elapsed = started.elapsed();
    let requests = counts.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(Baseline { elapsed, requests })
}
