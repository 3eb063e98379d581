//! End-to-end, operator running: a CouchBackup of a CouchDatabase to a real S3 server
//! (SeaweedFS, `tools/testbin/start-s3.sh`) and to the backup volume, restored through
//! `CouchDatabase.spec.restoreFrom` into a new database and compared document by document
//! (every leaf revision, its history, attachments' bytes); the refusals a user meets (a
//! database with documents, a wrong key, bad YAML at apply time); a backup killed mid-way;
//! incremental chains; and CouchScheduledBackups taking and expiring backups on their own.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use couchshare::api::{BackupPhase, CouchBackup, CouchDatabase, CouchScheduledBackup, CouchServer};
use couchshare::couch::CouchClient;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use support::operator::{
    Operator, admin_secret, apply_json, events_for, server_manifest, wait_for, wait_not_ready, wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    ns: String,
    op: Operator,
    backup_dir: tempfile::TempDir,
}

/// The test S3 server (`tools/testbin/start-s3.sh`): endpoint, access key, secret key, bucket.
fn bucket(test: &str) -> Option<(String, String, String, String)> {
    let s3 = support::s3::settings(test)?;
    Some((s3.endpoint.unwrap_or_default(), s3.access_key_id, s3.secret_access_key, s3.bucket))
}

async fn setup(test: &str) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "backup").await;
    admin_secret(&client, &ns).await;
    let backup_dir = tempfile::tempdir().expect("backup dir");
    let dir = backup_dir.path().to_str().expect("UTF-8 temp dir").to_string();
    let op = Operator::start(&ns, &["--backup-dir", &dir]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some(Env { client, couch, ns, op, backup_dir })
}

fn apply(test: &str, env: &Env, yaml: &str) {
    let (ok, out) = k8s::kubectl_apply(test, &env.ns, yaml).expect("kubectl");
    assert!(ok, "kubectl apply failed: {out}");
}

/// The bucket's Secret, with the key `secret_key`.
fn bucket_secret(test: &str, env: &Env, name: &str, access_key: &str, secret_key: &str) {
    apply(
        test,
        env,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  accessKeyId: {access_key}\n  secretAccessKey: {secret_key}\n"
        ),
    );
}

fn s3_destination(endpoint: &str, bucket: &str, secret: &str) -> String {
    format!(
        "    s3:\n      bucket: {bucket}\n      endpoint: {endpoint}\n      pathStyle: true\n      prefix: e2e/\n      credentialsSecretRef:\n        name: {secret}\n"
    )
}

