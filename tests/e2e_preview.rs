//! End-to-end: `couchshare plan` held against the operator. For one directory of manifests —
//! a server, two databases, a user with a per-user database, a grant and a share with a sharing
//! document — what the dry run says it would write is exactly what the operator then writes
//! (once applied with `kubectl apply -f`), and nothing else; run again on the result, it says
//! there is nothing left to do.

mod support;

use std::collections::BTreeSet;

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::couch::CouchClient;
use kube::api::Api;
use serde_json::json;
use support::operator::{Operator, admin_secret, manifest, server_manifest, wait_ready};
use support::{couchdb, k8s};

/// `admins [..] [..], members [..] [..]` of a `_security`, names and roles sorted.
fn security_line(admins: (&[String], &[String]), members: (&[String], &[String])) -> String {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    format!(
        "admins {:?} {:?}, members {:?} {:?}",
        sorted(admins.0),
        sorted(admins.1),
        sorted(members.0),
        sorted(members.1)
    )
}

/// Parses `[\"a\", \"b\"]` as printed by the plan.
fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("a list in the plan: {text}: {e}"))
}

/// What a plan says it writes, by kind of write.
#[derive(Debug, Default, PartialEq)]
struct Writes {
    databases: BTreeSet<String>,
    security: Vec<(String, String)>,
    users: BTreeSet<String>,
    sharing_documents: BTreeSet<String>,
    replication_documents: BTreeSet<String>,
}

fn planned(out: &str) -> Writes {
    let mut w = Writes::default();
    for line in out.lines() {
        let what = line.split_once(": ").map(|(_, w)| w).unwrap_or_default();
        if let Some(db) = what.strip_prefix("create database ") {
            w.databases.insert(db.split(' ').next().unwrap_or_default().to_string());
        } else if let Some(db) = what.strip_prefix("create per-user database ") {
            w.databases.insert(db.to_string());
        } else if let Some(rest) = what.strip_prefix("_security of ") {
            // `_security of NAME: admins [..] [..], members [..] [..]`
            let (db, entries) = rest.split_once(": ").expect("security line");
            let parts: Vec<&str> = entries.splitn(2, ", members ").collect();
            let admins = parts[0].trim_start_matches("admins ");
            let (an, ar) = admins.split_once("] ").expect("admins");
            let (mn, mr) = parts[1].split_once("] ").expect("members");
            let (an, ar, mn, mr) = (list(&format!("{an}]")), list(ar), list(&format!("{mn}]")), list(mr));
            w.security.push((db.to_string(), security_line((&an, &ar), (&mn, &mr))));
        } else if let Some(user) = what.strip_prefix("create user ") {
            w.users.insert(user.split(' ').next().unwrap_or_default().to_string());
        } else if let Some(user) = what.strip_prefix("create scoped replication user ") {
            w.users.insert(user.to_string());
        } else if let Some(doc) = what.strip_prefix("write sharing document ") {
            w.sharing_documents.insert(doc.to_string());
        } else if let Some(doc) = what.strip_prefix("write replication document ") {
            w.replication_documents.insert(doc.to_string());
        }
    }
    w.security.sort();
    w
}

