//! End-to-end operations: two replicas with leader election, the metrics endpoint after a
//! scenario, `couchshare plan` (prints the changes, changes nothing), and every example
//! applied until Ready.

mod support;

use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::couch::CouchClient;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use support::operator::{Operator, admin_secret, apply_json, manifest as kind, server_manifest, wait_ready};
use support::{couchdb, k8s};

async fn main_server(client: &Client, ns: &str, op: &Operator) {
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(client, ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), ns), "main", op).await;
}

async fn eventually(what: &str, secs: u64, check: impl AsyncFn() -> bool) {
    let ok = couchdb::eventually(Duration::from_secs(secs), || async { check().await.then_some(()) }).await;
    assert!(ok.is_some(), "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_leader_election_only_the_leader_reconciles_and_a_standby_takes_over() {
    let test = "with_leader_election_only_the_leader_reconciles_and_a_standby_takes_over";
    let Some((client, couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "leader").await;
    admin_secret(&client, &ns).await;
    let args = ["--leader-election", "--lease-namespace", ns.as_str(), "--lease-seconds", "4"];
    let mut first = Operator::start(&ns, &args);
    eventually("the first replica leads", 30, async || first.output().contains("became the leader")).await;
    let second = Operator::start(&ns, &args);
    eventually("the second replica waits", 30, async || second.output().contains("waiting for leadership")).await;
    main_server(&client, &ns, &first).await;
    let name = couchdb::unique_name("led");
    let _: CouchDatabase =
        apply_json(&client, &ns, kind("CouchDatabase", "led", json!({"serverRef": {"name": "main"}, "name": name})))
            .await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "led", &first).await;
    assert!(first.output().contains("controllers running"));
    assert!(!second.output().contains("controllers running"), "the standby does not reconcile:\n{}", second.tail());
    assert!(!second.output().contains("reconciled"), "the standby reconciled something:\n{}", second.tail());

    // The leader dies without releasing its lease: the standby takes over once it expires.
    first.kill();
    eventually("the standby takes over", 40, async || second.output().contains("became the leader")).await;
    let name = couchdb::unique_name("after");
    let _: CouchDatabase =
        apply_json(&client, &ns, kind("CouchDatabase", "after", json!({"serverRef": {"name": "main"}, "name": name})))
            .await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "after", &second).await;
    assert!(couch.database_exists(&name).await.expect("exists?"), "the new leader created it");
}

