//! End-to-end, the server-wide names of CouchDB (usernames, roles, database names) on one
//! CouchServer shared by two namespaces: every way a second namespace once ended up holding a
//! password that reads team A's data — a role team A's `_security` admits, a username claimed
//! first, the operator's own replication username, a later user's per-user database name — is
//! refused or harmless, with CouchDB checked after each. Manifests go through `kubectl apply -f`.

mod support;

use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchGrant, CouchShare, CouchUser};
use couchshare::couch::{CouchClient, UserDoc};
use couchshare::plan::share::Direction;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use support::couchdb;
use support::operator::{eventually_true, wait_not_ready, wait_ready};
use support::tenants::{Tenants, as_user, can_read, tenants};

const API: &str = "apiVersion: couchshare.io/v1alpha1";

fn server_yaml(trust_b: bool) -> String {
    let trusted = if trust_b { "  trustedNamespaces: {from: All}\n" } else { "" };
    format!(
        "{API}\nkind: CouchServer\nmetadata: {{name: main}}\nspec:\n  url: {}\n  \
         adminCredentials: {{secretRef: {{name: couchdb-admin}}}}\n  allowedNamespaces: {{from: All}}\n{trusted}",
        std::env::var("COUCHDB_URL").expect("COUCHDB_URL")
    )
}

/// The members of `db`'s `_security`, names and roles.
async fn members(couch: &CouchClient, db: &str) -> (Vec<String>, Vec<String>) {
    let s = couch.security(db).await.expect("_security");
    (s.members.names, s.members.roles)
}

