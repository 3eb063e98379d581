//! End-to-end, operator running: CouchShare — the Inventory set-up (one-way read-only and
//! two-way read-write sharing with sharing documents), scoped credentials, status from the
//! scheduler, revocation, one-shot replications, crashes, and per-user fan-in.
//!
//! A server without selectors, the `auth` endpoint object or purge (CouchDB before 2, or a
//! stand-in such as pouchdb-server, which the suite no longer starts) makes the tests that need
//! them skip and say so; tools/test runs them on Apache CouchDB, where a skip is a failure.

mod support;

use std::time::Duration;

use couchshare::api::{CouchServer, CouchShare, CouchUser};
use couchshare::couch::{Capabilities, CouchClient};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::operator::{
    Operator, admin_secret, apply_json, events_for, eventually_true, manifest as kind, ready, server_manifest,
    wait_for, wait_not_ready, wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    caps: Capabilities,
    ns: String,
    op: Operator,
}

async fn setup(test: &str) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let caps = couch.capabilities().await.expect("capabilities");
    let ns = k8s::namespace(&client, "share").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let mut spec = json!({});
    if let Ok(replication_url) = std::env::var("COUCHDB_REPLICATION_URL") {
        spec["replicationUrl"] = json!(replication_url);
    }
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, spec)).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some(Env { client, couch, caps, ns, op })
}

async fn database(env: &Env, name: &str) -> String {
    support::operator::ready_database(&env.client, &env.ns, name, &env.op).await
}

async fn share(env: &Env, name: &str, spec: Value) {
    let _: CouchShare = apply_json(&env.client, &env.ns, kind("CouchShare", name, spec)).await;
}

fn shares(env: &Env) -> Api<CouchShare> {
    Api::namespaced(env.client.clone(), &env.ns)
}

async fn put(couch: &CouchClient, db: &str, id: &str, body: Value) {
    couch.put_document(db, id, &body).await.unwrap_or_else(|e| panic!("writing {db}/{id}: {e}"));
}

async fn doc(couch: &CouchClient, db: &str, id: &str) -> Option<Value> {
    couch.get_document(db, id).await.ok().flatten()
}

async fn ids(couch: &CouchClient, db: &str) -> Vec<String> {
    let all = couch.all_docs(db, &Default::default()).await.expect("_all_docs");
    all.rows.into_iter().map(|r| r.key).filter(|k| !k.starts_with("_design/")).collect()
}

