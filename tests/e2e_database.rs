//! End-to-end, operator running as a process: CouchServer and CouchDatabase against the real
//! kube-apiserver and the test CouchDB. Each test has its own namespace and its own operator.

mod support;

use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchServer};
use couchshare::couch::{CouchClient, CreateDatabase};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::operator::{
    Operator, admin_secret, apply_json, events_for, ready, server_manifest, wait_for, wait_not_ready, wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    ns: String,
    op: Operator,
}

/// The servers, the CRDs, a fresh namespace with the admin Secret, and an operator for it.
async fn setup(test: &str) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "db").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    Some(Env { client, couch, ns, op })
}

async fn main_server(env: &Env) -> CouchServer {
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&env.client, &env.ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(env.client.clone(), &env.ns), "main", &env.op).await
}

fn database(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut full = json!({"serverRef": {"name": "main"}});
    if let (Some(f), Some(s)) = (full.as_object_mut(), spec.as_object()) {
        f.extend(s.clone());
    }
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchDatabase", "metadata": {"name": name}, "spec": full})
}

async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str, op: &Operator) {
    let found = couchdb::eventually(Duration::from_secs(30), || async {
        events_for(client, ns, name).await.into_iter().any(|(r, _)| r == reason).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no {reason} event for {name}; events: {:?}\n{}",
        events_for(client, ns, name).await,
        op.tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_status_shows_version_nodes_and_replication_budget() {
    let Some(env) = setup("server_status_shows_version_nodes_and_replication_budget").await else { return };
    let server = main_server(&env).await;
    let info = env.couch.server_info().await.expect("GET /");
    let status = server.status.expect("status");
    assert_eq!(status.version.as_deref(), Some(info.version.as_str()));
    assert_eq!(status.vendor, info.vendor);
    assert!(!status.nodes.is_empty(), "nodes from _membership");
    let budget = status.replication_budget.expect("budget");
    assert_eq!(budget.total, budget.max_jobs_per_node * budget.nodes);
    assert_eq!(status.observed_generation, server.metadata.generation);
    for db in ["_users", "_replicator", "_global_changes"] {
        assert!(env.couch.database_exists(db).await.expect("exists"), "system database {db}");
    }
    if !info.is_couchdb {
        assert!(
            status.unsupported.contains(&"scheduler".to_string()),
            "says what it cannot do: {:?}",
            status.unsupported
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_and_require_valid_user_are_applied() {
    let test = "cors_and_require_valid_user_are_applied";
    let Some(env) = setup(test).await else { return };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let origin = format!("https://{}.example", couchdb::unique_name("app"));
    let info = env.couch.server_info().await.expect("GET /");
    // require_valid_user turns away every anonymous request on the shared server: only where
    // the server implements it, and switched back off at the end.
    let require = info.is_couchdb;
    let mut config = json!({"cors": {"enabled": true, "origins": [origin], "credentials": true}});
    if require {
        config["requireValidUser"] = json!(true);
    } else {
        couchdb::skip_lacking(&format!(
            "SKIP {test} (require_valid_user part): server lacks capability requireValidUser (not Apache CouchDB)"
        ));
    }
    let _: CouchServer =
        apply_json(&env.client, &env.ns, server_manifest("main", &url, json!({"config": config}))).await;
    let servers = Api::<CouchServer>::namespaced(env.client.clone(), &env.ns);
    let server = wait_ready(&servers, "main", &env.op).await;
    let applied = server.status.expect("status").applied_config;
    assert!(applied.iter().any(|k| k == "cors/origins"), "applied: {applied:?}");

    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{url}/_all_dbs"))
        .header("Origin", &origin)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .expect("preflight");
    let allowed =
        preflight.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(allowed.as_deref(), Some(origin.as_str()), "CORS preflight allows the declared origin");

    if require {
        // GET / (not _all_dbs, which CouchDB 3 keeps admin-only anyway).
        let anonymous = http.get(format!("{url}/")).send().await.expect("anonymous GET");
        assert_eq!(anonymous.status().as_u16(), 401, "anonymous requests refused");
        let config =
            json!({"cors": {"enabled": true, "origins": [origin], "credentials": true}, "requireValidUser": false});
        let _: CouchServer =
            apply_json(&env.client, &env.ns, server_manifest("main", &url, json!({"config": config}))).await;
        let back = couchdb::eventually(Duration::from_secs(30), || async {
            let r = http.get(format!("{url}/")).send().await.ok()?;
            (r.status().as_u16() != 401).then_some(())
        })
        .await;
        assert!(back.is_some(), "require_valid_user switched back off");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_is_created_with_its_options_and_admin_only_security() {
    let Some(env) = setup("a_database_is_created_with_its_options_and_admin_only_security").await else { return };
    main_server(&env).await;
    let caps = env.couch.capabilities().await.expect("capabilities");
    let name = couchdb::unique_name("created");
    let mut spec = json!({"name": name, "shards": {"count": 2, "copies": 1}});
    if caps.partitioned {
        spec["partitioned"] = json!(true);
    } else {
        couchdb::skip_lacking(
            "SKIP a_database_is_created_with_its_options_and_admin_only_security (partitioned part): server lacks capability partitioned",
        );
    }
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("created", spec)).await;
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let db = wait_ready(&dbs, "created", &env.op).await;
    let status = db.status.expect("status");
    assert_eq!(status.couch_name.as_deref(), Some(name.as_str()));
    assert_eq!(status.doc_count, Some(0));
    assert_eq!(status.partitioned, Some(caps.partitioned));
    assert!(db.metadata.finalizers.unwrap_or_default().contains(&"couchshare.io/cleanup".to_string()));
    let info = env.couch.database_info(&name).await.expect("database exists on CouchDB");
    assert_eq!(info.is_partitioned(), caps.partitioned);
    let security = env.couch.security(&name).await.expect("_security");
    assert_eq!(security.members.roles, vec!["_admin".to_string()], "never public by accident");
    let anonymous = env.couch.anonymous().all_docs(&name, &Default::default()).await;
    assert!(anonymous.is_err_and(|e| e.is_access_denied()), "anonymous access refused");
    wait_event(&env.client, &env.ns, "created", "Created", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_database_is_refused_without_adopt_and_adopted_with_it() {
    let Some(env) = setup("an_existing_database_is_refused_without_adopt_and_adopted_with_it").await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("existing");
    env.couch.create_database(&name, &CreateDatabase::default()).await.expect("create by hand");
    let before = env.couch.security(&name).await.expect("_security");
    env.couch.put_document(&name, "keep-me", &json!({"precious": true})).await.expect("a document");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("existing", json!({"name": name}))).await;
    let refused = wait_not_ready(&dbs, "existing", &env.op, "AlreadyExists").await;
    let message = ready(&refused).map(|r| r.2).unwrap_or_default();
    assert!(message.contains("adopt: true"), "the message says how to take it over: {message}");
    let security = env.couch.security(&name).await.expect("_security");
    assert_eq!(security, before, "nothing was written while refused");

    let _: CouchDatabase =
        apply_json(&env.client, &env.ns, database("existing", json!({"name": name, "adopt": true}))).await;
    wait_ready(&dbs, "existing", &env.op).await;
    assert!(env.couch.get_document(&name, "keep-me").await.expect("read").is_some(), "adoption keeps the data");
    assert_eq!(env.couch.security(&name).await.expect("_security").members.roles, vec!["_admin".to_string()]);
    wait_event(&env.client, &env.ns, "existing", "Adopted", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_resources_for_one_database_leave_the_later_one_in_conflict() {
    let Some(env) = setup("two_resources_for_one_database_leave_the_later_one_in_conflict").await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("shared");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let _: CouchDatabase = apply_json(
        &env.client,
        &env.ns,
        database("first", json!({"name": name, "security": {"members": {"names": ["alice"]}}})),
    )
    .await;
    wait_ready(&dbs, "first", &env.op).await;
    let _: CouchDatabase =
        apply_json(&env.client, &env.ns, database("second", json!({"name": name, "adopt": true, "public": true})))
            .await;
    let second = wait_not_ready(&dbs, "second", &env.op, "Conflict").await;
    let message = ready(&second).map(|r| r.2).unwrap_or_default();
    assert!(message.contains("first"), "names the owner: {message}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let security = env.couch.security(&name).await.expect("_security");
    assert_eq!(security.members.names, vec!["alice".to_string()], "the second resource overwrote nothing");
    assert!(ready(&dbs.get("first").await.expect("first")).is_some_and(|r| r.0 == "True"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_deleted_by_hand_is_recreated() {
    let Some(env) = setup("a_database_deleted_by_hand_is_recreated").await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("drift");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("drift", json!({"name": name}))).await;
    wait_ready(&dbs, "drift", &env.op).await;
    env.couch.delete_database(&name).await.expect("delete by hand");
    let back = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.database_exists(&name).await.ok().filter(|e| *e).map(|_| ())
    })
    .await;
    assert!(back.is_some(), "database recreated\n{}", env.op.tail());
    wait_event(&env.client, &env.ns, "drift", "DriftRepaired", &env.op).await;
    assert_eq!(env.couch.security(&name).await.expect("_security").members.roles, vec!["_admin".to_string()]);
    // Deleted again within minutes: the same Event, counted, not a second one.
    env.couch.delete_database(&name).await.expect("delete by hand again");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let counted = couchdb::eventually(Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?;
        let repaired: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some("drift") && e.reason.as_deref() == Some("DriftRepaired")
            })
            .collect();
        let count = repaired.iter().map(|e| e.series.as_ref().and_then(|s| s.count).unwrap_or(1)).sum::<i32>();
        (count == 2).then_some(repaired.len())
    })
    .await;
    assert_eq!(
        counted,
        Some(1),
        "the second repair counted on the first DriftRepaired Event; events: {:?}\n{}",
        events_for(&env.client, &env.ns, "drift").await,
        env.op.tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn security_edited_by_hand_is_restored() {
    let Some(env) = setup("security_edited_by_hand_is_restored").await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("guarded");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let spec = json!({"name": name, "security": {"admins": {"names": ["ops"]}, "members": {"names": ["alice"], "roles": ["writers"]}}});
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("guarded", spec)).await;
    wait_ready(&dbs, "guarded", &env.op).await;
    let mut hacked = env.couch.security(&name).await.expect("_security");
    hacked.members.names = vec![];
    hacked.members.roles = vec![];
    env.couch.put_security(&name, &hacked).await.expect("make it public by hand");
    let restored = couchdb::eventually(Duration::from_secs(30), || async {
        let s = env.couch.security(&name).await.ok()?;
        (s.members.names == ["alice"] && s.members.roles == ["writers"] && s.admins.names == ["ops"]).then_some(())
    })
    .await;
    assert!(restored.is_some(), "_security restored\n{}", env.op.tail());
    wait_event(&env.client, &env.ns, "guarded", "SecurityApplied", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_security_edit_by_hand_is_found_by_the_audit_long_before_a_resync() {
    let test = "a_security_edit_by_hand_is_found_by_the_audit_long_before_a_resync";
    let Some(mut env) = setup(test).await else { return };
    let caps = env.couch.capabilities().await.expect("capabilities");
    if !couchdb::require_capability(test, &caps, "db_updates") {
        return;
    }
    // No resync to fall back on: a _security edit shows in no CouchDB feed, only the audit finds it.
    env.op.kill();
    env.op = Operator::start(&env.ns, &["--resync-interval", "10m"]);
    main_server(&env).await;
    let name = couchdb::unique_name("audited");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let spec = json!({"name": name, "security": {"members": {"names": ["alice"]}}});
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("audited", spec)).await;
    wait_ready(&dbs, "audited", &env.op).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut public = env.couch.security(&name).await.expect("_security");
    public.members.names.clear();
    env.couch.put_security(&name, &public).await.expect("one wrong click: public");
    let started = std::time::Instant::now();
    let restored = couchdb::eventually(Duration::from_secs(20), || async {
        env.couch.security(&name).await.ok().filter(|s| s.members.names == ["alice"])
    })
    .await;
    assert!(restored.is_some(), "_security restored by the audit\n{}", env.op.tail());
    eprintln!("{test}: a public _security restored after {:?}", started.elapsed());
    wait_event(&env.client, &env.ns, "audited", "SecurityApplied", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_data_and_delete_removes_the_database() {
    let Some(env) = setup("retain_keeps_the_data_and_delete_removes_the_database").await else { return };
    main_server(&env).await;
    let kept = couchdb::unique_name("kept");
    let gone = couchdb::unique_name("gone");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let _: CouchDatabase = apply_json(&env.client, &env.ns, database("kept", json!({"name": kept}))).await;
    let _: CouchDatabase =
        apply_json(&env.client, &env.ns, database("gone", json!({"name": gone, "deletionPolicy": "Delete"}))).await;
    wait_ready(&dbs, "kept", &env.op).await;
    wait_ready(&dbs, "gone", &env.op).await;
    env.couch.put_document(&kept, "doc", &json!({"v": 1})).await.expect("write");
    for name in ["kept", "gone"] {
        dbs.delete(name, &DeleteParams::default()).await.expect("delete resource");
    }
    for name in ["kept", "gone"] {
        let deleted = couchdb::eventually(Duration::from_secs(30), || async {
            dbs.get_opt(name).await.ok().and_then(|o| o.is_none().then_some(()))
        })
        .await;
        assert!(deleted.is_some(), "{name}: finalizer released\n{}", env.op.tail());
    }
    assert!(env.couch.get_document(&kept, "doc").await.expect("read").is_some(), "Retain keeps the data");
    assert!(!env.couch.database_exists(&gone).await.expect("exists?"), "Delete removes the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_never_hangs_when_the_server_is_gone() {
    let Some(env) = setup("deletion_never_hangs_when_the_server_is_gone").await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("orphan");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let _: CouchDatabase =
        apply_json(&env.client, &env.ns, database("orphan", json!({"name": name, "deletionPolicy": "Delete"}))).await;
    wait_ready(&dbs, "orphan", &env.op).await;
    Api::<CouchServer>::namespaced(env.client.clone(), &env.ns)
        .delete("main", &DeleteParams::default())
        .await
        .expect("delete server");
    dbs.delete("orphan", &DeleteParams::default()).await.expect("delete resource");
    let released = couchdb::eventually(Duration::from_secs(30), || async {
        dbs.get_opt("orphan").await.ok().and_then(|o| o.is_none().then_some(()))
    })
    .await;
    assert!(released.is_some(), "finalizer released without the server\n{}", env.op.tail());
    wait_event(&env.client, &env.ns, "orphan", "CleanupSkipped", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_going_away_and_back_turns_ready_false_then_true_without_restart() {
    let Some(env) = setup("the_server_going_away_and_back_turns_ready_false_then_true_without_restart").await else {
        return;
    };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let mut proxy = support::operator::Proxy::start(&support::operator::host_port(&url)).await;
    let _: CouchServer = apply_json(&env.client, &env.ns, server_manifest("flaky", &proxy.url(), json!({}))).await;
    let servers = Api::<CouchServer>::namespaced(env.client.clone(), &env.ns);
    wait_ready(&servers, "flaky", &env.op).await;
    proxy.stop().await;
    let down = wait_not_ready(&servers, "flaky", &env.op, "Unreachable").await;
    assert!(ready(&down).is_some_and(|r| r.2.contains("unreachable")), "{:?}", ready(&down));
    proxy.restart().await;
    wait_ready(&servers, "flaky", &env.op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_admin_secret_is_a_precise_condition_until_it_appears() {
    let Some(env) = setup("a_missing_admin_secret_is_a_precise_condition_until_it_appears").await else { return };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let spec = json!({"adminCredentials": {"secretRef": {"name": "later", "passwordKey": "pw"}}});
    let _: CouchServer = apply_json(&env.client, &env.ns, server_manifest("nosecret", &url, spec)).await;
    let servers = Api::<CouchServer>::namespaced(env.client.clone(), &env.ns);
    let waiting = wait_not_ready(&servers, "nosecret", &env.op, "SecretNotFound").await;
    let message = ready(&waiting).map(|r| r.2).unwrap_or_default();
    assert!(message.contains(&format!("{}/later", env.ns)), "names the Secret: {message}");
    let creds = couchdb::admin_credentials();
    let _: k8s_openapi::api::core::v1::Secret = apply_json(
        &env.client,
        &env.ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}, "stringData": {"username": creds.username}}),
    )
    .await;
    let missing_key = wait_not_ready(&servers, "nosecret", &env.op, "SecretKeyMissing").await;
    assert!(ready(&missing_key).is_some_and(|r| r.2.contains("\"pw\"")));
    let _: k8s_openapi::api::core::v1::Secret = apply_json(
        &env.client,
        &env.ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}, "stringData": {"username": creds.username, "pw": creds.password}}),
    )
    .await;
    wait_ready(&servers, "nosecret", &env.op).await;
    assert!(!env.op.output().contains(&couchdb::admin_credentials().password), "the password never reaches the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_from_a_namespace_the_server_does_not_allow_is_refused() {
    let Some(env) = setup("a_reference_from_a_namespace_the_server_does_not_allow_is_refused").await else { return };
    main_server(&env).await;
    // A second namespace with its own operator references the first namespace's server.
    let other = k8s::namespace(&env.client, "tenant").await;
    // This operator watches only the tenant namespace: the server's change in the other one
    // reaches it by no watch, only at its resync (an operator that watches every namespace, as
    // the chart installs it, is woken by the server's watch).
    let op = Operator::start(&other, &["--resync-interval", "3s"]);
    // In the tenant namespace's scope: the server's namespace does not trust it.
    let name = format!("{other}_{}", couchdb::unique_name("tenant"));
    let mut manifest = database("tenant-db", json!({"name": name}));
    manifest["spec"]["serverRef"]["namespace"] = json!(env.ns);
    let _: CouchDatabase = apply_json(&env.client, &other, manifest).await;
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &other);
    let refused = wait_not_ready(&dbs, "tenant-db", &op, "NotAllowed").await;
    assert!(ready(&refused).is_some_and(|r| r.2.contains("allowedNamespaces")));
    assert!(!env.couch.database_exists(&name).await.expect("exists?"), "nothing created");
    // Opening the server to every namespace lets it through, without touching the database.
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer =
        apply_json(&env.client, &env.ns, server_manifest("main", &url, json!({"allowedNamespaces": {"from": "All"}})))
            .await;
    wait_ready(&dbs, "tenant-db", &op).await;
    assert!(env.couch.database_exists(&name).await.expect("exists?"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_written_in_yaml_reach_couchdb_and_a_key_kubectl_cannot_keep_is_refused() {
    let test = "shards_written_in_yaml_reach_couchdb_and_a_key_kubectl_cannot_keep_is_refused";
    let Some(env) = setup(test).await else { return };
    main_server(&env).await;
    let name = couchdb::unique_name("sharded");
    let manifest = |shards: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata:\n  name: sharded\nspec:\n  \
             serverRef: {{name: main}}\n  name: {name}\n  shards: {shards}\n"
        )
    };
    // The old names: YAML 1.1 reads `n` as `false`. Refused, naming the key, and nothing stored.
    let Some((ok, said)) = k8s::kubectl_apply(test, &env.ns, &manifest("{q: 4, n: 1}")) else { return };
    assert!(!ok, "kubectl accepted shards {{q, n}}: {said}");
    assert!(said.contains("unknown field \"spec.shards.false\""), "kubectl names the key it could not keep: {said}");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    assert!(dbs.get_opt("sharded").await.expect("get").is_none(), "nothing half-applied");
    // The names every parser reads the same.
    let (ok, said) = k8s::kubectl_apply(test, &env.ns, &manifest("{count: 4, copies: 1}")).expect("kubectl");
    assert!(ok, "{said}");
    let db = wait_ready(&dbs, "sharded", &env.op).await;
    let shards = db.spec.shards.expect("shards kept");
    assert_eq!((shards.count, shards.copies), (Some(4), Some(1)), "every declared value arrives");
    let info = env.couch.database_info(&name).await.expect("database info");
    match info.cluster {
        Some(cluster) => assert_eq!((cluster.q, cluster.n), (4, 1), "CouchDB created it with the declared shards"),
        None => couchdb::skip_lacking(&format!(
            "SKIP {test} (CouchDB shards part): server lacks capability shards (no cluster in GET /{{db}})"
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_formed_by_a_seedlist_is_finished_and_its_membership_reported() {
    let test = "a_cluster_formed_by_a_seedlist_is_finished_and_its_membership_reported";
    let Some(env) = setup(test).await else { return };
    let membership = env.couch.membership().await.expect("_membership");
    if membership.cluster_nodes.len() < 2 {
        // A topology, not a capability the server lacks: a single-node run skips it even with
        // COUCHSHARE_REQUIRE_CAPABILITIES=1.
        couchdb::say_skip(&format!("SKIP {test}: needs a cluster (this CouchDB is a single node)"));
        return;
    }
    main_server(&env).await;
    let servers = Api::<CouchServer>::namespaced(env.client.clone(), &env.ns);
    let server = wait_for(&servers, "main", &env.op, "finished, all nodes connected", |s| {
        let healthy = s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False" && c.reason == "AllNodesConnected")
        });
        healthy && s.status.as_ref().and_then(|st| st.membership.as_ref()).is_some_and(|m| m.finished)
    })
    .await;
    let status = server.status.expect("status");
    assert_eq!(status.nodes.len(), membership.cluster_nodes.len());
    // One admin hash, uuid and auth secret on every node: a session from one node works on all.
    let creds = couchdb::admin_credentials();
    for (section, key) in [("admins", creds.username.as_str()), ("couchdb", "uuid"), ("chttpd_auth", "secret")] {
        let mut values = Vec::new();
        for node in &membership.cluster_nodes {
            values.push(env.couch.config_get(node, section, key).await.expect("node config"));
        }
        assert!(values[0].is_some(), "[{section}] {key} is set");
        assert!(values.iter().all(|v| v == &values[0]), "[{section}] {key} is the same on every node");
    }
    for db in couchshare::controller::SYSTEM_DATABASES {
        let info = env.couch.database_info(db).await.expect("system database");
        assert!(info.cluster.is_some_and(|c| c.n >= 2), "{db} is replicated across the cluster");
    }
}

/// Sets the server admin `name`'s password on every node: in plain text on the first, which
/// hashes it, then that hash on the others (a cluster's nodes must agree on it). Returns once
/// the first has hashed it: until then CouchDB refuses the new password, and CouchDB 3.4 and
/// later lock out a name after five refusals.
async fn set_admin(couch: &CouchClient, name: &str, password: &str) {
    let nodes = couch.membership().await.expect("_membership").all_nodes;
    let (first, rest) = nodes.split_first().expect("a node");
    let before = couch.config_get(first, "admins", name).await.expect("read the admin");
    couch.config_set(first, "admins", name, password).await.expect("set the admin");
    let hashed = couchdb::eventually(Duration::from_secs(10), || async {
        let now = couch.config_get(first, "admins", name).await.ok().flatten();
        now.filter(|v| v.starts_with("-pbkdf2") && Some(v) != before.as_ref())
    })
    .await
    .expect("CouchDB hashes the admin's password");
    for node in rest {
        couch.config_set(node, "admins", name, &hashed).await.expect("set the same hash");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_follows_a_rotated_admin_secret() {
    let test = "the_audit_follows_a_rotated_admin_secret";
    // The test operator's resync is ten minutes: only the audit finds a _security edit in time.
    let Some(env) = setup(test).await else { return };
    let caps = env.couch.capabilities().await.expect("capabilities");
    if !couchdb::require_capability(test, &caps, "db_updates") {
        return;
    }
    // A server reached as an admin of its own, whose password is then rotated.
    let admin = couchdb::unique_name("rotating");
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rotating-admin"},
               "stringData": {"username": admin, "password": password}})
    };
    set_admin(&env.couch, &admin, "first-password").await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&env.client, &env.ns, secret("first-password")).await;
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let mut server = server_manifest("rotating", &url, json!({}));
    server["spec"]["adminCredentials"]["secretRef"]["name"] = json!("rotating-admin");
    let _: CouchServer = apply_json(&env.client, &env.ns, server).await;
    wait_ready(&Api::<CouchServer>::namespaced(env.client.clone(), &env.ns), "rotating", &env.op).await;
    let name = couchdb::unique_name("rotated");
    let dbs = Api::<CouchDatabase>::namespaced(env.client.clone(), &env.ns);
    let mut spec = database("rotated", json!({"name": name, "security": {"members": {"names": ["alice"]}}}));
    spec["spec"]["serverRef"]["name"] = json!("rotating");
    let _: CouchDatabase = apply_json(&env.client, &env.ns, spec).await;
    wait_ready(&dbs, "rotated", &env.op).await;
    // Rotated: the old password stops working, the Secret holds the new one.
    set_admin(&env.couch, &admin, "second-password").await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&env.client, &env.ns, secret("second-password")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut public = env.couch.security(&name).await.expect("_security");
    public.members.names.clear();
    env.couch.put_security(&name, &public).await.expect("one wrong click: public");
    let restored = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.security(&name).await.ok().filter(|s| s.members.names == ["alice"])
    })
    .await;
    let nodes = env.couch.membership().await.expect("_membership").all_nodes;
    for node in &nodes {
        let _ = env.couch.config_delete(node, "admins", &admin).await;
    }
    assert!(restored.is_some(), "_security restored by the audit with the rotated password\n{}", env.op.tail());
}
