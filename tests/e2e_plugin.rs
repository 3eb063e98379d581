//! End-to-end, operator running: `kubectl couchshare` run through kubectl's own plugin lookup
//! (`kubectl-couchshare` on the `PATH`). `access` on the Drafft example and on a tenancy
//! example (a grant from another namespace let in by consent, one refused) prints every entry
//! with its cause, and its `_security` is CouchDB's own after `kubectl apply`; `shares`,
//! `status` and `plan`; `-o json|yaml|wide`, `-n`, `-A`, `--kubeconfig`, and the exit codes.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use couchshare::api::{CouchBackup, CouchDatabase, CouchGrant, CouchShare, CouchUser};
use couchshare::couch::{CouchClient, Security};
use kube::api::Api;
use serde_json::Value;
use support::operator::{Operator, admin_secret, wait_not_ready, wait_ready};
use support::tenants::tenants;
use support::{couchdb, k8s};

/// `kubectl couchshare ARGS` through kubectl's plugin lookup: (exit code, stdout, stderr).
fn plugin(kubeconfig: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let kubectl = std::env::var("COUCHSHARE_KUBECTL").expect("COUCHSHARE_KUBECTL (set by tools/test)");
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-couchshare")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(kubectl);
    cmd.arg("couchshare").args(args).env("PATH", path);
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let out = cmd.output().expect("run kubectl couchshare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(kubeconfig: Option<&Path>, args: &[&str]) -> Value {
    let (code, out, err) = plugin(kubeconfig, args);
    assert_eq!(code, 0, "kubectl couchshare {args:?}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} -o json is not JSON ({e}): {out}"))
}

type Sets = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

fn sets_of_security(s: &Security) -> Sets {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    (set(&s.admins.names), set(&s.admins.roles), set(&s.members.names), set(&s.members.roles))
}

/// The `_security` the plugin explains: from its `security`, and again from its entries.
fn sets_of_explained(v: &Value) -> (Sets, Sets) {
    let security: Security = serde_json::from_value(v["security"].clone()).expect("security");
    let mut from_entries: Sets = Default::default();
    for e in v["entries"].as_array().expect("entries") {
        let value = e["value"].as_str().expect("value").to_string();
        assert!(!e["causes"].as_array().expect("causes").is_empty(), "an entry without a cause: {e}");
        match (e["section"].as_str(), e["kind"].as_str()) {
            (Some("admins"), Some("name")) => from_entries.0.insert(value),
            (Some("admins"), Some("role")) => from_entries.1.insert(value),
            (Some("members"), Some("name")) => from_entries.2.insert(value),
            (Some("members"), Some("role")) => from_entries.3.insert(value),
            other => panic!("unexpected entry kind {other:?}"),
        };
    }
    (sets_of_security(&security), from_entries)
}

/// Waits until the plugin's answer and CouchDB's `_security` agree (the operator converges),
/// then returns the answer; panics with both when they never do.
async fn access_matches_couchdb(
    couch: &CouchClient,
    couch_name: &str,
    kubeconfig: Option<&Path>,
    args: &[&str],
) -> Value {
    let mut last = (Value::Null, None);
    for _ in 0..60 {
        let v = json_of(kubeconfig, args);
        let real = couch.security(couch_name).await.expect("_security");
        let (security, entries) = sets_of_explained(&v);
        assert_eq!(security, entries, "the entries list exactly the security it explains: {v:#}");
        if security == sets_of_security(&real) {
            return v;
        }
        last = (v, Some(real));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the plugin's access never matched CouchDB's _security:\nplugin: {:#}\nCouchDB: {:?}", last.0, last.1);
}

fn causes_of<'a>(v: &'a Value, value: &str) -> Vec<&'a str> {
    v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["value"] == value)
        .flat_map(|e| e["causes"].as_array().into_iter().flatten().filter_map(Value::as_str))
        .collect()
}