/// The replication documents of this namespace's shares.
async fn replication_docs(env: &Env) -> Vec<Value> {
    let prefix = format!("couchshare_{}_", env.ns);
    env.couch
        .list_replication_docs("_replicator")
        .await
        .expect("_replicator")
        .into_iter()
        .filter(|d| d["_id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
        .collect()
}

fn needs(test: &str, caps: &Capabilities, what: &[&str]) -> bool {
    what.iter().all(|name| couchdb::require_capability(test, caps, name))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_way_share_replicates_with_scoped_credentials_and_reports_its_state() {
    let test = "a_one_way_share_replicates_with_scoped_credentials_and_reports_its_state";
    let Some(env) = setup(test).await else { return };
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    put(&env.couch, &alice, "item-1", json!({"type": "item", "name": "hammer"})).await;
    share(
        &env,
        "alice-to-bob",
        json!({"source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}}}),
    )
    .await;
    let s = wait_ready(&shares(&env), "alice-to-bob", &env.op).await;
    eventually_true("bob receives alice's item", &env.op, 30, async || doc(&env.couch, &bob, "item-1").await.is_some())
        .await;
    let status = s.status.expect("status");
    assert_eq!(status.replications.len(), 1);
    let r = &status.replications[0];
    assert_eq!((r.source.as_str(), r.target.as_str()), (alice.as_str(), bob.as_str()));
    assert_eq!(r.state.as_deref(), Some("running"));
    let user = status.replication_user.clone().expect("a scoped replication user");
    assert!(user.starts_with("couchshare-repl-"));

    // The replication document carries the scoped user's credentials, never the admin's.
    let docs = replication_docs(&env).await;
    assert_eq!(docs.len(), 1);
    let text = docs[0].to_string();
    let admin = couchdb::admin_credentials();
    assert!(!text.contains(&admin.password), "no admin password in _replicator");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", admin.username, admin.password));
    assert!(!text.contains(&basic), "no admin Basic header in _replicator");
    for endpoint in ["source", "target"] {
        let e = &docs[0][endpoint];
        let url = e["url"].as_str().expect("endpoint url");
        assert!(!url.contains('@'), "no credentials inside the URL: {url}");
        // `auth: {basic}` where the server supports it, else a Basic header.
        let who = match e["auth"]["basic"]["username"].as_str() {
            Some(u) => u.to_string(),
            None => {
                let header = e["headers"]["Authorization"].as_str().expect("credentials in auth or headers");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(header.trim_start_matches("Basic "))
                    .expect("base64");
                String::from_utf8_lossy(&decoded).split(':').next().unwrap_or_default().to_string()
            }
        };
        assert_eq!(who, user, "{endpoint}: the scoped user replicates");
    }
    // The scoped user is a member of both databases, through the same _security composition.
    for db in [&alice, &bob] {
        let sec = env.couch.security(db).await.expect("_security");
        assert!(sec.members.names.contains(&user), "{db}: {sec:?}");
    }
    // Counts come from CouchDB itself (its scheduler; pouchdb-server reports none while running).
    if !couchdb::require_capability(&format!("{test} (counts part)"), &env.caps, "scheduler") {
        return;
    }
    // A running share's counters are those of its last pass: CouchDB announces no progress of a
    // continuous job, so they follow at the resync. An operator with a short one shows them.
    let mut env = env;
    env.op = Operator::start(&env.ns, &["--resync-interval", "3s"]);
    let s = wait_for(&shares(&env), "alice-to-bob", &env.op, "docs written counted", |s| {
        s.status.as_ref().is_some_and(|st| st.replications.first().and_then(|r| r.docs_written).unwrap_or(0) >= 1)
    })
    .await;
    assert!(s.status.expect("status").replications[0].docs_read.unwrap_or(0) >= 1);
}

/// A CouchShare of `examples/inventory-sharing/shares.yaml`, as a manifest to apply.
fn example_share(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/inventory-sharing/shares.yaml");
    let text = std::fs::read_to_string(path).expect("the example");
    let doc = k8s::parse_yaml(&text).into_iter().find(|d| d.metadata.name.as_deref() == Some(name)).expect(name);
    serde_json::to_value(&doc).expect("the example as JSON")
}

/// The Inventory app's own documents for two collections, `tools` and `kitchen`, as its
/// sharing guide describes them, plus one of its private documents.
async fn inventory(couch: &CouchClient, db: &str) {
    let docs = [
        ("collection-tools", json!({"type": "collection", "data": {"name": "Tools"}})),
        ("item-hammer", json!({"type": "item", "data": {"name": "Hammer", "collection_id": "tools"}})),
        (
            "item_image-hammer",
            json!({"type": "item_image", "data": {"_item_collection_id": "tools", "_item_id": "hammer"}}),
        ),
        ("image-shelf", json!({"type": "image", "data": {"_item_collection_ids": ["kitchen", "tools"]}})),
        ("collection-kitchen", json!({"type": "collection", "data": {"name": "Kitchen"}})),
        ("item-pan", json!({"type": "item", "data": {"name": "Pan", "collection_id": "kitchen"}})),
        (
            "item_image-pan",
            json!({"type": "item_image", "data": {"_item_collection_id": "kitchen", "_item_id": "pan"}}),
        ),
        ("image-stove", json!({"type": "image", "data": {"_item_collection_ids": ["kitchen"]}})),
        ("config-alice", json!({"type": "config", "data": {"uuid": "5a8e9d0c-1f2b-4c3d-9e8f-7a6b5c4d3e2f"}})),
    ];
    for (id, body) in docs {
        put(couch, db, id, body).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inventory_one_way_share_gives_bob_exactly_the_selected_documents_and_the_sharing_document() {
    let test = "the_inventory_one_way_share_gives_bob_exactly_the_selected_documents_and_the_sharing_document";
    let Some(env) = setup(test).await else { return };
    if !needs(test, &env.caps, &["selector_replication", "scheduler"]) {
        return;
    }
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    inventory(&env.couch, &alice).await;
    // The example as users apply it: the app's own selector and sharing document.
    let manifest = example_share("alice-tools-to-bob");
    let sharing_id = manifest["spec"]["sharingDocument"]["id"].as_str().expect("sharing id").to_string();
    let _: CouchShare = apply_json(&env.client, &env.ns, manifest).await;
    let s = wait_ready(&shares(&env), "alice-tools-to-bob", &env.op).await;
    assert_eq!(s.status.as_ref().and_then(|st| st.sharing_document_id.clone()), Some(sharing_id.clone()));
    let mut want: Vec<String> = ["collection-tools", "item-hammer", "item_image-hammer", "image-shelf"]
        .iter()
        .map(|s| s.to_string())
        .chain([sharing_id.clone()])
        .collect();
    want.sort();
    eventually_true(
        "bob has the tools collection, its item, item image, image and the sharing document",
        &env.op,
        40,
        async || {
            let got = ids(&env.couch, &bob).await;
            want.iter().all(|w| got.contains(w))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = ids(&env.couch, &bob).await;
    got.sort();
    assert_eq!(got, want, "exactly the selected documents and the sharing document, nothing else");
    let sharing = doc(&env.couch, &bob, &sharing_id).await.expect("sharing document");
    assert_eq!(sharing["data"]["permissions"], json!(["read"]), "where the Inventory app reads it");
    assert!(sharing.get("type").is_none(), "no type field added");
    // bob's edits stay his: one-way.
    put(&env.couch, &bob, "item-bobs", json!({"type": "item", "data": {"collection_id": "tools"}})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(doc(&env.couch, &alice, "item-bobs").await.is_none(), "one-way: nothing flows back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_way_share_brings_carols_edit_back_and_keeps_private_documents_private() {
    let test = "a_two_way_share_brings_carols_edit_back_and_keeps_private_documents_private";
    let Some(env) = setup(test).await else { return };
    if !needs(test, &env.caps, &["selector_replication", "scheduler"]) {
        return;
    }
    let alice = database(&env, "inventory-alice").await;
    let carol = database(&env, "inventory-carol").await;
    inventory(&env.couch, &alice).await;
    put(&env.couch, &carol, "item-carols-own", json!({"type": "item", "data": {"collection_id": "garage"}})).await;
    let manifest = example_share("alice-kitchen-with-carol");
    let sharing_id = manifest["spec"]["sharingDocument"]["id"].as_str().expect("sharing id").to_string();
    let _: CouchShare = apply_json(&env.client, &env.ns, manifest).await;
    let s = wait_ready(&shares(&env), "alice-kitchen-with-carol", &env.op).await;
    assert_eq!(s.status.expect("status").replications.len(), 2, "two directions");
    let mut want: Vec<String> =
        ["collection-kitchen", "item-pan", "item_image-pan", "image-shelf", "image-stove", "item-carols-own"]
            .iter()
            .map(|s| s.to_string())
            .chain([sharing_id.clone()])
            .collect();
    want.sort();
    eventually_true("carol has the kitchen collection and the sharing document", &env.op, 40, async || {
        let got = ids(&env.couch, &carol).await;
        want.iter().all(|w| got.contains(w))
    })
    .await;
    let mut got = ids(&env.couch, &carol).await;
    got.sort();
    assert_eq!(got, want, "the kitchen documents, the sharing document and her own, nothing else");
    let mut pan = doc(&env.couch, &carol, "item-pan").await.expect("pan");
    pan["data"]["name"] = json!("Pan (seasoned by carol)");
    env.couch.put_document(&carol, "item-pan", &pan).await.expect("carol edits");
    eventually_true("carol's edit flows back to alice", &env.op, 40, async || {
        doc(&env.couch, &alice, "item-pan").await.is_some_and(|d| d["data"]["name"] == "Pan (seasoned by carol)")
    })
    .await;
    assert!(doc(&env.couch, &alice, "item-carols-own").await.is_none(), "carol's own document stays hers");
    // The Inventory app unblocks editing from data.permissions: two-way is read and write.
    let sharing = doc(&env.couch, &carol, &sharing_id).await.expect("sharing document");
    assert_eq!(sharing["data"]["permissions"], json!(["read", "write"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_stops_replication_removes_the_sharing_document_and_purges_bobs_copies() {
    let test = "revoking_stops_replication_removes_the_sharing_document_and_purges_bobs_copies";
    let Some(env) = setup(test).await else { return };
    if !needs(test, &env.caps, &["selector_replication", "scheduler", "purge"]) {
        return;
    }
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    put(&env.couch, &alice, "item-1", json!({"type": "item", "shared": true})).await;
    put(&env.couch, &alice, "item-2", json!({"type": "item", "shared": true})).await;
    let spec = json!({
        "source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}},
        "selector": {"shared": true},
        "sharingDocument": {"id": "db_sharing-{source}--{target}"},
        "revoke": {"purgeSharedDocuments": true}
    });
    share(&env, "revocable", spec.clone()).await;
    wait_ready(&shares(&env), "revocable", &env.op).await;
    let sharing_id = format!("db_sharing-{alice}--{bob}");
    eventually_true("bob has both items and the sharing doc", &env.op, 40, async || {
        ids(&env.couch, &bob).await.len() == 3
    })
    .await;
    put(&env.couch, &bob, "bobs-own", json!({"type": "note"})).await;

    let mut revoked = spec.clone();
    revoked["revoke"]["revoked"] = json!(true);
    share(&env, "revocable", revoked).await;
    let s =
        wait_for(&shares(&env), "revocable", &env.op, "revoked", |s| s.status.as_ref().is_some_and(|st| st.revoked))
            .await;
    assert!(ready(&s).is_some_and(|r| r.1 == "Revoked"));
    assert!(replication_docs(&env).await.is_empty(), "replication documents are gone");
    assert!(doc(&env.couch, &alice, &sharing_id).await.is_none(), "sharing document removed from alice");
    assert_eq!(ids(&env.couch, &bob).await, ["bobs-own"], "purged from bob: the sharing doc and the shared items");
    assert!(
        env.couch.leaf_revs(&bob, "item-1").await.expect("leaf revs").is_empty(),
        "purged, not deleted (no tombstone)"
    );
    assert!(
        doc(&env.couch, &alice, "item-1").await.is_some() && doc(&env.couch, &alice, "item-2").await.is_some(),
        "alice's originals untouched"
    );
    let user = s.status.and_then(|st| st.replication_user);
    if let Some(user) = user {
        assert!(env.couch.get_user(&user).await.expect("get").is_none(), "the scoped user is removed");
    }
    // Never resurrected: new documents in alice stay there.
    put(&env.couch, &alice, "item-3", json!({"type": "item", "shared": true})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(doc(&env.couch, &bob, "item-3").await.is_none());
    assert!(replication_docs(&env).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_share_stops_it_and_a_restart_never_resurrects_it() {
    let test = "deleting_a_share_stops_it_and_a_restart_never_resurrects_it";
    let Some(mut env) = setup(test).await else { return };
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    share(
        &env,
        "temp",
        json!({"source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}}}),
    )
    .await;
    wait_ready(&shares(&env), "temp", &env.op).await;
    put(&env.couch, &alice, "before", json!({"v": 1})).await;
    eventually_true("replicating", &env.op, 30, async || doc(&env.couch, &bob, "before").await.is_some()).await;
    shares(&env).delete("temp", &DeleteParams::default()).await.expect("delete share");
    eventually_true("the share is gone", &env.op, 30, async || {
        shares(&env).get_opt("temp").await.ok().flatten().is_none()
    })
    .await;
    assert!(replication_docs(&env).await.is_empty(), "replication documents deleted");
    env.op.kill();
    env.op = Operator::start(&env.ns, &[]);
    put(&env.couch, &alice, "after", json!({"v": 2})).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(doc(&env.couch, &bob, "after").await.is_none(), "nothing replicates after revocation");
    assert!(replication_docs(&env).await.is_empty(), "a restart resurrects nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_share_completes_and_stays_completed_across_a_restart() {
    let test = "a_one_shot_share_completes_and_stays_completed_across_a_restart";
    let Some(mut env) = setup(test).await else { return };
    // No resync to fall back on: the replicator's own write of the end must wake the share.
    env.op.kill();
    env.op = Operator::start(&env.ns, &["--resync-interval", "10m"]);
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    put(&env.couch, &alice, "snapshot", json!({"v": 1})).await;
    share(
        &env,
        "once",
        json!({"source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}}, "continuous": false}),
    )
    .await;
    // How long after CouchDB's scheduler says completed the share says so: within 5 s.
    let id = format!("couchshare_{}_once_fwd", env.ns);
    let (mut couch_done, mut share_done) = (None, None);
    let started = std::time::Instant::now();
    while share_done.is_none() && started.elapsed() < Duration::from_secs(45) {
        if couch_done.is_none()
            && env
                .couch
                .replication_status("_replicator", &id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.state == Some(couchshare::couch::ReplicationState::Completed))
        {
            couch_done = Some(std::time::Instant::now());
        }
        let now = shares(&env).get("once").await.expect("share");
        if now.status.as_ref().is_some_and(|st| st.state.as_deref() == Some("completed")) {
            share_done = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(s) = share_done else { panic!("the share never said completed:\n{}", env.op.tail()) };
    // A share that said it before this loop saw the scheduler say it was not behind.
    let delay = couch_done.map_or(Duration::ZERO, |c| s.saturating_duration_since(c));
    eprintln!("{test}: status said completed {delay:?} after CouchDB's scheduler did");
    assert!(delay <= Duration::from_secs(5), "the share said completed {delay:?} after CouchDB:\n{}", env.op.tail());
    let s = wait_for(&shares(&env), "once", &env.op, "completed", |s| {
        s.status.as_ref().is_some_and(|st| st.state.as_deref() == Some("completed"))
    })
    .await;
    assert!(ready(&s).is_some_and(|r| r.0 == "True"), "a completed one-shot share is Ready");
    assert!(doc(&env.couch, &bob, "snapshot").await.is_some());
    let before = replication_docs(&env).await;
    assert_eq!(before.len(), 1);
    env.op.kill();
    env.op = Operator::start(&env.ns, &[]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = replication_docs(&env).await;
    assert_eq!(after.len(), 1, "no duplicate");
    // CouchDB's replicator records the completion in the document itself (a new revision, on a
    // cluster a moment after the scheduler reports it), so the revision is not the measure: the
    // restarted operator wrote nothing, and the document is the one it wrote, still completed.
    let restarted = env.op.output();
    assert!(
        !restarted.contains("wrote replication document") && !restarted.contains("updated replication document"),
        "the restarted operator rewrote the completed document (a re-run):\n{}",
        env.op.tail()
    );
    assert_eq!(after[0]["couchshare.io/spec-hash"], before[0]["couchshare.io/spec-hash"]);
    if after[0].get("_replication_state").is_some() {
        assert_eq!(after[0]["_replication_state"], "completed", "not re-run: {:?}", after[0]);
    }
    assert!(ready(&shares(&env).get("once").await.expect("share")).is_some_and(|r| r.0 == "True"));
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_operator_mid_way_duplicates_nothing() {
    let test = "killing_the_operator_mid_way_duplicates_nothing";
    let Some(mut env) = setup(test).await else { return };
    database(&env, "inventory-alice").await;
    database(&env, "inventory-bob").await;
    let spec =
        json!({"source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}}});
    share(&env, "crashy", spec).await;
    // Kill it as soon as the first replication document exists, before status is written.
    eventually_true("a replication document is written", &env.op, 30, async || {
        !replication_docs(&env).await.is_empty()
    })
    .await;
    env.op.kill();
    // On a cluster a read may reach a shard copy the write has not reached yet: read again.
    let mut first = replication_docs(&env).await;
    for _ in 0..50 {
        if !first.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = replication_docs(&env).await;
    }
    assert_eq!(first.len(), 1, "the document seen before the kill is listed");
    env.op = Operator::start(&env.ns, &[]);
    wait_ready(&shares(&env), "crashy", &env.op).await;
    let after = replication_docs(&env).await;
    assert_eq!(after.len(), 1, "exactly one replication document");
    assert_eq!(after[0]["_id"], first[0]["_id"], "the same deterministic id");
    let users = env.couch.all_docs("_users", &Default::default()).await.expect("_users");
    let share_users = users.rows.iter().filter(|r| r.key.contains("couchshare-repl-")).count();
    assert!(share_users >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_selector_is_refused_before_anything_is_written() {
    let test = "a_bad_selector_is_refused_before_anything_is_written";
    let Some(env) = setup(test).await else { return };
    database(&env, "inventory-alice").await;
    database(&env, "inventory-bob").await;
    let spec = json!({
        "source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}},
        "selector": {"$or": [{"type": "item"}, {"age": {"$older": 3}}]}
    });
    share(&env, "bad", spec).await;
    let s = wait_not_ready(&shares(&env), "bad", &env.op, "InvalidSelector").await;
    let message = ready(&s).map(|r| r.2).unwrap_or_default();
    assert!(message.contains("$older") && message.contains("$.$or[1].age"), "names the offending part: {message}");
    assert!(replication_docs(&env).await.is_empty(), "no replication document");
    assert!(s.status.expect("status").replication_user.is_none(), "no replication user");
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_in_collects_every_users_database_and_picks_up_a_user_added_later() {
    let test = "fan_in_collects_every_users_database_and_picks_up_a_user_added_later";
    let Some(env) = setup(test).await else { return };
    let analytics = database(&env, "notes-analytics").await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let mut userdbs = Vec::new();
    for name in ["ana", "ben", "cleo", "dora"] {
        let username = couchdb::unique_name(name);
        let manifest = json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser",
            "metadata": {"name": name, "labels": {"app": if name == "dora" { "later" } else { "notes" }}},
            "spec": {"serverRef": {"name": "main"}, "username": username, "perUserDatabase": true}});
        let _: CouchUser = apply_json(&env.client, &env.ns, manifest).await;
        let u = wait_ready(&users, name, &env.op).await;
        let db = u.status.and_then(|s| s.per_user_database).expect("per-user database");
        put(&env.couch, &db, &format!("note-{name}"), json!({"by": name})).await;
        userdbs.push((name, username, db));
    }
    share(
        &env,
        "fan-in",
        json!({"source": {"userDatabases": {"selector": {"matchLabels": {"app": "notes"}}}}, "target": {"database": {"name": "notes-analytics"}}}),
    )
    .await;
    let s = wait_ready(&shares(&env), "fan-in", &env.op).await;
    assert_eq!(s.status.expect("status").replications.len(), 3, "one replication per matching user");
    eventually_true("analytics has the three users' notes", &env.op, 40, async || {
        let got = ids(&env.couch, &analytics).await;
        ["note-ana", "note-ben", "note-cleo"].iter().all(|n| got.contains(&n.to_string()))
    })
    .await;
    assert!(doc(&env.couch, &analytics, "note-dora").await.is_none());
    // A fourth user joins by label: picked up without touching the share.
    let (_, username, _) = &userdbs[3];
    let manifest = json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser",
        "metadata": {"name": "dora", "labels": {"app": "notes"}},
        "spec": {"serverRef": {"name": "main"}, "username": username, "perUserDatabase": true}});
    let _: CouchUser = apply_json(&env.client, &env.ns, manifest).await;
    eventually_true("dora's note arrives", &env.op, 40, async || {
        doc(&env.couch, &analytics, "note-dora").await.is_some()
    })
    .await;
    // The fourth replication shows up first as not yet running, then the share is Ready again.
    wait_for(&shares(&env), "fan-in", &env.op, "four replications, Ready", |s| {
        s.status.as_ref().is_some_and(|st| st.replications.len() == 4) && ready(s).is_some_and(|r| r.0 == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_in_user_whose_database_comes_late_is_picked_up_without_waiting_for_a_resync() {
    let test = "a_fan_in_user_whose_database_comes_late_is_picked_up_without_waiting_for_a_resync";
    let Some(mut env) = setup(test).await else { return };
    // No resync to fall back on: only the events the share waits for may bring it back.
    env.op.kill();
    env.op = Operator::start(&env.ns, &["--resync-interval", "10m"]);
    let analytics = database(&env, "notes-analytics").await;
    share(
        &env,
        "fan-in",
        json!({"source": {"userDatabases": {"selector": {"matchLabels": {"app": "notes"}}}}, "target": {"database": {"name": "notes-analytics"}}}),
    )
    .await;
    wait_ready(&shares(&env), "fan-in", &env.op).await;
    // The slow path, forced: the user appears, but its per-user database cannot be made yet
    // (its password Secret is missing), as when a cluster is slow to create the database.
    let username = couchdb::unique_name("eve");
    let manifest = json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser",
        "metadata": {"name": "eve", "labels": {"app": "notes"}},
        "spec": {"serverRef": {"name": "main"}, "username": username, "perUserDatabase": true,
                 "password": {"secretRef": {"name": "eve-password"}}}});
    let _: CouchUser = apply_json(&env.client, &env.ns, manifest).await;
    let waiting = wait_not_ready(&shares(&env), "fan-in", &env.op, "Waiting").await;
    assert!(ready(&waiting).is_some_and(|r| r.2.contains("eve")), "the share says whom it waits for");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(
        &env.client,
        &env.ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eve-password"}, "stringData": {"password": "eve-pass-1"}}),
    )
    .await;
    let eve = wait_ready(&Api::<CouchUser>::namespaced(env.client.clone(), &env.ns), "eve", &env.op).await;
    let db = eve.status.and_then(|s| s.per_user_database).expect("eve's database");
    put(&env.couch, &db, "note-eve", json!({"by": "eve"})).await;
    eventually_true("eve's note arrives, long before any resync", &env.op, 40, async || {
        doc(&env.couch, &analytics, "note-eve").await.is_some()
    })
    .await;
    wait_for(&shares(&env), "fan-in", &env.op, "one replication, Ready", |s| {
        s.status.as_ref().is_some_and(|st| st.replications.len() == 1) && ready(s).is_some_and(|r| r.0 == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_in_a_per_tenant_replicator_database_replicates() {
    let test = "a_share_in_a_per_tenant_replicator_database_replicates";
    let Some(env) = setup(test).await else { return };
    // pouchdb-server stores `tenant/_replicator` under another name and runs no jobs from it.
    if !needs(test, &env.caps, &["scheduler"]) {
        return;
    }
    let alice = database(&env, "inventory-alice").await;
    let bob = database(&env, "inventory-bob").await;
    put(&env.couch, &alice, "tenant-item", json!({"v": 1})).await;
    let replicator = format!("{}/_replicator", couchdb::unique_name("tenant"));
    share(
        &env,
        "tenant",
        json!({"source": {"database": {"name": "inventory-alice"}}, "target": {"database": {"name": "inventory-bob"}},
               "replicatorDatabase": replicator}),
    )
    .await;
    wait_ready(&shares(&env), "tenant", &env.op).await;
    eventually_true("bob receives the item through the tenant's replicator", &env.op, 40, async || {
        doc(&env.couch, &bob, "tenant-item").await.is_some()
    })
    .await;
    let docs = env.couch.list_replication_docs(&replicator).await.expect("tenant replicator");
    assert_eq!(docs.len(), 1, "the replication document lives in {replicator}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_fan_in_takes_the_replication_user_out_of_every_per_user_database() {
    let test = "revoking_a_fan_in_takes_the_replication_user_out_of_every_per_user_database";
    let Some(env) = setup(test).await else { return };
    database(&env, "fan-revoke-analytics").await;
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let mut userdbs = Vec::new();
    for name in ["eve", "finn"] {
        let manifest = json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser",
            "metadata": {"name": name, "labels": {"app": "fan-revoke"}},
            "spec": {"serverRef": {"name": "main"}, "username": couchdb::unique_name(name), "perUserDatabase": true}});
        let _: CouchUser = apply_json(&env.client, &env.ns, manifest).await;
        let u = wait_ready(&users, name, &env.op).await;
        userdbs.push(u.status.and_then(|s| s.per_user_database).expect("per-user database"));
    }
    let spec = json!({"source": {"userDatabases": {"selector": {"matchLabels": {"app": "fan-revoke"}}}},
                      "target": {"database": {"name": "fan-revoke-analytics"}}});
    share(&env, "fan-revoke", spec.clone()).await;
    // What is revoked is the access, so the test waits for that, not for the replications to
    // run: on a cluster CouchDB's replicator once failed its own _session request
    // (`sel_conn_closed`) and backed the job off past the 45 s wait.
    let s = wait_for(&shares(&env), "fan-revoke", &env.op, "its replication user and documents", |s| {
        s.status.as_ref().is_some_and(|st| st.replication_user.is_some() && st.replications.len() == 2)
    })
    .await;
    let user = s.status.and_then(|st| st.replication_user).expect("a scoped replication user");
    for db in &userdbs {
        eventually_true(&format!("{db} lets the replication user in while shared"), &env.op, 10, async || {
            env.couch.security(db).await.is_ok_and(|security| security.members.names.contains(&user))
        })
        .await;
    }
    let mut revoked = spec;
    revoked["revoke"] = json!({"revoked": true});
    share(&env, "fan-revoke", revoked).await;
    wait_for(&shares(&env), "fan-revoke", &env.op, "revoked", |s| s.status.as_ref().is_some_and(|st| st.revoked)).await;
    assert!(replication_docs(&env).await.is_empty(), "replication documents are gone");
    for db in &userdbs {
        let security = env.couch.security(db).await.expect("_security");
        assert!(!security.members.names.contains(&user), "{db} still lets {user} in after revocation: {security:?}");
    }
    assert!(env.couch.get_user(&user).await.expect("get user").is_none(), "the scoped user is removed");
    let events = events_for(&env.client, &env.ns, "fan-revoke").await;
    assert!(!events.iter().any(|(reason, _)| reason == "CleanupSkipped"), "no misleading clean-up Event: {events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_endpoint_without_a_client_is_refused_and_nothing_goes_to_the_local_server() {
    let test = "a_remote_endpoint_without_a_client_is_refused_and_nothing_goes_to_the_local_server";
    let Some(env) = setup(test).await else { return };
    let local = database(&env, "remote-victim").await;
    let target = database(&env, "remote-target").await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "partner"},
                        "stringData": {"username": "partner", "password": "partner-pw"}});
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&env.client, &env.ns, secret).await;
    // The schema takes the URL (it starts with http:// and has no credentials); no HTTP client
    // can be built for it. The remote database has the local one's name: a write meant for the
    // remote that went to the local server instead would land there.
    share(
        &env,
        "bad-remote",
        json!({"serverRef": {"name": "main"},
               "source": {"remote": {"url": "http://bad host:5984", "database": local, "credentialsSecretRef": {"name": "partner"}}},
               "target": {"database": {"name": "remote-target"}},
               "sharingDocument": {"id": "db_sharing-{source}--{target}"}}),
    )
    .await;
    let s = wait_not_ready(&shares(&env), "bad-remote", &env.op, "RemoteUnusable").await;
    let message = ready(&s).map(|r| r.2).unwrap_or_default();
    assert!(message.contains("bad host"), "names the remote: {message}");
    assert!(!message.contains("partner-pw"), "no secret in the message");
    assert_eq!(ids(&env.couch, &local).await, Vec::<String>::new(), "nothing written to the local {local}");
    assert_eq!(ids(&env.couch, &target).await, Vec::<String>::new(), "nothing written to the target");
    assert!(replication_docs(&env).await.is_empty(), "no replication document");
}
