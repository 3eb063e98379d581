//! End-to-end, operator running: CouchUser documents, ready-to-use credentials Secrets,
//! password changes and rotation, per-user databases, deletion — and no password in the logs.

mod support;

use std::time::Duration;

use couchshare::api::{CouchServer, CouchUser};
use couchshare::couch::{CouchClient, Credentials, UserDoc};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::operator::{
    Operator, admin_secret, apply_json, ready, secret_data, server_manifest, wait_for, wait_not_ready, wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    ns: String,
    op: Operator,
}

async fn setup(test: &str, log_filter: Option<&str>) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "user").await;
    admin_secret(&client, &ns).await;
    let op = match log_filter {
        Some(filter) => Operator::start_logging(&ns, &[], filter),
        None => Operator::start(&ns, &[]),
    };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some(Env { client, couch, ns, op })
}

fn user(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut full = json!({"serverRef": {"name": "main"}});
    if let (Some(f), Some(s)) = (full.as_object_mut(), spec.as_object()) {
        f.extend(s.clone());
    }
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser", "metadata": {"name": name}, "spec": full})
}

fn database(name: &str, couch_name: &str, members: &[&str]) -> serde_json::Value {
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchDatabase", "metadata": {"name": name},
           "spec": {"serverRef": {"name": "main"}, "name": couch_name, "security": {"members": {"names": members}}}})
}

async fn logs_in(couch: &CouchClient, username: &str, password: &str) -> bool {
    couch.session_login(username, password).await.ok().flatten().is_some()
}

