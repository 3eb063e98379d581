//! End-to-end, operator running: a CouchBackup of a CouchDatabase to a real S3 server
//! (SeaweedFS, `tools/testbin/start-s3.sh`) and to the backup volume, restored through
//! `CouchDatabase.spec.restoreFrom` into a new database and compared document by document
//! (every leaf revision, its history, attachments' bytes); the refusals a user meets (a
//! database with documents, a wrong key, bad YAML at apply time); and a backup killed mid-way.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use couchshare::api::{BackupPhase, CouchBackup, CouchDatabase, CouchServer};
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

/// The test S3 server, from `DIR/s3.env` of `tools/testbin/start-s3.sh`: endpoint, access key,
/// secret key, bucket.
fn bucket(test: &str) -> Option<(String, String, String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("COUCHSHARE_S3_ENDPOINT"),
        var("COUCHSHARE_S3_ACCESS_KEY"),
        var("COUCHSHARE_S3_SECRET_KEY"),
        var("COUCHSHARE_S3_BUCKET"),
    ) {
        (Some(e), Some(a), Some(s), Some(b)) => Some((e, a, s, b)),
        _ => {
            couchdb::skip_lacking(&format!(
                "SKIP {test}: no S3 server (tools/testbin/start-s3.sh DIR writes DIR/s3.env with COUCHSHARE_S3_*)"
            ));
            None
        }
    }
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
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let creds = couchdb::admin_credentials();
    let status = reqwest::Client::new()
        .post(format!("{}/{db}/_bulk_docs", url.trim_end_matches('/')))
        .basic_auth(creds.username, Some(creds.password))
        .json(&conflict)
        .send()
        .await
        .expect("conflict write")
        .status();
    assert!(status.is_success(), "conflict write: {status}");
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
    let before = every_leaf(&source).await;

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
    let after = every_leaf(&restored).await;
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
    wait_ready(&databases, "big-restored", &env.op).await;
    let info = env.couch.database_info(&format!("{source}-r")).await.expect("info");
    assert_eq!(info.doc_count, 20_000, "the second run's backup restores whole");
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
