//! One pass of a CouchShare, decided without servers: from what the share wants (its resolved
//! endpoints and credentials) and what was read from CouchDB, the writes to make, in order, and
//! the status to report. The reconciler observes, calls [`plan_share`], executes the steps; the
//! dry run (`couchshare plan`) prints them.

use serde_json::Value;

use super::{
    Direction, End, Endpoint, ObservedShare, ReplicationAction, ReplicationSpec, ShareIntent, ShareOutcome, SharePlan,
    ShareRefusal, ShareReport, ShareStep, endpoint_json, endpoint_url_with_credentials, is_failing, plan_replication,
    replication_doc_id, replication_selector, replication_state, replications_ready, sharing_doc, sharing_doc_id,
    sharing_doc_matches, stale_replications, state_name, summary_state, validate_selector,
};
use crate::api::{ReplicationStatus, ShareMode};
use crate::couch;
use crate::plan::ownership::Owner;

/// What can be refused from the spec alone, before anything is resolved or written.
pub fn validate_share(
    selector: Option<&Value>,
    sharing_body: Option<Option<&Value>>,
    mode: ShareMode,
    owner: &Owner,
) -> Result<(), ShareRefusal> {
    if let Some(selector) = selector {
        validate_selector(selector).map_err(|e| ShareRefusal::InvalidSelector(e.to_string()))?;
    }
    if let Some(body) = sharing_body {
        sharing_doc(body, mode, "", "", owner).map_err(ShareRefusal::InvalidSharingDocument)?;
    }
    Ok(())
}

/// One replication the share wants: its spec and the databases it runs between.
struct Wanted {
    spec: ReplicationSpec,
    from: String,
    to: String,
}

fn endpoint(end: &End, intent: &ShareIntent) -> Endpoint {
    match end {
        End::Local { database } => Endpoint {
            base_url: intent.local_base.clone(),
            database: database.clone(),
            auth: Some(intent.local_auth.clone()),
        },
        End::Remote { base_url, database, auth } => {
            Endpoint { base_url: base_url.clone(), database: database.clone(), auth: Some(auth.clone()) }
        }
    }
}

/// The sharing document's id for a source, when the share has one (never for a fan-in source).
fn sharing_id(intent: &ShareIntent, user: Option<&str>, source: &End) -> Option<String> {
    match (&intent.sharing_document, user) {
        (Some((template, _)), None) => Some(sharing_doc_id(template, source.database(), intent.target.database())),
        _ => None,
    }
}

fn wanted(intent: &ShareIntent) -> Vec<Wanted> {
    let mut out = Vec::new();
    let mut directions = vec![Direction::Forward];
    if intent.mode == ShareMode::TwoWay {
        directions.push(Direction::Backward);
    }
    for (user, source) in &intent.sources {
        let selector =
            replication_selector(intent.selector.as_ref(), sharing_id(intent, user.as_deref(), source).as_deref());
        for direction in &directions {
            let (from, to) = match direction {
                Direction::Forward => (source, &intent.target),
                Direction::Backward => (&intent.target, source),
            };
            let spec = ReplicationSpec {
                id: replication_doc_id(&intent.owner.namespace, &intent.owner.name, *direction, user.as_deref()),
                source: endpoint(from, intent),
                target: endpoint(to, intent),
                continuous: intent.continuous,
                selector: selector.clone(),
                owner: intent.owner.clone(),
            };
            out.push(Wanted { spec, from: from.database().to_string(), to: to.database().to_string() });
        }
    }
    out
}

/// The ids of the replication documents the share wants (for reading their states).
pub fn wanted_ids(intent: &ShareIntent) -> Vec<String> {
    wanted(intent).into_iter().map(|w| w.spec.id).collect()
}

/// The (database, id) of each sharing document the share wants (for reading them).
pub fn wanted_sharing_docs(intent: &ShareIntent) -> Vec<(End, String)> {
    intent
        .sources
        .iter()
        .filter_map(|(user, source)| Some((source.clone(), sharing_id(intent, user.as_deref(), source)?)))
        .collect()
}