/// A GET on the test server as its admin, as JSON.
async fn get(path: &str) -> Value {
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let creds = couchdb::admin_credentials();
    reqwest::Client::new()
        .get(format!("{}/{path}", url.trim_end_matches('/')))
        .basic_auth(creds.username, Some(creds.password))
        .header("Accept", "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Every document of `db`, deleted ones included, as every leaf revision with its history and
/// its attachments inline: what a restore must give back exactly.
async fn every_leaf(db: &str) -> BTreeMap<String, Vec<Value>> {
    let changes = get(&format!("{db}/_changes?style=all_docs")).await;
    let mut out = BTreeMap::new();
    for change in changes["results"].as_array().expect("results") {
        let id = change["id"].as_str().expect("id").to_string();
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let encoded = if id.starts_with("_design/") { format!("_design/{}", &encoded[10..]) } else { encoded };
        let leaves = get(&format!("{db}/{encoded}?open_revs=all&revs=true&attachments=true")).await;
        let mut leaves: Vec<Value> = leaves.as_array().expect("leaves").iter().map(|l| l["ok"].clone()).collect();
        leaves.sort_by_key(|l| l["_rev"].as_str().unwrap_or_default().to_string());
        out.insert(id, leaves);
    }
    out
}

/// Every leaf of `db` once two reads half a second apart agree (up to 30 s). On a cluster a
/// read takes one copy of each shard range, and a copy may lag for a moment the quorum that
/// acknowledged a write (seen on the 3-node cluster: a read right after `fill` lacked one of its
/// 55 documents, which the backup and the restore had).
async fn settled_leaves(db: &str) -> BTreeMap<String, Vec<Value>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = every_leaf(db).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = every_leaf(db).await;
        if now == last || std::time::Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Every leaf of `db`, read until it is `expected` (up to 30 s, for the same lagging copy):
/// what it last read, which the caller compares, so a lost or extra leaf still fails.
async fn leaves_matching(db: &str, expected: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Vec<Value>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = every_leaf(db).await;
        if &now == expected || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Fills `db` with what the apps write: plain documents, one edited three times, a conflict
/// (two leaves), a deleted document, a design document, a text and a binary attachment.
async fn fill(couch: &CouchClient, db: &str) {
    let mut docs: Vec<Value> = (0..50)
        .map(|i| json!({"_id": format!("scene-{i:03}"), "title": format!("Scene {i}"), "words": i * 100}))
        .collect();
    docs.push(json!({"_id": "_design/app", "views": {"by_words": {"map": "function (doc) { if (doc.words) emit(doc.words, null); }"}}}));
    docs.push(json!({"_id": "cover", "_attachments": {
        "notes.txt": {"content_type": "text/plain", "data": "aGVsbG8sIGF0dGFjaG1lbnQK"},
        "cover.png": {"content_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}
    }}));
    couch.bulk_docs(db, &docs).await.expect("bulk docs");
    let mut rev = couch.put_document(db, "edited", &json!({"v": 1})).await.expect("put");
    for v in 2..=3 {
        rev = couch.put_document(db, "edited", &json!({"v": v, "_rev": rev})).await.expect("edit");
    }
    let gone = couch.put_document(db, "gone", &json!({"v": 1})).await.expect("put");
    couch.delete_document(db, "gone", &gone).await.expect("delete");
    // A conflict, as two replicas write it: two leaves of one document.
    let conflict = json!({"docs": [
        {"_id": "conflicted", "_rev": "2-bbbb", "side": "b", "_revisions": {"start": 2, "ids": ["bbbb", "aaaa"]}},
        {"_id": "conflicted", "_rev": "2-cccc", "side": "c", "_revisions": {"start": 2, "ids": ["cccc", "aaaa"]}}
    ], "new_edits": false});
    write_leaves(db, conflict["docs"].clone()).await;
}

/// Writes revisions as a replica does (`new_edits: false`).
async fn write_leaves(db: &str, docs: Value) {
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let creds = couchdb::admin_credentials();
    let status = reqwest::Client::new()
        .post(format!("{}/{db}/_bulk_docs", url.trim_end_matches('/')))
        .basic_auth(creds.username, Some(creds.password))
        .json(&json!({"docs": docs, "new_edits": false}))
        .send()
        .await
        .expect("a replica's write")
        .status();
    assert!(status.is_success(), "a replica's write: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_backed_up_to_a_bucket_comes_back_exactly_in_a_new_database() {
    let test = "a_database_backed_up_to_a_bucket_comes_back_exactly_in_a_new_database";
    let Some(env) = setup(test).await else { return };
    let Some((endpoint, access, secret, bucket_name)) = bucket(test) else { return };
    bucket_secret(test, &env, "bucket", &access, &secret);
    let source = couchdb::unique_name("drafft");
    let restored = couchdb::unique_name("drafft-restored");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: drafft\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n  security:\n    members:\n      roles: [writers]\n"
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "drafft", &env.op).await;
    fill(&env.couch, &source).await;
    let before = settled_leaves(&source).await;

    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: drafft-1\nspec:\n  database: drafft\n  destination:\n{}",
            s3_destination(&endpoint, &bucket_name, "bucket")
        ),
    );
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let backup = wait_ready(&backups, "drafft-1", &env.op).await;
    let status = backup.status.expect("status");
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    assert_eq!(status.location.as_deref(), Some(format!("s3://{bucket_name}/e2e/{}/drafft-1/", env.ns).as_str()));
    // 50 scenes, the design document, the cover, edited, gone (a tombstone), two conflict leaves.
    assert_eq!(status.documents, Some(56), "every leaf revision, tombstones and conflicts included");
    assert!(!status.objects.is_empty(), "objects are listed");
    for object in &status.objects {
        assert!(object.sha256.len() == 64 && object.sha256.chars().all(|c| c.is_ascii_hexdigit()), "{object:?}");
        assert!(object.bytes > 0, "{object:?}");
    }
    assert!(events_for(&env.client, &env.ns, "drafft-1").await.iter().any(|(r, _)| r == "Completed"));

    // The source goes; a new database is filled from the backup.
    env.couch.delete_database(&source).await.expect("delete the source");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: drafft-restored\nspec:\n  serverRef: {{name: main}}\n  name: {restored}\n  security:\n    members:\n      roles: [readers]\n  restoreFrom:\n    backup: drafft-1\n"
        ),
    );
    let db = wait_ready(&databases, "drafft-restored", &env.op).await;
    let restore = db.status.and_then(|s| s.restore).expect("status.restore");
    assert_eq!(restore.source, "backup/drafft-1");
    assert_eq!(restore.documents, Some(56));
    assert!(restore.completed_at.is_some());
    let after = leaves_matching(&restored, &before).await;
    assert_eq!(after.len(), before.len(), "the same documents");
    for (id, leaves) in &before {
        assert_eq!(after.get(id), Some(leaves), "document {id}: every leaf, its history and attachments");
    }
    assert_eq!(after["conflicted"].len(), 2, "the conflict is still a conflict");
    // `_security` is the declared one, not the backup's: a restore brings back no revoked access.
    let security = get(&format!("{restored}/_security")).await;
    assert_eq!(security["members"]["roles"], json!(["readers"]), "{security}");
    assert!(events_for(&env.client, &env.ns, "drafft-restored").await.iter().any(|(r, _)| r == "Restored"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_backup_restores_and_a_restore_into_a_database_with_documents_is_refused() {
    let test = "a_volume_backup_restores_and_a_restore_into_a_database_with_documents_is_refused";
    let Some(env) = setup(test).await else { return };
    let source = couchdb::unique_name("inventory");
    let busy = couchdb::unique_name("inventory-busy");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: inventory\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n---\napiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: busy\nspec:\n  serverRef: {{name: main}}\n  name: {busy}\n"
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "inventory", &env.op).await;
    wait_ready(&databases, "busy", &env.op).await;
    fill(&env.couch, &source).await;
    env.couch.put_document(&busy, "mine", &json!({"keep": true})).await.expect("a document of its own");
    apply(
        test,
        &env,
        "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: inventory-1\nspec:\n  database: inventory\n  destination:\n    volume: {prefix: nightly}\n",
    );
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let backup = wait_ready(&backups, "inventory-1", &env.op).await;
    let folder = format!("{}/nightly/inventory-1/", env.ns);
    assert_eq!(backup.status.and_then(|s| s.location), Some(format!("volume:{folder}")));
    let manifest = env.backup_dir.path().join(&folder).join("manifest.json");
    assert!(manifest.is_file(), "the manifest is on the volume at {}", manifest.display());

    // Restoring into the database that holds a document: refused, and nothing written.
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: busy\nspec:\n  serverRef: {{name: main}}\n  name: {busy}\n  restoreFrom: {{backup: inventory-1}}\n"
        ),
    );
    let refused = wait_not_ready(&databases, "busy", &env.op, "DatabaseNotEmpty").await;
    assert!(refused.status.and_then(|s| s.restore).is_none(), "no restore is recorded");
    let info = env.couch.database_info(&busy).await.expect("info");
    assert_eq!((info.doc_count, info.doc_del_count), (1, 0), "nothing was written into it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_whose_key_the_bucket_refuses_says_so_and_bad_destinations_are_refused_at_apply() {
    let test = "a_backup_whose_key_the_bucket_refuses_says_so_and_bad_destinations_are_refused_at_apply";
    let Some(env) = setup(test).await else { return };
    let Some((endpoint, access, _, bucket_name)) = bucket(test) else { return };
    bucket_secret(test, &env, "wrong", &access, "not-the-secret-key");
    let source = couchdb::unique_name("notes");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: notes\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n"
        ),
    );
    wait_ready(&Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns), "notes", &env.op).await;
    let backup = |name: &str, destination: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: {name}\nspec:\n  database: notes\n  destination:\n{destination}"
        )
    };
    apply(test, &env, &backup("denied", &s3_destination(&endpoint, &bucket_name, "wrong")));
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let denied = wait_not_ready(&backups, "denied", &env.op, "StoreAccessDenied").await;
    let status = denied.status.expect("status");
    assert_ne!(status.phase, Some(BackupPhase::Completed));
    let message = support::operator::ready(&status).map(|r| r.2).unwrap_or_default();
    assert!(!message.contains("not-the-secret-key"), "no secret in the status: {message}");
    assert!(
        events_for(&env.client, &env.ns, "denied").await.iter().any(|(r, _)| r == "StoreAccessDenied"),
        "a Warning Event names the reason"
    );

    // What the schema says at apply time: one destination, no way out of the namespace's folder,
    // and a backup's spec never changes.
    let both = format!("{}    volume: {{}}\n", s3_destination(&endpoint, &bucket_name, "wrong"));
    for (yaml, says) in [
        (backup("both", &both), "set exactly one of s3 and volume"),
        (backup("neither", "    {}\n"), "set exactly one of s3 and volume"),
        (backup("escape", "    volume: {prefix: ../other-team}\n"), "relative path without .."),
    ] {
        let (ok, out) = k8s::kubectl_apply(test, &env.ns, &yaml).expect("kubectl");
        assert!(!ok && out.contains(says), "refused with {says:?}: {out}");
    }
    let (ok, out) = k8s::kubectl_apply(test, &env.ns, &backup("denied", "    volume: {}\n")).expect("kubectl");
    assert!(!ok && out.contains("immutable"), "a backup's spec is immutable: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_killed_mid_way_is_never_marked_complete_and_the_next_run_completes() {
    let test = "a_backup_killed_mid_way_is_never_marked_complete_and_the_next_run_completes";
    let Some(mut env) = setup(test).await else { return };
    let source = couchdb::unique_name("big");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: big\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n"
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "big", &env.op).await;
    let filler = "x".repeat(2_000);
    for batch in 0..20 {
        let docs: Vec<Value> =
            (0..1_000).map(|i| json!({"_id": format!("item-{batch:02}-{i:04}"), "text": filler})).collect();
        env.couch.bulk_docs(&source, &docs).await.expect("bulk docs");
    }
    apply(
        test,
        &env,
        "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: big-1\nspec:\n  database: big\n  destination:\n    volume: {}\n",
    );
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let running = couchdb::eventually(Duration::from_secs(45), || async {
        let b = backups.get_opt("big-1").await.ok().flatten()?;
        let phase = b.status.as_ref().and_then(|s| s.phase);
        (phase.is_some()).then_some(phase)
    })
    .await
    .expect("the backup starts");
    assert_eq!(running, Some(BackupPhase::Running), "the backup was caught running (20 MB take longer than a poll)");
    env.op.kill();
    let manifest = env.backup_dir.path().join(format!("{}/big-1/manifest.json", env.ns));
    let killed = backups.get("big-1").await.expect("backup");
    assert_eq!(killed.status.and_then(|s| s.phase), Some(BackupPhase::Running), "never Completed without its run");
    assert!(!manifest.exists(), "a run cut short leaves no manifest, so nothing can restore it");

    let dir = env.backup_dir.path().to_str().expect("UTF-8").to_string();
    env.op = Operator::start(&env.ns, &["--backup-dir", &dir]);
    let done = wait_ready(&backups, "big-1", &env.op).await;
    assert_eq!(done.status.as_ref().and_then(|s| s.documents), Some(20_000));
    assert!(manifest.is_file());
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: big-restored\nspec:\n  serverRef: {{name: main}}\n  name: {source}-r\n  restoreFrom: {{backup: big-1}}\n"
        ),
    );
    let restored = wait_ready(&databases, "big-restored", &env.op).await;
    let written = restored.status.and_then(|s| s.restore).and_then(|r| r.documents);
    assert_eq!(written, Some(20_000), "the restore wrote every document of the second run's backup");
    // On a cluster, `doc_count` adds up one copy of each shard, which may lag the writes the
    // restore's quorum acknowledged (four batches in flight): read until it has them all.
    let count = couchdb::eventually(Duration::from_secs(30), || async {
        let info = env.couch.database_info(&format!("{source}-r")).await.ok()?;
        (info.doc_count == 20_000).then_some(info.doc_count)
    })
    .await;
    let last = env.couch.database_info(&format!("{source}-r")).await.expect("info").doc_count;
    assert_eq!(count, Some(20_000), "the second run's backup restores whole (doc_count now {last})");
}

