//! Fault tests, bounded in time: SIGKILL of the operator at random moments during a bulk apply
//! (seedable with COUCHSHARE_FAULT_SEED), a CouchDB outage in the middle of reconciling, and a
//! corpus of bad input that must each end in a precise condition while the operator keeps
//! serving the good resources. No password ever reaches the operator's output.

mod support;

use std::time::Duration;

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::couch::CouchClient;
use kube::Client;
use kube::api::Api;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::operator::{
    Operator, Proxy, admin_secret, apply_json, host_port, manifest as kind, ready, server_manifest, wait_for,
    wait_gone, wait_ready,
};
use support::{couchdb, k8s};

/// Applies a manifest of any couchshare kind in `ns`.
async fn apply_any(client: &Client, ns: &str, m: Value) {
    match m["kind"].as_str() {
        Some("CouchDatabase") => drop(apply_json::<CouchDatabase>(client, ns, m).await),
        Some("CouchUser") => drop(apply_json::<CouchUser>(client, ns, m).await),
        Some("CouchGrant") => drop(apply_json::<CouchGrant>(client, ns, m).await),
        _ => drop(apply_json::<CouchShare>(client, ns, m).await),
    }
}

/// The ids of the replication documents of namespace `ns`'s shares, sorted.
async fn replication_doc_ids(couch: &CouchClient, ns: &str) -> Vec<String> {
    let prefix = format!("couchshare_{ns}_");
    let mut ids: Vec<String> = couch
        .list_replication_docs_with_prefix("_replicator", &prefix)
        .await
        .expect("_replicator")
        .iter()
        .filter_map(|d| d["_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn assert_no_secrets(output: &str, secrets: &[String]) {
    use base64::Engine;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!output.contains(s.as_str()), "a password appears in the operator output");
        assert!(
            !output.contains(&base64::engine::general_purpose::STANDARD.encode(s)),
            "a base64 password appears in the operator output"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_leaves_exactly_the_declared_state() {
    let test = "sigkill_at_random_moments_leaves_exactly_the_declared_state";
    let Some((client, couch)) = support::servers(test).await else { return };
    let seed: u64 =
        std::env::var("COUCHSHARE_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("{test}: COUCHSHARE_FAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ns = k8s::namespace(&client, "crash").await;
    admin_secret(&client, &ns).await;
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    let tag = couchdb::unique_name("c");
    let n = 6;
    let mut manifests = Vec::new();
    for i in 0..n {
        manifests.push(kind(
            "CouchDatabase",
            &format!("db-{i}"),
            json!({"serverRef": {"name": "main"}, "name": format!("{tag}-db-{i}")}),
        ));
        manifests.push(kind(
            "CouchUser",
            &format!("user-{i}"),
            json!({"serverRef": {"name": "main"}, "username": format!("{tag}-user-{i}"), "roles": ["r"]}),
        ));
        manifests.push(kind(
            "CouchGrant",
            &format!("grant-{i}"),
            json!({"database": {"name": format!("db-{i}")}, "users": [{"name": format!("user-{i}")}]}),
        ));
    }
    for i in 0..n / 2 {
        manifests.push(kind(
            "CouchShare",
            &format!("share-{i}"),
            json!({"source": {"database": {"name": format!("db-{}", 2 * i)}}, "target": {"database": {"name": format!("db-{}", 2 * i + 1)}}}),
        ));
    }
    let mut outputs = String::new();
    let mut op = Operator::start(&ns, &[]);
    // Apply in a random order, killing the operator at random moments, at least ten times.
    let mut order: Vec<usize> = (0..manifests.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let kills = 10;
    let per_kill = order.len().div_ceil(kills);
    for (trial, chunk) in order.chunks(per_kill).enumerate() {
        for &i in chunk {
            apply_any(&client, &ns, manifests[i].clone()).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        op.kill();
        outputs.push_str(&op.output());
        eprintln!("{test}: trial {trial}: killed");
        op = Operator::start(&ns, &[]);
    }
    // Converge, then check the CouchDB state exactly.
    for i in 0..n {
        wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), &format!("db-{i}"), &op).await;
        wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), &format!("user-{i}"), &op).await;
        wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), &format!("grant-{i}"), &op).await;
    }
    let mut repl_users = std::collections::BTreeMap::new();
    for i in 0..n / 2 {
        let s = wait_ready(&Api::<CouchShare>::namespaced(client.clone(), &ns), &format!("share-{i}"), &op).await;
        let user = s.status.and_then(|st| st.replication_user).expect("scoped user");
        repl_users.insert(2 * i, user.clone());
        repl_users.insert(2 * i + 1, user);
    }
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    for i in 0..n {
        let name = format!("{tag}-db-{i}");
        let resource = dbs.get(&format!("db-{i}")).await.expect("db resource");
        let owner = couch
            .get_document(&name, couchshare::plan::database::OWNER_DOC_ID)
            .await
            .expect("read")
            .expect("owner record");
        assert_eq!(
            owner["owner"]["uid"].as_str(),
            resource.metadata.uid.as_deref(),
            "{name} recorded for its resource"
        );
        let security = couch.security(&name).await.expect("_security");
        let mut want = vec![format!("{tag}-user-{i}")];
        want.extend(repl_users.get(&i).cloned());
        want.sort();
        assert_eq!(security.members.names, want, "{name}: exactly the declared members");
        let user = couch.get_user(&format!("{tag}-user-{i}")).await.expect("get").expect("user exists");
        assert_eq!(user.roles, ["r"]);
    }
    // No duplicates, no orphans: replication documents and scoped users are exactly the shares'.
    let prefix = format!("couchshare_{ns}_");
    let docs = replication_doc_ids(&couch, &ns).await;
    let mut want: Vec<String> = (0..n / 2).map(|i| format!("{prefix}share-{i}_fwd")).collect();
    want.sort();
    assert_eq!(docs, want, "exactly one replication document per share direction");
    let users = couch
        .all_docs("_users", &couchshare::couch::AllDocsQuery { include_docs: true, ..Default::default() })
        .await
        .expect("_users");
    let orphans: Vec<String> = users
        .rows
        .iter()
        .filter_map(|r| r.doc.as_ref())
        .filter(|d| {
            d["couchshare.io/share"]["namespace"] == json!(ns) || d["couchshare.io/owner"]["namespace"] == json!(ns)
        })
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .filter(|name| !name.starts_with(&format!("{tag}-user-")) && !repl_users.values().any(|u| u == name))
        .collect();
    assert!(orphans.is_empty(), "users without a resource: {orphans:?}");
    outputs.push_str(&op.output());
    assert_no_secrets(&outputs, &[couchdb::admin_credentials().password]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_couchdb_outage_mid_reconcile_converges_without_restarting_the_operator() {
    let test = "a_couchdb_outage_mid_reconcile_converges_without_restarting_the_operator";
    let Some((client, couch)) = support::servers(test).await else { return };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let mut proxy = Proxy::start(&host_port(&url)).await;
    let ns = k8s::namespace(&client, "outage").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &proxy.url(), json!({}))).await;
    let servers = Api::<CouchServer>::namespaced(client.clone(), &ns);
    wait_ready(&servers, "main", &op).await;
    proxy.stop().await;
    let tag = couchdb::unique_name("o");
    for i in 0..3 {
        let _: CouchDatabase = apply_json(
            &client,
            &ns,
            kind(
                "CouchDatabase",
                &format!("db-{i}"),
                json!({"serverRef": {"name": "main"}, "name": format!("{tag}-{i}")}),
            ),
        )
        .await;
    }
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    // Meanwhile the conditions say what is happening.
    let down = wait_for(&dbs, "db-0", &op, "Ready=False Unreachable", |d| {
        ready(d).is_some_and(|r| r.0 == "False" && r.1 == "Unreachable")
    })
    .await;
    assert!(ready(&down).is_some_and(|r| r.2.contains("unreachable")));
    wait_for(&servers, "main", &op, "server Unreachable", |s| ready(s).is_some_and(|r| r.1 == "Unreachable")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restart().await;
    for i in 0..3 {
        wait_ready(&dbs, &format!("db-{i}"), &op).await;
        assert!(couch.database_exists(&format!("{tag}-{i}")).await.expect("exists?"));
    }
    wait_ready(&servers, "main", &op).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_and_etcd_restart_mid_reconcile_converges_without_restarting_the_operator() {
    let test = "an_api_server_and_etcd_restart_mid_reconcile_converges_without_restarting_the_operator";
    let Some(couch) = couchdb::client(test) else { return };
    // A private control plane: stopping the shared one would fail every other test.
    let Some(plane) = k8s::ControlPlane::start(test) else { return };
    couchdb::ensure_system_databases(&couch).await;
    let client = plane.client().await;
    k8s::install_crds(&client).await;
    let ns = k8s::namespace(&client, "apirestart").await;
    admin_secret(&client, &ns).await;
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    let filter = std::env::var("COUCHSHARE_TEST_LOG").unwrap_or_else(|_| "info,couchshare=debug".into());
    let mut op = Operator::start_with_env(&ns, &[], &filter, &[("KUBECONFIG", plane.kubeconfig.as_path())]);
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;

    let tag = couchdb::unique_name("k");
    let declare = |i: usize| {
        vec![
            kind(
                "CouchDatabase",
                &format!("db-{i}"),
                json!({"serverRef": {"name": "main"}, "name": format!("{tag}-db-{i}")}),
            ),
            kind(
                "CouchUser",
                &format!("user-{i}"),
                json!({"serverRef": {"name": "main"}, "username": format!("{tag}-user-{i}")}),
            ),
            kind(
                "CouchGrant",
                &format!("grant-{i}"),
                json!({"database": {"name": format!("db-{i}")}, "users": [{"name": format!("user-{i}")}]}),
            ),
        ]
    };
    // A batch goes in, and the control plane goes away while the operator works on it.
    let mut batch: Vec<Value> = (0..4).flat_map(declare).collect();
    for (i, (from, to)) in [(0, 1), (2, 3)].into_iter().enumerate() {
        batch.push(kind(
            "CouchShare",
            &format!("share-{i}"),
            json!({"source": {"database": {"name": format!("db-{from}")}}, "target": {"database": {"name": format!("db-{to}")}}}),
        ));
    }
    for m in batch {
        apply_any(&client, &ns, m).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    plane.stop();
    eprintln!("{test}: API server and etcd stopped");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(op.is_running(), "the operator exited while the API server was down:\n{}", op.tail());
    plane.restart();
    eprintln!("{test}: API server and etcd restarted");

    // It converges on the same process, and its watches came back: a resource added and one
    // deleted after the restart are both acted on.
    let client = plane.client().await;
    let dbs = Api::<CouchDatabase>::namespaced(client.clone(), &ns);
    let shares = Api::<CouchShare>::namespaced(client.clone(), &ns);
    for i in 0..4 {
        wait_ready(&dbs, &format!("db-{i}"), &op).await;
        wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), &format!("user-{i}"), &op).await;
        wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), &format!("grant-{i}"), &op).await;
    }
    let kept = wait_ready(&shares, "share-0", &op).await;
    wait_ready(&shares, "share-1", &op).await;
    for m in declare(4) {
        apply_any(&client, &ns, m).await;
    }
    shares.delete("share-1", &Default::default()).await.expect("delete share-1");
    wait_ready(&dbs, "db-4", &op).await;
    // A grant is Ready once its user is known; the user itself is written after CouchDB has
    // hashed its password (slow on CouchDB 3.5): wait for it too.
    wait_ready(&Api::<CouchUser>::namespaced(client.clone(), &ns), "user-4", &op).await;
    wait_ready(&Api::<CouchGrant>::namespaced(client.clone(), &ns), "grant-4", &op).await;
    wait_gone(&shares, "share-1", &op).await;
    assert!(op.is_running(), "the operator exited:\n{}", op.tail());

    // The CouchDB state is exactly the declared one.
    let replication_user = kept.status.and_then(|s| s.replication_user).expect("share-0 has a scoped user");
    for i in 0..5 {
        let security = couch.security(&format!("{tag}-db-{i}")).await.expect("_security");
        let mut want = vec![format!("{tag}-user-{i}")];
        if i < 2 {
            want.push(replication_user.clone());
        }
        want.sort();
        assert_eq!(security.members.names, want, "{tag}-db-{i}: exactly the declared members");
        assert!(couch.get_user(&format!("{tag}-user-{i}")).await.expect("get").is_some(), "user-{i} exists");
    }
    let docs = replication_doc_ids(&couch, &ns).await;
    assert_eq!(docs, [format!("couchshare_{ns}_share-0_fwd")], "only the kept share replicates");
    op.kill();
    assert_no_secrets(&op.output(), &[couchdb::admin_credentials().password]);
}