fn run_plan(dir: &std::path::Path, ns: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_couchshare"))
        .args(["plan", &dir.display().to_string(), "-n", ns])
        .output()
        .expect("couchshare plan runs");
    assert!(out.status.success(), "plan failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same writes, read back from CouchDB for the names the plan gave.
async fn written(couch: &CouchClient, plan: &Writes, replication_prefix: &str) -> Writes {
    let mut w = Writes::default();
    for db in &plan.databases {
        if couch.database_exists(db).await.expect("exists?") {
            w.databases.insert(db.clone());
        }
    }
    for (db, _) in &plan.security {
        let Ok(s) = couch.security(db).await else { continue };
        w.security.push((
            db.clone(),
            security_line((&s.admins.names, &s.admins.roles), (&s.members.names, &s.members.roles)),
        ));
    }
    for user in &plan.users {
        if couch.get_user(user).await.expect("get user").is_some() {
            w.users.insert(user.clone());
        }
    }
    for doc in &plan.sharing_documents {
        let (db, id) = doc.rsplit_once('/').expect("db/id");
        if couch.get_document(db, id).await.expect("get").is_some() {
            w.sharing_documents.insert(doc.clone());
        }
    }
    // Every replication document of the namespace, not only the planned ones: nothing else.
    for doc in couch.list_replication_docs_with_prefix("_replicator", replication_prefix).await.expect("_replicator") {
        if let Some(id) = doc["_id"].as_str() {
            w.replication_documents.insert(format!("_replicator/{id}"));
        }
    }
    w.security.sort();
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn what_couchshare_plan_prints_is_what_the_operator_then_writes() {
    let test = "what_couchshare_plan_prints_is_what_the_operator_then_writes";
    let Some((client, couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "preview").await;
    let (a, b, clerk) = (couchdb::unique_name("prev-a"), couchdb::unique_name("prev-b"), couchdb::unique_name("clerk"));
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let docs = [
        server_manifest("main", &url, json!({})),
        manifest(
            "CouchDatabase",
            "inv-a",
            json!({"serverRef": {"name": "main"}, "name": a, "security": {"members": {"roles": ["staff"]}}}),
        ),
        manifest("CouchDatabase", "inv-b", json!({"serverRef": {"name": "main"}, "name": b})),
        manifest(
            "CouchUser",
            "clerk",
            json!({"serverRef": {"name": "main"}, "username": clerk, "roles": ["staff"], "perUserDatabase": true}),
        ),
        manifest(
            "CouchGrant",
            "clerk-admin",
            json!({"database": {"name": "inv-b"}, "users": [{"name": "clerk"}], "access": "admin"}),
        ),
        manifest(
            "CouchShare",
            "a-to-b",
            json!({"source": {"database": {"name": "inv-a"}}, "target": {"database": {"name": "inv-b"}},
                                                "sharingDocument": {"id": "db_sharing-{source}--{target}"}}),
        ),
    ];
    // YAML is a superset of JSON: one document per manifest.
    let yaml = docs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n---\n");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("all.yaml"), &yaml).expect("write manifests");

    let first = run_plan(dir.path(), &ns);
    let plan = planned(&first);
    let replication_prefix = format!("couchshare_{ns}_");
    assert_eq!(plan.databases.len(), 3, "two databases and the per-user one: {first}");
    assert_eq!(plan.users.len(), 2, "the user and the share's scoped user: {first}");
    assert_eq!(plan.sharing_documents.len(), 1, "{first}");
    assert_eq!(plan.replication_documents.len(), 1, "{first}");
    assert_eq!(plan.security.len(), 2, "both databases' _security: {first}");
    assert_eq!(written(&couch, &plan, &replication_prefix).await.databases, BTreeSet::new(), "the plan wrote nothing");

    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let Some((ok, out)) = k8s::kubectl_apply(test, &ns, &yaml) else { return };
    assert!(ok, "kubectl apply -f: {out}");
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "inv-a", &op).await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "inv-b", &op).await;
    wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), "clerk", &op).await;
    wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "clerk-admin", &op).await;
    wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), "a-to-b", &op).await;

    assert_eq!(
        written(&couch, &plan, &replication_prefix).await,
        plan,
        "the operator wrote what the plan said:\n{first}"
    );
    let again = run_plan(dir.path(), &ns);
    let left: Vec<&str> = again.lines().filter(|l| !l.starts_with("= ")).collect();
    assert!(left.is_empty(), "nothing left to do once applied, but the plan says:\n{}", left.join("\n"));
    assert!(again.contains("CouchShare a-to-b: replication document"), "the share is in the plan: {again}");
    assert!(!again.contains(&couchdb::admin_credentials().password), "no secret in the plan");
}
