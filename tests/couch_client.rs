//! The CouchDB client against a real server (the Apache CouchDB that tools/test starts, any
//! other CouchDB 3.x via COUCHDB_URL). Tests that need a capability the server lacks say so and
//! skip (and fail instead with COUCHSHARE_REQUIRE_CAPABILITIES=1, as tools/test runs them).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use couchshare::couch::{
    AllDocsQuery, ChangesQuery, CouchClient, CouchConfig, CouchError, CreateDatabase, Credentials, DbUpdatesQuery,
    FeedMode, Principals, REPLICATOR_DB, ReplicationState, RetryPolicy, Security, TransportKind, UserDoc,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use support::couchdb::{
    admin_credentials, client, ensure_system_databases, eventually, replication_url, require_capability, unique_name,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

macro_rules! couch_or_skip {
    ($test:expr) => {
        match client($test) {
            Some(c) => {
                ensure_system_databases(&c).await;
                c
            }
            None => return,
        }
    };
}

/// A fresh database, deleted again by the test.
/// A new database for one client test, with one copy of each shard: these tests are about the
/// client, and on a cluster one copy gives the read-your-writes they assume (with three, a
/// read can come from a copy the write has not reached yet). The operator's tests use the
/// cluster's own `n`.
async fn fresh_db(couch: &CouchClient, prefix: &str) -> String {
    let name = unique_name(prefix);
    let one_copy = CreateDatabase { n: Some(1), ..CreateDatabase::default() };
    couch.create_database(&name, &one_copy).await.expect("create a test database");
    name
}

#[tokio::test]
async fn capabilities_are_detected_from_the_welcome_answer() {
    let couch = couch_or_skip!("capabilities_are_detected_from_the_welcome_answer");
    let info = couch.server_info().await.expect("GET /");
    let caps = couch.capabilities().await.expect("capabilities");
    let membership = couch.membership().await.expect("membership");
    assert!(!membership.all_nodes.is_empty());
    let up = couch.up().await.expect("_up");
    eprintln!("server: {info:?}\ncapabilities: {caps:?}\nmembership: {membership:?}");
    if info.is_couchdb {
        let (major, _) = info.version_tuple();
        assert!(major >= 2, "CouchDB {}", info.version);
        assert!(caps.scheduler && caps.node_config && caps.selector_replication && caps.up);
        assert_eq!(up.as_deref(), Some("ok"));
    } else {
        // pouchdb-server: its own vendor and version, none of the optional features.
        assert_eq!(info.vendor.as_deref(), Some("PouchDB authors"));
        assert_eq!(info.version, "4.2.0");
        assert_eq!(caps, Default::default());
        assert_eq!(up, None);
    }
}

#[tokio::test]
async fn databases_are_created_inspected_listed_and_deleted() {
    let couch = couch_or_skip!("databases_are_created_inspected_listed_and_deleted");
    let name = unique_name("crud");
    let options = CreateDatabase { q: Some(2), n: Some(1), partitioned: false };
    couch.create_database(&name, &options).await.expect("create");
    assert!(couch.database_exists(&name).await.expect("exists"));
    let info = couch.database_info(&name).await.expect("info");
    assert_eq!(info.db_name, name);
    assert_eq!((info.doc_count, info.doc_del_count), (0, 0));
    assert!(!info.is_partitioned());
    assert!(couch.all_databases().await.expect("_all_dbs").contains(&name));

    couch.delete_database(&name).await.expect("delete");
    assert!(!couch.database_exists(&name).await.expect("exists after delete"));
    assert!(!couch.all_databases().await.expect("_all_dbs").contains(&name));
}

#[tokio::test]
async fn creating_an_existing_database_is_precondition_failed() {
    let couch = couch_or_skip!("creating_an_existing_database_is_precondition_failed");
    let name = fresh_db(&couch, "twice").await;
    let err = couch.create_database(&name, &CreateDatabase::default()).await.expect_err("a second create fails");
    assert!(matches!(&err, CouchError::PreconditionFailed { error, .. } if error == "file_exists"), "{err:?}");
    assert_eq!(err.status(), Some(412));
    couch.delete_database(&name).await.expect("cleanup");
}

#[tokio::test]
async fn a_missing_database_is_not_found() {
    let test = "a_missing_database_is_not_found";
    let couch = couch_or_skip!(test);
    let name = unique_name("missing");
    let err = couch.database_info(&name).await.expect_err("no such database");
    assert!(err.is_not_found(), "{err:?}");
    assert!(!couch.database_exists(&name).await.expect("HEAD"));
    assert_eq!(couch.get_document(&name, "x").await.expect("GET doc"), None);
    match couch.delete_database(&name).await {
        Err(e) => assert!(e.is_not_found(), "{e:?}"),
        Ok(()) => {
            let info = couch.server_info().await.expect("GET /");
            assert!(!info.is_couchdb, "CouchDB answers 404 to DELETE of a missing database");
            support::couchdb::skip_lacking(&format!(
                "SKIP {test} (delete part): this server answers 200 to DELETE of a missing database"
            ));
        }
    }
}

#[tokio::test]
async fn a_partitioned_database_is_created_where_supported() {
    let test = "a_partitioned_database_is_created_where_supported";
    let couch = couch_or_skip!(test);
    let caps = couch.capabilities().await.expect("capabilities");
    let name = unique_name("parts");
    let options = CreateDatabase { partitioned: true, ..CreateDatabase::default() };
    if !require_capability(test, &caps, "partitioned") {
        let err = couch.create_database(&name, &options).await.expect_err("refused");
        assert!(matches!(err, CouchError::NotSupported { .. }), "{err:?}");
        return;
    }
    couch.create_database(&name, &options).await.expect("create");
    assert!(couch.database_info(&name).await.expect("info").is_partitioned());
    couch.delete_database(&name).await.expect("cleanup");
}

#[tokio::test]
async fn security_round_trips_with_unknown_fields_preserved() {
    let couch = couch_or_skip!("security_round_trips_with_unknown_fields_preserved");
    let db = fresh_db(&couch, "sec").await;
    let mut security = Security {
        admins: Principals { names: vec!["alice".into()], roles: vec!["owners".into()], ..Principals::default() },
        members: Principals { names: vec!["bob".into()], roles: vec!["readers".into()], ..Principals::default() },
        ..Security::default()
    };
    security.extra.insert("couchshare_test".into(), json!({"kept": true}));
    security.members.extra.insert("note".into(), json!("hand-written"));
    couch.put_security(&db, &security).await.expect("put _security");
    let back = couch.security(&db).await.expect("get _security");
    assert_eq!(back, security);
    let raw = couch.get_document(&db, "_security").await.expect("raw _security");
    assert_eq!(raw.as_ref().map(|r| r["couchshare_test"].clone()), Some(json!({"kept": true})));
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn a_created_user_can_log_in_and_a_wrong_password_is_refused() {
    let couch = couch_or_skip!("a_created_user_can_log_in_and_a_wrong_password_is_refused");
    let name = unique_name("user");
    let password = format!("pw:@/{}", rand::random::<u32>());
    let rev = couch
        .put_user(&UserDoc::new(&name, vec!["writers".into()], Some(password.clone())))
        .await
        .expect("create user");
    let doc = couch.get_user(&name).await.expect("get user").expect("user exists");
    assert_eq!(doc.rev.as_deref(), Some(rev.as_str()));
    assert_eq!(doc.roles, ["writers"]);
    assert_eq!(doc.password, None, "CouchDB never returns the password");

    let ctx = couch.session_login(&name, &password).await.expect("login").expect("accepted");
    assert_eq!(ctx.name.as_deref(), Some(name.as_str()));
    assert!(ctx.roles.contains(&"writers".to_owned()));
    assert_eq!(couch.session_login(&name, "wrong").await.expect("login"), None);
    let as_user = couch.with_credentials(Credentials::new(&name, &password));
    assert_eq!(as_user.session().await.expect("_session").name.as_deref(), Some(name.as_str()));

    // Writing the document back without `password` changes the roles and keeps the password.
    let mut updated = doc.clone();
    updated.roles = vec!["readers".into()];
    couch.put_user(&updated).await.expect("update roles");
    // CouchDB's auth cache follows `_users` asynchronously: the new roles show up shortly.
    let roles = support::couchdb::eventually(std::time::Duration::from_secs(10), || async {
        let ctx = couch.session_login(&name, &password).await.expect("login").expect("still accepted");
        (ctx.roles == ["readers"]).then_some(ctx.roles)
    })
    .await;
    assert_eq!(roles.as_deref(), Some(&["readers".to_string()][..]));

    let current = couch.get_user(&name).await.expect("get").expect("exists");
    couch.delete_user(&name, current.rev.as_deref().expect("has a rev")).await.expect("delete user");
    assert_eq!(couch.get_user(&name).await.expect("get after delete"), None);
    // On a cluster each node's auth cache follows `_users` on its own: refused shortly after.
    let refused = support::couchdb::eventually(std::time::Duration::from_secs(10), || async {
        couch.session_login(&name, &password).await.ok().filter(Option::is_none)
    })
    .await;
    assert!(refused.is_some(), "a deleted user is refused");
}

#[tokio::test]
async fn a_stale_rev_is_a_conflict() {
    let couch = couch_or_skip!("a_stale_rev_is_a_conflict");
    let db = fresh_db(&couch, "conflict").await;
    let rev1 = couch.put_document(&db, "doc", &json!({"v": 1})).await.expect("create");
    let rev2 = couch.put_document(&db, "doc", &json!({"v": 2, "_rev": rev1})).await.expect("update");
    // A stale rev never replaces the current one. On a cluster a shard copy that has not seen
    // rev2 yet may take the write: then it is kept as a conflicting branch, never an overwrite.
    match couch.put_document(&db, "doc", &json!({"v": 3, "_rev": rev1})).await {
        Err(err) => assert!(err.is_conflict(), "{err:?}"),
        Ok(_) => {
            let clustered = couch.membership().await.expect("_membership").cluster_nodes.len() > 1;
            assert!(clustered, "a single node took a stale rev");
            let leaves = couch.leaf_revs(&db, "doc").await.expect("leaf revisions");
            assert!(leaves.contains(&rev2) && leaves.len() == 2, "rev2 is kept beside the stale write: {leaves:?}");
        }
    }
    let err = couch.put_document(&db, "doc", &json!({"v": 3})).await.expect_err("no rev");
    assert!(err.is_conflict(), "{err:?}");
    couch.delete_document(&db, "doc", &rev2).await.expect("delete");
    couch.delete_database(&db).await.expect("cleanup");

    let name = unique_name("stale");
    let rev = couch.put_user(&UserDoc::new(&name, vec![], Some("pw".into()))).await.expect("create user");
    let mut stale = UserDoc::new(&name, vec!["x".into()], None);
    stale.rev = Some("1-00000000000000000000000000000000".into());
    let err = couch.put_user(&stale).await.expect_err("stale user rev");
    assert!(err.is_conflict(), "{err:?}");
    couch.delete_user(&name, &rev).await.expect("delete user");
}

#[tokio::test]
async fn documents_are_read_in_bulk_by_key() {
    let couch = couch_or_skip!("documents_are_read_in_bulk_by_key");
    let db = fresh_db(&couch, "bulk").await;
    let results =
        couch.bulk_docs(&db, &[json!({"_id": "a", "n": 1}), json!({"_id": "b", "n": 2})]).await.expect("_bulk_docs");
    assert!(results.iter().all(|r| r.rev.is_some() && r.error.is_none()), "{results:?}");
    let again = couch.bulk_docs(&db, &[json!({"_id": "a"})]).await.expect("_bulk_docs");
    assert_eq!(again[0].error.as_deref(), Some("conflict"));

    let query =
        AllDocsQuery { keys: Some(vec!["b".into(), "zzz".into()]), include_docs: true, ..AllDocsQuery::default() };
    let all = couch.all_docs(&db, &query).await.expect("_all_docs keys");
    assert_eq!(all.rows.len(), 2);
    assert_eq!(all.rows[0].doc.as_ref().map(|d| d["n"].clone()), Some(json!(2)));
    assert_eq!(all.rows[1].error.as_deref(), Some("not_found"));
    let everything = couch.all_docs(&db, &AllDocsQuery::default()).await.expect("_all_docs");
    assert_eq!(everything.total_rows, 2);
    couch.delete_database(&db).await.expect("cleanup");
}

/// A replication endpoint for a database of this server, with credentials in the form the
/// server understands.
fn endpoint(auth_object: bool, db: &str, creds: &Credentials) -> Value {
    let url = format!("{}/{}", replication_url(), couchshare::couch::encode_db(db));
    if auth_object {
        json!({"url": url, "auth": {"basic": {"username": creds.username, "password": creds.password}}})
    } else {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.username, creds.password));
        json!({"url": url, "headers": {"Authorization": format!("Basic {basic}")}})
    }
}

