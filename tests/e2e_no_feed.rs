//! End-to-end, operator running: no feed, no blind spot. On a 3-node cluster the operator has
//! just finished, CouchDB 3.5 answered `GET /_db_updates` with 404 for minutes (until the
//! operator learnt to create the system databases again after finishing); a database deleted by
//! hand right after finishing comes back within 5 s, and an on-change fan-in replicates a new
//! per-user database within 10 s, whether the feed answers or the `_all_dbs` listing stands in.
//! Each test says which it was (the feed, since that fix); on a single
//! node those two skip: the topology, not a capability, is what they need. On a single node a
//! third takes `_global_changes` away under a running operator: the follower's failing feed
//! wakes its server (or it lists around the missing feed, which does too), the server puts the
//! database back, and the feed is followed again.

mod support;

use std::time::{Duration, Instant};

use couchshare::api::{CouchServer, CouchShare};
use couchshare::couch::{CouchClient, CreateDatabase, DbUpdatesQuery, FeedMode, Principals, Security};
use kube::Client;
use kube::api::Api;
use serde_json::json;
use support::operator::{
    Operator, admin_secret, apply_json, eventually_true, manifest as kind, server_manifest, wait_for,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: CouchClient,
    ns: String,
    op: Operator,
}

/// A namespace, an operator with no resync to fall back on, and the CouchServer, waited for
/// until the cluster is finished; `None` on a single node.
async fn setup(test: &str, prefix: &str) -> Option<Env> {
    // Not `support::servers`: it creates the system databases, and here the operator does, as on
    // a cluster the chart starts (it is by its `finish_cluster` that the feed goes missing).
    let client = k8s::client(test).await?;
    let couch = couchdb::client(test)?;
    k8s::install_crds(&client).await;
    let membership = couch.membership().await.expect("_membership");
    if membership.cluster_nodes.len() < 2 {
        couchdb::say_skip(&format!("SKIP {test}: needs a cluster (this CouchDB is a single node)"));
        return None;
    }
    let ns = k8s::namespace(&client, prefix).await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &["--resync-interval", "10m"]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    // As the example server: CouchDB's default start jitter would add up to 5 s to each one-shot.
    let spec = json!({
        "trustedNamespaces": {"from": "Same"},
        "config": {"settings": {"replicator/startup_jitter": "200"}}
    });
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, spec)).await;
    let servers = Api::<CouchServer>::namespaced(client.clone(), &ns);
    wait_for(&servers, "main", &op, "finished and Ready", |s| {
        let finished = s.status.as_ref().and_then(|st| st.membership.as_ref()).is_some_and(|m| m.finished);
        finished && support::operator::ready(s).is_some_and(|r| r.0 == "True")
    })
    .await;
    Some(Env { client, couch, ns, op })
}

/// Whether `GET /_db_updates` answers 404 right now.
async fn feed_missing(couch: &CouchClient) -> bool {
    let now = DbUpdatesQuery { feed: FeedMode::Normal, since: Some(json!("now")), timeout: None };
    matches!(couch.db_updates(&now).await, Err(e) if e.is_not_found())
}