/// Asserts that nothing tenant B holds reads team A's payroll or dave's database.
async fn b_reads_nothing(env: &Tenants, b_users: &[&str], dbs: &[(&str, &str)]) {
    for user in b_users {
        let secrets: Api<Secret> = env.api(&env.b);
        if secrets.get_opt(&format!("{user}-couchdb")).await.expect("get").is_none() {
            continue;
        }
        let client = as_user(env, &env.b, user).await;
        for (db, id) in dbs {
            assert!(!can_read(&client, db, id).await, "tenant B's {user} reads {db}/{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_namespace_cannot_claim_a_role_a_username_a_replication_user_or_a_per_user_database() {
    let test = "a_second_namespace_cannot_claim_a_role_a_username_a_replication_user_or_a_per_user_database";
    let Some(env) = tenants(test, "  allowedNamespaces: {from: All}\n").await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let tag = couchdb::unique_name("n").replace('-', "_");
    let payroll = format!("{tag}_payroll");
    let readers = format!("{tag}_payroll-readers");
    // Team A lets its readers in by role.
    env.apply(
        &a,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: payroll}}\n\
             spec: {{serverRef: {{name: main}}, name: {payroll}, security: {{members: {{roles: [{readers}]}}}}}}\n"
        ),
    );
    wait_ready(&env.api::<CouchDatabase>(&a), "payroll", &env.op).await;
    env.couch.put_document(&payroll, "salary", &json!({"amount": 1})).await.expect("payroll doc");

    // 1. A role team A's _security admits: refused, nothing written.
    let eve = format!("{b}_{tag}_eve");
    env.apply(
        &b,
        &format!("{API}\nkind: CouchUser\nmetadata: {{name: eve}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, username: {eve}, roles: [{readers}]}}\n"),
    );
    let refused = wait_not_ready(&env.api::<CouchUser>(&b), "eve", &env.op, "RoleNotPermitted").await;
    let message = support::operator::ready(&refused).map(|r| r.2).unwrap_or_default();
    assert!(message.contains(&format!("\"{b}_\"")), "the refusal says which prefix: {message}");
    assert!(env.has_event(&b, "eve", "RoleNotPermitted").await, "no RoleNotPermitted Event");
    assert!(env.couch.get_user(&eve).await.expect("get").is_none(), "eve was written to _users");
    // A role in tenant B's own scope is fine.
    env.apply(
        &b,
        &format!("{API}\nkind: CouchUser\nmetadata: {{name: eve}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, username: {eve}, roles: [{b}_readers]}}\n"),
    );
    wait_ready(&env.api::<CouchUser>(&b), "eve", &env.op).await;

    // 2. A username claimed first by tenant B: refused while B is not trusted. Trusted, B may
    // claim it; team A's CouchUser of the same name is then in Conflict, and A's grant naming it
    // lets nobody in.
    env.apply(&b, &format!("{API}\nkind: CouchUser\nmetadata: {{name: carol}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, username: {tag}_carol}}\n"));
    wait_not_ready(&env.api::<CouchUser>(&b), "carol", &env.op, "NameOutOfScope").await;
    assert!(env.couch.get_user(&format!("{tag}_carol")).await.expect("get").is_none());
    env.apply(&a, &server_yaml(true));
    wait_ready(&env.api::<CouchUser>(&b), "carol", &env.op).await;
    env.apply(
        &a,
        &format!(
            "{API}\nkind: CouchUser\nmetadata: {{name: carol}}\nspec: {{serverRef: {{name: main}}, username: {tag}_carol}}\n---\n\
             {API}\nkind: CouchGrant\nmetadata: {{name: payroll-carol}}\nspec: {{database: {{name: payroll}}, users: [{{name: carol}}]}}\n"
        ),
    );
    wait_not_ready(&env.api::<CouchUser>(&a), "carol", &env.op, "Conflict").await;
    wait_not_ready(&env.api::<CouchGrant>(&a), "payroll-carol", &env.op, "UserNotFound").await;
    // The grant says what it waits for: the user's own reason, once the user has one.
    eventually_true("the grant names the user's Conflict", &env.op, 30, async || {
        let grant = env.api::<CouchGrant>(&a).get("payroll-carol").await.expect("get grant");
        support::operator::ready(&grant).is_some_and(|r| r.1 == "UserNotFound" && r.2.contains("not Ready: Conflict"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (names, _) = members(&env.couch, &payroll).await;
    assert!(!names.contains(&format!("{tag}_carol")), "carol was admitted to payroll: {names:?}");
    let b_carol = as_user(&env, &b, "carol").await;
    assert!(!can_read(&b_carol, &payroll, "salary").await, "tenant B's carol reads payroll");
    env.apply(&a, &server_yaml(false));

    // 3. The operator's own replication username: no CouchUser may declare it (kubectl refuses),
    // and a share never writes a _users document it does not own (one made by hand here).
    let repl = couchshare::plan::share::replication_username(&a, "inventory");
    let (ok, said) = env.try_apply(
        &b,
        &format!("{API}\nkind: CouchUser\nmetadata: {{name: squatter}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, username: {repl}}}\n"),
    );
    assert!(!ok && said.contains("reserved for the scoped replication users"), "kubectl accepted it: {said}");
    env.couch.put_user(&UserDoc::new(repl.clone(), vec![], Some("squatted".into()))).await.expect("user by hand");
    let archive = format!("{tag}_archive");
    env.apply(
        &a,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: archive}}\nspec: {{serverRef: {{name: main}}, name: {archive}}}\n---\n\
             {API}\nkind: CouchShare\nmetadata: {{name: inventory}}\nspec: {{source: {{database: {{name: payroll}}}}, target: {{database: {{name: archive}}}}}}\n"
        ),
    );
    wait_not_ready(&env.api::<CouchShare>(&a), "inventory", &env.op, "Conflict").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let doc = env.couch.get_user(&repl).await.expect("get").expect("the hand-made user");
    assert!(doc.extra.get("couchshare.io/share").is_none(), "the share wrote a user it does not own");
    let squatter = env.couch.with_credentials(couchshare::couch::Credentials::new(repl.clone(), "squatted"));
    assert!(!can_read(&squatter, &payroll, "salary").await, "the hand-made user reads payroll");
    let (names, _) = members(&env.couch, &payroll).await;
    assert!(!names.contains(&repl), "a refused share's user was admitted: {names:?}");
    // Once the name is free, the share makes its own user and replicates.
    let rev = doc.rev.clone().expect("rev");
    env.couch.delete_user(&repl, &rev).await.expect("delete by hand");
    env.apply(&a, &format!("{API}\nkind: CouchShare\nmetadata: {{name: inventory}}\nspec: {{source: {{database: {{name: payroll}}}}, target: {{database: {{name: archive}}}}, continuous: false}}\n"));
    wait_ready(&env.api::<CouchShare>(&a), "inventory", &env.op).await;
    eventually_true("payroll reaches the archive", &env.op, 60, async || {
        env.couch.get_document(&archive, "salary").await.ok().flatten().is_some()
    })
    .await;

    // 4. A later user's per-user database name, claimed first: refused from every namespace
    // (NameReserved), trusted or not; dave's database is then dave's alone.
    let dave = format!("{tag}_dave");
    let dave_db = couchshare::plan::user::per_user_database_name("userdb-", &dave);
    for trusted in [false, true] {
        env.apply(&a, &server_yaml(trusted));
        env.apply(
            &b,
            &format!(
                "{API}\nkind: CouchDatabase\nmetadata: {{name: diary}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, name: {dave_db}, \
                 security: {{members: {{names: [{eve}]}}}}}}\n"
            ),
        );
        wait_not_ready(&env.api::<CouchDatabase>(&b), "diary", &env.op, "NameReserved").await;
        assert!(!env.couch.database_exists(&dave_db).await.expect("exists?"), "trusted: {trusted}");
    }
    env.apply(&a, &server_yaml(false));
    env.apply(&a, &format!("{API}\nkind: CouchUser\nmetadata: {{name: dave}}\nspec: {{serverRef: {{name: main}}, username: {dave}, perUserDatabase: true}}\n"));
    let user = wait_ready(&env.api::<CouchUser>(&a), "dave", &env.op).await;
    assert_eq!(user.status.and_then(|s| s.per_user_database).as_deref(), Some(dave_db.as_str()));
    env.couch.put_document(&dave_db, "diary", &json!({"text": "private"})).await.expect("dave's doc");
    let (names, _) = members(&env.couch, &dave_db).await;
    assert_eq!(names, vec![dave.clone()], "dave's database admits dave alone");

    // After all of it: nothing tenant B holds reads team A's data.
    b_reads_nothing(&env, &["eve", "carol"], &[(&payroll, "salary"), (&dave_db, "diary"), (&archive, "salary")]).await;
    assert!(
        env.couch.get_user(&eve).await.expect("get").is_some_and(|u| u.roles == vec![format!("{b}_readers")]),
        "eve has only her own namespace's role"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_namespace_and_trusted_ones_keep_their_names_and_a_tenants_own_names_work() {
    let test = "the_server_namespace_and_trusted_ones_keep_their_names_and_a_tenants_own_names_work";
    let Some(env) = tenants(test, "  allowedNamespaces: {from: All}\n").await else { return };
    let (a, b) = (env.a.clone(), env.b.clone());
    let tag = couchdb::unique_name("o").replace('-', "_");
    // Team A, on its own server: any names, as the examples write them.
    env.apply(
        &a,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: notes}}\nspec: {{serverRef: {{name: main}}, name: {tag}_notes}}\n---\n\
             {API}\nkind: CouchUser\nmetadata: {{name: writer}}\nspec: {{serverRef: {{name: main}}, username: {tag}_writer, roles: [editors]}}\n---\n\
             {API}\nkind: CouchGrant\nmetadata: {{name: notes-writer}}\nspec: {{database: {{name: notes}}, users: [{{name: writer}}], roles: [editors]}}\n"
        ),
    );
    wait_ready(&env.api::<CouchGrant>(&a), "notes-writer", &env.op).await;
    // Tenant B, in its own scope: a database, a user with a role, a grant and a raw role entry.
    env.apply(
        &b,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: notes}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, name: {b}_{tag}_notes, \
             security: {{admins: {{roles: [_admin]}}}}}}\n---\n\
             {API}\nkind: CouchUser\nmetadata: {{name: writer}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, username: {b}_{tag}_writer, roles: [{b}_editors]}}\n---\n\
             {API}\nkind: CouchGrant\nmetadata: {{name: notes-writer}}\nspec: {{database: {{name: notes}}, users: [{{name: writer}}], roles: [{b}_editors]}}\n"
        ),
    );
    wait_ready(&env.api::<CouchGrant>(&b), "notes-writer", &env.op).await;
    let (names, roles) = members(&env.couch, &format!("{b}_{tag}_notes")).await;
    assert_eq!((names, roles), (vec![format!("{b}_{tag}_writer")], vec![format!("{b}_editors")]));
    let writer = as_user(&env, &b, "writer").await;
    writer.put_document(&format!("{b}_{tag}_notes"), "n1", &json!({"text": "mine"})).await.expect("B writes its own");
    // A grant of tenant B naming a role out of its scope: refused, and nothing of it merged.
    env.apply(&b, &format!("{API}\nkind: CouchGrant\nmetadata: {{name: sneaky}}\nspec: {{database: {{name: notes}}, roles: [editors], usernames: [{tag}_writer]}}\n"));
    wait_not_ready(&env.api::<CouchGrant>(&b), "sneaky", &env.op, "NameOutOfScope").await;
    // A per-tenant replicator database is a database name too.
    let replicator = format!("{tag}_ops/_replicator");
    env.apply(
        &b,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: copy}}\nspec: {{serverRef: {{name: main, namespace: {a}}}, name: {b}_{tag}_copy}}\n---\n\
             {API}\nkind: CouchShare\nmetadata: {{name: elsewhere}}\nspec: {{source: {{database: {{name: notes}}}}, target: {{database: {{name: copy}}}}, \
             replicatorDatabase: {replicator}}}\n"
        ),
    );
    wait_not_ready(&env.api::<CouchShare>(&b), "elsewhere", &env.op, "NameOutOfScope").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!env.couch.database_exists(&replicator).await.expect("exists?"), "the replicator database was made");
    let (names, roles) = members(&env.couch, &format!("{b}_{tag}_notes")).await;
    assert_eq!((names, roles), (vec![format!("{b}_{tag}_writer")], vec![format!("{b}_editors")]), "sneaky merged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_refused_before_or_after_its_replication_user_exists_is_in_no_security() {
    let test = "a_share_refused_before_or_after_its_replication_user_exists_is_in_no_security";
    let Some(env) = tenants(test, "").await else { return };
    let a = env.a.clone();
    let tag = couchdb::unique_name("r").replace('-', "_");
    let (src, dst) = (format!("{tag}_src"), format!("{tag}_dst"));
    env.apply(
        &a,
        &format!(
            "{API}\nkind: CouchDatabase\nmetadata: {{name: src}}\nspec: {{serverRef: {{name: main}}, name: {src}}}\n---\n\
             {API}\nkind: CouchDatabase\nmetadata: {{name: dst}}\nspec: {{serverRef: {{name: main}}, name: {dst}}}\n"
        ),
    );
    wait_ready(&env.api::<CouchDatabase>(&a), "dst", &env.op).await;
    let shares = env.api::<CouchShare>(&a);
    let share = |name: &str, extra: &str| {
        format!(
            "{API}\nkind: CouchShare\nmetadata: {{name: {name}}}\nspec: {{source: {{database: {{name: src}}}}, target: {{database: {{name: dst}}}}{extra}}}\n"
        )
    };
    let by_hand = json!({"source": "http://127.0.0.1:1/x", "target": "http://127.0.0.1:1/y", "continuous": false});
    let in_security = async |user: &str| {
        let (s, _) = members(&env.couch, &src).await;
        let (d, _) = members(&env.couch, &dst).await;
        s.iter().chain(&d).any(|n| n == user)
    };
    // Before: someone wrote a replication document under the ids the share derives. Refused
    // before its replication user or Secret exist.
    let fwd = |name: &str| couchshare::plan::share::replication_doc_id(&a, name, Direction::Forward, None);
    env.couch.put_document("_replicator", &fwd("taken"), &by_hand).await.expect("replication doc by hand");
    env.apply(&a, &share("taken", ""));
    wait_not_ready(&shares, "taken", &env.op, "AlreadyExists").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let repl = couchshare::plan::share::replication_username(&a, "taken");
    assert!(env.couch.get_user(&repl).await.expect("get").is_none(), "a refused share made its user");
    assert!(env.api::<Secret>(&a).get_opt("taken-replication").await.expect("get").is_none(), "and its Secret");
    assert!(!in_security(&repl).await, "a refused share's user is in _security");
    let doc = env.couch.get_document("_replicator", &fwd("taken")).await.expect("get").expect("the hand-made document");
    assert_eq!(doc.get("source"), by_hand.get("source"), "the hand-made document is untouched");

    // After: a share that replicates is refused by a change (two-way, and its reverse id is
    // taken): its replication user leaves every _security within seconds, and stays out.
    env.apply(&a, &share("grows", ""));
    wait_ready(&shares, "grows", &env.op).await;
    let repl = couchshare::plan::share::replication_username(&a, "grows");
    assert!(in_security(&repl).await, "a replicating share's user is a member");
    let rev = couchshare::plan::share::replication_doc_id(&a, "grows", Direction::Backward, None);
    env.couch.put_document("_replicator", &rev, &by_hand).await.expect("replication doc by hand");
    env.apply(&a, &share("grows", ", mode: TwoWay, allowUnfiltered: true"));
    wait_not_ready(&shares, "grows", &env.op, "AlreadyExists").await;
    eventually_true("the refused share's user leaves both _security", &env.op, 15, async || !in_security(&repl).await)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!in_security(&repl).await, "it came back");
}