/// The address the operator serves `/metrics` on, from its log.
fn metrics_address(op: &Operator) -> Option<String> {
    let out = op.output();
    let line = out.lines().find(|l| l.contains("serving /healthz"))?;
    let at = line.find("address=")?;
    Some(line[at + "address=".len()..].split_whitespace().next()?.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_shows_reconciles_couchdb_calls_replications_and_servers() {
    let test = "the_metrics_endpoint_shows_reconciles_couchdb_calls_replications_and_servers";
    let Some((client, _couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "metrics").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    main_server(&client, &ns, &op).await;
    for db in ["m-source", "m-target"] {
        let name = couchdb::unique_name(db);
        let _: CouchDatabase =
            apply_json(&client, &ns, kind("CouchDatabase", db, json!({"serverRef": {"name": "main"}, "name": name})))
                .await;
        wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), db, &op).await;
    }
    let _: CouchShare = apply_json(
        &client,
        &ns,
        kind(
            "CouchShare",
            "m-share",
            json!({"source": {"database": {"name": "m-source"}}, "target": {"database": {"name": "m-target"}}}),
        ),
    )
    .await;
    wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), "m-share", &op).await;
    let address = metrics_address(&op).expect("the operator logs its address");
    let text =
        reqwest::get(format!("http://{address}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    for expected in [
        r#"couchshare_reconciles_total{kind="CouchDatabase"}"#.to_string(),
        r#"couchshare_reconcile_duration_seconds_count{kind="CouchShare"}"#.to_string(),
        r#"couchshare_couchdb_requests_total{method="PUT",call="/{db}",status="201"}"#.to_string(),
        // Each database pass reads its database's info (its owner record and `_security` only
        // when the ledger does not know them: not here, where the operator created both).
        r#"couchshare_couchdb_request_duration_seconds_count{method="GET",call="/{db}"}"#.to_string(),
        format!(r#"couchshare_server_reachable{{namespace="{ns}",server="main"}} 1"#),
        format!(r#"couchshare_server_replication_budget{{namespace="{ns}",server="main"}}"#),
        format!(
            r#"couchshare_replication_state{{namespace="{ns}",share="m-share",replication="couchshare_{ns}_m-share_fwd",state="running"}} 1"#
        ),
        format!(r#"couchshare_replication_changes_pending{{namespace="{ns}",share="m-share""#),
        format!(r#"couchshare_replication_doc_write_failures{{namespace="{ns}",share="m-share""#),
    ] {
        assert!(text.contains(&expected), "missing {expected} in:\n{text}");
    }
    let health = reqwest::get(format!("http://{address}/healthz")).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let readyz = reqwest::get(format!("http://{address}/readyz")).await.expect("readyz");
    assert_eq!(readyz.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn couchshare_plan_prints_the_expected_changes_and_changes_nothing() {
    let test = "couchshare_plan_prints_the_expected_changes_and_changes_nothing";
    let Some((client, couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "plan").await;
    let db = couchdb::unique_name("planned");
    let user = couchdb::unique_name("planner");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests = format!(
        "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: planned}}\nspec: {{serverRef: {{name: main}}, name: {db}, security: {{members: {{roles: [planners]}}}}}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: planner}}\nspec: {{serverRef: {{name: main}}, username: {user}, roles: [planners]}}\n"
    );
    std::fs::write(dir.path().join("plan.yaml"), &manifests).expect("write manifests");
    let run_plan = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_couchshare"))
            .args(["plan", &dir.path().display().to_string(), "-n", &ns])
            .output()
            .expect("couchshare plan runs");
        assert!(out.status.success(), "plan failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run_plan();
    assert!(out.contains(&format!("+ CouchDatabase planned: create database {db}")), "{out}");
    assert!(out.contains(&format!("_security of {db}: admins [] [], members [] [\"planners\"]")), "{out}");
    assert!(out.contains(&format!("+ CouchUser planner: create user {user} with roles [\"planners\"]")), "{out}");
    // Other tests run at the same time: look at what this plan is about only.
    assert!(!couch.database_exists(&db).await.expect("exists?"), "plan created no database");
    assert!(couch.get_user(&user).await.expect("get").is_none(), "plan created no user");
    let admin = couchdb::admin_credentials();
    assert!(!out.contains(&admin.password));

    // Applied for real, the plan says there is nothing left to do.
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    main_server(&client, &ns, &op).await;
    for obj in k8s::parse_yaml(&manifests) {
        k8s::apply(&client, &ns, &obj).await.expect("apply");
    }
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "planned", &op).await;
    wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), "planner", &op).await;
    let out = run_plan();
    assert!(out.contains(&format!("= CouchDatabase planned: database {db} unchanged")), "{out}");
    assert!(out.contains(&format!("= CouchUser planner: user {user} unchanged")), "{out}");
}

/// Removes what an earlier run of the examples test left on a long-lived CouchDB (objects
/// recorded as owned by an `examples-*` namespace), so the examples' fixed names are free.
async fn clear_earlier_example_runs(couch: &CouchClient, databases: &[String], users: &[String]) {
    let from_earlier =
        |owner: Option<&Value>| owner.and_then(|o| o["namespace"].as_str()).is_some_and(|n| n.starts_with("examples-"));
    for db in databases {
        let owner = couch.get_document(db, couchshare::plan::database::OWNER_DOC_ID).await.ok().flatten();
        if from_earlier(owner.as_ref().and_then(|o| o.get("owner"))) {
            let _ = couch.delete_database(db).await;
        }
    }
    for user in users {
        if let Ok(Some(doc)) = couch.get_user(user).await
            && from_earlier(doc.extra.get(couchshare::plan::user::OWNER_FIELD))
            && let Some(rev) = &doc.rev
        {
            let _ = couch.delete_user(user, rev).await;
            let _ = couch.delete_database(&couchshare::plan::user::per_user_database_name("userdb-", user)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_is_applied_and_reaches_ready() {
    let test = "every_example_is_applied_and_reaches_ready";
    let Some((client, couch)) = support::servers(test).await else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let mut objects = Vec::new();
    for dir in ["server", "drafft-project", "per-user-analytics", "inventory-sharing", "pouchdb-webapp"] {
        let mut files: Vec<_> =
            std::fs::read_dir(root.join(dir)).expect("folder").map(|e| e.expect("entry").path()).collect();
        files.sort();
        for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(&file)
                .expect("example")
                .replace("url: http://127.0.0.1:5984", &format!("url: {url}"));
            objects.extend(k8s::parse_yaml(&text));
        }
    }
    let names = |k: &str| -> Vec<(String, Value)> {
        objects
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == k))
            .map(|o| (o.metadata.name.clone().unwrap_or_default(), o.data["spec"].clone()))
            .collect()
    };
    let databases: Vec<String> =
        names("CouchDatabase").into_iter().map(|(n, s)| s["name"].as_str().map(str::to_owned).unwrap_or(n)).collect();
    let users: Vec<String> =
        names("CouchUser").into_iter().map(|(n, s)| s["username"].as_str().map(str::to_owned).unwrap_or(n)).collect();
    clear_earlier_example_runs(&couch, &databases, &users).await;

    let ns = k8s::namespace(&client, "examples").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    for obj in &objects {
        k8s::apply(&client, &ns, obj).await.unwrap_or_else(|e| panic!("{:?} refused: {e}", obj.metadata.name));
    }
    for (name, _) in names("CouchServer") {
        wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), &name, &op).await;
    }
    for (name, _) in names("CouchDatabase") {
        wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), &name, &op).await;
    }
    for (name, _) in names("CouchUser") {
        wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), &name, &op).await;
    }
    for (name, _) in names("CouchGrant") {
        wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), &name, &op).await;
    }
    for (name, _) in names("CouchShare") {
        wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), &name, &op).await;
    }
    for db in &databases {
        assert!(couch.database_exists(db).await.expect("exists?"), "{db} exists on CouchDB");
    }
}
