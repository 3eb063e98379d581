//! End-to-end, operator killed mid-revocation: a two-way share with `purgeSharedDocuments` is
//! revoked (by `revoke.revoked`, or by deleting it), the operator is SIGKILLed a moment into the
//! revocation and started again, and the target is checked exactly — nothing of the share left,
//! at once and after a quiet wait, and no job of the share on any node. On a cluster this is
//! where a deleted `_replicator` document did not mean a stopped job: a purged copy came back.

mod support;

use std::time::Duration;

use couchshare::api::{CouchServer, CouchShare};
use couchshare::couch::{CouchClient, SchedulerJob};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::operator::{
    Operator, admin_secret, apply_json, eventually_true, manifest as kind, ready_database, server_manifest, wait_ready,
};
use support::{couchdb, k8s};

async fn ids(couch: &CouchClient, db: &str) -> Vec<String> {
    let all = couch.all_docs(db, &Default::default()).await.expect("_all_docs");
    all.rows.into_iter().map(|r| r.key).filter(|k| !k.starts_with("_design/")).collect()
}

/// The jobs of share `name` in namespace `ns` on any node.
async fn jobs_of(couch: &CouchClient, ns: &str, name: &str) -> Vec<SchedulerJob> {
    let prefix = format!("couchshare_{ns}_{name}_");
    let jobs = couch.scheduler_jobs().await.expect("_scheduler/jobs");
    jobs.into_iter().filter(|j| j.doc_id.as_deref().is_some_and(|d| d.starts_with(&prefix))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_operator_at_several_moments_of_a_revocation_leaves_nothing_of_the_share_in_the_target() {
    let test = "killing_the_operator_at_several_moments_of_a_revocation_leaves_nothing_of_the_share_in_the_target";
    let Some((client, couch)) = support::servers(test).await else { return };
    let caps = couch.capabilities().await.expect("capabilities");
    if !["selector_replication", "scheduler", "purge"].iter().all(|c| couchdb::require_capability(test, &caps, c)) {
        return;
    }
    let ns = k8s::namespace(&client, "revoke-kill").await;
    admin_secret(&client, &ns).await;
    let mut op = Operator::start(&ns, &[]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    let shares = Api::<CouchShare>::namespaced(client.clone(), &ns);
    // The moments: early (stopping), later (purging), and past the end; by the flag and by deletion.
    let rounds = [(200, false), (200, true), (500, false), (900, true), (1500, false)];
    for (round, (after_ms, by_deletion)) in rounds.into_iter().enumerate() {
        let name = format!("r{round}");
        let alice = ready_database(&client, &ns, &format!("alice-{name}"), &op).await;
        let bob = ready_database(&client, &ns, &format!("bob-{name}"), &op).await;
        for i in 1..=3 {
            couch.put_document(&alice, &format!("item-{i}"), &json!({"shared": true})).await.expect("item");
        }
        couch.put_document(&alice, "alices-own", &json!({"shared": false})).await.expect("private");
        couch.put_document(&bob, "bobs-own", &json!({"note": "bob's"})).await.expect("bob's own");
        let spec = json!({
            "source": {"database": {"name": format!("alice-{name}")}},
            "target": {"database": {"name": format!("bob-{name}")}},
            "mode": "TwoWay",
            "selector": {"shared": true},
            "sharingDocument": {"id": "db_sharing-{source}--{target}"},
            "revoke": {"purgeSharedDocuments": true}
        });
        let _: CouchShare = apply_json(&client, &ns, kind("CouchShare", &name, spec.clone())).await;
        wait_ready(&shares, &name, &op).await;
        let sharing_id = format!("db_sharing-{alice}--{bob}");
        eventually_true("bob has the three items and the sharing document", &op, 60, async || {
            let got = ids(&couch, &bob).await;
            (1..=3).all(|i| got.contains(&format!("item-{i}"))) && got.contains(&sharing_id)
        })
        .await;

        if by_deletion {
            shares.delete(&name, &DeleteParams::default()).await.expect("delete the share");
        } else {
            let mut revoked = spec.clone();
            revoked["revoke"]["revoked"] = json!(true);
            let mut current = shares.get(&name).await.expect("share");
            current.spec = serde_json::from_value(revoked).expect("spec");
            shares.replace(&name, &PostParams::default(), &current).await.expect("revoke");
        }
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        op.kill();
        eprintln!("{test}: round {round}: killed {after_ms} ms into the revocation (by deletion: {by_deletion})");
        op = Operator::start(&ns, &[]);
        eventually_true("the revocation finished", &op, 60, async || match shares.get_opt(&name).await {
            Ok(None) => by_deletion,
            Ok(Some(s)) => s.status.is_some_and(|st| st.revoked),
            Err(_) => false,
        })
        .await;

        // Exactly bob's own document, at once and after a quiet wait; no job of the share left.
        for wait in [0, 8] {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let got = ids(&couch, &bob).await;
            assert_eq!(
                got,
                ["bobs-own"],
                "round {round}, {wait} s after: the target holds only bob's own\n{}",
                op.tail()
            );
            for id in (1..=3).map(|i| format!("item-{i}")).chain([sharing_id.clone()]) {
                let revs = couch.leaf_revs(&bob, &id).await.expect("leaf revisions");
                assert!(revs.is_empty(), "round {round}: {id} purged, not deleted: {revs:?}");
            }
            let jobs = jobs_of(&couch, &ns, &name).await;
            assert!(jobs.is_empty(), "round {round}: jobs of the share still run: {jobs:?}");
        }
        let mut kept = ids(&couch, &alice).await;
        kept.sort();
        assert!(
            ["alices-own", "item-1", "item-2", "item-3"].iter().all(|id| kept.contains(&id.to_string())),
            "round {round}: alice's documents untouched: {kept:?}"
        );
    }
    op.kill();
}
