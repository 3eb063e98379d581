//! Table tests of [`plan_share`]: one pass, decided from intent and observation alone.

use serde_json::{Value, json};

use super::*;
use crate::couch::{ReplicationInfo, ReplicationState, ReplicationStatus as Scheduled};
use crate::plan::ownership::Refusal;
use crate::plan::share::{EndpointAuth, EndpointStyle, SHARE_FIELD, SPEC_HASH_FIELD, replication_doc};

fn owner() -> Owner {
    Owner { kind: "CouchShare".into(), namespace: "inv".into(), name: "alice-bob".into(), uid: "uid-1".into() }
}

fn auth() -> EndpointAuth {
    EndpointAuth { username: "couchshare-repl-1".into(), password: "pw".into() }
}

fn local(db: &str) -> End {
    End::Local { database: db.into() }
}

fn intent() -> ShareIntent {
    ShareIntent {
        owner: owner(),
        mode: ShareMode::OneWay,
        continuous: true,
        selector: Some(json!({"type": "item"})),
        sharing_document: Some(("db_sharing-{source}--{target}".into(), None)),
        replicator: "_replicator".into(),
        style: EndpointStyle::AuthObject,
        local_base: "http://couch:5984".into(),
        local_auth: auth(),
        sources: vec![(None, local("alice"))],
        target: local("bob"),
        waiting: vec![],
        budget: None,
    }
}

fn running(id: &str, state: ReplicationState) -> Scheduled {
    Scheduled {
        doc_id: id.into(),
        state: Some(state),
        info: ReplicationInfo { changes_pending: Some(2), ..Default::default() },
        last_updated: None,
        error_count: 0,
    }
}

/// The documents a first pass writes, as CouchDB would then hold them (with a `_rev`).
fn stored_after(plan: &SharePlan) -> (Vec<Value>, Option<Value>) {
    let mut docs = Vec::new();
    let mut sharing = None;
    for step in &plan.steps {
        match step {
            ShareStep::PutReplication { id, body } => {
                let mut d = body.clone();
                d["_id"] = json!(id);
                d["_rev"] = json!("1-a");
                docs.push(d);
            }
            ShareStep::PutSharingDocument { body, .. } => {
                let mut d = body.clone();
                d["_rev"] = json!("1-s");
                sharing = Some(d);
            }
            _ => {}
        }
    }
    (docs, sharing)
}

#[test]
fn a_first_pass_writes_the_sharing_document_then_the_replication_and_reports_pending() {
    let plan = plan_share(&intent(), &ObservedShare::default()).expect("plan");
    assert_eq!(plan.steps.len(), 2, "{:?}", plan.steps);
    let ShareStep::PutSharingDocument { end, id, body } = &plan.steps[0] else { panic!("{:?}", plan.steps[0]) };
    assert_eq!((end, id.as_str()), (&local("alice"), "db_sharing-alice--bob"));
    assert_eq!(body["data"], json!({"permissions": ["read"]}));
    let ShareStep::PutReplication { id, body } = &plan.steps[1] else { panic!("{:?}", plan.steps[1]) };
    assert_eq!(id, "couchshare_inv_alice-bob_fwd");
    assert_eq!(body["selector"], json!({"$or": [{"type": "item"}, {"_id": "db_sharing-alice--bob"}]}));
    assert!(body.get("_rev").is_none());
    let report = plan.report.expect("report");
    assert_eq!(report.state, "unknown");
    assert_eq!(report.sharing_document_id.as_deref(), Some("db_sharing-alice--bob"));
    assert_eq!(
        plan.outcome,
        ShareOutcome::Pending {
            reason: "ReplicationPending",
            message: format!("replication is unknown: {}", super::NOT_TAKEN_UP)
        }
    );
}

#[test]
fn a_second_pass_over_what_the_first_wrote_writes_nothing_and_is_ready_once_running() {
    let first = plan_share(&intent(), &ObservedShare::default()).expect("plan");
    let (docs, sharing) = stored_after(&first);
    let mut observed = ObservedShare { replication_docs: docs, ..Default::default() };
    observed.sharing_docs.insert(("alice".into(), "db_sharing-alice--bob".into()), sharing);
    observed.statuses = vec![running("couchshare_inv_alice-bob_fwd", ReplicationState::Running)];
    let plan = plan_share(&intent(), &observed).expect("plan");
    assert_eq!(plan.steps, vec![], "nothing to write");
    assert_eq!(plan.outcome, ShareOutcome::Replicating);
    let report = plan.report.expect("report");
    assert_eq!((report.state.as_str(), report.changes_pending), ("running", Some(2)));
}

#[test]
fn two_way_writes_both_directions_and_waits_for_the_worse_one() {
    let mut i = intent();
    i.mode = ShareMode::TwoWay;
    let plan = plan_share(&i, &ObservedShare::default()).expect("plan");
    let ids: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            ShareStep::PutReplication { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["couchshare_inv_alice-bob_fwd", "couchshare_inv_alice-bob_back"]);
    let (docs, _) = stored_after(&plan);
    let observed = ObservedShare {
        replication_docs: docs,
        statuses: vec![
            running("couchshare_inv_alice-bob_fwd", ReplicationState::Running),
            running("couchshare_inv_alice-bob_back", ReplicationState::Crashing),
        ],
        ..Default::default()
    };
    let plan = plan_share(&i, &observed).expect("plan");
    assert!(matches!(plan.outcome, ShareOutcome::Pending { reason: "ReplicationFailing", .. }), "{:?}", plan.outcome);
}

