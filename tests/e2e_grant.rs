//! End-to-end, operator running: CouchGrant access as a user sees it (a second, non-admin
//! client), composition of grants into one `_security`, revocation, unmanaged databases — and a
//! real PouchDB client syncing with the Drafft-style set-up.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchUser};
use couchshare::couch::{CouchClient, Credentials};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::operator::{
    Operator, admin_secret, apply_json, manifest as kind, ready, secret_data, server_manifest, wait_for, wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    ns: String,
    op: Operator,
}

async fn setup(test: &str, server_spec: Value) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "grant").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, server_spec)).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some(Env { client, couch, ns, op })
}

/// A CouchUser with a generated password; returns a client acting as that user.
async fn user(env: &Env, name: &str, extra: Value) -> (String, CouchClient) {
    let username = couchdb::unique_name(name);
    let mut spec = json!({"serverRef": {"name": "main"}, "username": username});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let _: CouchUser = apply_json(&env.client, &env.ns, kind("CouchUser", name, spec)).await;
    wait_ready(&Api::<CouchUser>::namespaced(env.client.clone(), &env.ns), name, &env.op).await;
    let data = secret_data(&env.client, &env.ns, &format!("{name}-couchdb")).await.expect("credentials Secret");
    (username.clone(), env.couch.with_credentials(Credentials::new(username, data["password"].clone())))
}

async fn database(env: &Env, name: &str) -> String {
    support::operator::ready_database(&env.client, &env.ns, name, &env.op).await
}

async fn grant(env: &Env, name: &str, spec: Value) {
    let _: CouchGrant = apply_json(&env.client, &env.ns, kind("CouchGrant", name, spec)).await;
}

/// Whether `as_user` can write and read a document in `db`.
async fn can_use(as_user: &CouchClient, db: &str) -> bool {
    let id = format!("probe-{:08x}", rand::random::<u32>());
    as_user.put_document(db, &id, &json!({"by": as_user.username()})).await.is_ok()
        && as_user.get_document(db, &id).await.ok().flatten().is_some()
}

/// Whether `as_user` is refused (401 or 403: the difference is the server's).
async fn is_refused(as_user: &CouchClient, db: &str) -> bool {
    as_user.get_document(db, "anything").await.is_err_and(|e| e.is_access_denied())
}