#[tokio::test]
async fn a_replicator_document_replicates_and_reports_its_state() {
    let couch = couch_or_skip!("a_replicator_document_replicates_and_reports_its_state");
    let caps = couch.capabilities().await.expect("capabilities");
    let source = fresh_db(&couch, "repsrc").await;
    let target = fresh_db(&couch, "reptgt").await;
    couch.put_document(&source, "shared", &json!({"v": 1})).await.expect("source doc");

    let creds = admin_credentials();
    let rep_id = unique_name("rep");
    let rep = json!({
        "source": endpoint(caps.auth_object_in_endpoints, &source, &creds),
        "target": endpoint(caps.auth_object_in_endpoints, &target, &creds),
    });
    couch.put_replication_doc(REPLICATOR_DB, &rep_id, &rep).await.expect("put replicator doc");

    // On a cluster whose `_replicator` was created after its nodes started (the tests create the
    // system databases of a fresh cluster), CouchDB's replicator finds it only at its next scan
    // of the shards, every replicator/interval ÷ 2 (30 s by default).
    let copied =
        eventually(Duration::from_secs(50), || async { couch.get_document(&target, "shared").await.ok().flatten() })
            .await;
    assert_eq!(copied.map(|d| d["v"].clone()), Some(json!(1)), "replicated within 50 s");

    let status = eventually(Duration::from_secs(20), || async {
        couch
            .replication_status(REPLICATOR_DB, &rep_id)
            .await
            .ok()
            .flatten()
            .filter(|s| s.state == Some(ReplicationState::Completed))
    })
    .await
    .expect("the replication is reported completed");
    assert!(status.info.docs_written >= 1, "{status:?}");
    // On a cluster the listing follows the node that ran the job a little later.
    let listed = eventually(Duration::from_secs(20), || async {
        couch.replication_statuses(REPLICATOR_DB).await.ok().filter(|all| all.iter().any(|s| s.doc_id == rep_id))
    })
    .await;
    assert!(listed.is_some(), "{rep_id} is listed in _scheduler/docs");
    assert!(couch.list_replication_docs(REPLICATOR_DB).await.expect("list").iter().any(|d| d["_id"] == json!(rep_id)));

    let doc = couch.get_replication_doc(REPLICATOR_DB, &rep_id).await.expect("get").expect("exists");
    let rev = doc["_rev"].as_str().expect("a rev").to_owned();
    couch.delete_replication_doc(REPLICATOR_DB, &rep_id, &rev).await.expect("delete");
    couch.delete_database(&source).await.expect("cleanup");
    couch.delete_database(&target).await.expect("cleanup");
}