/// Bad input the API server cannot refuse: each must end in `Ready=False` with this reason.
fn operator_level_corpus(url: &str) -> Vec<(&'static str, Value, &'static str)> {
    let server = |name: &str, spec: Value| kind("CouchServer", name, spec);
    vec![
        (
            "server whose admin Secret is missing",
            server("s-nosecret", json!({"url": url, "adminCredentials": {"secretRef": {"name": "nope"}}})),
            "SecretNotFound",
        ),
        (
            "server whose admin Secret lacks the key",
            server(
                "s-nokey",
                json!({"url": url, "adminCredentials": {"secretRef": {"name": "couchdb-admin", "passwordKey": "pw"}}}),
            ),
            "SecretKeyMissing",
        ),
        (
            "server with a wrong admin password",
            server("s-wrongpw", json!({"url": url, "adminCredentials": {"secretRef": {"name": "wrong-admin"}}})),
            "Unauthorized",
        ),
        (
            "server with garbage for a CA",
            server(
                "s-badca",
                json!({"url": url.replace("http://", "https://"), "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}, "tls": {"caSecretRef": {"name": "garbage-ca"}}}),
            ),
            "InvalidTLS",
        ),
        (
            "server that answers garbage",
            server(
                "s-garbage",
                json!({"url": "http://127.0.0.1:GARBAGE", "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}}),
            ),
            "CouchDBError",
        ),
        (
            "server that never answers",
            server(
                "s-silent",
                json!({"url": "http://127.0.0.1:SILENT", "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}}),
            ),
            "Unreachable",
        ),
        (
            "server nobody listens on",
            server(
                "s-closed",
                json!({"url": "http://127.0.0.1:9", "adminCredentials": {"secretRef": {"name": "couchdb-admin"}}}),
            ),
            "Unreachable",
        ),
        (
            "database on a missing server",
            kind("CouchDatabase", "d-noserver", json!({"serverRef": {"name": "ghost"}})),
            "ServerNotFound",
        ),
        (
            "database on a server of a namespace that does not allow it",
            kind("CouchDatabase", "d-notallowed", json!({"serverRef": {"name": "main", "namespace": "OTHER_NS"}})),
            "NotAllowed",
        ),
        (
            "database that exists already, without adopt",
            kind("CouchDatabase", "d-exists", json!({"serverRef": {"name": "main"}, "name": "EXISTING_DB"})),
            "AlreadyExists",
        ),
        (
            "second database resource for one database",
            kind("CouchDatabase", "d-conflict", json!({"serverRef": {"name": "main"}, "name": "GOOD_DB"})),
            "Conflict",
        ),
        (
            "user on a missing server",
            kind("CouchUser", "u-noserver", json!({"serverRef": {"name": "ghost"}})),
            "ServerNotFound",
        ),
        (
            "user whose password Secret is missing",
            kind(
                "CouchUser",
                "u-nopw",
                json!({"serverRef": {"name": "main"}, "password": {"secretRef": {"name": "nope"}}}),
            ),
            "SecretNotFound",
        ),
        (
            "user whose password Secret lacks the key",
            kind(
                "CouchUser",
                "u-nokey",
                json!({"serverRef": {"name": "main"}, "password": {"secretRef": {"name": "couchdb-admin", "key": "nokey"}}}),
            ),
            "SecretKeyMissing",
        ),
        (
            "user that exists already, without adopt",
            kind("CouchUser", "u-exists", json!({"serverRef": {"name": "main"}, "username": "EXISTING_USER"})),
            "AlreadyExists",
        ),
        (
            "grant on a missing database",
            kind("CouchGrant", "g-nodb", json!({"database": {"name": "ghost"}, "roles": ["r"]})),
            "DatabaseNotFound",
        ),
        (
            "grant naming a missing user",
            kind("CouchGrant", "g-nouser", json!({"database": {"name": "good"}, "users": [{"name": "ghost"}]})),
            "UserNotFound",
        ),
        (
            "grant on an unmanaged database that does not exist",
            kind(
                "CouchGrant",
                "g-nocouch",
                json!({"database": {"couchName": "no-such-db-at-all", "serverRef": {"name": "main"}}, "roles": ["r"]}),
            ),
            "DatabaseNotFound",
        ),
        (
            "share with a bad selector",
            kind(
                "CouchShare",
                "sh-selector",
                json!({"source": {"database": {"name": "good"}}, "target": {"database": {"name": "good2"}}, "selector": {"type": {"$bogus": 1}}}),
            ),
            "InvalidSelector",
        ),
        (
            "share whose $or is not an array",
            kind(
                "CouchShare",
                "sh-or",
                json!({"source": {"database": {"name": "good"}}, "target": {"database": {"name": "good2"}}, "selector": {"$or": {"a": 1}}}),
            ),
            "InvalidSelector",
        ),
        (
            "share from a user without a per-user database",
            kind(
                "CouchShare",
                "sh-nouserdb",
                json!({"source": {"userDatabase": {"user": "plain"}}, "target": {"database": {"name": "good"}}}),
            ),
            "InvalidSpec",
        ),
        (
            "user whose credentials Secret is the server's admin Secret",
            kind(
                "CouchUser",
                "u-adminsecret",
                json!({"serverRef": {"name": "main"}, "credentialsSecret": {"name": "couchdb-admin"}}),
            ),
            "SecretConflict",
        ),
        (
            "user whose credentials Secret is an app's Secret",
            kind(
                "CouchUser",
                "u-appsecret",
                json!({"serverRef": {"name": "main"}, "credentialsSecret": {"name": "app-config"}}),
            ),
            "SecretConflict",
        ),
        (
            "database named like a per-user database",
            kind("CouchDatabase", "d-userdb", json!({"serverRef": {"name": "main"}, "name": "userdb-RESERVED"})),
            "NameReserved",
        ),
        (
            "share from a database into itself, named once with its namespace",
            kind(
                "CouchShare",
                "sh-self",
                json!({"source": {"database": {"name": "good"}}, "target": {"database": {"name": "good", "namespace": "THIS_NS"}}}),
            ),
            "InvalidSpec",
        ),
        (
            "share whose replication document CouchDB refuses",
            kind(
                "CouchShare",
                "sh-refused",
                json!({"source": {"database": {"name": "good"}}, "target": {"database": {"name": "good2"}}, "selector": {"data.name": {"$regex": "("}}}),
            ),
            "InvalidSelector",
        ),
        (
            "share to a remote whose Secret is missing",
            kind(
                "CouchShare",
                "sh-remote",
                json!({"source": {"database": {"name": "good"}}, "target": {"remote": {"url": "http://127.0.0.1:9", "database": "x", "credentialsSecretRef": {"name": "nope"}}}}),
            ),
            "SecretNotFound",
        ),
    ]
}

/// A server that answers every request with bytes that are not JSON.
async fn garbage_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ =
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\n<html>?!!").await;
            });
        }
    });
    port
}

