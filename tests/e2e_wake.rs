//! End-to-end, operator running with a resync of ten minutes: a wait ends when what it waits for
//! arrives, not at a poll. A grant waiting for a late user is Ready within 2 s of the user; a
//! share waiting for a late database within 2 s of the database (4 s on a cluster); and a project applied before
//! its CouchServer, on a 3-node cluster formed by its seedlist that nobody has finished yet (a
//! Helm user's first minutes, on a cluster of the test's own), is Ready within 10 s of the
//! server — all but the share's run, which waits for CouchDB's replicator to find the
//! `_replicator` database the operator created (its shard scan, every 30 s by default): the
//! share says so, and the scheduler watch wakes it when the job runs.

mod support;

use std::time::{Duration, Instant};

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::couch::{CouchClient, Credentials};
use kube::Client;
use kube::api::Api;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::operator::{
    Operator, admin_secret, apply_json, manifest as kind, ready, secret_data, server_manifest, wait_for,
    wait_not_ready, wait_ready,
};
use support::{couchdb, k8s};

/// The resync the operator runs with here: far longer than any bound asserted.
const NO_RESYNC: &[&str] = &["--resync-interval", "10m"];

/// CouchDB's default start jitter would delay each replication's start by up to 5 s.
fn quick_replicator() -> serde_json::Value {
    json!({"config": {"settings": {"replicator/startup_jitter": "200"}}})
}

async fn setup(test: &str) -> Option<(Client, CouchClient, String, Operator)> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "wake").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, NO_RESYNC);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, quick_replicator())).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some((client, couch, ns, op))
}

/// Whether the object is Ready=True now.
async fn is_ready<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.get_opt(name).await.ok().flatten().is_some_and(|o| ready(&o).is_some_and(|r| r.0 == "True"))
}