/// What the CouchServer's status says its database events come from.
async fn events_source(env: &Env) -> Option<String> {
    let servers = Api::<CouchServer>::namespaced(env.client.clone(), &env.ns);
    servers.get("main").await.ok()?.status?.database_events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_deleted_by_hand_right_after_the_cluster_is_finished_is_back_within_5_s() {
    let test = "a_database_deleted_by_hand_right_after_the_cluster_is_finished_is_back_within_5_s";
    let Some(env) = setup(test, "nofeed").await else { return };
    let name = support::operator::ready_database(&env.client, &env.ns, "handmade", &env.op).await;
    let missing_before = feed_missing(&env.couch).await;
    env.couch.delete_database(&name).await.expect("delete by hand");
    let deleted = Instant::now();
    let back = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.database_exists(&name).await.ok().filter(|e| *e).map(|_| deleted.elapsed())
    })
    .await;
    let missing_after = feed_missing(&env.couch).await;
    let source = events_source(&env).await;
    eprintln!(
        "{test}: back after {back:?}; _db_updates 404 before the delete: {missing_before}, after: {missing_after}; status.databaseEvents: {source:?}"
    );
    let back = back.unwrap_or_else(|| panic!("{name} was not recreated within 30 s:\n{}", env.op.tail()));
    assert!(back <= Duration::from_secs(5), "recreated only after {back:?}:\n{}", env.op.tail());
    if missing_before && missing_after {
        assert_eq!(source.as_deref(), Some("_all_dbs"), "the status says the listing stands in for the feed");
    }
    assert!(source.is_some(), "the status says where database events come from");
    // Once CouchDB serves the feed (how long that takes is CouchDB's: minutes, in some runs),
    // the follower goes back to it within a listing round or two, and the status says so.
    if source.as_deref() == Some("_all_dbs") {
        let answering = couchdb::eventually(Duration::from_secs(60), || async {
            (!feed_missing(&env.couch).await).then(Instant::now)
        })
        .await;
        let Some(answering) = answering else {
            eprintln!("{test}: _db_updates still 404 60 s on; the switch back to it was not seen");
            return;
        };
        eventually_true("the status says _db_updates once the feed answers", &env.op, 10, async || {
            events_source(&env).await.as_deref() == Some("_db_updates")
        })
        .await;
        eprintln!("{test}: status back on _db_updates {:?} after the feed answered", answering.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_on_change_fan_in_replicates_a_new_users_database_within_10_s_right_after_the_cluster_is_finished() {
    let test = "an_on_change_fan_in_replicates_a_new_users_database_within_10_s_right_after_the_cluster_is_finished";
    let Some(env) = setup(test, "nofeed-onchange").await else { return };
    let analytics = support::operator::ready_database(&env.client, &env.ns, "analytics", &env.op).await;
    let prefix = format!("t{:012x}-userdb-", rand::random::<u64>() >> 16);
    let share = json!({
        "source": {"perUserDatabases": {"prefix": prefix}},
        "target": {"database": {"name": "analytics"}},
        "strategy": "OnChange",
        "credentials": "Admin",
    });
    let _: CouchShare = apply_json(&env.client, &env.ns, kind("CouchShare", "signups", share)).await;
    let shares = Api::<CouchShare>::namespaced(env.client.clone(), &env.ns);
    wait_for(&shares, "signups", &env.op, "started", |s| {
        s.status.as_ref().and_then(|st| st.on_change.as_ref()).is_some_and(|o| o.first_full_sync.is_some())
    })
    .await;
    // A user signs up, as couch_peruser would make their database, and writes.
    let missing_before = feed_missing(&env.couch).await;
    let db = format!("{prefix}{}", hex::encode("late"));
    env.couch.create_database(&db, &CreateDatabase { q: Some(1), ..Default::default() }).await.expect("user db");
    let only = Principals { names: vec!["late".into()], roles: vec![], extra: Default::default() };
    let security = Security { admins: only.clone(), members: only, extra: Default::default() };
    env.couch.put_security(&db, &security).await.expect("_security");
    env.couch.put_document(&db, "hello", &json!({"by": "late"})).await.expect("the user's first document");
    let written = Instant::now();
    let arrived = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.get_document(&analytics, "hello").await.ok().flatten().map(|_| written.elapsed())
    })
    .await;
    let missing_after = feed_missing(&env.couch).await;
    let feed = shares.get("signups").await.ok().and_then(|s| s.status?.on_change).map(|o| o.feed);
    eprintln!(
        "{test}: arrived after {arrived:?}; _db_updates 404 before the sign-up: {missing_before}, after: {missing_after}; status.onChange.feed: {feed:?}"
    );
    let arrived = arrived.unwrap_or_else(|| panic!("the new user's document never arrived:\n{}", env.op.tail()));
    assert!(arrived <= Duration::from_secs(10), "arrived only after {arrived:?}:\n{}", env.op.tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_that_goes_missing_is_listed_around_and_taken_back_when_it_returns() {
    let test = "a_feed_that_goes_missing_is_listed_around_and_taken_back_when_it_returns";
    let Some((client, couch)) = support::servers(test).await else { return };
    if !couchdb::require_capability(test, &couch.capabilities().await.expect("capabilities"), "db_updates") {
        return;
    }
    // It takes `_global_changes` away: not on a cluster, whose other tests use its feed.
    if couch.membership().await.expect("_membership").cluster_nodes.len() > 1 {
        couchdb::say_skip(&format!("SKIP {test}: needs a single node (it removes _global_changes)"));
        return;
    }
    let ns = k8s::namespace(&client, "nofeed-single").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &["--resync-interval", "10m"]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    let env = Env { client, couch, ns, op };
    let name = support::operator::ready_database(&env.client, &env.ns, "kept", &env.op).await;
    eventually_true("the status says _db_updates", &env.op, 30, async || {
        events_source(&env).await.as_deref() == Some("_db_updates")
    })
    .await;
    // The feed goes: the follower's first failure requeues its server (or, when the feed answers
    // 404 first, it lists instead and that change requeues it), whose reconcile (no resync for 10
    // minutes) puts the system database back; the follower follows the feed again.
    env.couch.delete_database("_global_changes").await.expect("remove _global_changes");
    let gone = Instant::now();
    let restored = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.database_exists("_global_changes").await.ok().filter(|e| *e).map(|_| gone.elapsed())
    })
    .await;
    if restored.is_none() {
        let _ = env.couch.create_database("_global_changes", &CreateDatabase::default()).await;
    }
    let restored = restored.unwrap_or_else(|| panic!("_global_changes not restored:\n{}", env.op.tail()));
    eventually_true("the status says _db_updates again", &env.op, 15, async || {
        !feed_missing(&env.couch).await && events_source(&env).await.as_deref() == Some("_db_updates")
    })
    .await;
    // Either the follower listed meanwhile and took the feed back, or its feed's first failure
    // woke the server, which put the database back before the follower had to list.
    let output = env.op.output();
    let listed = output.contains("no _db_updates; listing the databases instead");
    if listed {
        assert!(output.contains("_db_updates answers again"), "it took the feed back:\n{}", env.op.tail());
    }
    eprintln!("{test}: the follower listed meanwhile: {listed}");
    env.couch.delete_database(&name).await.expect("delete by hand");
    let deleted = Instant::now();
    let back = couchdb::eventually(Duration::from_secs(30), || async {
        env.couch.database_exists(&name).await.ok().filter(|e| *e).map(|_| deleted.elapsed())
    })
    .await;
    eprintln!(
        "{test}: _global_changes restored after {restored:?}; a database deleted on the feed again back after {back:?}"
    );
    assert!(back.is_some_and(|b| b <= Duration::from_secs(5)), "recreated within 5 s:\n{}", env.op.tail());
}