/// Decides one pass. Refuses before any write when the share cannot run as declared.
pub fn plan_share(intent: &ShareIntent, observed: &ObservedShare) -> Result<SharePlan, ShareRefusal> {
    let sharing_body = intent.sharing_document.as_ref().map(|(_, body)| body.as_ref());
    validate_share(intent.selector.as_ref(), sharing_body, intent.mode, &intent.owner)?;
    if let Some(database) = observed.access_missing.first() {
        return Ok(SharePlan {
            steps: vec![],
            report: None,
            outcome: ShareOutcome::Waiting(format!("the replication user's access to {database}")),
            over_budget: None,
        });
    }
    let wanted = wanted(intent);
    let mut steps = Vec::new();
    if intent.replicator != couch::REPLICATOR_DB && !observed.replicator_exists {
        steps.push(ShareStep::CreateReplicator(intent.replicator.clone()));
    }
    let mut sharing_document_id = None;
    for (end, id) in wanted_sharing_docs(intent) {
        let body =
            sharing_doc(sharing_body.flatten(), intent.mode, end.database(), intent.target.database(), &intent.owner)
                .map_err(ShareRefusal::InvalidSharingDocument)?;
        let existing = observed.sharing_docs.get(&(end.database().to_string(), id.clone())).cloned().flatten();
        if !existing.as_ref().is_some_and(|e| sharing_doc_matches(e, &body)) {
            let mut body = body;
            if let Some(rev) = existing.as_ref().and_then(|e| e.get("_rev")).cloned() {
                body["_rev"] = rev;
            }
            steps.push(ShareStep::PutSharingDocument { end: end.clone(), id: id.clone(), body });
        }
        sharing_document_id = Some(id);
    }
    // Every document is checked before any is written: one that is someone else's refuses the
    // whole pass.
    for w in &wanted {
        let existing =
            observed.replication_docs.iter().find(|d| d.get("_id").and_then(Value::as_str) == Some(&w.spec.id));
        match plan_replication(&w.spec, existing, intent.style)? {
            ReplicationAction::Create(body) => steps.push(ShareStep::PutReplication { id: w.spec.id.clone(), body }),
            ReplicationAction::Update { rev, mut body } => {
                body["_rev"] = Value::String(rev);
                steps.push(ShareStep::PutReplication { id: w.spec.id.clone(), body });
            }
            ReplicationAction::Keep => {}
        }
    }
    let ids: Vec<String> = wanted.iter().map(|w| w.spec.id.clone()).collect();
    for (id, rev) in stale_replications(&observed.replication_docs, &intent.owner, &ids) {
        steps.push(ShareStep::DeleteReplication { id, rev });
    }
    let report = report(&wanted, observed, sharing_document_id);
    let over_budget = intent
        .budget
        .filter(|total| i32::try_from(wanted.len()).unwrap_or(i32::MAX) > *total)
        .map(|total| (wanted.len(), total));
    let states: Vec<Option<&str>> = report.replications.iter().map(|r| r.state.as_deref()).collect();
    let outcome = if !intent.waiting.is_empty() {
        ShareOutcome::Waiting(format!(
            "the per-user database of CouchUser(s) {} (selected by the fan-in)",
            intent.waiting.join(", ")
        ))
    } else if wanted.is_empty() || replications_ready(&states, intent.continuous) {
        ShareOutcome::Replicating
    } else {
        let error = report.replications.iter().find_map(|r| r.error.clone());
        let message = match error {
            Some(e) => format!("replication is {}: {e}", report.state),
            None if report.state == "unknown" => format!("replication is unknown: {NOT_TAKEN_UP}"),
            None => format!("replication is {}", report.state),
        };
        let failing = is_failing(&report.state);
        ShareOutcome::Pending { reason: if failing { "ReplicationFailing" } else { "ReplicationPending" }, message }
    };
    Ok(SharePlan { steps, report: Some(report), outcome, over_budget })
}

fn report(wanted: &[Wanted], observed: &ObservedShare, sharing_document_id: Option<String>) -> ShareReport {
    let replications: Vec<ReplicationStatus> = wanted
        .iter()
        .map(|w| {
            let doc =
                observed.replication_docs.iter().find(|d| d.get("_id").and_then(Value::as_str) == Some(&w.spec.id));
            let s = replication_state(observed.statuses.iter().find(|s| s.doc_id == w.spec.id), doc);
            let s = s.as_ref();
            let count = |n: u64| i64::try_from(n).ok();
            ReplicationStatus {
                id: w.spec.id.clone(),
                source: w.from.clone(),
                target: w.to.clone(),
                state: s.and_then(|s| s.state.as_ref()).map(state_name),
                docs_read: s.and_then(|s| count(s.info.docs_read)),
                docs_written: s.and_then(|s| count(s.info.docs_written)),
                doc_write_failures: s.and_then(|s| count(s.info.doc_write_failures)),
                changes_pending: s.and_then(|s| s.info.changes_pending).and_then(count),
                last_updated: s.and_then(|s| s.last_updated.clone()),
                error: s.and_then(|s| s.info.error.clone()),
            }
        })
        .collect();
    let states: Vec<Option<&str>> = replications.iter().map(|r| r.state.as_deref()).collect();
    let state = if states.is_empty() { "idle".to_string() } else { summary_state(&states) };
    let changes_pending = replications.iter().filter_map(|r| r.changes_pending).reduce(|a, b| a + b);
    ShareReport { replications, state, changes_pending, sharing_document_id }
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;

/// The body of the one-shot `POST /_replicate` an on-change share runs for `source` (a database
/// on the managed server): source and target as in a replication document (credentials never
/// in a URL), the share's selector, and never creating the target.
///
/// `urls_only`: the server's `_replicate` takes endpoints as URLs alone (pouchdb-server), so the
/// credentials go inside them — in this request body only, which nothing stores.
pub fn on_change_body(intent: &ShareIntent, source: &str, urls_only: bool) -> Value {
    let source = endpoint(&End::Local { database: source.to_string() }, intent);
    let target = endpoint(&intent.target, intent);
    let json = |e: &Endpoint| {
        if urls_only { Value::String(endpoint_url_with_credentials(e)) } else { endpoint_json(e, intent.style) }
    };
    let mut body = serde_json::Map::new();
    body.insert("source".into(), json(&source));
    body.insert("target".into(), json(&target));
    if let Some(selector) = &intent.selector {
        body.insert("selector".into(), selector.clone());
    }
    body.insert("create_target".into(), Value::Bool(false));
    Value::Object(body)
}

/// Why a replication document the scheduler does not list yet is not running: CouchDB's
/// replicator has not taken it up. On a cluster it finds a `_replicator` database created after
/// it started (a cluster finished by the operator) only at its next scan of the shards, every
/// `replicator/interval` ÷ 2 (30 s by default).
pub const NOT_TAKEN_UP: &str = "CouchDB's replicator has not taken the document up yet (on a cluster whose _replicator was created after the nodes started, it finds it at its next scan of the shards, every replicator/interval ÷ 2: 30 s by default)";