/// Team B tries every way to a backup of team A's on the same server and the same backup
/// volume: naming A's database, A's backup, and A's folder on the volume through a prefix.
#[tokio::test(flavor = "multi_thread")]
async fn another_namespace_reaches_no_backup_and_no_database_of_the_first() {
    let test = "another_namespace_reaches_no_backup_and_no_database_of_the_first";
    let Some(env) = support::tenants::tenants(test, "  allowedNamespaces: {from: All}\n").await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let secret_db = couchdb::unique_name("payroll");
    env.apply(
        &a,
        &format!("apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: payroll\nspec:\n  serverRef: {{name: main}}\n  name: {secret_db}\n---\napiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: {b}\nspec:\n  database: payroll\n  destination:\n    volume: {{}}\n"),
    );
    wait_ready(&env.api::<CouchDatabase>(&a), "payroll", &env.op).await;
    env.couch.put_document(&secret_db, "salary", &json!({"amount": 1})).await.expect("a document");
    // A's backup is named after B's namespace: with the prefix first on the volume, B's prefix
    // `<a>` would have made B's folder A's backup's.
    let mine = env.api::<CouchBackup>(&a);
    let backup = wait_for(&mine, &b, &env.op, "Completed", |o| {
        o.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed)
    })
    .await;
    assert_eq!(backup.status.and_then(|s| s.location), Some(format!("volume:{a}/{b}/")));

    let server = format!("{{name: main, namespace: {a}}}");
    // Names B may declare on A's server: its own, `<b>_...`.
    let stolen = format!("{b}_{}", couchdb::unique_name("stolen"));
    let peek = format!("{b}_{}", couchdb::unique_name("peek"));
    env.apply(
        &b,
        &format!("apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: copy\nspec:\n  database: payroll\n  destination:\n    volume: {{}}\n---\napiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: stolen\nspec:\n  serverRef: {server}\n  name: {stolen}\n  restoreFrom:\n    couchbackupFile:\n      source: {{volume: {{prefix: {a}}}}}\n      key: data.jsonl\n---\napiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: peek\nspec:\n  serverRef: {server}\n  name: {peek}\n  restoreFrom: {{backup: {b}}}\n"),
    );
    // B's CouchBackup names a database B does not have.
    wait_not_ready(&env.api::<CouchBackup>(&b), "copy", &env.op, "DatabaseNotFound").await;
    // B's prefix `<a>` is a folder below B's own namespace on the volume: there is no file there.
    let theirs = env.api::<CouchDatabase>(&b);
    let refused = wait_not_ready(&theirs, "stolen", &env.op, "BackupFormat").await;
    let message = support::operator::ready(&refused).map(|r| r.2).unwrap_or_default();
    assert!(message.contains(&format!("under {b}/{a}")), "the file is looked for below B's folder: {message}");
    // B's restoreFrom.backup names a CouchBackup of B's namespace, which does not exist.
    let waiting = wait_not_ready(&theirs, "peek", &env.op, "Waiting").await;
    let message = support::operator::ready(&waiting).map(|r| r.2).unwrap_or_default();
    assert!(message.contains(&format!("CouchBackup {b}/{b}")), "{message}");
    for db in [&stolen, &peek] {
        let info = env.couch.database_info(db).await.expect("info");
        assert_eq!(info.doc_count + info.doc_del_count, 0, "nothing of A's reached {db}");
    }
    let volume = support::operator::Operator::cluster_wide_backup_dir(&env.kubeconfig);
    assert!(volume.join(&a).join(&b).join("manifest.json").is_file(), "A's backup is on the volume");
    assert!(!volume.join(&b).exists(), "B wrote nothing on the volume");
}

