//! End-to-end, one CouchServer shared by two tenant namespaces, the operator cluster-wide (as
//! the chart installs it) on a private control plane: a tenant cannot read, copy or take over
//! another namespace's objects, or what couchshare does not manage, without the consent of the
//! object's namespace or the server's trust — and once consent is given and withdrawn, the
//! access comes and goes. Manifests are YAML through `kubectl apply -f`.

mod support;

use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchGrant, CouchShare, CouchUser};
use couchshare::couch::{Credentials, Security, UserDoc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::couchdb;
use support::operator::{eventually_true, wait_gone, wait_not_ready, wait_ready};
use support::tenants::{Tenants, as_user, can_read, tenants};

/// What team A and the unmanaged objects look like on CouchDB, to compare after each attempt.
#[derive(Debug, PartialEq)]
struct Snapshot {
    security: Vec<Security>,
    replication_docs: usize,
    loot_docs: u64,
}

async fn snapshot(env: &Tenants, dbs: &[&str], loot: &str) -> Snapshot {
    let mut security = Vec::new();
    for db in dbs {
        security.push(env.couch.security(db).await.expect("_security"));
    }
    let prefix = couchshare::plan::share::replication_doc_prefix(&env.b, "");
    let replication_docs =
        env.couch.list_replication_docs_with_prefix("_replicator", &prefix).await.expect("list _replicator").len();
    let loot_docs = env.couch.database_info(loot).await.expect("loot info").doc_count;
    Snapshot { security, replication_docs, loot_docs }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_read_copy_or_take_over_another_namespaces_objects_on_a_shared_server() {
    let test = "a_tenant_cannot_read_copy_or_take_over_another_namespaces_objects_on_a_shared_server";
    let Some(env) = tenants(test, "  allowedNamespaces: {from: All}\n").await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let tag = couchdb::unique_name("t");
    let payroll = format!("{tag}-payroll");
    let alice = format!("{tag}_alice");
    // Team A: a database, a user with a per-user database, a grant.
    env.apply(
        &a,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: payroll}}\n\
             spec: {{serverRef: {{name: main}}, name: {payroll}}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: alice}}\n\
             spec: {{serverRef: {{name: main}}, username: {alice}, perUserDatabase: true}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: payroll-alice}}\n\
             spec: {{database: {{name: payroll}}, users: [{{name: alice}}]}}\n"
        ),
    );
    wait_ready(&env.api::<CouchGrant>(&a), "payroll-alice", &env.op).await;
    let alice_user = wait_ready(&env.api::<CouchUser>(&a), "alice", &env.op).await;
    let userdb = alice_user.status.and_then(|s| s.per_user_database).expect("alice's per-user database");
    env.couch.put_document(&payroll, "salary", &json!({"amount": 1})).await.expect("payroll doc");
    env.couch.put_document(&userdb, "diary", &json!({"text": "private"})).await.expect("userdb doc");
    // Unmanaged: an archive and its member, made by hand.
    let archive = format!("{tag}-hr-archive");
    let hr = format!("hr_{tag}").replace('-', "_");
    env.couch.create_database(&archive, &Default::default()).await.expect("archive");
    env.couch.put_user(&UserDoc::new(hr.clone(), vec![], Some("hr-password".into()))).await.expect("hr user");
    let mut archive_security = Security::default();
    archive_security.members.names = vec![hr.clone()];
    env.couch.put_security(&archive, &archive_security).await.expect("archive _security");
    env.couch.put_document(&archive, "review", &json!({"text": "confidential"})).await.expect("archive doc");
    // Tenant B: mallory, a database of its own to copy into, and a password for a takeover.
    env.apply(
        &b,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: mallory}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, username: {b}_{tag}_mallory}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: loot}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, name: {b}_{tag}-loot}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: stash}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, name: {b}_{tag}-stash}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: takeover}}\nstringData: {{password: mallory-was-here}}\n"
        ),
    );
    wait_ready(&env.api::<CouchUser>(&b), "mallory", &env.op).await;
    wait_ready(&env.api::<CouchDatabase>(&b), "loot", &env.op).await;
    let loot = format!("{b}_{tag}-loot");
    let mallory = as_user(&env, &b, "mallory").await;
    assert!(!can_read(&mallory, &payroll, "salary").await && !can_read(&mallory, &userdb, "diary").await);
    assert!(!can_read(&mallory, &archive, "review").await);
    let watched = [payroll.as_str(), userdb.as_str(), archive.as_str()];
    let before = snapshot(&env, &watched, &loot).await;

    let server = format!("{{name: main, namespace: {a}}}");
    let grant = |name: &str, database: &str, access: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: {name}}}\n\
             spec: {{database: {database}, access: {access}, users: [{{name: mallory}}]}}\n"
        )
    };
    let share = |name: &str, source: &str, extra: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchShare\nmetadata: {{name: {name}}}\n\
             spec: {{source: {source}, target: {{database: {{name: loot}}}}, continuous: true{extra}}}\n"
        )
    };
    // Each attempt of the table, plus a share with the admin's credentials.
    let attempts: Vec<(&str, &str, String, &str)> = vec![
        (
            "CouchGrant",
            "g-payroll",
            grant("g-payroll", &format!("{{name: payroll, namespace: {a}}}"), "member"),
            "ReferenceNotPermitted",
        ),
        (
            "CouchGrant",
            "g-payroll-raw",
            grant("g-payroll-raw", &format!("{{couchName: {payroll}, serverRef: {server}}}"), "admin"),
            "ReferenceNotPermitted",
        ),
        (
            "CouchGrant",
            "g-userdb",
            grant("g-userdb", &format!("{{couchName: {userdb}, serverRef: {server}}}"), "member"),
            "ReferenceNotPermitted",
        ),
        (
            "CouchGrant",
            "g-userdb-ref",
            grant("g-userdb-ref", &format!("{{userDatabase: {{user: alice, namespace: {a}}}}}"), "member"),
            "ReferenceNotPermitted",
        ),
        (
            "CouchGrant",
            "g-archive",
            grant("g-archive", &format!("{{couchName: {archive}, serverRef: {server}}}"), "member"),
            "ReferenceNotPermitted",
        ),
        (
            "CouchShare",
            "s-payroll",
            share("s-payroll", &format!("{{database: {{name: payroll, namespace: {a}}}}}"), ""),
            "ReferenceNotPermitted",
        ),
        (
            "CouchShare",
            "s-userdb",
            share("s-userdb", &format!("{{userDatabase: {{user: alice, namespace: {a}}}}}"), ""),
            "ReferenceNotPermitted",
        ),
        (
            "CouchShare",
            "s-admin",
            share("s-admin", "{database: {name: stash}}", ", credentials: Admin"),
            "AdminCredentialsNotPermitted",
        ),
        (
            "CouchDatabase",
            "archive",
            format!(
                "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: archive}}\n\
                 spec: {{serverRef: {server}, name: {archive}, adopt: true, deletionPolicy: Delete, \
                 security: {{members: {{names: [{b}_{tag}_mallory]}}}}}}\n"
            ),
            "NameOutOfScope",
        ),
        (
            "CouchDatabase",
            "alice-db",
            format!(
                "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: alice-db}}\n\
                 spec: {{serverRef: {server}, name: {userdb}, adopt: true, security: {{members: {{names: [{b}_{tag}_mallory]}}}}}}\n"
            ),
            "NameReserved",
        ),
        (
            "CouchUser",
            "hr",
            format!(
                "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: hr}}\n\
                 spec: {{serverRef: {server}, username: {hr}, adopt: true, password: {{secretRef: {{name: takeover}}}}}}\n"
            ),
            "NameOutOfScope",
        ),
    ];
    for (kind, name, yaml, reason) in &attempts {
        env.apply(&b, yaml);
        let api = env.dynamic(&b, kind);
        let refused = wait_not_ready(&api, name, &env.op, reason).await;
        let message = support::operator::ready(&refused).map(|r| r.2).unwrap_or_default();
        assert!(!message.contains("password"), "{name}: {message}");
        // Give a refused resource time to do harm, then look: nothing changed, nothing readable.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(snapshot(&env, &watched, &loot).await, before, "{name} changed CouchDB");
        assert!(!can_read(&mallory, &payroll, "salary").await, "{name}: mallory reads payroll");
        assert!(!can_read(&mallory, &userdb, "diary").await, "{name}: mallory reads alice's database");
        assert!(!can_read(&mallory, &archive, "review").await, "{name}: mallory reads the archive");
        assert!(env.couch.get_document(&loot, "salary").await.expect("loot").is_none(), "{name}: payroll copied");
        assert!(env.has_event(&b, name, reason).await, "{name}: no {reason} Event");
        // No replication user or its Secret for a refused share, no credentials for a refused user.
        let secrets: Api<Secret> = env.api(&b);
        assert!(secrets.get_opt(&format!("{name}-replication")).await.expect("get").is_none(), "{name}");
        assert!(secrets.get_opt(&format!("{name}-couchdb")).await.expect("get").is_none(), "{name}");
        api.delete(name, &DeleteParams::default()).await.expect("delete");
        wait_gone(&api, name, &env.op).await;
    }
    // The existing user's password still works: nobody took it over.
    let hr_client = env.couch.with_credentials(Credentials::new(hr.clone(), "hr-password"));
    assert!(can_read(&hr_client, &archive, "review").await, "hr's own password still works");
    let alice_client = as_user(&env, &a, "alice").await;
    assert!(can_read(&alice_client, &payroll, "salary").await && can_read(&alice_client, &userdb, "diary").await);
    assert_eq!(snapshot(&env, &watched, &loot).await, before, "after every refused attempt was deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_and_trust_open_the_same_references_and_withdrawing_them_closes_them_within_seconds() {
    let test = "consent_and_trust_open_the_same_references_and_withdrawing_them_closes_them_within_seconds";
    // Tenants chosen by label, as a platform team would.
    let selector = "  allowedNamespaces: {from: Selector, selector: {matchLabels: {tenant: \"yes\"}}}\n";
    let Some(env) = tenants(test, selector).await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let tag = couchdb::unique_name("c");
    let payroll = format!("{tag}-payroll");
    let loot = format!("{b}_{tag}-loot");
    let payroll_yaml = |shared_with: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: payroll}}\n\
             spec: {{serverRef: {{name: main}}, name: {payroll}, sharedWith: [{shared_with}]}}\n"
        )
    };
    env.apply(&a, &payroll_yaml(""));
    wait_ready(&env.api::<CouchDatabase>(&a), "payroll", &env.op).await;
    env.couch.put_document(&payroll, "salary", &json!({"amount": 1})).await.expect("payroll doc");
    let archive = format!("{tag}-hr-archive");
    let hr = format!("hr_{tag}").replace('-', "_");
    env.couch.create_database(&archive, &Default::default()).await.expect("archive");
    let mut archive_security = Security::default();
    archive_security.members.names = vec![hr.clone()];
    env.couch.put_security(&archive, &archive_security).await.expect("archive _security");
    env.couch.put_document(&archive, "review", &json!({"text": "confidential"})).await.expect("archive doc");
    env.apply(
        &b,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: mallory}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, username: {b}_{tag}_mallory}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\nmetadata: {{name: loot}}\n\
             spec: {{serverRef: {{name: main, namespace: {a}}}, name: {loot}}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: read-payroll}}\n\
             spec: {{database: {{name: payroll, namespace: {a}}}, users: [{{name: mallory}}]}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\nmetadata: {{name: read-archive}}\n\
             spec: {{database: {{couchName: {archive}, serverRef: {{name: main, namespace: {a}}}}}, users: [{{name: mallory}}]}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchShare\nmetadata: {{name: copy-payroll}}\n\
             spec: {{source: {{database: {{name: payroll, namespace: {a}}}}}, target: {{database: {{name: loot}}}}, \
             sharingDocument: {{}}}}\n"
        ),
    );
    let grants = env.api::<CouchGrant>(&b);
    let shares = env.api::<CouchShare>(&b);
    wait_ready(&env.api::<CouchUser>(&b), "mallory", &env.op).await;
    wait_not_ready(&grants, "read-payroll", &env.op, "ReferenceNotPermitted").await;
    wait_not_ready(&grants, "read-archive", &env.op, "ReferenceNotPermitted").await;
    wait_not_ready(&shares, "copy-payroll", &env.op, "ReferenceNotPermitted").await;
    let mallory = as_user(&env, &b, "mallory").await;
    assert!(!can_read(&mallory, &payroll, "salary").await && !can_read(&mallory, &archive, "review").await);

    // Consent in A's namespace, and trust on A's server: the same references now work.
    env.apply(&a, &payroll_yaml(&format!("{{namespace: {b}, allow: [member, replicateFrom]}}")));
    env.apply(
        &a,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchServer\nmetadata: {{name: main}}\n\
             spec:\n  url: {}\n  adminCredentials: {{secretRef: {{name: couchdb-admin}}}}\n{selector}  \
             trustedNamespaces: {{from: Selector, selector: {{matchLabels: {{tenant: \"yes\"}}}}}}\n",
            std::env::var("COUCHDB_URL").expect("COUCHDB_URL")
        ),
    );
    wait_ready(&grants, "read-payroll", &env.op).await;
    wait_ready(&grants, "read-archive", &env.op).await;
    eventually_true("mallory reads payroll", &env.op, 30, async || can_read(&mallory, &payroll, "salary").await).await;
    eventually_true("mallory reads the archive", &env.op, 30, async || can_read(&mallory, &archive, "review").await)
        .await;
    wait_ready(&shares, "copy-payroll", &env.op).await;
    eventually_true("payroll is copied into loot", &env.op, 30, async || {
        env.couch.get_document(&loot, "salary").await.ok().flatten().is_some()
    })
    .await;

    // Withdrawn: within seconds the access goes, the replication stops, both say why.
    env.apply(&a, &payroll_yaml(""));
    let started = std::time::Instant::now();
    eventually_true("mallory is refused on payroll", &env.op, 30, async || {
        !can_read(&mallory, &payroll, "salary").await
    })
    .await;
    wait_not_ready(&grants, "read-payroll", &env.op, "ReferenceNotPermitted").await;
    wait_not_ready(&shares, "copy-payroll", &env.op, "ReferenceNotPermitted").await;
    let prefix = couchshare::plan::share::replication_doc_prefix(&b, "copy-payroll");
    eventually_true("the replication document is gone", &env.op, 30, async || {
        env.couch.list_replication_docs_with_prefix("_replicator", &prefix).await.is_ok_and(|d| d.is_empty())
    })
    .await;
    eprintln!("{test}: consent withdrawn, access and replication gone in {:?}", started.elapsed());
    let security = env.couch.security(&payroll).await.expect("_security");
    assert!(security.members.names.iter().all(|n| !n.contains("mallory") && !n.contains("repl")), "{security:?}");
    // Nothing written to payroll after the withdrawal reaches loot.
    env.couch.put_document(&payroll, "bonus", &json!({"amount": 2})).await.expect("payroll doc");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(env.couch.get_document(&loot, "bonus").await.expect("loot").is_none(), "copied after withdrawal");
    // The sharing document left the source and the target, and payroll's own data stayed.
    let sharing = format!("db_sharing-{payroll}--{loot}");
    assert!(env.couch.get_document(&payroll, &sharing).await.expect("payroll").is_none());
    assert!(env.couch.get_document(&payroll, "salary").await.expect("payroll").is_some());

    // Trust withdrawn from the server: the unmanaged archive closes too.
    env.apply(
        &a,
        &format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchServer\nmetadata: {{name: main}}\n\
             spec:\n  url: {}\n  adminCredentials: {{secretRef: {{name: couchdb-admin}}}}\n{selector}  \
             trustedNamespaces: {{from: Same}}\n",
            std::env::var("COUCHDB_URL").expect("COUCHDB_URL")
        ),
    );
    eventually_true("mallory is refused on the archive", &env.op, 30, async || {
        !can_read(&mallory, &archive, "review").await
    })
    .await;
    wait_not_ready(&grants, "read-archive", &env.op, "ReferenceNotPermitted").await;
    assert_eq!(env.couch.security(&archive).await.expect("_security").members.names, vec![hr], "hr's entry stays");
}