async fn eventually_true<F, Fut>(what: &str, op: &Operator, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let ok = couchdb::eventually(Duration::from_secs(30), || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "{what}\n{}", op.tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_reads_and_writes_and_a_non_member_is_refused() {
    let Some(env) = setup("a_member_reads_and_writes_and_a_non_member_is_refused", json!({})).await else { return };
    let db = database(&env, "project").await;
    let (_, alice) = user(&env, "alice", json!({})).await;
    let (_, mallory) = user(&env, "mallory", json!({})).await;
    grant(
        &env,
        "alice-member",
        json!({"database": {"name": "project"}, "access": "member", "users": [{"name": "alice"}]}),
    )
    .await;
    let grants = Api::<CouchGrant>::namespaced(env.client.clone(), &env.ns);
    let g = wait_ready(&grants, "alice-member", &env.op).await;
    let status = g.status.expect("status");
    assert_eq!(status.database.as_deref(), Some(db.as_str()));
    assert_eq!(status.usernames, [alice.username().expect("name").to_string()]);
    eventually_true("alice reads and writes", &env.op, || can_use(&alice, &db)).await;
    assert!(is_refused(&mallory, &db).await, "a user without a grant is refused");
    assert!(is_refused(&env.couch.anonymous(), &db).await, "anonymous is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_grants_both_apply_and_deleting_one_keeps_the_other() {
    let Some(env) = setup("two_grants_both_apply_and_deleting_one_keeps_the_other", json!({})).await else { return };
    let db = database(&env, "shared").await;
    let (bob_name, bob) = user(&env, "bob", json!({})).await;
    let (_, carol) = user(&env, "carol", json!({"roles": ["editors"]})).await;
    grant(&env, "bob-direct", json!({"database": {"name": "shared"}, "users": [{"name": "bob"}]})).await;
    grant(&env, "editors", json!({"database": {"name": "shared"}, "roles": ["editors"], "usernames": [bob_name]}))
        .await;
    let grants = Api::<CouchGrant>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&grants, "bob-direct", &env.op).await;
    wait_ready(&grants, "editors", &env.op).await;
    eventually_true("bob has access", &env.op, || can_use(&bob, &db)).await;
    eventually_true("carol has access through her role", &env.op, || can_use(&carol, &db)).await;
    let security = env.couch.security(&db).await.expect("_security");
    assert_eq!(security.members.names, vec![bob_name.clone()], "one entry for bob, however many grants name him");
    assert_eq!(security.members.roles, ["editors"]);

    grants.delete("bob-direct", &DeleteParams::default()).await.expect("delete one grant");
    eventually_true("the other grant's roles stay, bob stays through it", &env.op, || async {
        let Ok(s) = env.couch.security(&db).await else { return false };
        s.members.roles == ["editors"]
            && s.members.names == [bob_name.clone()]
            && grants.get_opt("bob-direct").await.ok().flatten().is_none()
    })
    .await;
    assert!(can_use(&bob, &db).await && can_use(&carol, &db).await);
    grants.delete("editors", &DeleteParams::default()).await.expect("delete the other");
    eventually_true("no grant left: admin-only again", &env.op, || async {
        env.couch.security(&db).await.is_ok_and(|s| s.members.names.is_empty() && s.members.roles == ["_admin"])
    })
    .await;
    assert!(is_refused(&bob, &db).await && is_refused(&carol, &db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_user_from_a_grant_revokes_access_within_seconds() {
    let Some(env) = setup("removing_a_user_from_a_grant_revokes_access_within_seconds", json!({})).await else {
        return;
    };
    let db = database(&env, "team").await;
    let (_, dana) = user(&env, "dana", json!({})).await;
    let (_, eli) = user(&env, "eli", json!({})).await;
    grant(&env, "team", json!({"database": {"name": "team"}, "users": [{"name": "dana"}, {"name": "eli"}]})).await;
    eventually_true("both have access", &env.op, || async { can_use(&dana, &db).await && can_use(&eli, &db).await })
        .await;
    grant(&env, "team", json!({"database": {"name": "team"}, "users": [{"name": "dana"}]})).await;
    let started = std::time::Instant::now();
    eventually_true("eli is refused", &env.op, || is_refused(&eli, &db)).await;
    eprintln!("revocation took {:?}", started.elapsed());
    assert!(can_use(&dana, &db).await, "dana keeps access");
    // A hand edit that adds someone is undone too.
    let mut edited = env.couch.security(&db).await.expect("_security");
    edited.members.names.push(eli.username().expect("name").to_string());
    env.couch.put_security(&db, &edited).await.expect("hand edit");
    eventually_true("the hand edit is undone", &env.op, || is_refused(&eli, &db)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_naming_a_missing_user_becomes_ready_once_the_user_exists() {
    let Some(env) = setup("a_grant_naming_a_missing_user_becomes_ready_once_the_user_exists", json!({})).await else {
        return;
    };
    let db = database(&env, "later").await;
    grant(&env, "later", json!({"database": {"name": "later"}, "users": [{"name": "frank"}], "roles": ["auditors"]}))
        .await;
    let grants = Api::<CouchGrant>::namespaced(env.client.clone(), &env.ns);
    let waiting = wait_for(&grants, "later", &env.op, "Ready=False UserNotFound", |g| {
        ready(g).is_some_and(|r| r.0 == "False" && r.1 == "UserNotFound")
    })
    .await;
    assert!(ready(&waiting).is_some_and(|r| r.2.contains("frank")), "names the missing user");
    eventually_true("the rest of the grant applies", &env.op, || async {
        env.couch.security(&db).await.is_ok_and(|s| s.members.roles == ["auditors"])
    })
    .await;
    let (_, frank) = user(&env, "frank", json!({})).await;
    wait_ready(&grants, "later", &env.op).await;
    eventually_true("frank has access without any further change", &env.op, || can_use(&frank, &db)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_on_a_per_user_database_leaves_its_owner_entry_intact() {
    let Some(env) = setup("a_grant_on_a_per_user_database_leaves_its_owner_entry_intact", json!({})).await else {
        return;
    };
    let (owner_name, owner) = user(&env, "gina", json!({"perUserDatabase": true})).await;
    let (_, helper) = user(&env, "hal", json!({})).await;
    let userdb = format!("userdb-{}", hex::encode(&owner_name));
    grant(&env, "hal-helps-gina", json!({"database": {"userDatabase": {"user": "gina"}}, "users": [{"name": "hal"}]}))
        .await;
    let grants = Api::<CouchGrant>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&grants, "hal-helps-gina", &env.op).await;
    eventually_true("hal has access", &env.op, || can_use(&helper, &userdb)).await;
    let security = env.couch.security(&userdb).await.expect("_security");
    assert!(security.members.names.contains(&owner_name) && security.admins.names == [owner_name.clone()]);
    grants.delete("hal-helps-gina", &DeleteParams::default()).await.expect("delete grant");
    eventually_true("hal is refused", &env.op, || is_refused(&helper, &userdb)).await;
    let security = env.couch.security(&userdb).await.expect("_security");
    assert_eq!(security.members.names, vec![owner_name.clone()], "the owner's entry is intact");
    assert_eq!(security.admins.names, vec![owner_name.clone()]);
    assert!(can_use(&owner, &userdb).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn pouchdb_syncs_live_with_the_drafft_project_and_a_user_without_grant_is_refused() {
    let test = "pouchdb_syncs_live_with_the_drafft_project_and_a_user_without_grant_is_refused";
    let Some(node_path) = std::env::var_os("COUCHSHARE_POUCHDB_CLIENT") else {
        assert!(
            std::env::var("COUCHSHARE_REQUIRE_COUCHDB").as_deref() != Ok("1"),
            "{test}: COUCHSHARE_POUCHDB_CLIENT is not set"
        );
        couchdb::say_skip(&format!("SKIP {test}: no PouchDB client (tools/testbin/install-pouchdb-client.sh)"));
        return;
    };
    let origin = "https://drafft.app.example";
    let cors = json!({"config": {"cors": {"enabled": true, "origins": [origin], "credentials": true}}});
    let Some(env) = setup(test, cors).await else { return };
    // The Drafft set-up: a project database, a restricted sync user as its member, CORS for the app.
    let project = couchdb::unique_name("drafft_v2_quantum_empanada").replace('-', "_");
    let _: CouchDatabase = apply_json(
        &env.client,
        &env.ns,
        kind("CouchDatabase", "drafft-project", json!({"serverRef": {"name": "main"}, "name": project})),
    )
    .await;
    let sync_user = couchdb::unique_name("drafft_sync_user");
    let _: CouchUser = apply_json(
        &env.client,
        &env.ns,
        kind(
            "CouchUser",
            "drafft-sync",
            json!({"serverRef": {"name": "main"}, "username": sync_user, "credentialsSecret": {"databases": [project]}}),
        ),
    )
    .await;
    grant(
        &env,
        "drafft-sync-member",
        json!({"database": {"name": "drafft-project"}, "users": [{"name": "drafft-sync"}]}),
    )
    .await;
    wait_ready(&Api::<CouchGrant>::namespaced(env.client.clone(), &env.ns), "drafft-sync-member", &env.op).await;
    let (_, _) = user(&env, "outsider", json!({"credentialsSecret": {"databases": [project]}})).await;

    let url = std::env::var("COUCHDB_URL").expect("url");
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{url}/{project}"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some(origin));

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pouchdb/sync.js");
    let sync_url = secret_data(&env.client, &env.ns, "drafft-sync-couchdb").await.expect("Secret")
        [&format!("url-{project}")]
        .clone();
    let mut child = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &node_path)
        .env("DB_URL", &sync_url)
        .env("MODE", "sync")
        .env("EXPECT_DOC", "from-the-server")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the PouchDB client");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::task::spawn_blocking(move || {
        let line = lines.next();
        (line, lines)
    });
    let (line, lines) = first.await.expect("reader");
    assert_eq!(line.and_then(Result::ok).as_deref(), Some("PUSHED"), "the app's offline document reached CouchDB");
    let pushed = env.couch.get_document(&project, "scene-1").await.expect("read").expect("the pushed document");
    assert_eq!(pushed["title"], "written offline by the app");
    env.couch
        .put_document(&project, "from-the-server", &json!({"type": "scene", "title": "edited elsewhere"}))
        .await
        .expect("write");
    let (line, _) = tokio::task::spawn_blocking(move || {
        let mut lines = lines;
        (lines.next(), lines)
    })
    .await
    .expect("reader");
    assert_eq!(line.and_then(Result::ok).as_deref(), Some("PULLED"), "the server's document reached the app live");
    assert!(child.wait().expect("exit").success());

    let outsider_url =
        secret_data(&env.client, &env.ns, "outsider-couchdb").await.expect("Secret")[&format!("url-{project}")].clone();
    let refused = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &node_path)
        .env("DB_URL", &outsider_url)
        .env("MODE", "refused")
        .output()
        .expect("node runs");
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(refused.status.success() && out.starts_with("REFUSED"), "a user without a grant is refused: {out}");
}