/// What `restoreFrom` gives back from an incremental chain is the source as the newest backup
/// saw it: edits, deletions, new conflicts made after the full backup included.
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_chain_restores_the_edits_and_deletions_made_after_the_full_backup() {
    let test = "an_incremental_chain_restores_the_edits_and_deletions_made_after_the_full_backup";
    let Some(env) = setup(test).await else { return };
    let source = couchdb::unique_name("chain");
    let database = |name: &str, couch_name: &str, extra: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: {name}\nspec:\n  serverRef: {{name: main}}\n  name: {couch_name}\n{extra}"
        )
    };
    let backup = |name: &str, base: Option<&str>| {
        let base = base.map(|b| format!("  incrementalFrom: {b}\n")).unwrap_or_default();
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: {name}\nspec:\n  database: chain\n  destination:\n    volume: {{}}\n{base}"
        )
    };
    apply(test, &env, &database("chain", &source, ""));
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "chain", &env.op).await;
    fill(&env.couch, &source).await;
    let at_full = settled_leaves(&source).await;
    apply(test, &env, &backup("chain-0", None));
    let full = wait_ready(&backups, "chain-0", &env.op).await.status.expect("status");

    // After the full backup: an edit, a deletion, a new document, a new conflict.
    let scene = env.couch.get_document(&source, "scene-001").await.expect("get").expect("scene-001");
    let mut edited = scene.clone();
    edited["title"] = json!("Scene one, rewritten");
    env.couch.put_document(&source, "scene-001", &edited).await.expect("edit");
    let rev = env.couch.get_document(&source, "scene-002").await.expect("get").expect("scene-002")["_rev"]
        .as_str()
        .expect("rev")
        .to_string();
    env.couch.delete_document(&source, "scene-002", &rev).await.expect("delete");
    env.couch.put_document(&source, "added-later", &json!({"n": 1})).await.expect("add");
    // The base chain is named in the backup's spec: the second increment reads since the first.
    apply(test, &env, &backup("chain-1", Some("chain-0")));
    let first = wait_ready(&backups, "chain-1", &env.op).await.status.expect("status");
    assert_eq!(first.since_seq, full.update_seq, "an increment starts where its base ended");
    // Only what changed: the edit, the deletion, the new document. On a cluster `_changes`
    // since a sequence is at least once (a shard read from another copy may replay a few rows),
    // so an increment holds these three and possibly a replayed one, never the whole database.
    let changed = first.documents.unwrap_or_default();
    assert!((3..56).contains(&changed), "only what changed (3, a replay or two on a cluster): {changed}");
    let rev = env.couch.get_document(&source, "added-later").await.expect("get").expect("added-later")["_rev"]
        .as_str()
        .expect("rev")
        .to_string();
    env.couch.delete_document(&source, "added-later", &rev).await.expect("delete");
    // Two replicas' edits of scene-003: a conflict born after the first increment.
    let rev = env.couch.get_document(&source, "scene-003").await.expect("get").expect("scene-003")["_rev"]
        .as_str()
        .expect("rev")
        .to_string();
    let parent = rev.split_once('-').map(|(_, h)| h.to_string()).expect("a revision hash");
    write_leaves(
        &source,
        json!([
            {"_id": "scene-003", "_rev": "2-aaaa", "by": "a", "_revisions": {"start": 2, "ids": ["aaaa", parent]}},
            {"_id": "scene-003", "_rev": "2-bbbb", "by": "b", "_revisions": {"start": 2, "ids": ["bbbb", parent]}}
        ]),
    )
    .await;
    let at_last = settled_leaves(&source).await;
    apply(test, &env, &backup("chain-2", Some("chain-1")));
    wait_ready(&backups, "chain-2", &env.op).await;

    // The chain restores to the newest state; the full backup alone to the oldest.
    let newest = couchdb::unique_name("chain-newest");
    let oldest = couchdb::unique_name("chain-oldest");
    apply(test, &env, &database("newest", &newest, "  restoreFrom: {backup: chain-2}\n"));
    apply(test, &env, &database("oldest", &oldest, "  restoreFrom: {backup: chain-0}\n"));
    let restored = wait_ready(&databases, "newest", &env.op).await;
    wait_ready(&databases, "oldest", &env.op).await;
    // 56 leaves of the full backup, 3 of each increment (more when a cluster replayed a row,
    // written again as it was: `new_edits: false` keeps one copy of a revision).
    let written = restored.status.and_then(|s| s.restore).and_then(|r| r.documents).unwrap_or_default();
    assert!((56 + 3 + 3..2 * 56).contains(&written), "the chain's leaves: {written}");
    assert_eq!(
        leaves_matching(&newest, &at_last).await,
        at_last,
        "the chain gives the source as the last increment saw it"
    );
    assert_eq!(
        leaves_matching(&oldest, &at_full).await,
        at_full,
        "the full backup alone gives the source as it was then"
    );
}