/// A server that accepts connections and never answers.
async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_ends_in_a_precise_condition_and_the_good_resources_keep_working() {
    let test = "every_bad_input_ends_in_a_precise_condition_and_the_good_resources_keep_working";
    let Some((client, couch)) = support::servers(test).await else { return };
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let ns = k8s::namespace(&client, "badinput").await;
    let other = k8s::namespace(&client, "badother").await;
    admin_secret(&client, &ns).await;
    admin_secret(&client, &other).await;
    // A user that does not exist: CouchDB ≥ 3.4 locks an account out after repeated failed
    // logins, and locking out the real admin would break every other test on the server.
    let nobody = couchdb::unique_name("nobody");
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-admin"}, "stringData": {"username": nobody, "password": "definitely-wrong"}})).await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "garbage-ca"}, "stringData": {"ca.crt": "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"}})).await;
    let _: CouchServer = apply_json(&client, &other, server_manifest("main", &url, json!({}))).await;
    let mut op = Operator::start(&ns, &[]);
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    // The good resources, which must keep working all along.
    let good_db = couchdb::unique_name("good");
    let good2_db = couchdb::unique_name("good2");
    let _: CouchDatabase = apply_json(
        &client,
        &ns,
        kind("CouchDatabase", "good", json!({"serverRef": {"name": "main"}, "name": good_db})),
    )
    .await;
    let _: CouchDatabase = apply_json(
        &client,
        &ns,
        kind("CouchDatabase", "good2", json!({"serverRef": {"name": "main"}, "name": good2_db})),
    )
    .await;
    let _: CouchUser = apply_json(
        &client,
        &ns,
        kind("CouchUser", "plain", json!({"serverRef": {"name": "main"}, "username": couchdb::unique_name("plain")})),
    )
    .await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "good", &op).await;
    let existing_db = couchdb::unique_name("existing");
    couch.create_database(&existing_db, &Default::default()).await.expect("create by hand");
    let existing_user = couchdb::unique_name("existing");
    couch
        .put_user(&couchshare::couch::UserDoc::new(&existing_user, vec![], Some("x".into())))
        .await
        .expect("user by hand");
    let garbage = garbage_server().await;
    let silent = silent_server().await;

    let _: k8s_openapi::api::core::v1::Secret = apply_json(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-config"}, "stringData": {"DATABASE_URL": "http://app:secret@db"}})).await;
    // What the namespace's Secrets hold before the corpus: none of it may change.
    let secrets_before = secrets_in(&client, &ns).await;
    let reserved = couchshare::plan::user::per_user_database_name("userdb-", &couchdb::unique_name("dave"));
    let security_before =
        (couch.security(&good_db).await.expect("_security"), couch.security(&good2_db).await.expect("_security"));
    let corpus = operator_level_corpus(&url);
    let mut applied = Vec::new();
    for (_, manifest, _) in &corpus {
        let text = manifest
            .to_string()
            .replace("OTHER_NS", &other)
            .replace("THIS_NS", &ns)
            .replace("EXISTING_DB", &existing_db)
            .replace("EXISTING_USER", &existing_user)
            .replace("GOOD_DB", &good_db)
            .replace("userdb-RESERVED", &reserved)
            .replace("127.0.0.1:GARBAGE", &format!("127.0.0.1:{garbage}"))
            .replace("127.0.0.1:SILENT", &format!("127.0.0.1:{silent}"));
        let obj = k8s::parse_yaml(&text).pop().expect("object");
        k8s::apply(&client, &ns, &obj).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        let m = serde_json::from_str::<Value>(&text).expect("manifest");
        // What a case names that is already on CouchDB (a run before this one on the same
        // server) is compared with what it was, not required absent.
        let name = m["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let there = match m["kind"].as_str() {
            Some("CouchUser") => {
                couch.get_user(m["spec"]["username"].as_str().unwrap_or(&name)).await.expect("get user").is_some()
            }
            Some("CouchDatabase") => {
                couch.database_exists(m["spec"]["name"].as_str().unwrap_or(&name)).await.expect("exists?")
            }
            _ => false,
        };
        applied.push((m, there));
    }
    let mut failures = Vec::new();
    for (what, manifest, reason) in &corpus {
        let name = manifest["metadata"]["name"].as_str().expect("name");
        let got = match manifest["kind"].as_str() {
            Some("CouchServer") => reason_of(&Api::<CouchServer>::namespaced(client.clone(), &ns), name).await,
            Some("CouchDatabase") => reason_of(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), name).await,
            Some("CouchUser") => reason_of(&Api::<CouchUser>::namespaced(client.clone(), &ns), name).await,
            Some("CouchGrant") => reason_of(&Api::<CouchGrant>::namespaced(client.clone(), &ns), name).await,
            _ => reason_of(&Api::<CouchShare>::namespaced(client.clone(), &ns), name).await,
        };
        match got {
            Some((status, r, message)) if status == "False" && r == *reason => eprintln!("{what}: {r}: {message}"),
            other => failures.push(format!("{what}: expected Ready=False {reason}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), op.tail());
    // No Secret was written or made: not the admin's, not an app's; no refused share's
    // replication user is in the good databases' _security, nor any user of a refused share.
    assert_eq!(secrets_in(&client, &ns).await, secrets_before, "the namespace's Secrets changed");
    for db in [&good_db, &good2_db] {
        let security = couch.security(db).await.expect("_security");
        let names = [security.members.names, security.admins.names].concat();
        assert!(
            names.iter().all(|n| !n.starts_with("couchshare-repl-")),
            "{db}: a refused share is admitted: {names:?}"
        );
    }
    // Each case left CouchDB as it was: no database or user it names made (those that existed
    // before it kept as they were), no replication document or user of a refused share, the
    // good databases' _security untouched by refused grants and shares.
    let after =
        (couch.security(&good_db).await.expect("_security"), couch.security(&good2_db).await.expect("_security"));
    assert_eq!(after, security_before, "a refused grant or share changed _security");
    for (m, there) in &applied {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &m["spec"];
        match m["kind"].as_str() {
            Some("CouchDatabase") => {
                let db = spec["name"].as_str().unwrap_or(name);
                if !there {
                    assert!(!couch.database_exists(db).await.expect("exists?"), "{name}: database {db} was created");
                }
            }
            Some("CouchUser") => {
                let user = spec["username"].as_str().unwrap_or(name);
                let doc = couch.get_user(user).await.expect("get user");
                if user == existing_user {
                    let doc = doc.expect("the existing user");
                    assert!(doc.extra.get(couchshare::plan::user::OWNER_FIELD).is_none(), "{name}: took over {user}");
                } else if !there {
                    assert!(doc.is_none(), "{name}: user {user} was written");
                }
            }
            Some("CouchShare") => {
                let prefix = couchshare::plan::share::replication_doc_prefix(&ns, name);
                let docs = couch.list_replication_docs_with_prefix("_replicator", &prefix).await.expect("list");
                assert!(docs.is_empty(), "{name}: replication documents were written");
                let repl = couchshare::plan::share::replication_username(&ns, name);
                assert!(couch.get_user(&repl).await.expect("get").is_none(), "{name}: its replication user exists");
            }
            _ => {}
        }
    }
    // The operator never crashed and still serves the good resources: a new one becomes Ready.
    let fresh = couchdb::unique_name("fresh");
    let _: CouchDatabase =
        apply_json(&client, &ns, kind("CouchDatabase", "fresh", json!({"serverRef": {"name": "main"}, "name": fresh})))
            .await;
    wait_ready(&Api::<CouchDatabase>::namespaced(client.clone(), &ns), "fresh", &op).await;
    assert!(!op.output().contains("panicked"), "the operator never panicked");
    assert_no_secrets(&op.output(), &[couchdb::admin_credentials().password, "definitely-wrong".to_string()]);
    op.kill();
    // Admission refuses the rest of the bad-input corpus (tests/e2e_admission.rs: 32 cases).
    assert!(corpus.len() + 28 >= 40);
}

/// Every Secret of `ns`, name to data.
async fn secrets_in(client: &Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let list = api.list(&Default::default()).await.expect("list Secrets");
    list.items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), serde_json::to_string(&s.data).unwrap_or_default()))
        .collect()
}

/// Polls until the object has a `Ready` condition that is not `True` and has settled on a
/// reason (or 30 s pass), and returns it.
async fn reason_of<K>(api: &Api<K>, name: &str) -> Option<(String, String, String)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(obj) = api.get(name).await {
            last = ready(&obj);
            if last.as_ref().is_some_and(|r| r.0 == "False" && r.1 != "Pending" && r.1 != "Waiting") {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    last
}
