//! The data path of backup and restore (issue 28) against a real CouchDB, a real S3 server
//! (SeaweedFS, tools/testbin/start-s3.sh) and the real couchbackup CLI: round trips through
//! S3 and a directory, a corrupt object, a non-empty target, store failures, and files that
//! couchrestore reads and couchbackup writes. Each test uses its own databases and prefix.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;

use base64::Engine;
use couchshare::backup::{self, BackupError, S3Settings, Target};
use couchshare::couch::{CouchClient, CreateDatabase};
use futures::StreamExt;
use serde_json::{Value, json};
use support::couchdb::{ready_client, unique_name};

/// Plain documents beyond one `_changes` page of the backup (500).
const PLAIN: usize = 620;
/// Leaves `fill` writes: the plain ones, plus `plain`, `edited`, two of `conflict`, two of
/// `mixed`, `gone`, `_design/d` and `att`.
const LEAVES: u64 = PLAIN as u64 + 9;

/// A fresh database with one copy of each shard (read-your-writes on a cluster too).
async fn fresh_db(couch: &CouchClient, prefix: &str) -> String {
    let name = unique_name(prefix);
    let one_copy = CreateDatabase { n: Some(1), ..CreateDatabase::default() };
    couch.create_database(&name, &one_copy).await.expect("create a test database");
    name
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex_rev(generation: u32, c: char) -> String {
    format!("{generation}-{}", c.to_string().repeat(32))
}

/// A database with every kind of content a backup must keep.
async fn fill(couch: &CouchClient, db: &str) {
    couch.put_document(db, "plain", &json!({"n": 1, "nested": {"x": [1, 2]}})).await.expect("plain");
    let mut rev = couch.put_document(db, "edited", &json!({"v": 1})).await.expect("edited v1");
    for v in 2..=3 {
        rev = couch.put_document(db, "edited", &json!({"_rev": rev, "v": v})).await.expect("edit");
    }
    let (a, b, c) = (hex_rev(1, 'a'), hex_rev(2, 'b'), hex_rev(2, 'c'));
    let strip = |r: &str| r.split_once('-').map(|(_, h)| h.to_owned()).expect("a revision");
    let leaves = [
        // The losing leaf (2-bbbb… < 2-cccc…) alone has an attachment.
        json!({"_id": "conflict", "_rev": b, "_revisions": {"start": 2, "ids": [strip(&b), strip(&a)]}, "side": "b",
            "_attachments": {"loser.txt": {"content_type": "text/plain", "data": b64(b"only on the losing leaf")}}}),
        json!({"_id": "conflict", "_rev": c, "_revisions": {"start": 2, "ids": [strip(&c), strip(&a)]}, "side": "c"}),
    ];
    // A live leaf whose losing sibling alone has an attachment, and a deleted conflict branch.
    let (d, e) = (hex_rev(2, 'd'), hex_rev(2, 'e'));
    let leaves = [
        leaves[0].clone(),
        leaves[1].clone(),
        json!({"_id": "mixed", "_rev": d, "_revisions": {"start": 2, "ids": [strip(&d), strip(&a)]},
            "_attachments": {"lost.bin": {"content_type": "application/x-lost", "data": b64(&[0, 159, 146, 150])}}}),
        json!({"_id": "mixed", "_rev": e, "_revisions": {"start": 2, "ids": [strip(&e), strip(&a)]}, "_deleted": true}),
    ];
    let refused = couch.bulk_docs_replicated(db, &leaves).await.expect("conflict");
    assert!(refused.is_empty(), "{refused:?}");
    let gone = couch.put_document(db, "gone", &json!({"soon": "deleted"})).await.expect("gone");
    couch.delete_document(db, "gone", &gone).await.expect("delete gone");
    let views = json!({"views": {"by_n": {"map": "function(doc){ if(doc.n) emit(doc.n, null); }"}}});
    couch.put_document(db, "_design/d", &views).await.expect("design doc");
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let att = json!({"kind": "with attachments", "_attachments": {
        "hello.txt": {"content_type": "text/plain", "data": b64(b"hello, attachment\n")},
        "blob.bin": {"content_type": "application/octet-stream", "data": b64(&binary)}}});
    couch.put_document(db, "att", &att).await.expect("att");
    let many: Vec<Value> = (0..PLAIN).map(|i| json!({"_id": format!("many-{i:04}"), "i": i})).collect();
    for written in couch.bulk_docs(db, &many).await.expect("bulk") {
        assert!(written.error.is_none(), "{written:?}");
    }
    let security = json!({"admins": {"names": ["boss"], "roles": ["bosses"]},
        "members": {"names": ["alice"], "roles": ["readers"]}});
    couch.put_security(db, &serde_json::from_value(security).expect("a _security")).await.expect("security");
}

/// Every id in the database, deleted ones included.
async fn all_ids(couch: &CouchClient, db: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut since: Option<Value> = None;
    loop {
        let page = couch.changes_all_leaves(db, since.as_ref(), 1000).await.expect("_changes");
        ids.extend(page.results.iter().map(|c| c.id.clone()));
        since = Some(page.last_seq);
        if page.results.is_empty() || page.pending == Some(0) {
            break;
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Every leaf of a document, as `GET /{db}/{id}?open_revs=all&revs=true&attachments=true`
/// answers, sorted by revision; attachments as content type, revpos and bytes (no digests).
async fn leaves(http: &reqwest::Client, db: &str, id: &str) -> Vec<Value> {
    let base = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let user = std::env::var("COUCHDB_USER").expect("COUCHDB_USER");
    let password = std::env::var("COUCHDB_PASSWORD").expect("COUCHDB_PASSWORD");
    let path = couchshare::couch::encode_doc_id(id);
    let url = format!("{}/{}/{path}", base.trim_end_matches('/'), couchshare::couch::encode_db(db));
    let answer: Vec<Value> = http
        .get(url)
        .basic_auth(user, Some(password))
        .header("accept", "application/json")
        .query(&[("open_revs", "all"), ("revs", "true"), ("attachments", "true")])
        .send()
        .await
        .expect("GET open_revs")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("JSON");
    let mut docs: Vec<Value> = answer.into_iter().map(|r| r.get("ok").cloned().expect("an ok leaf")).collect();
    for doc in &mut docs {
        if let Some(Value::Object(atts)) = doc.get_mut("_attachments") {
            for att in atts.values_mut() {
                let data = att["data"].as_str().expect("inline data");
                let bytes = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
                *att = json!({"content_type": att["content_type"], "revpos": att["revpos"], "bytes": bytes});
            }
        }
    }
    docs.sort_by(|a, b| a["_rev"].as_str().cmp(&b["_rev"].as_str()));
    docs
}

/// Every leaf of every document of `db`, by id.
async fn snapshot(db: &str, ids: &[String]) -> BTreeMap<String, Vec<Value>> {
    let http = reqwest::Client::new();
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let http = http.clone();
            async move {
                let docs = leaves(&http, db, &id).await;
                (id, docs)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Checks that `restored` holds exactly the documents of `source`, and (with `security`) its
/// `_security`.
async fn assert_same(couch: &CouchClient, source: &str, restored: &str, security: bool) {
    let ids = all_ids(couch, source).await;
    assert_eq!(all_ids(couch, restored).await, ids, "the same ids");
    let (want, got) = (snapshot(source, &ids).await, snapshot(restored, &ids).await);
    for id in &ids {
        assert_eq!(got[id], want[id], "document {id}");
    }
    assert_eq!(want["conflict"].len(), 2, "both conflicting leaves");
    assert!(want["conflict"][0]["_attachments"]["loser.txt"]["bytes"].is_array(), "{:?}", want["conflict"]);
    assert_eq!(want["mixed"].len(), 2, "a live and a deleted leaf");
    assert!(want["mixed"].iter().any(|l| l["_attachments"]["lost.bin"]["bytes"] == json!([0, 159, 146, 150])));
    assert_eq!(want["edited"][0]["_revisions"]["ids"].as_array().map(Vec::len), Some(3));
    assert_eq!(want["gone"][0]["_deleted"], true);
    assert_eq!(want["att"][0]["_attachments"]["blob.bin"]["bytes"].as_array().map(Vec::len), Some(512));
    let (a, b) = (couch.database_info(source).await.expect("info"), couch.database_info(restored).await.expect("info"));
    assert_eq!((b.doc_count, b.doc_del_count), (a.doc_count, a.doc_del_count), "document counts");
    if security {
        let want = couch.security(source).await.expect("security");
        assert_eq!(couch.security(restored).await.expect("security"), want);
    }
}

/// Backs `db` up into `target`, checks the manifest, and restores it into a database of the
/// same name, deleted and created empty again: every document and `_security` come back.
async fn round_trip(couch: &CouchClient, target: &Target, prefix: &str) {
    let db = fresh_db(couch, prefix).await;
    fill(couch, &db).await;
    let ids = all_ids(couch, &db).await;
    let before = snapshot(&db, &ids).await;
    let security = couch.security(&db).await.expect("security");
    let info = couch.database_info(&db).await.expect("info");

    let manifest = backup::back_up(couch, &db, target).await.expect("back_up");
    assert_eq!(manifest.documents, LEAVES);
    assert_eq!(manifest.database, db);
    assert_eq!(
        serde_json::from_value::<couchshare::couch::Security>(manifest.security.clone()).expect("a _security"),
        security
    );
    assert_eq!(manifest.n, Some(1));
    assert!(manifest.q.is_some() && !manifest.partitioned);
    assert!(!manifest.update_seq.is_empty());
    let names: Vec<&str> = manifest.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [backup::DATA_OBJECT, backup::SECURITY_OBJECT, backup::DATABASE_OBJECT]);
    assert_eq!(manifest.bytes, manifest.objects.iter().map(|o| o.bytes).sum::<u64>());
    assert_eq!(backup::read_manifest(target).await.expect("read").as_ref(), Some(&manifest));
    backup::verify(target, &manifest).await.expect("verify");

    couch.delete_database(&db).await.expect("delete");
    fresh_again(couch, &db).await;
    let restored = backup::restore(couch, &db, target, &manifest).await.expect("restore");
    assert_eq!(restored.documents, LEAVES);
    assert_eq!(all_ids(couch, &db).await, ids);
    let after = snapshot(&db, &ids).await;
    for id in &ids {
        assert_eq!(after[id], before[id], "document {id}");
    }
    assert_eq!(couch.security(&db).await.expect("security"), security);
    let again = couch.database_info(&db).await.expect("info");
    assert_eq!((again.doc_count, again.doc_del_count), (info.doc_count, info.doc_del_count));
    couch.delete_database(&db).await.expect("clean up");
}

async fn fresh_again(couch: &CouchClient, db: &str) {
    let one_copy = CreateDatabase { n: Some(1), ..CreateDatabase::default() };
    couch.create_database(db, &one_copy).await.expect("create empty");
}

async fn assert_empty(couch: &CouchClient, db: &str) {
    let info = couch.database_info(db).await.expect("info");
    assert_eq!((info.doc_count, info.doc_del_count), (0, 0), "{db} stays empty");
}

#[tokio::test]
async fn a_database_round_trips_through_s3() {
    let test = "a_database_round_trips_through_s3";
    let Some(couch) = ready_client(test).await else { return };
    let Some(target) = support::s3::target(test, &unique_name("rt-s3")) else { return };
    round_trip(&couch, &target, "bk-s3").await;
}

#[tokio::test]
async fn a_database_round_trips_through_a_volume() {
    let Some(couch) = ready_client("a_database_round_trips_through_a_volume").await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::volume(&dir.path().join("mount"), "backups/one").expect("volume");
    assert_eq!(target.prefix(), "backups/one");
    round_trip(&couch, &target, "bk-vol").await;
    assert!(dir.path().join("mount/backups/one/manifest.json").exists());

    // The data file as docs/backup-format.md says: a couchbackup-style header, then arrays of
    // leaves with _id, _rev, _revisions, and attachments as contentType/data/digest/revpos.
    let text = std::fs::read_to_string(dir.path().join("mount/backups/one").join(backup::DATA_OBJECT)).expect("data");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header")).expect("JSON");
    assert_eq!(
        header,
        json!({"name": "couchshare", "version": env!("CARGO_PKG_VERSION"), "mode": "full", "attachments": false})
    );
    let batches: Vec<Vec<Value>> = lines.map(|l| serde_json::from_str(l).expect("an array of documents")).collect();
    assert!(batches.len() >= 2, "one line per _changes page at least");
    let leaves: Vec<&Value> = batches.iter().flatten().collect();
    assert_eq!(leaves.len() as u64, LEAVES);
    for leaf in &leaves {
        assert!(leaf["_id"].is_string() && leaf["_rev"].is_string() && leaf["_revisions"]["ids"].is_array(), "{leaf}");
    }
    let att = leaves.iter().find(|l| l["_id"] == "att").expect("att");
    for (name, entry) in att["_attachments"].as_object().expect("attachments") {
        let keys: Vec<&str> = entry.as_object().expect("an entry").keys().map(String::as_str).collect();
        assert_eq!(keys, ["contentType", "data", "digest", "revpos"], "{name}");
    }
    assert_eq!(att["_attachments"]["hello.txt"]["contentType"], "text/plain");
}

#[tokio::test]
async fn a_partitioned_database_round_trips_and_says_so() {
    let test = "a_partitioned_database_round_trips_and_says_so";
    let Some(couch) = ready_client(test).await else { return };
    let caps = couch.capabilities().await.expect("capabilities");
    if !support::couchdb::require_capability(test, &caps, "partitioned") {
        return;
    }
    let layout = CreateDatabase { q: Some(2), n: Some(1), partitioned: true };
    let db = unique_name("bk-part");
    couch.create_database(&db, &layout).await.expect("a partitioned database");
    for id in ["red:1", "red:2", "blue:1"] {
        couch.put_document(&db, id, &json!({"colour": id.split(':').next()})).await.expect("a document");
    }
    let views =
        json!({"options": {"partitioned": true}, "views": {"all": {"map": "function(doc){ emit(doc._id, 1); }"}}});
    couch.put_document(&db, "_design/p", &views).await.expect("a design document");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::volume(dir.path(), "part").expect("volume");
    let manifest = backup::back_up(&couch, &db, &target).await.expect("back_up");
    assert!(manifest.partitioned);
    assert_eq!((manifest.q, manifest.n, manifest.documents), (Some(2), Some(1), 4));
    let layout_object = std::fs::read(dir.path().join("part").join(backup::DATABASE_OBJECT)).expect("database.json");
    let written: Value = serde_json::from_slice(&layout_object).expect("JSON");
    assert_eq!(written, json!({"q": 2, "n": 1, "partitioned": true}));

    // Restored into a database made from what the manifest says.
    let into = unique_name("bk-part-into");
    let again = CreateDatabase { q: manifest.q, n: manifest.n, partitioned: manifest.partitioned };
    couch.create_database(&into, &again).await.expect("create from the manifest");
    assert_eq!(backup::restore(&couch, &into, &target, &manifest).await.expect("restore").documents, 4);
    let ids = all_ids(&couch, &db).await;
    assert_eq!(snapshot(&into, &ids).await, snapshot(&db, &ids).await);
    assert!(couch.database_info(&into).await.expect("info").is_partitioned());
    for name in [&db, &into] {
        couch.delete_database(name).await.expect("clean up");
    }
}

/// Bytes that do not compress (CouchDB would gzip a compressible type), from a xorshift.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn large_attachments_go_through_s3_in_parts_and_come_back_whole() {
    let test = "large_attachments_go_through_s3_in_parts_and_come_back_whole";
    let Some(couch) = ready_client(test).await else { return };
    let Some(target) = support::s3::target(test, &unique_name("large")) else { return };
    let db = fresh_db(&couch, "bk-large").await;
    // 5 × 4 MiB: more than one 16 MiB _bulk_get group, 4 MiB lines, 5 MiB upload parts.
    for i in 0..5u64 {
        let doc = json!({"i": i, "_attachments": {"big.bin": {"content_type": "application/octet-stream",
            "data": b64(&noise(4 << 20, i + 1))}}});
        couch.put_document(&db, &format!("big-{i}"), &doc).await.expect("a large document");
    }
    couch.put_document(&db, "small", &json!({"x": 1})).await.expect("small");
    let manifest = backup::back_up(&couch, &db, &target).await.expect("back_up");
    assert_eq!(manifest.documents, 6);
    let data = manifest.objects.iter().find(|o| o.name == backup::DATA_OBJECT).expect("the data object");
    assert!(data.bytes > 5 * (4 << 20) * 4 / 3, "{} bytes", data.bytes);

    let into = fresh_db(&couch, "bk-large-into").await;
    let restored = backup::restore(&couch, &into, &target, &manifest).await.expect("restore");
    assert_eq!(restored.documents, 6);
    let ids = all_ids(&couch, &db).await;
    let (want, got) = (snapshot(&db, &ids).await, snapshot(&into, &ids).await);
    assert_eq!(got, want);
    assert_eq!(want["big-4"][0]["_attachments"]["big.bin"]["bytes"].as_array().map(Vec::len), Some(4 << 20));
    for name in [&db, &into] {
        couch.delete_database(name).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_backup_stopped_half_way_leaves_no_manifest() {
    let Some(couch) = ready_client("a_backup_stopped_half_way_leaves_no_manifest").await else { return };
    let db = fresh_db(&couch, "bk-stop").await;
    for i in 0..4u64 {
        let doc = json!({"_attachments": {"big.bin": {"content_type": "application/octet-stream",
            "data": b64(&noise(4 << 20, i + 7))}}});
        couch.put_document(&db, &format!("big-{i}"), &doc).await.expect("a large document");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::volume(dir.path(), "stop").expect("volume");
    let first = backup::back_up(&couch, &db, &target).await.expect("a complete backup");
    assert_eq!(backup::read_manifest(&target).await.expect("read"), Some(first));

    // Another backup into the same prefix, stopped (its task dropped, as a crash would) once
    // its data file is being written: the earlier manifest is gone, no new one is there.
    let task = tokio::spawn({
        let (couch, db, target) = (couch.clone(), db.clone(), target.clone());
        async move { backup::back_up(&couch, &db, &target).await }
    });
    let folder = dir.path().join("stop");
    let staging = |f: &std::path::Path| {
        std::fs::read_dir(f)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("data.jsonl#"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !staging(&folder) {
        assert!(!task.is_finished(), "the backup finished before it could be stopped");
        assert!(std::time::Instant::now() < deadline, "no data file is being written");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.expect_err("stopped").is_cancelled());
    assert_eq!(backup::read_manifest(&target).await.expect("read"), None, "an incomplete backup has no manifest");

    // The next backup there completes.
    let again = backup::back_up(&couch, &db, &target).await.expect("a complete backup again");
    backup::verify(&target, &again).await.expect("verify");
    couch.delete_database(&db).await.expect("clean up");
}

/// The test store's settings and an object_store client of its bucket, for tampering.
fn raw_bucket(settings: &S3Settings) -> impl object_store::ObjectStore {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(&settings.secret_access_key)
        .with_endpoint(settings.endpoint.clone().expect("an endpoint"))
        .with_allow_http(true)
        .build()
        .expect("an S3 client")
}

#[tokio::test]
async fn a_corrupt_object_is_refused_before_anything_is_written() {
    use object_store::ObjectStoreExt;
    let test = "a_corrupt_object_is_refused_before_anything_is_written";
    let Some(couch) = ready_client(test).await else { return };
    let Some(settings) = support::s3::settings(test) else { return };
    let prefix = unique_name("corrupt");
    let target = Target::s3(&settings, &prefix).expect("target");
    let db = fresh_db(&couch, "bk-corrupt").await;
    fill(&couch, &db).await;
    let manifest = backup::back_up(&couch, &db, &target).await.expect("back_up");

    // One byte of the data file changed in the bucket, its size kept.
    let bucket = raw_bucket(&settings);
    let path = object_store::path::Path::from(format!("{prefix}/{}", backup::DATA_OBJECT));
    let mut bytes = bucket.get(&path).await.expect("get").bytes().await.expect("bytes").to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'1' { b'2' } else { b'1' };
    bucket.put(&path, bytes.into()).await.expect("overwrite");

    let check = backup::verify(&target, &manifest).await.expect_err("corrupt");
    assert!(matches!(&check, BackupError::Corrupt { object, .. } if object == backup::DATA_OBJECT), "{check:?}");
    let into = fresh_db(&couch, "bk-corrupt-into").await;
    let security = couch.security(&into).await.expect("security");
    let refused = backup::restore(&couch, &into, &target, &manifest).await.expect_err("corrupt");
    assert_eq!(refused.reason(), "BackupCorrupt", "{refused}");
    assert!(!refused.is_transient());
    assert_empty(&couch, &into).await;
    assert_eq!(couch.security(&into).await.expect("security"), security);

    // A missing object is corrupt too.
    bucket.delete(&path).await.expect("delete");
    let missing = backup::restore(&couch, &into, &target, &manifest).await.expect_err("missing");
    assert!(matches!(&missing, BackupError::Corrupt { detail, .. } if detail == "missing"), "{missing:?}");
    assert_empty(&couch, &into).await;
    for name in [&db, &into] {
        couch.delete_database(name).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_database_that_is_not_empty_is_refused_and_left_alone() {
    let Some(couch) = ready_client("a_database_that_is_not_empty_is_refused_and_left_alone").await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::volume(dir.path(), "b").expect("volume");
    let db = fresh_db(&couch, "bk-src").await;
    fill(&couch, &db).await;
    let manifest = backup::back_up(&couch, &db, &target).await.expect("back_up");
    let cb_file = target.prefix().to_owned() + "/" + backup::DATA_OBJECT;
    assert!(dir.path().join(&cb_file).exists());
    // A second backup under the same prefix replaces the first, manifest last.
    couch.put_document(&db, "later", &json!({"after": "the first backup"})).await.expect("later");
    let second = backup::back_up(&couch, &db, &target).await.expect("back_up again");
    assert_eq!(second.documents, manifest.documents + 1);
    assert_eq!(backup::read_manifest(&target).await.expect("read"), Some(second.clone()));
    backup::verify(&target, &second).await.expect("verify");
    let manifest = second;

    let busy = fresh_db(&couch, "bk-busy").await;
    couch.put_document(&busy, "already", &json!({"here": true})).await.expect("a document");
    let security = couch.security(&busy).await.expect("security");
    for attempt in [
        backup::restore(&couch, &busy, &target, &manifest).await,
        backup::restore_couchbackup_file(&couch, &busy, &target, backup::DATA_OBJECT).await,
    ] {
        let refused = attempt.expect_err("not empty");
        assert!(matches!(&refused, BackupError::NotEmpty { documents: 1, .. }), "{refused:?}");
        assert_eq!(refused.reason(), "DatabaseNotEmpty");
    }
    assert_eq!(all_ids(&couch, &busy).await, ["already"]);
    assert_eq!(couch.security(&busy).await.expect("security"), security);

    // A marker of other data does not open a database that is not empty.
    couch.put_document(&busy, backup::RESTORE_MARKER, &json!({"data_sha256": "other"})).await.expect("a marker");
    let refused = backup::restore(&couch, &busy, &target, &manifest).await.expect_err("not empty");
    assert_eq!(refused.reason(), "DatabaseNotEmpty");
    assert_eq!(all_ids(&couch, &busy).await, ["already"]);

    // An interrupted restore of the same backup (its marker, part of the documents) goes on,
    // and then the database is complete: a second restore is refused.
    let half = fresh_db(&couch, "bk-half").await;
    let data = manifest.objects.iter().find(|o| o.name == backup::DATA_OBJECT).expect("data");
    couch.put_document(&half, backup::RESTORE_MARKER, &json!({"data_sha256": data.sha256})).await.expect("marker");
    let text = std::fs::read_to_string(dir.path().join(&cb_file)).expect("the data file");
    let first: Vec<Value> = serde_json::from_str(text.lines().nth(1).expect("a line")).expect("documents");
    let some: Vec<Value> = first.into_iter().filter(|d| d.get("_attachments").is_none()).take(50).collect();
    assert!(couch.bulk_docs_replicated(&half, &some).await.expect("part of the documents").is_empty());
    let restored = backup::restore(&couch, &half, &target, &manifest).await.expect("goes on");
    assert_eq!(restored.documents, manifest.documents);
    assert_same(&couch, &db, &half, true).await;
    assert_eq!(couch.get_document(&half, backup::RESTORE_MARKER).await.expect("read"), None, "marker removed");
    let refused = backup::restore(&couch, &half, &target, &manifest).await.expect_err("complete");
    assert_eq!(refused.reason(), "DatabaseNotEmpty");

    // Deleted documents count: a database with only a tombstone is not empty either.
    let tomb = fresh_db(&couch, "bk-tomb").await;
    let rev = couch.put_document(&tomb, "x", &json!({})).await.expect("x");
    couch.delete_document(&tomb, "x", &rev).await.expect("delete x");
    let refused = backup::restore(&couch, &tomb, &target, &manifest).await.expect_err("not empty");
    assert!(matches!(refused, BackupError::NotEmpty { documents: 1, .. }), "{refused:?}");
    for name in [&db, &busy, &tomb, &half] {
        couch.delete_database(name).await.expect("clean up");
    }
}

#[tokio::test]
async fn store_failures_say_denied_or_unavailable() {
    let test = "store_failures_say_denied_or_unavailable";
    let Some(couch) = ready_client(test).await else { return };
    let Some(settings) = support::s3::settings(test) else { return };
    let db = fresh_db(&couch, "bk-store").await;
    couch.put_document(&db, "a", &json!({})).await.expect("a document");

    // Nothing under a new prefix: no backup, not an error.
    let empty = Target::s3(&settings, &unique_name("none")).expect("target");
    assert_eq!(backup::read_manifest(&empty).await.expect("read"), None);

    let wrong = S3Settings { secret_access_key: "0".repeat(40), ..settings.clone() };
    let target = Target::s3(&wrong, &unique_name("denied")).expect("target");
    let denied = backup::back_up(&couch, &db, &target).await.expect_err("wrong secret");
    eprintln!("wrong secret: {denied}");
    assert_eq!(denied.reason(), "StoreAccessDenied", "{denied}");
    assert!(!denied.is_transient());
    let shown = format!("{denied} {denied:?}");
    assert!(!shown.contains(&settings.secret_access_key) && !shown.contains(&wrong.secret_access_key), "{shown}");
    let read = backup::read_manifest(&target).await.expect_err("wrong secret");
    assert_eq!(read.reason(), "StoreAccessDenied", "{read}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
    let nobody = S3Settings { endpoint: Some(format!("http://127.0.0.1:{port}")), ..settings };
    let target = Target::s3(&nobody, "x").expect("target");
    let started = std::time::Instant::now();
    let down = backup::back_up(&couch, &db, &target).await.expect_err("nobody listens");
    eprintln!("nobody listens ({:?}): {down}", started.elapsed());
    assert_eq!(down.reason(), "StoreUnavailable", "{down}");
    assert!(down.is_transient(), "{down}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "gave up after {:?}", started.elapsed());
    let read = backup::read_manifest(&target).await.expect_err("nobody listens");
    assert_eq!(read.reason(), "StoreUnavailable");
    couch.delete_database(&db).await.expect("clean up");
}

#[tokio::test]
async fn couchrestore_reads_our_data_file() {
    let test = "couchrestore_reads_our_data_file";
    let Some(couch) = ready_client(test).await else { return };
    let Some(bin) = support::s3::couchbackup(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::volume(dir.path(), "ours").expect("volume");
    let db = fresh_db(&couch, "bk-ours").await;
    fill(&couch, &db).await;
    backup::back_up(&couch, &db, &target).await.expect("back_up");

    let into = fresh_db(&couch, "bk-cr").await;
    let file = std::fs::File::open(dir.path().join("ours").join(backup::DATA_OBJECT)).expect("the data file");
    support::s3::run_tool(&bin, "couchrestore", &["--db", &into], file.into(), Stdio::null());
    assert_same(&couch, &db, &into, false).await;
    for name in [&db, &into] {
        couch.delete_database(name).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_couchbackup_file_restores_and_stubs_are_refused() {
    let test = "a_couchbackup_file_restores_and_stubs_are_refused";
    let Some(couch) = ready_client(test).await else { return };
    let Some(bin) = support::s3::couchbackup(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("theirs")).expect("a folder");
    let target = Target::volume(dir.path(), "theirs").expect("volume");
    let db = fresh_db(&couch, "bk-theirs").await;
    fill(&couch, &db).await;
    let with = dir.path().join("theirs/with-attachments.txt");
    let with = with.to_str().expect("UTF-8 path");
    support::s3::run_tool(
        &bin,
        "couchbackup",
        &["--db", &db, "--attachments", "-o", with],
        Stdio::null(),
        Stdio::null(),
    );

    let into = fresh_db(&couch, "bk-cbr").await;
    let restored =
        backup::restore_couchbackup_file(&couch, &into, &target, "with-attachments.txt").await.expect("restore");
    assert_eq!(restored.documents, LEAVES);
    assert_same(&couch, &db, &into, false).await;

    // Without --attachments the file holds stubs: refused before anything is written.
    let stubs = dir.path().join("theirs/stubs.txt");
    support::s3::run_tool(
        &bin,
        "couchbackup",
        &["--db", &db, "-o", stubs.to_str().expect("UTF-8")],
        Stdio::null(),
        Stdio::null(),
    );
    let empty = fresh_db(&couch, "bk-stubs").await;
    let refused = backup::restore_couchbackup_file(&couch, &empty, &target, "stubs.txt").await.expect_err("stubs");
    assert_eq!(refused.reason(), "BackupFormat", "{refused}");
    assert!(refused.to_string().contains("stub"), "{refused}");
    assert_empty(&couch, &empty).await;
    for name in [&db, &into, &empty] {
        couch.delete_database(name).await.expect("clean up");
    }
}