async fn wait_long<K>(api: &Api<K>, name: &str, op: &Operator, secs: u64, what: &str, accept: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let found = couchdb::eventually(Duration::from_secs(secs), || async {
        api.get_opt(name).await.ok().flatten().filter(|o| accept(o))
    })
    .await;
    found.unwrap_or_else(|| panic!("timed out after {secs} s waiting for {name}: {what}\n{}", op.tail()))
}

/// Two schedules firing every minute: an incremental one whose second backup is incremental
/// from its first (and retention, at one backup, keeps the base it needs), and a full one whose
/// second backup expires its first, in Kubernetes and in the store. About two minutes.
#[tokio::test(flavor = "multi_thread")]
async fn schedules_take_full_and_incremental_backups_and_retention_keeps_what_a_restore_needs() {
    let test = "schedules_take_full_and_incremental_backups_and_retention_keeps_what_a_restore_needs";
    let Some(env) = setup(test).await else { return };
    let source = couchdb::unique_name("timed");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: timed\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n"
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "timed", &env.op).await;
    fill(&env.couch, &source).await;
    let schedule = |name: &str, mode: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchScheduledBackup\nmetadata:\n  name: {name}\nspec:\n  database: timed\n  schedule: \"* * * * *\"\n  mode: {mode}\n  fullEvery: 3\n  retention: {{count: 1}}\n  destination:\n    volume: {{prefix: scheduled}}\n"
        )
    };
    apply(test, &env, &format!("{}---\n{}", schedule("often", "Incremental"), schedule("whole", "Full")));
    let schedules = Api::<CouchScheduledBackup>::namespaced(env.client.clone(), &env.ns);
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let ready = wait_ready(&schedules, "often", &env.op).await;
    let status = ready.status.expect("status");
    assert_eq!(status.interval_seconds, Some(60));
    assert!(status.next_schedule_time.is_some());

    // The first occurrence: a full backup of each.
    let first = |s: &CouchScheduledBackup| s.status.as_ref().is_some_and(|s| s.last_successful_backup.is_some());
    let often = wait_long(&schedules, "often", &env.op, 100, "a first backup", first).await;
    let whole = wait_long(&schedules, "whole", &env.op, 100, "a first backup", first).await;
    let often_1 = often.status.and_then(|s| s.last_successful_backup).expect("first");
    let whole_1 = whole.status.and_then(|s| s.last_successful_backup).expect("first");
    assert_eq!(backups.get(&often_1).await.expect("backup").spec.incremental_from, None, "a chain starts full");
    env.couch.put_document(&source, "between", &json!({"n": 2})).await.expect("a change between the two");

    // The second occurrence.
    let second = |first: String| {
        move |s: &CouchScheduledBackup| {
            s.status.as_ref().and_then(|s| s.last_successful_backup.as_ref()).is_some_and(|b| *b != first)
        }
    };
    let often = wait_long(&schedules, "often", &env.op, 100, "a second backup", second(often_1.clone())).await;
    let whole = wait_long(&schedules, "whole", &env.op, 100, "a second backup", second(whole_1.clone())).await;
    let often_2 = often.status.as_ref().and_then(|s| s.last_successful_backup.clone()).expect("second");
    let whole_2 = whole.status.as_ref().and_then(|s| s.last_successful_backup.clone()).expect("second");
    let increment = backups.get(&often_2).await.expect("backup");
    assert_eq!(increment.spec.incremental_from.as_deref(), Some(often_1.as_str()), "incremental from the first");
    assert_eq!(increment.status.and_then(|s| s.documents), Some(1), "holds the one change");
    // Retention at one: the incremental schedule keeps its base, the full one lets its first go.
    assert!(backups.get_opt(&often_1).await.expect("get").is_some(), "the base of a kept increment stays");
    let volume = env.backup_dir.path().join(&env.ns).join("scheduled");
    couchdb::eventually(Duration::from_secs(30), || async {
        backups.get_opt(&whole_1).await.expect("get").is_none().then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{whole_1} expired\n{}", env.op.tail()));
    assert!(!volume.join(&whole_1).join("manifest.json").exists(), "its objects left the store");
    assert!(!volume.join(&whole_1).join("data.jsonl").exists(), "its objects left the store");
    assert!(volume.join(&whole_2).join("manifest.json").is_file());
    assert!(
        events_for(&env.client, &env.ns, "whole").await.iter().any(|(r, _)| r == "BackupExpired"),
        "an Event says what retention deleted"
    );

    // The newest backup of the incremental schedule restores the source as it is.
    let now = settled_leaves(&source).await;
    let restored = couchdb::unique_name("timed-restored");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: timed-restored\nspec:\n  serverRef: {{name: main}}\n  name: {restored}\n  restoreFrom: {{scheduledBackup: often}}\n"
        ),
    );
    let db = wait_ready(&databases, "timed-restored", &env.op).await;
    assert_eq!(db.status.and_then(|s| s.restore).map(|r| r.source), Some("scheduledBackup/often".to_string()));
    assert_eq!(leaves_matching(&restored, &now).await, now);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_schedule_or_a_retention_that_keeps_nothing_is_refused_at_apply() {
    let test = "a_bad_schedule_or_a_retention_that_keeps_nothing_is_refused_at_apply";
    let Some(env) = setup(test).await else { return };
    let schedule = |cron: &str, retention: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchScheduledBackup\nmetadata:\n  name: nightly\nspec:\n  database: drafft\n  schedule: \"{cron}\"\n  retention: {retention}\n  destination:\n    volume: {{}}\n"
        )
    };
    for (yaml, says) in [
        (schedule("61 2 * * *", "{count: 7}"), "must be a cron expression"),
        (schedule("0 2 * *", "{count: 7}"), "must be a cron expression"),
        (schedule("*/0 * * * *", "{count: 7}"), "must be a cron expression"),
        (schedule("0 2 * * *", "{count: 0}"), "spec.retention.count"),
        (schedule("0 2 * * *", "{count: 3, maxAge: 0d}"), "spec.retention.maxAge"),
        (schedule("0 2 * * *", "{count: 3, maxAge: 5m}"), "spec.retention.maxAge"),
    ] {
        let (ok, out) = k8s::kubectl_apply(test, &env.ns, &yaml).expect("kubectl");
        assert!(!ok && out.contains(says), "refused with {says:?}: {out}");
    }
    for good in ["0 2 * * *", "*/15 * * * mon-fri", "@daily", "30 3 1 jan,jul *"] {
        let (ok, out) = k8s::kubectl_apply(test, &env.ns, &schedule(good, "{count: 7, maxAge: 30d}")).expect("kubectl");
        assert!(ok, "{good} is accepted: {out}");
    }
    let restore = "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: back\nspec:\n  serverRef: {name: main}\n  restoreFrom: {backup: one, pointInTime: \"2026-12-01T00:00:00Z\"}\n";
    let (ok, out) = k8s::kubectl_apply(test, &env.ns, restore).expect("kubectl");
    assert!(!ok && out.contains("pointInTime goes with scheduledBackup"), "{out}");
}