/// CouchDB's auth cache follows `_users` asynchronously: wait until a login gives `expected`.
async fn eventually_logs_in(couch: &CouchClient, username: &str, password: &str, expected: bool) -> bool {
    couchdb::eventually(Duration::from_secs(30), || async {
        (logs_in(couch, username, password).await == expected).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generated_secret_logs_in_and_its_database_url_works() {
    let Some(env) = setup("the_generated_secret_logs_in_and_its_database_url_works", None).await else { return };
    let username = couchdb::unique_name("sync");
    let db = couchdb::unique_name("project");
    let _: couchshare::api::CouchDatabase =
        apply_json(&env.client, &env.ns, database("project", &db, &[&username])).await;
    let spec = json!({"username": username, "roles": ["writers"], "credentialsSecret": {"databases": [db]}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("sync", spec)).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let cu = wait_ready(&users, "sync", &env.op).await;
    let status = cu.status.expect("status");
    assert_eq!(status.username.as_deref(), Some(username.as_str()));
    assert_eq!(status.credentials_secret.as_deref(), Some("sync-couchdb"));
    assert!(status.password_hash.as_ref().is_some_and(|h| h.len() == 32));
    assert!(status.conditions.iter().any(|c| c.type_ == "PasswordSynced" && c.status == "True"));

    let data = secret_data(&env.client, &env.ns, "sync-couchdb").await.expect("credentials Secret");
    assert_eq!(data["username"], username);
    assert!(data["password"].len() >= 32, "generated password is long");
    assert_eq!(data["url"], std::env::var("COUCHDB_URL").expect("url"));
    assert!(
        !serde_json::to_string(&status).expect("json").contains(&data["password"]),
        "status never holds the password"
    );
    assert!(
        eventually_logs_in(&env.couch, &username, &data["password"], true).await,
        "the Secret's credentials log in"
    );
    let doc = env.couch.get_user(&username).await.expect("get").expect("user document");
    assert_eq!(doc.roles, ["writers"]);

    let db_url = data.get(&format!("url-{db}")).expect("per-database URL");
    let response = reqwest::get(format!("{db_url}/_all_docs")).await.expect("GET with the URL from the Secret");
    assert_eq!(response.status().as_u16(), 200, "the database URL works as it is");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_supplied_password_works_and_editing_its_secret_changes_the_real_password() {
    let Some(env) = setup("a_supplied_password_works_and_editing_its_secret_changes_the_real_password", None).await
    else {
        return;
    };
    let username = couchdb::unique_name("app");
    let first = "first: p@ss/word";
    let second = "second: p@ss/word";
    let secret = |pw: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-password"}, "stringData": {"pw": pw}});
    let _: Secret = apply_json(&env.client, &env.ns, secret(first)).await;
    let spec = json!({"username": username, "password": {"secretRef": {"name": "app-password", "key": "pw"}}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("app", spec)).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let before = wait_ready(&users, "app", &env.op).await;
    assert!(eventually_logs_in(&env.couch, &username, first, true).await, "the supplied password works");
    let data = secret_data(&env.client, &env.ns, "app-couchdb").await.expect("credentials Secret");
    assert_eq!(data["password"], first, "the credentials Secret is ready to use");

    let _: Secret = apply_json(&env.client, &env.ns, secret(second)).await;
    assert!(eventually_logs_in(&env.couch, &username, second, true).await, "the new password works\n{}", env.op.tail());
    assert!(eventually_logs_in(&env.couch, &username, first, false).await, "the old password fails");
    let after = wait_for(&users, "app", &env.op, "a new password fingerprint", |u| {
        u.status.as_ref().and_then(|s| s.password_hash.clone())
            != before.status.as_ref().and_then(|s| s.password_hash.clone())
    })
    .await;
    assert!(ready(&after).is_some_and(|r| r.0 == "True"));
    let data = secret_data(&env.client, &env.ns, "app-couchdb").await.expect("credentials Secret");
    assert_eq!(data["password"], second);
}

#[tokio::test(flavor = "multi_thread")]
async fn bumping_the_rotation_generation_rotates_a_generated_password() {
    let Some(env) = setup("bumping_the_rotation_generation_rotates_a_generated_password", None).await else { return };
    let username = couchdb::unique_name("rot");
    let _: CouchUser = apply_json(&env.client, &env.ns, user("rot", json!({"username": username}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "rot", &env.op).await;
    let old = secret_data(&env.client, &env.ns, "rot-couchdb").await.expect("Secret")["password"].clone();
    assert!(eventually_logs_in(&env.couch, &username, &old, true).await);

    let _: CouchUser =
        apply_json(&env.client, &env.ns, user("rot", json!({"username": username, "rotation": {"generation": 1}})))
            .await;
    wait_for(&users, "rot", &env.op, "rotation generation 1 applied", |u| {
        u.status.as_ref().and_then(|s| s.rotation_generation) == Some(1) && ready(u).is_some_and(|r| r.0 == "True")
    })
    .await;
    let new = secret_data(&env.client, &env.ns, "rot-couchdb").await.expect("Secret")["password"].clone();
    assert_ne!(new, old, "a new password was generated");
    assert!(eventually_logs_in(&env.couch, &username, &new, true).await, "the new password works");
    assert!(eventually_logs_in(&env.couch, &username, &old, false).await, "the old password fails");
    // Nothing rotates again at the next resyncs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(secret_data(&env.client, &env.ns, "rot-couchdb").await.expect("Secret")["password"], new);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_labels_and_annotations_added_by_others_survive_a_reconcile() {
    let Some(env) = setup("keys_labels_and_annotations_added_by_others_survive_a_reconcile", None).await else {
        return;
    };
    let username = couchdb::unique_name("keep");
    let spec = json!({"username": username, "credentialsSecret": {"labels": {"reflect": "true"}}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("keep", spec)).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "keep", &env.op).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let foreign = json!({"metadata": {"labels": {"team": "games"}, "annotations": {"reflector/allowed": "ns-b"}},
                         "stringData": {"extra": "kept"}});
    secrets.patch("keep-couchdb", &PatchParams::default(), &Patch::Merge(&foreign)).await.expect("someone else edits");
    // A spec change makes the operator rewrite its part of the Secret.
    let spec = json!({"username": username, "roles": ["r2"], "credentialsSecret": {"labels": {"reflect": "yes"}}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("keep", spec)).await;
    let secret = couchdb::eventually(Duration::from_secs(30), || async {
        let s = secrets.get("keep-couchdb").await.ok()?;
        (s.metadata.labels.as_ref()?.get("reflect").map(String::as_str) == Some("yes")).then_some(s)
    })
    .await
    .expect("the operator rewrote its label");
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("games"), "foreign label kept");
    assert_eq!(
        secret.metadata.annotations.unwrap_or_default().get("reflector/allowed").map(String::as_str),
        Some("ns-b")
    );
    let data = secret_data(&env.client, &env.ns, "keep-couchdb").await.expect("data");
    assert_eq!(data.get("extra").map(String::as_str), Some("kept"), "foreign key kept");
    assert_eq!(data["username"], username);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_user_is_refused_without_adopt() {
    let Some(env) = setup("an_existing_user_is_refused_without_adopt", None).await else { return };
    let username = couchdb::unique_name("legacy");
    env.couch.put_user(&UserDoc::new(&username, vec!["old".into()], Some("legacy-pw".into()))).await.expect("by hand");
    let _: CouchUser = apply_json(&env.client, &env.ns, user("legacy", json!({"username": username}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let refused = wait_not_ready(&users, "legacy", &env.op, "AlreadyExists").await;
    assert!(ready(&refused).is_some_and(|r| r.2.contains("adopt: true")));
    assert!(eventually_logs_in(&env.couch, &username, "legacy-pw", true).await, "nothing changed while refused");
    assert_eq!(env.couch.get_user(&username).await.expect("get").expect("exists").roles, ["old"]);

    let _: CouchUser =
        apply_json(&env.client, &env.ns, user("legacy", json!({"username": username, "adopt": true}))).await;
    wait_ready(&users, "legacy", &env.op).await;
    let pw = secret_data(&env.client, &env.ns, "legacy-couchdb").await.expect("Secret")["password"].clone();
    assert!(eventually_logs_in(&env.couch, &username, &pw, true).await, "adopted: the declared password applies");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_user_database_exists_with_its_name_and_security() {
    let Some(env) = setup("the_per_user_database_exists_with_its_name_and_security", None).await else { return };
    let username = couchdb::unique_name("ana");
    let _: CouchUser =
        apply_json(&env.client, &env.ns, user("ana", json!({"username": username, "perUserDatabase": true}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let cu = wait_ready(&users, "ana", &env.op).await;
    let expected = format!("userdb-{}", hex::encode(&username));
    assert_eq!(cu.status.expect("status").per_user_database.as_deref(), Some(expected.as_str()));
    let security = env.couch.security(&expected).await.expect("per-user database exists");
    assert_eq!(security.admins.names, vec![username.clone()]);
    assert_eq!(security.members.names, vec![username.clone()]);
    let data = secret_data(&env.client, &env.ns, "ana-couchdb").await.expect("Secret");
    let as_user = env.couch.with_credentials(Credentials::new(&username, &data["password"]));
    let written = couchdb::eventually(Duration::from_secs(20), || async {
        as_user.put_document(&expected, "note-1", &json!({"text": "mine"})).await.ok()
    })
    .await;
    assert!(written.is_some(), "the user writes into their own database");

    // With CouchDB's own couch_peruser on, the database it creates is accepted as the user's.
    let info = env.couch.server_info().await.expect("GET /");
    if !info.is_couchdb {
        couchdb::skip_lacking(
            "SKIP the_per_user_database_exists_with_its_name_and_security (couch_peruser part): server lacks capability perUserDatabases",
        );
        return;
    }
    let url = std::env::var("COUCHDB_URL").expect("url");
    let config = json!({"config": {"perUserDatabases": {"enabled": true}}});
    let _: CouchServer = apply_json(&env.client, &env.ns, server_manifest("main", &url, config)).await;
    wait_for(
        &Api::<CouchServer>::namespaced(env.client.clone(), &env.ns),
        "main",
        &env.op,
        "couch_peruser applied",
        |s| s.status.as_ref().is_some_and(|st| st.applied_config.iter().any(|k| k == "couch_peruser/enable")),
    )
    .await;
    let second = couchdb::unique_name("ben");
    let _: CouchUser =
        apply_json(&env.client, &env.ns, user("ben", json!({"username": second, "perUserDatabase": true}))).await;
    let cu = wait_ready(&users, "ben", &env.op).await;
    let expected = format!("userdb-{}", hex::encode(&second));
    assert_eq!(cu.status.expect("status").per_user_database.as_deref(), Some(expected.as_str()));
    // couch_peruser creates the database and writes its `_security` asynchronously (on a
    // cluster, after the operator may have written its own): the user is its member once both
    // have run, with no change to the CouchUser.
    let member = couchdb::eventually(Duration::from_secs(20), || async {
        env.couch.security(&expected).await.ok().filter(|s| s.members.names == [second.clone()])
    })
    .await;
    assert!(member.is_some(), "{second} is the member of {expected}\n{}", env.op.tail());
    let off = json!({"config": {"perUserDatabases": {"enabled": false}}});
    let _: CouchServer = apply_json(&env.client, &env.ns, server_manifest("main", &url, off)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_user_removes_it_and_its_secret_per_policy() {
    let Some(env) = setup("deleting_a_user_removes_it_and_its_secret_per_policy", None).await else { return };
    let gone = couchdb::unique_name("gone");
    let kept = couchdb::unique_name("kept");
    let _: CouchUser = apply_json(
        &env.client,
        &env.ns,
        user("gone", json!({"username": gone, "deletionPolicy": "Delete", "perUserDatabase": true})),
    )
    .await;
    let _: CouchUser = apply_json(&env.client, &env.ns, user("kept", json!({"username": kept}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "gone", &env.op).await;
    wait_ready(&users, "kept", &env.op).await;
    for name in ["gone", "kept"] {
        users.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    for name in ["gone", "kept"] {
        let released = couchdb::eventually(Duration::from_secs(30), || async {
            users.get_opt(name).await.ok().and_then(|u| u.is_none().then_some(()))
        })
        .await;
        assert!(released.is_some(), "{name} released\n{}", env.op.tail());
    }
    assert!(env.couch.get_user(&gone).await.expect("get").is_none(), "Delete removes the user");
    assert!(secret_data(&env.client, &env.ns, "gone-couchdb").await.is_none(), "Delete removes the Secret");
    assert!(!env.couch.database_exists(&format!("userdb-{}", hex::encode(&gone))).await.expect("exists?"));
    assert!(env.couch.get_user(&kept).await.expect("get").is_some(), "Retain keeps the user");
    assert!(secret_data(&env.client, &env.ns, "kept-couchdb").await.is_some(), "Retain keeps the Secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_reaches_the_operator_output_at_the_most_verbose_level() {
    let test = "no_password_reaches_the_operator_output_at_the_most_verbose_level";
    let Some(env) = setup(test, Some("trace")).await else { return };
    let username = couchdb::unique_name("quiet");
    let supplied = "supplied-Secret-Value-4242";
    let _: Secret = apply_json(
        &env.client,
        &env.ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "quiet-pw"}, "stringData": {"password": supplied}}),
    )
    .await;
    let _: CouchUser = apply_json(
        &env.client,
        &env.ns,
        user("quiet", json!({"username": username, "password": {"secretRef": {"name": "quiet-pw"}}})),
    )
    .await;
    let generated_user = couchdb::unique_name("loud");
    let _: CouchUser = apply_json(
        &env.client,
        &env.ns,
        user("loud", json!({"username": generated_user, "rotation": {"generation": 3}})),
    )
    .await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "quiet", &env.op).await;
    wait_ready(&users, "loud", &env.op).await;
    let generated = secret_data(&env.client, &env.ns, "loud-couchdb").await.expect("Secret")["password"].clone();
    let admin = couchdb::admin_credentials().password;
    let output = env.op.output();
    assert!(output.len() > 1000, "trace output was produced");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [supplied.to_string(), generated.clone(), admin.clone()] {
        for form in [secret.clone(), b64(&secret)] {
            assert!(!output.contains(&form), "a password (or its base64) appears in the operator output");
        }
    }
    for (user, pw) in
        [(username.as_str(), supplied), (generated_user.as_str(), generated.as_str()), ("admin", admin.as_str())]
    {
        assert!(!output.contains(&b64(&format!("{user}:{pw}"))), "a Basic credential appears in the output");
    }
}

/// How many lines of `output` after its first `from` line contain every one of `parts`.
fn count_after(output: &str, from: usize, parts: &[&str]) -> usize {
    output.lines().skip(from).filter(|l| parts.iter().all(|p| l.contains(p))).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_edited_or_deleted_by_hand_is_put_back_by_the_users_feed() {
    // The resync is ten minutes: only the `_users` follower can bring these back in time.
    let Some(env) = setup("a_user_edited_or_deleted_by_hand_is_put_back_by_the_users_feed", None).await else {
        return;
    };
    let name = couchdb::unique_name("handled");
    let _: CouchUser =
        apply_json(&env.client, &env.ns, user("handled", json!({"username": name, "roles": ["editor"]}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "handled", &env.op).await;
    let password =
        secret_data(&env.client, &env.ns, "handled-couchdb").await.expect("credentials Secret")["password"].clone();
    // Fauxton: a role added by hand.
    let mut doc = env.couch.get_user(&name).await.expect("get").expect("the user");
    doc.roles = vec!["intruder".into(), "editor".into()];
    env.couch.put_user(&doc).await.expect("edit by hand");
    let restored = couchdb::eventually(Duration::from_secs(10), || async {
        env.couch.get_user(&name).await.ok().flatten().filter(|d| d.roles == ["editor"])
    })
    .await;
    assert!(restored.is_some(), "the declared roles are back within 10 s\n{}", env.op.tail());
    // Deleted by hand: recreated, with the password of its Secret.
    let doc = env.couch.get_user(&name).await.expect("get").expect("the user");
    env.couch.delete_user(&name, doc.rev.as_deref().expect("rev")).await.expect("delete by hand");
    let back =
        couchdb::eventually(Duration::from_secs(10), || async { env.couch.get_user(&name).await.ok().flatten() }).await;
    assert!(back.is_some(), "the user is recreated within 10 s\n{}", env.op.tail());
    assert!(eventually_logs_in(&env.couch, &name, &password, true).await, "with the password of its Secret");
    let events = support::operator::events_for(&env.client, &env.ns, "handled").await;
    assert!(
        events.iter().any(|(reason, _)| reason == "DriftRepaired"),
        "the repair is told: {events:?}\n{}",
        env.op.tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_found_as_declared_is_not_read_again_at_each_resync() {
    let test = "a_user_found_as_declared_is_not_read_again_at_each_resync";
    let Some(mut env) = setup(test, None).await else { return };
    env.op.kill();
    env.op = Operator::start(&env.ns, &["--resync-interval", "2s"]);
    let name = couchdb::unique_name("steady");
    let _: CouchUser = apply_json(&env.client, &env.ns, user("steady", json!({"username": name}))).await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&users, "steady", &env.op).await;
    let from = env.op.output().lines().count();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let output = env.op.output();
    let passes = count_after(&output, from, &["reconciled", "CouchUser", &format!("steady.{}", env.ns)]);
    let reads = count_after(&output, from, &["method=\"GET\"", "path=/_users/", &name]);
    assert!(passes >= 3, "the resync ran the user's pass ({passes} passes)\n{}", env.op.tail());
    // One read may remain: a pass whose write came before the follower's first position
    // records nothing, and the next one reads to record it.
    assert!(reads <= 1, "{passes} passes read the user {reads} times\n{}", env.op.tail());
    // And what it trusts is still checked: a hand edit is seen at once.
    let mut doc = env.couch.get_user(&name).await.expect("get").expect("the user");
    doc.roles = vec!["intruder".into()];
    env.couch.put_user(&doc).await.expect("edit by hand");
    let restored = couchdb::eventually(Duration::from_secs(10), || async {
        env.couch.get_user(&name).await.ok().flatten().filter(|d| d.roles.is_empty())
    })
    .await;
    assert!(restored.is_some(), "the edit is undone\n{}", env.op.tail());
}