/// The servers, a namespace of this test with the admin Secret, and an operator watching it.
async fn start(test: &str) -> Option<(kube::Client, CouchClient, String, Operator)> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "plugin").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    Some((client, couch, ns, op))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_couchshare_explains_the_drafft_examples_access_as_couchdb_has_it() {
    let test = "kubectl_couchshare_explains_the_drafft_examples_access_as_couchdb_has_it";
    let Some((client, couch, ns, op)) = start(test).await else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let (db, user, copy) =
        (couchdb::unique_name("drafft"), couchdb::unique_name("drafft_sync"), couchdb::unique_name("drafft-copy"));
    // The example as it is, with names of this run (the example's are fixed).
    let mut yaml = String::new();
    for file in ["server/couchserver.yaml", "drafft-project/database.yaml", "drafft-project/sync-user.yaml"] {
        let text = std::fs::read_to_string(root.join("examples").join(file)).expect("example");
        yaml += &text
            .replace("drafft_v2_quantum_empanada", &db)
            .replace("drafft_sync_user_01", &user)
            .replace("url: http://127.0.0.1:5984", &format!("url: {url}"));
        yaml += "\n---\n";
    }
    // A copy of it elsewhere: its share's replication user is a member too.
    yaml += &format!(
        "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: drafft-copy}}\nspec: {{serverRef: {{name: main}}, name: {copy}}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchShare\nmetadata: {{name: backup}}\nspec: {{source: {{database: {{name: drafft-project}}}}, target: {{database: {{name: drafft-copy}}}}}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: ghost}}\nspec: {{database: {{name: drafft-project}}, access: admin, users: [{{name: nobody}}], roles: [editors]}}\n"
    );
    let Some((ok, said)) = k8s::kubectl_apply(test, &ns, &yaml) else { return };
    assert!(ok, "kubectl apply: {said}");
    wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "drafft-sync-member", &op).await;
    let share = wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), "backup", &op).await;
    let repl_user = share.status.and_then(|s| s.replication_user).expect("scoped replication user");
    wait_not_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "ghost", &op, "UserNotFound").await;

    let v = access_matches_couchdb(&couch, &db, None, &["access", "drafft-project", "-n", &ns, "-o", "json"]).await;
    assert_eq!(v["couchName"].as_str(), Some(db.as_str()), "{v:#}");
    assert!(
        causes_of(&v, &user).iter().any(|c| c.contains(&format!("CouchGrant {ns}/drafft-sync-member (member)"))),
        "{v:#}"
    );
    assert!(
        causes_of(&v, &repl_user)
            .iter()
            .any(|c| c.contains(&format!("replication user of CouchShare {ns}/backup (source)"))),
        "{v:#}"
    );
    assert!(causes_of(&v, "editors").iter().any(|c| c.contains("CouchGrant") && c.contains("ghost (admin)")), "{v:#}");
    let refused = v["refused"].to_string();
    assert!(refused.contains("ghost") && refused.contains("nobody") && refused.contains("does not exist"), "{v:#}");
    // The CouchDB name finds it too; the table and YAML say the same.
    let (code, table, err) = plugin(None, &["access", &db, "-n", &ns]);
    assert_eq!(code, 0, "{err}");
    for expected in ["SECTION", "CAUSE", &user, "members", "Refused:", "does not exist"] {
        assert!(table.contains(expected), "{expected} missing from:\n{table}");
    }
    let (code, yaml_out, _) = plugin(None, &["access", "drafft-project", "-n", &ns, "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(yaml_out.contains(&format!("value: {user}")), "{yaml_out}");

    // shares, status, plan; -A; exit codes.
    let shares = json_of(None, &["shares", "-n", &ns, "-o", "json"]);
    let backup =
        shares.as_array().expect("list").iter().find(|s| s["name"] == "backup").expect("backup listed").clone();
    assert_eq!(backup["source"], "db/drafft-project");
    assert_eq!(backup["target"], "db/drafft-copy");
    let (code, wide, _) = plugin(None, &["shares", "-A", "-o", "wide"]);
    assert_eq!(code, 0);
    assert!(wide.contains("NAMESPACE") && wide.contains(&ns) && wide.contains("LAST ERROR"), "{wide}");
    // A backup of a database that does not exist: the backup kinds are in `status` too.
    let (ok, out) = k8s::kubectl_apply(
        test,
        &ns,
        "apiVersion: couchshare.io/v1alpha1\nkind: CouchBackup\nmetadata: {name: lost}\nspec: {database: nowhere, destination: {volume: {}}}\n",
    )
    .expect("kubectl");
    assert!(ok, "{out}");
    wait_not_ready(&Api::<CouchBackup>::namespaced(client.clone(), &ns), "lost", &op, "DatabaseNotFound").await;
    let (code, out, _) = plugin(None, &["status", "-n", &ns, "-o", "json"]);
    assert_eq!(code, 4, "status exits 4 while something is not Ready: {out}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    let not_ready = status["notReady"].as_array().expect("notReady");
    assert!(not_ready.iter().any(|n| n["name"] == "ghost" && n["reason"] == "UserNotFound"), "{status:#}");
    assert!(
        not_ready
            .iter()
            .any(|n| n["kind"] == "CouchBackup" && n["name"] == "lost" && n["reason"] == "DatabaseNotFound"),
        "{status:#}"
    );
    assert!(status["servers"][0]["version"].as_str().is_some_and(|v| v.starts_with('3')), "{status:#}");
    let (code, _, err) = plugin(None, &["access", "no-such-database", "-n", &ns]);
    assert_eq!(code, 3, "a database that does not exist: {err}");
    assert!(err.contains("no CouchDatabase"), "{err}");
    let (code, _, _) = plugin(None, &["access", "--no-such-flag"]);
    assert_eq!(code, 2, "a usage error");
    let dir = tempfile::tempdir().expect("temp dir");
    let planned = couchdb::unique_name("planned");
    std::fs::write(
        dir.path().join("db.yaml"),
        format!("apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: planned}}\nspec: {{serverRef: {{name: main}}, name: {planned}}}\n"),
    )
    .expect("write");
    let (code, out, err) = plugin(None, &["plan", &dir.path().display().to_string(), "-n", &ns]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("+ CouchDatabase planned: create database {planned}")), "{out}");
    assert!(!couch.database_exists(&planned).await.expect("exists?"), "plan changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_couchshare_shows_which_consent_let_another_namespace_in_and_what_was_refused() {
    let test = "kubectl_couchshare_shows_which_consent_let_another_namespace_in_and_what_was_refused";
    let Some(env) = tenants(test, "  allowedNamespaces: {from: All}\n").await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let tag = couchdb::unique_name("t");
    let payroll = format!("{tag}-payroll");
    env.apply(
        &a,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: payroll}}\n\
             spec: {{serverRef: {{name: main}}, name: {payroll}, security: {{admins: {{roles: [payroll-admins]}}}},\n\
             \x20 sharedWith: [{{namespace: {b}, allow: [member]}}]}}\n"
        ),
    );
    let bob = format!("{b}_{tag}_bob");
    env.apply(
        &b,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: bob}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, username: {bob}}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: read-payroll}}\n\
             spec: {{database: {{name: payroll, namespace: {a}}}, access: member, users: [{{name: bob}}]}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: own-payroll}}\n\
             spec: {{database: {{name: payroll, namespace: {a}}}, access: admin, users: [{{name: bob}}]}}\n"
        ),
    );
    wait_ready(&env.api::<CouchDatabase>(&a), "payroll", &env.op).await;
    wait_ready(&env.api::<CouchUser>(&b), "bob", &env.op).await;
    wait_ready(&env.api::<CouchGrant>(&b), "read-payroll", &env.op).await;
    wait_not_ready(&env.api::<CouchGrant>(&b), "own-payroll", &env.op, "ReferenceNotPermitted").await;

    let kubeconfig = env.kubeconfig.clone();
    // --kubeconfig as a flag this time, and -A to find the database from anywhere.
    let kc = kubeconfig.display().to_string();
    let v = access_matches_couchdb(
        &env.couch,
        &payroll,
        None,
        &["--kubeconfig", &kc, "access", "payroll", "-A", "-o", "json"],
    )
    .await;
    let bob_causes = causes_of(&v, &bob);
    assert!(
        bob_causes.iter().any(|c| c.contains(&format!("CouchGrant {b}/read-payroll (member)"))
            && c.contains(&format!("consent: CouchDatabase {a}/payroll sharedWith {b}"))),
        "{v:#}"
    );
    assert!(causes_of(&v, "payroll-admins").iter().any(|c| c.contains("base _security")), "{v:#}");
    let refused = v["refused"].as_array().expect("refused");
    assert!(
        refused.iter().any(|r| r["source"] == format!("CouchGrant {b}/own-payroll")
            && r["why"].as_str().is_some_and(|w| w.contains("admin"))),
        "the admin grant without consent is listed as refused: {v:#}"
    );
    let security = env.couch.security(&payroll).await.expect("_security");
    assert!(!security.admins.names.contains(&bob), "CouchDB agrees: bob is no admin");
    let (code, table, err) = plugin(Some(&kubeconfig), &["access", "payroll", "-n", &a, "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    for expected in ["consent: CouchDatabase", "Refused:", "own-payroll", "base _security"] {
        assert!(table.contains(expected), "{expected} missing from:\n{table}");
    }
    eprintln!("{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_couchshare_explains_a_per_user_database_and_a_couch_name_grant_as_couchdb_has_them() {
    let test = "kubectl_couchshare_explains_a_per_user_database_and_a_couch_name_grant_as_couchdb_has_them";
    let Some((client, couch, ns, op)) = start(test).await else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let (ana, analytics, legacy) =
        (couchdb::unique_name("ana"), couchdb::unique_name("notes-analytics"), couchdb::unique_name("legacy"));
    // A database no resource manages, for a couchName grant (the server's own namespace is
    // trusted with unmanaged databases).
    couch.create_database(&legacy, &Default::default()).await.expect("create the unmanaged database");
    let legacy_before = sets_of_security(&couch.security(&legacy).await.expect("_security"));
    let server = std::fs::read_to_string(root.join("examples/server/couchserver.yaml")).expect("example");
    let yaml = format!(
        "{}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: ana, labels: {{app: notes}}}}\n\
         spec: {{serverRef: {{name: main}}, username: {ana}, roles: [notes-user], perUserDatabase: true}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: notes-analytics}}\n\
         spec: {{serverRef: {{name: main}}, name: {analytics}, security: {{members: {{roles: [analysts]}}}}}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchShare\nmetadata: {{name: notes-fan-in}}\n\
         spec: {{source: {{userDatabases: {{selector: {{matchLabels: {{app: notes}}}}}}}}, target: {{database: {{name: notes-analytics}}}}}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: ana-support}}\n\
         spec: {{database: {{userDatabase: {{user: ana}}}}, access: member, roles: [support]}}\n---\n\
         apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: legacy-readers}}\n\
         spec: {{database: {{couchName: {legacy}, serverRef: {{name: main}}}}, access: member, users: [{{name: ana}}]}}\n",
        server.replace("url: http://127.0.0.1:5984", &format!("url: {url}"))
    );
    let Some((ok, said)) = k8s::kubectl_apply(test, &ns, &yaml) else { return };
    assert!(ok, "kubectl apply: {said}");
    let user = wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), "ana", &op).await;
    let userdb = user.status.and_then(|s| s.per_user_database).expect("per-user database");
    let share = wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), "notes-fan-in", &op).await;
    let repl_user = share.status.and_then(|s| s.replication_user).expect("scoped replication user");
    wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "ana-support", &op).await;
    wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "legacy-readers", &op).await;

    // The per-user database: couchshare's entries are in CouchDB's _security, and what else is
    // there is CouchDB's own entry for the owner.
    let args = ["access", userdb.as_str(), "-n", ns.as_str(), "-o", "json"];
    let v = json_of(None, &args);
    assert_eq!(v["owner"].as_str(), Some(format!("{ns}/ana").as_str()), "{v:#}");
    let explained = |v: &Value| {
        let mut sets: Sets = Default::default();
        for e in v["entries"].as_array().expect("entries") {
            let value = e["value"].as_str().expect("value").to_string();
            match (e["section"].as_str(), e["kind"].as_str()) {
                (Some("admins"), Some("name")) => sets.0.insert(value),
                (Some("admins"), Some("role")) => sets.1.insert(value),
                (Some("members"), Some("name")) => sets.2.insert(value),
                (Some("members"), Some("role")) => sets.3.insert(value),
                other => panic!("unexpected entry kind {other:?}"),
            };
        }
        sets
    };
    let expected: Sets = (
        BTreeSet::new(),
        BTreeSet::new(),
        [repl_user.clone()].into_iter().collect(),
        ["support".to_string()].into_iter().collect(),
    );
    assert_eq!(explained(&v), expected, "{v:#}");
    let real = sets_of_security(&couch.security(&userdb).await.expect("_security"));
    let owner_only: BTreeSet<String> = [ana.clone()].into_iter().collect();
    let minus = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect::<BTreeSet<String>>();
    let e = explained(&v);
    assert!(e.2.is_subset(&real.2) && e.3.is_subset(&real.3), "CouchDB holds every entry explained: {real:?} {v:#}");
    assert!(
        minus(&real.0, &e.0).is_subset(&owner_only) && minus(&real.2, &e.2).is_subset(&owner_only),
        "what the plugin does not explain is the owner's own entry: {real:?}, {v:#}"
    );
    assert!(real.1.is_empty() && minus(&real.3, &e.3).is_empty(), "no other role: {real:?}");
    assert!(
        causes_of(&v, &repl_user).iter().any(|c| c.contains(&format!("CouchShare {ns}/notes-fan-in (fan-in source)"))),
        "{v:#}"
    );
    assert!(
        causes_of(&v, "support").iter().any(|c| c.contains(&format!("CouchGrant {ns}/ana-support (member)"))),
        "{v:#}"
    );

    // The couchName grant's database: its one entry, as CouchDB has it.
    let v = json_of(None, &["access", &legacy, "-n", &ns, "-o", "json"]);
    assert!(v["owner"].is_null(), "{v:#}");
    let real = sets_of_security(&couch.security(&legacy).await.expect("_security"));
    let union = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.union(b).cloned().collect::<BTreeSet<String>>();
    let e = explained(&v);
    let expected = (
        union(&legacy_before.0, &e.0),
        union(&legacy_before.1, &e.1),
        union(&legacy_before.2, &e.2),
        union(&legacy_before.3, &e.3),
    );
    assert_eq!(
        real, expected,
        "the unmanaged database's _security is what it had (CouchDB's admin-only default) and the grant's: {v:#}"
    );
    assert!(
        causes_of(&v, &ana).iter().any(|c| c.contains(&format!("CouchGrant {ns}/legacy-readers (member)"))),
        "{v:#}"
    );

    // The table says whose database it is and that other entries are not couchshare's.
    let (code, table, err) = plugin(None, &["access", &userdb, "-n", &ns]);
    assert_eq!(code, 0, "{err}");
    for expected in [format!("per-user database of CouchUser {ns}/ana"), "not couchshare's".to_string(), repl_user] {
        assert!(table.contains(&expected), "{expected} missing from:\n{table}");
    }
    couch.delete_database(&legacy).await.expect("delete the unmanaged database");
}