/// A file the real `couchbackup --attachments` wrote onto the backup volume fills a new
/// database through `restoreFrom.couchbackupFile`; a bucket nobody listens at is
/// `StoreUnavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn a_couchbackup_file_restores_through_restore_from_and_a_store_that_is_down_says_so() {
    let test = "a_couchbackup_file_restores_through_restore_from_and_a_store_that_is_down_says_so";
    let Some(env) = setup(test).await else { return };
    let Some(bin) = support::s3::couchbackup(test) else { return };
    let source = couchdb::unique_name("legacy");
    let restored = couchdb::unique_name("legacy-restored");
    // One copy of each shard: couchbackup reads `_changes` of whichever copies a cluster's
    // coordinator picks, which may lag a write acknowledged a moment ago (seen once on the
    // 3-node cluster: couchbackup's file lacked the document written last). That is CouchDB's
    // and couchbackup's consistency, not what this test is about.
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: legacy\nspec:\n  serverRef: {{name: main}}\n  name: {source}\n  shards: {{copies: 1}}\n"
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&databases, "legacy", &env.op).await;
    fill(&env.couch, &source).await;
    let before = settled_leaves(&source).await;
    // What a team backed up by hand before couchshare, now on the backup volume.
    let folder = env.backup_dir.path().join(&env.ns).join("imported");
    std::fs::create_dir_all(&folder).expect("a folder on the volume");
    let file = std::fs::File::create(folder.join("legacy.txt")).expect("the file");
    support::s3::run_tool(
        &bin,
        "couchbackup",
        &["--db", &source, "--attachments"],
        std::process::Stdio::null(),
        std::process::Stdio::from(file),
    );
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: legacy-restored\nspec:\n  serverRef: {{name: main}}\n  name: {restored}\n  shards: {{copies: 1}}\n  restoreFrom:\n    couchbackupFile:\n      source: {{volume: {{prefix: imported}}}}\n      key: legacy.txt\n"
        ),
    );
    let db = wait_ready(&databases, "legacy-restored", &env.op).await;
    assert_eq!(db.status.and_then(|s| s.restore).map(|r| r.source), Some("couchbackupFile/legacy.txt".to_string()));
    assert_eq!(
        leaves_matching(&restored, &before).await,
        before,
        "couchbackup's file gives back every leaf and attachment"
    );

    // A bucket at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    bucket_secret(test, &env, "any-key", "AKIA", "secret");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: nowhere\nspec:\n  database: legacy\n  destination:\n{}",
            s3_destination(&format!("http://127.0.0.1:{dead}"), "backups", "any-key")
        ),
    );
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let down = wait_not_ready(&backups, "nowhere", &env.op, "StoreUnavailable").await;
    assert_ne!(down.status.and_then(|s| s.phase), Some(BackupPhase::Completed));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_by_selector_backs_up_each_matching_database_and_each_restores_on_its_own() {
    let test = "a_backup_by_selector_backs_up_each_matching_database_and_each_restores_on_its_own";
    let Some(env) = setup(test).await else { return };
    let (drafft, inventory, payroll) =
        (couchdb::unique_name("drafft"), couchdb::unique_name("inventory"), couchdb::unique_name("payroll"));
    let database = |name: &str, couch: &str, tier: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: {name}\n  labels: {{backup: {tier}}}\nspec:\n  serverRef: {{name: main}}\n  name: {couch}\n---\n"
        )
    };
    // A group applied before any database matches waits for one.
    let group_yaml = |name: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: {name}\nspec:\n  selector: {{matchLabels: {{backup: nightly}}}}\n  destination:\n    volume: {{prefix: groups}}\n"
        )
    };
    apply(test, &env, &group_yaml("early"));
    let backups = Api::<CouchBackup>::namespaced(env.client.clone(), &env.ns);
    let early = wait_not_ready(&backups, "early", &env.op, "Waiting").await;
    let (_, _, message) = support::operator::ready(&early).expect("Ready");
    assert!(message.contains("selector matches"), "{message}");

    // The databases, then the group: it takes those that match when it starts.
    apply(
        test,
        &env,
        &format!(
            "{}{}{}",
            database("drafft", &drafft, "nightly"),
            database("inventory", &inventory, "nightly"),
            database("payroll", &payroll, "never"),
        ),
    );
    let databases = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    for name in ["drafft", "inventory", "payroll"] {
        wait_ready(&databases, name, &env.op).await;
    }
    fill(&env.couch, &drafft).await;
    env.couch.put_document(&inventory, "shelf", &json!({"items": 3})).await.expect("a document");
    apply(test, &env, &group_yaml("nightly"));

    let group = wait_long(&backups, "nightly", &env.op, 60, "the group to complete", |b: &CouchBackup| {
        b.status.as_ref().is_some_and(|s| s.phase == Some(BackupPhase::Completed))
    })
    .await;
    let status = group.status.clone().expect("status");
    assert_eq!(
        status.backups,
        ["nightly-drafft", "nightly-inventory"],
        "one backup per matching database, not payroll"
    );
    let mut members = Vec::new();
    for name in &status.backups {
        members.push(backups.get(name).await.expect("a member"));
    }
    for member in &members {
        let owner = member.metadata.owner_references.as_ref().and_then(|o| o.first()).expect("an owner");
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CouchBackup", "nightly"));
    }
    let sum = |f: fn(&couchshare::api::CouchBackupStatus) -> Option<i64>| {
        members.iter().filter_map(|m| m.status.as_ref().and_then(f)).sum::<i64>()
    };
    assert_eq!(status.documents, Some(sum(|s| s.documents)), "the group's documents are its members'");
    assert_eq!(status.bytes, Some(sum(|s| s.bytes)));
    assert!(status.documents.unwrap_or_default() > 1, "{status:?}");
    let (_, reason, message) = support::operator::ready(&group).expect("Ready");
    assert_eq!(reason, "Completed", "{message}");
    assert!(message.contains("nightly-drafft") && message.contains("nightly-inventory"), "{message}");

    // A database labelled later is not added: a backup is the record of one run.
    apply(test, &env, &database("payroll", &payroll, "nightly"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(backups.get("nightly").await.expect("group").status.expect("status").backups.len(), 2);
    assert!(backups.get_opt("nightly-payroll").await.expect("get").is_none());

    // Restoring from the group itself is refused, naming its members; from a member, it works.
    let restore = |name: &str, couch: &str, from: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: {name}\nspec:\n  serverRef: {{name: main}}\n  name: {couch}\n  restoreFrom: {{backup: {from}}}\n"
        )
    };
    apply(test, &env, &restore("from-group", &couchdb::unique_name("from-group"), "nightly"));
    let refused = wait_not_ready(&databases, "from-group", &env.op, "InvalidSpec").await;
    let (_, _, message) = support::operator::ready(&refused).expect("Ready");
    assert!(message.contains("nightly-drafft"), "the refusal names the backups to restore from: {message}");
    let restored = couchdb::unique_name("drafft-restored");
    apply(test, &env, &restore("restored", &restored, "nightly-drafft"));
    wait_ready(&databases, "restored", &env.op).await;
    let source_leaves = settled_leaves(&drafft).await;
    assert_eq!(
        leaves_matching(&restored, &source_leaves).await,
        source_leaves,
        "the member restores its database exactly"
    );

    // A group whose members cannot complete (the bucket refuses the key) says which and why; a
    // member deleted before it completed is made again.
    let Some((endpoint, access, _, bucket_name)) = bucket(test) else { return };
    bucket_secret(test, &env, "wrong", &access, "not-the-secret-key");
    apply(
        test,
        &env,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: denied\nspec:\n  selector: {{matchLabels: {{backup: nightly}}}}\n  destination:\n{}",
            s3_destination(&endpoint, &bucket_name, "wrong")
        ),
    );
    let member = wait_not_ready(&backups, "denied-drafft", &env.op, "StoreAccessDenied").await;
    let waits =
        wait_long(&backups, "denied", &env.op, 45, "the group to name its refused member", |b: &CouchBackup| {
            support::operator::ready(b).is_some_and(|(_, _, m)| m.contains("denied-drafft (StoreAccessDenied)"))
        })
        .await;
    assert_ne!(waits.status.and_then(|s| s.phase), Some(BackupPhase::Completed));
    backups.delete("denied-drafft", &Default::default()).await.expect("delete a member");
    let again = wait_long(&backups, "denied-drafft", &env.op, 30, "the member made again", |b: &CouchBackup| {
        b.metadata.uid.is_some() && b.metadata.uid != member.metadata.uid
    })
    .await;
    assert_eq!(again.spec.database.as_deref(), Some("drafft"));

    // And the schema: exactly one of database and selector; incrementalFrom only with database.
    let spec = |body: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata:\n  name: bad\nspec:\n{body}  destination:\n    volume: {{}}\n"
        )
    };
    for (yaml, says) in [
        (spec("  database: drafft\n  selector: {matchLabels: {a: b}}\n"), "set exactly one of database and selector"),
        (spec(""), "set exactly one of database and selector"),
        (spec("  selector: {matchLabels: {a: b}}\n  incrementalFrom: nightly\n"), "incrementalFrom goes with database"),
    ] {
        let (ok, out) = k8s::kubectl_apply(test, &env.ns, &yaml).expect("kubectl");
        assert!(!ok && out.contains(says), "refused with {says:?}: {out}");
    }
}