#[tokio::test]
async fn prefixed_replicator_databases_hold_documents() {
    let couch = couch_or_skip!("prefixed_replicator_databases_hold_documents");
    let db = format!("{}/_replicator", unique_name("tenant"));
    couch.create_database(&db, &CreateDatabase::default()).await.expect("create");
    // Not a replication any server will start: nothing listens on port 9.
    let doc = json!({"source": "http://127.0.0.1:9/a", "target": "http://127.0.0.1:9/b"});
    let rev = couch.put_replication_doc(&db, "r1", &doc).await.expect("put");
    // On a cluster a read may reach a shard copy the write has not reached yet: read again.
    let mut listed = couch.list_replication_docs(&db).await.expect("list");
    for _ in 0..50 {
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        listed = couch.list_replication_docs(&db).await.expect("list");
    }
    assert_eq!(listed.iter().map(|d| d["_id"].clone()).collect::<Vec<_>>(), [json!("r1")]);
    let current = couch.get_replication_doc(&db, "r1").await.expect("get").expect("exists");
    let rev = current["_rev"].as_str().unwrap_or(&rev).to_owned();
    couch.delete_replication_doc(&db, "r1", &rev).await.expect("delete");
    let mut listed = couch.list_replication_docs(&db).await.expect("list");
    for _ in 0..50 {
        if listed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        listed = couch.list_replication_docs(&db).await.expect("list");
    }
    assert!(listed.is_empty(), "the deleted document is no longer listed: {listed:?}");
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn an_invalid_replication_selector_is_forbidden() {
    let test = "an_invalid_replication_selector_is_forbidden";
    let couch = couch_or_skip!(test);
    let caps = couch.capabilities().await.expect("capabilities");
    if !require_capability(test, &caps, "selector_replication") {
        return;
    }
    let doc = json!({"source": "http://127.0.0.1:9/a", "target": "http://127.0.0.1:9/b",
                     "selector": "not an object"});
    let err = couch.put_replication_doc(REPLICATOR_DB, &unique_name("badsel"), &doc).await.expect_err("refused");
    assert!(matches!(err, CouchError::Forbidden { .. }), "{err:?}");
}

#[tokio::test]
async fn config_values_round_trip() {
    let couch = couch_or_skip!("config_values_round_trip");
    let node = couch.membership().await.expect("membership").all_nodes[0].clone();
    let section = "couchshare_test";
    let key = unique_name("key");
    assert_eq!(couch.config_get(&node, section, &key).await.expect("get"), None);
    assert_eq!(couch.config_set(&node, section, &key, "v1").await.expect("set"), "");
    assert_eq!(couch.config_set(&node, section, &key, "v2").await.expect("set"), "v1");
    assert_eq!(couch.config_get(&node, section, &key).await.expect("get").as_deref(), Some("v2"));
    let whole = couch.config_section(&node, section).await.expect("section");
    assert_eq!(whole.get(&key).map(String::as_str), Some("v2"));
    assert_eq!(couch.config_delete(&node, section, &key).await.expect("delete").as_deref(), Some("v2"));
    assert_eq!(couch.config_get(&node, section, &key).await.expect("get"), None);
    assert_eq!(couch.config_delete(&node, section, &key).await.expect("delete again"), None);
}

#[tokio::test]
async fn purge_removes_a_document_from_one_database() {
    let test = "purge_removes_a_document_from_one_database";
    let couch = couch_or_skip!(test);
    let caps = couch.capabilities().await.expect("capabilities");
    let db = fresh_db(&couch, "purge").await;
    let rev = couch.put_document(&db, "gone", &json!({"v": 1})).await.expect("put");
    let revs = BTreeMap::from([("gone".to_owned(), vec![rev.clone()])]);
    if !require_capability(test, &caps, "purge") {
        let err = couch.purge(&db, &revs).await.expect_err("not supported");
        assert!(matches!(err, CouchError::NotSupported { .. }), "{err:?}");
    } else {
        let result = couch.purge(&db, &revs).await.expect("purge");
        assert_eq!(result.purged.get("gone"), Some(&vec![rev]));
        assert_eq!(couch.get_document(&db, "gone").await.expect("get"), None);
        let changes = couch.changes(&db, &ChangesQuery::default()).await.expect("_changes");
        assert!(changes.results.iter().all(|c| c.id != "gone"), "{changes:?}");
    }
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn changes_report_written_docs_and_a_last_seq_to_resume_from() {
    let couch = couch_or_skip!("changes_report_written_docs_and_a_last_seq_to_resume_from");
    let db = fresh_db(&couch, "changes").await;
    couch.put_document(&db, "a", &json!({"n": 1})).await.expect("put a");
    couch.put_document(&db, "b", &json!({"n": 2})).await.expect("put b");
    let first =
        couch.changes(&db, &ChangesQuery { include_docs: true, ..ChangesQuery::default() }).await.expect("_changes");
    let mut ids: Vec<_> = first.results.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert!(first.results.iter().all(|c| c.doc.is_some() && !c.changes.is_empty()));

    couch.put_document(&db, "c", &json!({"n": 3})).await.expect("put c");
    let since = ChangesQuery { since: Some(first.last_seq.clone()), ..ChangesQuery::default() };
    let next = couch.changes(&db, &since).await.expect("_changes since");
    assert_eq!(next.results.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c"]);

    // A longpoll waiting from the end wakes up for the next write.
    let writer = couch.clone();
    let db2 = db.clone();
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.put_document(&db2, "d", &json!({"n": 4})).await
    });
    let longpoll = ChangesQuery {
        feed: FeedMode::Longpoll,
        since: Some(next.last_seq.clone()),
        timeout: Some(Duration::from_secs(10)),
        ..ChangesQuery::default()
    };
    let woken = couch.changes(&db, &longpoll).await.expect("longpoll");
    write.await.expect("writer task").expect("put d");
    assert_eq!(woken.results.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["d"]);
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn a_quiet_longpoll_returns_no_changes_and_the_same_since() {
    let couch = couch_or_skip!("a_quiet_longpoll_returns_no_changes_and_the_same_since");
    let db = fresh_db(&couch, "quiet").await;
    couch.put_document(&db, "a", &json!({})).await.expect("put");
    // On a cluster the feed can answer from a shard copy that has not seen the write yet.
    let now = support::couchdb::eventually(Duration::from_secs(10), || async {
        couch.changes(&db, &ChangesQuery::default()).await.ok().filter(|c| c.results.iter().any(|r| r.id == "a"))
    })
    .await
    .expect("the write shows in _changes");
    // CouchDB answers after `timeout`; pouchdb-server ignores it and the client's deadline
    // (timeout + request timeout) ends the wait. Both read as "nothing new".
    let started = std::time::Instant::now();
    let quiet = couch
        .with_request_timeout(Duration::from_secs(2))
        .changes(
            &db,
            &ChangesQuery {
                feed: FeedMode::Longpoll,
                since: Some(now.last_seq.clone()),
                timeout: Some(Duration::from_secs(1)),
                ..ChangesQuery::default()
            },
        )
        .await
        .expect("quiet longpoll");
    // Nothing new. A cluster may hand back a change already seen (another shard copy answers:
    // CouchDB promises at least once), never one that did not happen.
    let seen = |c: &couchshare::couch::Change| now.results.iter().any(|n| n.id == c.id && n.changes == c.changes);
    assert!(quiet.results.iter().all(seen), "{quiet:?}");
    if quiet.results.is_empty() {
        assert_eq!(quiet.last_seq, now.last_seq);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn changes_filter_by_selector_where_supported() {
    let test = "changes_filter_by_selector_where_supported";
    let couch = couch_or_skip!(test);
    let caps = couch.capabilities().await.expect("capabilities");
    let db = fresh_db(&couch, "selector").await;
    couch.put_document(&db, "keep", &json!({"type": "item"})).await.expect("put");
    couch.put_document(&db, "drop", &json!({"type": "other"})).await.expect("put");
    let query = ChangesQuery { selector: Some(json!({"type": "item"})), ..ChangesQuery::default() };
    if require_capability(test, &caps, "changes_selector") {
        let changes = couch.changes(&db, &query).await.expect("_changes selector");
        assert_eq!(changes.results.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["keep"]);
    } else {
        let err = couch.changes(&db, &query).await.expect_err("not supported");
        assert!(matches!(err, CouchError::NotSupported { .. }), "{err:?}");
    }
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn db_updates_report_a_created_database() {
    let test = "db_updates_report_a_created_database";
    let couch = couch_or_skip!(test);
    let caps = couch.capabilities().await.expect("capabilities");
    if !require_capability(test, &caps, "db_updates") {
        let err = couch.db_updates(&DbUpdatesQuery::default()).await.expect_err("not supported");
        assert!(matches!(err, CouchError::NotSupported { .. }), "{err:?}");
        return;
    }
    let start = couch
        .db_updates(&DbUpdatesQuery { since: Some(json!("now")), ..DbUpdatesQuery::default() })
        .await
        .expect("_db_updates now");
    let name = fresh_db(&couch, "updates").await;
    let mut since = start.last_seq;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = false;
    while !seen && std::time::Instant::now() < deadline {
        let query = DbUpdatesQuery {
            feed: FeedMode::Longpoll,
            since: Some(since.clone()),
            timeout: Some(Duration::from_secs(2)),
        };
        let updates = couch.db_updates(&query).await.expect("_db_updates longpoll");
        seen = updates.results.iter().any(|u| u.db_name == name && u.kind == "created");
        since = updates.last_seq;
    }
    assert!(seen, "{name} created, per _db_updates");
    couch.delete_database(&name).await.expect("cleanup");
}

#[tokio::test]
async fn an_anonymous_client_is_refused_on_a_members_only_database() {
    let couch = couch_or_skip!("an_anonymous_client_is_refused_on_a_members_only_database");
    let db = fresh_db(&couch, "private").await;
    couch.put_document(&db, "secret", &json!({"v": 1})).await.expect("put");
    let security = Security {
        members: Principals { names: vec![unique_name("member")], ..Principals::default() },
        ..Security::default()
    };
    couch.put_security(&db, &security).await.expect("put _security");
    let anonymous = couch.anonymous();
    assert_eq!(anonymous.username(), None);
    // 401 on pouchdb-server, 401 or 403 on CouchDB: the difference is the server's.
    let err = anonymous.get_document(&db, "secret").await.expect_err("refused read");
    assert!(err.is_access_denied(), "{err:?}");
    let err = anonymous.put_document(&db, "new", &json!({})).await.expect_err("refused write");
    assert!(err.is_access_denied(), "{err:?}");
    let stranger = couch.with_credentials(Credentials::new(unique_name("nobody"), "x"));
    let err = stranger.get_document(&db, "secret").await.expect_err("refused stranger");
    assert!(err.is_access_denied(), "{err:?}");
    couch.delete_database(&db).await.expect("cleanup");
}

#[tokio::test]
async fn debug_output_and_errors_never_show_the_password() {
    let password = "do-not-print-me-7f3a";
    let mut config = CouchConfig::new("http://127.0.0.1:9", Some(Credentials::new("admin", password)));
    config.retry = RetryPolicy::none();
    config.request_timeout = Duration::from_secs(5);
    let shown_config = format!("{config:?}");
    let couch = CouchClient::new(config).expect("client");
    let shown = format!("{couch:?} {:?}", couch.with_credentials(Credentials::new("u", password)));
    assert!(!shown.contains(password) && !shown_config.contains(password), "{shown}");
    assert!(shown.contains("admin"));

    // Nothing listens on port 9: a transport error, transient, with no credentials in it.
    let err = couch.server_info().await.expect_err("connection refused");
    assert!(matches!(err, CouchError::Transport { kind: TransportKind::Connect, .. }), "{err:?}");
    assert!(err.is_transient());
    let chain = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(!chain.contains(password), "{chain}");
    let user = UserDoc::new("u", vec![], Some(password.into()));
    assert!(!format!("{user:?}").contains(password));

    let with_userinfo = CouchConfig::new(format!("http://admin:{password}@127.0.0.1:9"), None);
    let err = CouchClient::new(with_userinfo).expect_err("credentials in the URL are refused");
    assert!(!err.to_string().contains(password), "{err}");
}

/// A server that answers `failures` times 503, then a CouchDB welcome; counts requests.
async fn flaky_server(failures: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => read += k,
                    }
                }
                let (status, body) = if n < failures {
                    ("503 Service Unavailable", r#"{"error":"unavailable","reason":"busy"}"#)
                } else {
                    ("200 OK", r#"{"couchdb":"Welcome","version":"3.5.0","features":["scheduler"]}"#)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn transient_failures_are_retried_and_zero_retries_means_one_attempt() {
    let fast = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_total_delay: Duration::from_secs(2),
    };
    let (url, count) = flaky_server(2).await;
    let mut config = CouchConfig::new(url, None);
    config.retry = fast.clone();
    let couch = CouchClient::new(config).expect("client");
    let info = couch.server_info().await.expect("succeeds on the third attempt");
    assert_eq!(info.version, "3.5.0");
    assert_eq!(count.load(Ordering::SeqCst), 3);

    let (url, count) = flaky_server(1).await;
    let mut config = CouchConfig::new(url, None);
    config.retry = RetryPolicy::none();
    let couch = CouchClient::new(config).expect("client");
    let err = couch.server_info().await.expect_err("no retry");
    assert!(matches!(err, CouchError::Server { status: 503, .. }), "{err:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let (url, count) = flaky_server(100).await;
    let mut config = CouchConfig::new(url, None);
    config.retry = fast;
    let couch = CouchClient::new(config).expect("client");
    assert!(couch.server_info().await.expect_err("gives up").is_transient());
    assert_eq!(count.load(Ordering::SeqCst), 4, "one attempt and three retries");
}

/// An HTTPS server on loopback with a certificate from the test CA in tests/fixtures/tls,
/// answering every request with a CouchDB welcome.
fn tls_server() -> String {
    let certs = CertificateDer::pem_slice_iter(include_bytes!("fixtures/tls/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .expect("test server certificate");
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/tls/server.key")).expect("a key in server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = r#"{"couchdb":"Welcome","version":"3.5.0","vendor":{"name":"test"}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_https_server_is_trusted_through_a_custom_ca_only() {
    let url = tls_server();
    let mut config = CouchConfig::new(&url, None);
    config.retry = RetryPolicy::none();
    config.request_timeout = Duration::from_secs(10);
    let untrusting = CouchClient::new(config.clone()).expect("client");
    let err = untrusting.server_info().await.expect_err("unknown CA");
    assert!(matches!(err, CouchError::Transport { .. }), "{err:?}");

    config.ca_pem = Some(include_bytes!("fixtures/tls/ca.pem").to_vec());
    let trusting = CouchClient::new(config).expect("client");
    let info = trusting.server_info().await.expect("trusted through the custom CA");
    assert_eq!(info.vendor.as_deref(), Some("test"));
}