#[test]
fn a_changed_spec_rewrites_in_place_and_an_unwanted_direction_is_deleted() {
    let mut i = intent();
    i.mode = ShareMode::TwoWay;
    let (mut docs, _) = stored_after(&plan_share(&i, &ObservedShare::default()).expect("plan"));
    // The forward document was written from another selector.
    docs[0][SPEC_HASH_FIELD] = json!("old");
    let one_way = intent();
    let plan = plan_share(&one_way, &ObservedShare { replication_docs: docs, ..Default::default() }).expect("plan");
    let writes: Vec<(&str, Option<&Value>)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            ShareStep::PutReplication { id, body } => Some((id.as_str(), body.get("_rev"))),
            _ => None,
        })
        .collect();
    assert_eq!(writes, [("couchshare_inv_alice-bob_fwd", Some(&json!("1-a")))], "rewritten with its rev");
    assert!(
        plan.steps
            .contains(&ShareStep::DeleteReplication { id: "couchshare_inv_alice-bob_back".into(), rev: "1-a".into() })
    );
}

#[test]
fn a_document_someone_else_owns_refuses_the_pass_before_any_write() {
    let mut i = intent();
    i.mode = ShareMode::TwoWay;
    let mut theirs = replication_doc(&wanted(&i).into_iter().nth(1).expect("backward").spec, EndpointStyle::AuthObject);
    theirs["_id"] = json!("couchshare_inv_alice-bob_back");
    theirs["_rev"] = json!("3-x");
    theirs[SHARE_FIELD]["uid"] = json!("someone-else");
    let refused = plan_share(&i, &ObservedShare { replication_docs: vec![theirs], ..Default::default() });
    assert!(matches!(refused, Err(ShareRefusal::Refused(Refusal::Conflict { .. }))), "{refused:?}");
}

#[test]
fn missing_access_waits_and_writes_nothing() {
    let observed = ObservedShare { access_missing: vec!["bob".into()], ..Default::default() };
    let plan = plan_share(&intent(), &observed).expect("plan");
    assert_eq!(plan.steps, vec![]);
    assert_eq!(plan.report, None, "the status reported before is kept");
    assert_eq!(plan.outcome, ShareOutcome::Waiting("the replication user's access to bob".into()));
}

#[test]
fn bad_input_is_refused_with_what_is_wrong() {
    let mut i = intent();
    i.selector = Some(json!({"age": {"$older": 3}}));
    assert!(
        matches!(plan_share(&i, &ObservedShare::default()), Err(ShareRefusal::InvalidSelector(m)) if m.contains("$older"))
    );
    let mut i = intent();
    i.sharing_document = Some(("x".into(), Some(json!({"_id": "no"}))));
    assert!(matches!(plan_share(&i, &ObservedShare::default()), Err(ShareRefusal::InvalidSharingDocument(_))));
}

#[test]
fn a_fan_in_replicates_each_ready_user_writes_no_sharing_document_and_waits_for_the_rest() {
    let mut i = intent();
    i.sharing_document = None;
    i.sources = vec![(Some("ana".into()), local("userdb-616e61")), (Some("ben".into()), local("userdb-62656e"))];
    i.waiting = vec!["cleo".into()];
    i.budget = Some(1);
    let plan = plan_share(&i, &ObservedShare { replicator_exists: true, ..Default::default() }).expect("plan");
    assert_eq!(plan.steps.len(), 2);
    assert!(plan.steps.iter().all(|s| matches!(s, ShareStep::PutReplication { .. })));
    assert_eq!(
        wanted_ids(&i),
        ["couchshare_inv_alice-bob_fwd_616e61", "couchshare_inv_alice-bob_fwd_62656e"],
        "one per user, keyed by hex(name)"
    );
    assert_eq!(plan.over_budget, Some((2, 1)));
    assert!(matches!(&plan.outcome, ShareOutcome::Waiting(w) if w.contains("cleo")), "{:?}", plan.outcome);
}

#[test]
fn a_per_tenant_replicator_is_created_first_and_one_shots_are_ready_when_completed() {
    let mut i = intent();
    i.replicator = "team/_replicator".into();
    i.continuous = false;
    let plan = plan_share(&i, &ObservedShare::default()).expect("plan");
    assert_eq!(plan.steps[0], ShareStep::CreateReplicator("team/_replicator".into()));
    let (docs, sharing) = stored_after(&plan);
    let mut observed = ObservedShare { replicator_exists: true, replication_docs: docs, ..Default::default() };
    observed.sharing_docs.insert(("alice".into(), "db_sharing-alice--bob".into()), sharing);
    observed.statuses = vec![running("couchshare_inv_alice-bob_fwd", ReplicationState::Completed)];
    let plan = plan_share(&i, &observed).expect("plan");
    assert_eq!((plan.steps.len(), &plan.outcome), (0, &ShareOutcome::Replicating));
}

#[test]
fn an_empty_fan_in_is_idle_and_ready() {
    let mut i = intent();
    i.sharing_document = None;
    i.sources = vec![];
    let plan = plan_share(&i, &ObservedShare::default()).expect("plan");
    assert_eq!(plan.report.map(|r| r.state), Some("idle".into()));
    assert_eq!(plan.outcome, ShareOutcome::Replicating);
}