/// Polls every 50 ms until `first` and `then` are both Ready; returns when each was first seen
/// Ready (`None` for one that was not within 60 s).
async fn ready_times<A, B>(first: (&Api<A>, &str), then: (&Api<B>, &str)) -> (Option<Instant>, Option<Instant>)
where
    A: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    B: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut a, mut b) = (None, None);
    while Instant::now() < deadline && (a.is_none() || b.is_none()) {
        if a.is_none() && is_ready(first.0, first.1).await {
            a = Some(Instant::now());
        }
        if b.is_none() && is_ready(then.0, then.1).await {
            b = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_waiting_for_a_late_user_is_ready_within_2_s_of_the_user() {
    let test = "a_grant_waiting_for_a_late_user_is_ready_within_2_s_of_the_user";
    let Some((client, couch, ns, op)) = setup(test).await else { return };
    let db = support::operator::ready_database(&client, &ns, "notes", &op).await;
    let grant = json!({"database": {"name": "notes"}, "users": [{"name": "late"}], "access": "member"});
    let _: CouchGrant = apply_json(&client, &ns, kind("CouchGrant", "notes-late", grant)).await;
    let grants = Api::<CouchGrant>::namespaced(client.clone(), &ns);
    wait_not_ready(&grants, "notes-late", &op, "UserNotFound").await;
    let username = couchdb::unique_name("late");
    let _: CouchUser = apply_json(
        &client,
        &ns,
        kind("CouchUser", "late", json!({"serverRef": {"name": "main"}, "username": username})),
    )
    .await;
    let users = Api::<CouchUser>::namespaced(client.clone(), &ns);
    let (user_at, grant_at) = ready_times((&users, "late"), (&grants, "notes-late")).await;
    let (Some(user_at), Some(grant_at)) = (user_at, grant_at) else {
        panic!("user Ready: {user_at:?}, grant Ready: {grant_at:?}\n{}", op.tail());
    };
    let after = grant_at.saturating_duration_since(user_at);
    eprintln!("{test}: the grant was Ready {after:?} after its user");
    assert!(after <= Duration::from_secs(2), "the grant took {after:?} after its user (resync: 10 min)\n{}", op.tail());
    // What the grant says is what CouchDB does: the user is a member, and can use the database.
    let security = couch.security(&db).await.expect("_security");
    assert!(security.members.names.contains(&username), "{security:?}");
    let data = secret_data(&client, &ns, "late-couchdb").await.expect("credentials Secret");
    let as_user = couch.with_credentials(Credentials::new(username, data["password"].clone()));
    as_user.put_document(&db, "hello", &json!({"from": "late"})).await.expect("the late user writes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_waiting_for_a_late_database_is_ready_within_2_s_of_the_database() {
    let test = "a_share_waiting_for_a_late_database_is_ready_within_2_s_of_the_database";
    let Some((client, couch, ns, op)) = setup(test).await else { return };
    let source = support::operator::ready_database(&client, &ns, "source", &op).await;
    couch.put_document(&source, "note", &json!({"text": "before the target existed"})).await.expect("a document");
    let spec = json!({"source": {"database": {"name": "source"}}, "target": {"database": {"name": "target"}},
        "continuous": true});
    let _: CouchShare = apply_json(&client, &ns, kind("CouchShare", "to-late", spec)).await;
    let shares = Api::<CouchShare>::namespaced(client.clone(), &ns);
    let waiting = wait_not_ready(&shares, "to-late", &op, "Waiting").await;
    assert!(ready(&waiting).is_some_and(|r| r.2.contains("target")), "names what it waits for: {:?}", ready(&waiting));
    let target = couchdb::unique_name("target");
    let _: CouchDatabase = apply_json(
        &client,
        &ns,
        kind("CouchDatabase", "target", json!({"serverRef": {"name": "main"}, "name": target})),
    )
    .await;
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    let (db_at, share_at) = ready_times((&dbs, "target"), (&shares, "to-late")).await;
    let (Some(db_at), Some(share_at)) = (db_at, share_at) else {
        panic!("database Ready: {db_at:?}, share Ready: {share_at:?}\n{}", op.tail());
    };
    let after = share_at.saturating_duration_since(db_at);
    eprintln!("{test}: the share was Ready {after:?} after its target database");
    // After the database, the share writes its replication user (a password hash), the database
    // merges it into `_security`, the share writes its replication document and CouchDB starts
    // the job: four writes in a row, each waiting for two of three nodes on a cluster.
    let cluster = couch.membership().await.expect("_membership").cluster_nodes.len() > 1;
    let bound = Duration::from_secs(if cluster { 4 } else { 2 });
    assert!(after <= bound, "the share took {after:?} after its database (resync: 10 min)\n{}", op.tail());
    // Ready means replicating: the document arrives.
    let arrived = couchdb::eventually(Duration::from_secs(30), || async {
        couch.get_document(&target, "note").await.ok().flatten().map(|_| ())
    })
    .await;
    assert!(arrived.is_some(), "the source's document reaches the late target\n{}", op.tail());
}

/// Whether the share has written its replication document and, if CouchDB's replicator has not
/// taken it up yet, says so.
async fn share_written(shares: &Api<CouchShare>) -> bool {
    let Ok(Some(share)) = shares.get_opt("project-backup").await else { return false };
    let Some(status) = share.status.as_ref() else { return false };
    let said = ready(&share).is_some_and(|r| r.0 == "True" || r.2.contains("has not taken the document up yet"));
    !status.replications.is_empty() && said
}

/// The project of a Helm user's first minutes, as `kubectl apply -f dir/` takes its files
/// (alphabetically: the databases, the grant, the share, the user), before the CouchServer.
fn project(db: &str, backup: &str, username: &str) -> String {
    format!(
        r#"apiVersion: couchshare.io/v1alpha1
kind: CouchDatabase
metadata: {{name: backup}}
spec: {{serverRef: {{name: main}}, name: {backup}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchDatabase
metadata: {{name: project}}
spec: {{serverRef: {{name: main}}, name: {db}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchGrant
metadata: {{name: writer-project}}
spec: {{database: {{name: project}}, users: [{{name: writer}}], access: member}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchShare
metadata: {{name: project-backup}}
spec:
  source: {{database: {{name: project}}}}
  target: {{database: {{name: backup}}}}
  continuous: true
---
apiVersion: couchshare.io/v1alpha1
kind: CouchUser
metadata: {{name: writer}}
spec: {{serverRef: {{name: main}}, username: {username}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_applied_before_its_server_on_a_cluster_nobody_finished_is_ready_within_10_s_of_the_server() {
    let test = "a_project_applied_before_its_server_on_a_cluster_nobody_finished_is_ready_within_10_s_of_the_server";
    let Some(client) = k8s::client(test).await else { return };
    k8s::install_crds(&client).await;
    // A cluster of its own, formed by its seedlist the way the chart forms one, and not finished:
    // no `_users`, `_replicator` or `_global_changes` yet.
    let Some(cluster) = couchdb::PrivateCouch::start(test, "cluster") else { return };
    let couch = cluster.client();
    assert!(!couch.database_exists("_users").await.expect("HEAD /_users"), "a cluster nobody finished");
    let ns = k8s::namespace(&client, "first").await;
    let op = Operator::start(&ns, NO_RESYNC);
    let (db, backup, username) =
        (couchdb::unique_name("project"), couchdb::unique_name("backup"), couchdb::unique_name("writer"));
    let Some((ok, said)) = k8s::kubectl_apply(test, &ns, &project(&db, &backup, &username)) else { return };
    assert!(ok, "kubectl apply: {said}");
    // The server comes a few seconds later (its file sorts after the others).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "couchdb-admin"},
               "stringData": {"username": cluster.user, "password": cluster.password}}),
    )
    .await;
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &cluster.url, quick_replicator())).await;
    let servers = Api::<CouchServer>::namespaced(client.clone(), &ns);
    let server_ready = wait_ready(&servers, "main", &op).await;
    let server_at = Instant::now();
    assert!(
        server_ready.status.as_ref().and_then(|s| s.membership.as_ref()).is_some_and(|m| m.finished),
        "the operator finished the cluster: {:?}",
        server_ready.status
    );
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    let users = Api::<CouchUser>::namespaced(client.clone(), &ns);
    let grants = Api::<CouchGrant>::namespaced(client.clone(), &ns);
    let shares = Api::<CouchShare>::namespaced(client.clone(), &ns);
    let deadline = server_at + Duration::from_secs(10);
    let mut waiting = Vec::new();
    loop {
        waiting.clear();
        for (ready_now, what) in [
            (is_ready(&dbs, "project").await, "CouchDatabase project"),
            (is_ready(&dbs, "backup").await, "CouchDatabase backup"),
            (is_ready(&users, "writer").await, "CouchUser writer"),
            (is_ready(&grants, "writer-project").await, "CouchGrant writer-project"),
            // The share's own part: its replication document is written, and it says what
            // it waits for (CouchDB's replicator; see below).
            (share_written(&shares).await, "CouchShare project-backup's replication document"),
        ] {
            if !ready_now {
                waiting.push(what);
            }
        }
        if waiting.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = server_at.elapsed();
    eprintln!("{test}: every object Ready {took:?} after the server");
    if !waiting.is_empty() {
        let share = shares.get("project-backup").await.ok().and_then(|s| s.status);
        let scheduler = couch.replication_statuses("_replicator").await;
        panic!(
            "not Ready 10 s after the server (resync: 10 min): {waiting:?}\nshare: {share:?}\nscheduler: {scheduler:?}\n{}",
            op.tail()
        );
    }
    // The replicator of a cluster whose `_replicator` was created after its nodes started
    // takes the document up at its next scan of the shards (every replicator/interval ÷ 2,
    // 30 s by default): the scheduler watch wakes the share then, with no resync to help.
    let share = wait_for(&shares, "project-backup", &op, "Ready once CouchDB's replicator runs it", |s| {
        ready(s).is_some_and(|r| r.0 == "True")
    })
    .await;
    eprintln!("{test}: the share Ready {:?} after the server", server_at.elapsed());
    assert!(server_at.elapsed() < Duration::from_secs(45), "{:?}", share.status);
    // And CouchDB says so: the writer logs in and writes, and its document reaches the backup.
    let data = secret_data(&client, &ns, "writer-couchdb").await.expect("credentials Secret");
    let as_writer = couch.with_credentials(Credentials::new(username, data["password"].clone()));
    as_writer.put_document(&db, "chapter-1", &json!({"title": "One"})).await.expect("the writer writes");
    let copied = couchdb::eventually(Duration::from_secs(30), || async {
        couch.get_document(&backup, "chapter-1").await.ok().flatten().map(|_| ())
    })
    .await;
    assert!(copied.is_some(), "the share copies the writer's document\n{}", op.tail());
    drop(op);
}
