//! The dry run of a CouchShare: its endpoints resolved from the manifests (as `kubectl apply`
//! would store them), then [`plan_share`] — the reconciler's own decision — against what the
//! replicator database and the sources hold. Credentials live in Secrets the dry run does not
//! read: an existing replication document is reported unchanged when it differs in them only.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use super::{Manifests, PreviewError, name_of};
use crate::api::{CouchShare, ObjectRef, ShareCredentials, UserDatabaseRef};
use crate::couch::{Capabilities, CouchClient};
use crate::plan::ownership::Owner;
use crate::plan::share::{
    End, EndpointAuth, EndpointStyle, ObservedShare, SHARE_FIELD, SPEC_HASH_FIELD, ShareIntent, ShareStep, plan_share,
    replication_doc_prefix, replication_username, replicator_db, wanted_ids, wanted_sharing_docs,
};
use crate::plan::user::{DEFAULT_USERDB_PREFIX, per_user_database_name};

/// A password the dry run does not know (it is in a Secret).
const UNKNOWN: &str = "<from its Secret>";

fn local_database(m: &Manifests, ns: &str, r: &ObjectRef) -> Result<End, String> {
    let ns = r.namespace.as_deref().unwrap_or(ns);
    m.databases
        .iter()
        .find(|d| name_of(*d) == r.name && d.metadata.namespace.as_deref() == Some(ns))
        .map(|d| End::Local { database: d.couch_name().to_string() })
        .ok_or_else(|| format!("CouchDatabase {ns}/{} is not in the manifests", r.name))
}

fn user_database(m: &Manifests, ns: &str, r: &UserDatabaseRef) -> Result<End, String> {
    let ns = r.namespace.as_deref().unwrap_or(ns);
    m.users
        .iter()
        .find(|u| name_of(*u) == r.user && u.metadata.namespace.as_deref() == Some(ns))
        .map(|u| End::Local { database: per_user_database_name(DEFAULT_USERDB_PREFIX, u.couch_username()) })
        .ok_or_else(|| format!("CouchUser {ns}/{} is not in the manifests", r.user))
}

fn remote(r: &crate::api::RemoteDatabase) -> End {
    End::Remote {
        base_url: r.url.trim_end_matches('/').to_string(),
        database: r.database.clone(),
        auth: EndpointAuth { username: UNKNOWN.into(), password: UNKNOWN.into() },
    }
}

/// The sources (with each fan-in user's name) and the target.
type Endpoints = (Vec<(Option<String>, End)>, End);

/// Sources and target as the operator resolves them, from the manifests.
fn endpoints(m: &Manifests, share: &CouchShare) -> Result<Endpoints, String> {
    let ns = share.metadata.namespace.clone().unwrap_or_default();
    let (source, target) = (&share.spec.source, &share.spec.target);
    let sources = if let Some(r) = &source.database {
        vec![(None, local_database(m, &ns, r)?)]
    } else if let Some(r) = &source.user_database {
        vec![(None, user_database(m, &ns, r)?)]
    } else if let Some(r) = &source.remote {
        vec![(None, remote(r))]
    } else if let Some(fan_in) = &source.user_databases {
        let selector =
            Selector::try_from(fan_in.selector.clone()).map_err(|e| format!("source.userDatabases.selector: {e}"))?;
        let mut users: Vec<(Option<String>, End)> = m
            .users
            .iter()
            .filter(|u| u.metadata.namespace.as_deref() == Some(ns.as_str()) && u.spec.per_user_database)
            .filter(|u| selector.matches(u.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .map(|u| {
                let db = per_user_database_name(DEFAULT_USERDB_PREFIX, u.couch_username());
                (Some(u.couch_username().to_string()), End::Local { database: db })
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users
    } else {
        return Err(
            "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote".into()
        );
    };
    let target = if let Some(r) = &target.database {
        local_database(m, &ns, r)?
    } else if let Some(r) = &target.user_database {
        user_database(m, &ns, r)?
    } else if let Some(r) = &target.remote {
        remote(r)
    } else {
        return Err("target needs exactly one of database, userDatabase or remote".into());
    };
    Ok((sources, target))
}

/// A replication document with what the dry run cannot know taken out: credentials, the
/// fingerprint over them, and what CouchDB adds itself (`_` fields; `owner`, the writer the
/// replicator records).
fn without_credentials(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(map) = doc.as_object_mut() {
        map.retain(|k, _| !k.starts_with('_') && k != SPEC_HASH_FIELD && k != "owner");
        for end in ["source", "target"] {
            if let Some(e) = map.get_mut(end).and_then(Value::as_object_mut) {
                e.remove("auth");
                e.remove("headers");
            }
        }
        if let Some(owner) = map.get_mut(SHARE_FIELD).and_then(Value::as_object_mut) {
            owner.remove("uid");
        }
    }
    doc
}

/// Appends what the operator would do for `share`.
pub(super) async fn preview_share(
    couch: &CouchClient,
    caps: &Capabilities,
    m: &Manifests,
    share: &CouchShare,
    lines: &mut Vec<String>,
) -> Result<(), PreviewError> {
    let name = name_of(share);
    let ns = share.metadata.namespace.clone().unwrap_or_default();
    // On change: no replication documents to show; what it would follow, and how many now.
    if let Some(k) = share.spec.on_change_concurrency() {
        let what = match &share.spec.source.per_user_databases {
            Some(p) => {
                let prefix = p.prefix.clone().unwrap_or_else(|| DEFAULT_USERDB_PREFIX.to_string());
                let n = couch.databases_with_prefix(&prefix).await?.len();
                format!("every database named {prefix}… ({n} now)")
            }
            None => "the selected CouchUsers' per-user databases".to_string(),
        };
        lines.push(format!(
            "= CouchShare {name}: replicates {what} on each change, at most {k} at once (no replication documents)"
        ));
        return Ok(());
    }
    let (sources, target) = match endpoints(m, share) {
        Ok(e) => e,
        Err(why) => {
            lines.push(format!("! CouchShare {name}: {why}"));
            return Ok(());
        }
    };
    let replicator = replicator_db(share);
    let replicator_exists = couch.database_exists(&replicator).await?;
    let prefix = replication_doc_prefix(&ns, &name);
    let replication_docs =
        if replicator_exists { couch.list_replication_docs_with_prefix(&replicator, &prefix).await? } else { vec![] };
    // Without the cluster there is no UID: documents recorded for a share of the same namespace
    // and name count as this one's.
    let uid = replication_docs
        .iter()
        .filter_map(|d| serde_json::from_value::<Owner>(d.get(SHARE_FIELD)?.clone()).ok())
        .find(|o| o.namespace == ns && o.name == name)
        .map(|o| o.uid)
        .unwrap_or_default();
    let server = m.servers.iter().find(|s| share.spec.server_ref.as_ref().is_none_or(|r| r.name == name_of(*s)));
    let url = server.map(|s| s.spec.replication_url.clone().unwrap_or_else(|| s.spec.url.clone())).unwrap_or_default();
    let scoped = share.spec.credentials == ShareCredentials::Scoped;
    let intent = ShareIntent {
        owner: Owner { kind: "CouchShare".into(), namespace: ns.clone(), name: name.clone(), uid },
        mode: share.spec.mode,
        continuous: share.spec.continuous,
        selector: share.spec.selector.clone(),
        sharing_document: share.spec.sharing_document.as_ref().map(|sd| (sd.id.clone(), sd.body.clone())),
        replicator: replicator.clone(),
        style: if caps.auth_object_in_endpoints { EndpointStyle::AuthObject } else { EndpointStyle::BasicHeader },
        local_base: url.trim_end_matches('/').to_string(),
        local_auth: EndpointAuth {
            username: if scoped { replication_username(&ns, &name) } else { UNKNOWN.into() },
            password: UNKNOWN.into(),
        },
        sources,
        target,
        waiting: vec![],
        budget: None,
    };
    let mut observed = ObservedShare { replicator_exists, replication_docs, ..Default::default() };
    for (end, id) in wanted_sharing_docs(&intent) {
        // A remote source's documents are not read: it is written as if missing.
        let doc = match &end {
            End::Local { database } => couch.get_document(database, &id).await?,
            End::Remote { .. } => None,
        };
        observed.sharing_docs.insert((end.database().to_string(), id), doc);
    }
    let plan = match plan_share(&intent, &observed) {
        Ok(plan) => plan,
        Err(refusal) => {
            lines.push(format!("! CouchShare {name}: {refusal}"));
            return Ok(());
        }
    };
    if scoped && couch.get_user(&intent.local_auth.username).await?.is_none() {
        lines.push(format!("+ CouchShare {name}: create scoped replication user {}", intent.local_auth.username));
    }
    for step in &plan.steps {
        lines.push(match step {
            ShareStep::CreateReplicator(db) => format!("+ CouchShare {name}: create replicator database {db}"),
            ShareStep::PutSharingDocument { end, id, body } if body.get("_rev").is_none() => {
                format!("+ CouchShare {name}: write sharing document {}/{id}", end.database())
            }
            ShareStep::PutSharingDocument { end, id, .. } => {
                format!("~ CouchShare {name}: rewrite sharing document {}/{id}", end.database())
            }
            ShareStep::PutReplication { id, body } if body.get("_rev").is_none() => {
                format!("+ CouchShare {name}: write replication document {replicator}/{id}")
            }
            ShareStep::PutReplication { id, body } => {
                let existing = observed.replication_docs.iter().find(|d| d.get("_id").and_then(Value::as_str) == Some(id));
                if existing.is_some_and(|e| without_credentials(e) == without_credentials(body)) {
                    format!("= CouchShare {name}: replication document {replicator}/{id} unchanged (credentials not compared)")
                } else {
                    format!("~ CouchShare {name}: rewrite replication document {replicator}/{id}")
                }
            }
            ShareStep::DeleteReplication { id, .. } => {
                format!("- CouchShare {name}: delete replication document {replicator}/{id}")
            }
        });
    }
    for (end, id) in wanted_sharing_docs(&intent) {
        if !plan.steps.iter().any(|s| matches!(s, ShareStep::PutSharingDocument { id: i, .. } if *i == id)) {
            lines.push(format!("= CouchShare {name}: sharing document {}/{id} unchanged", end.database()));
        }
    }
    for id in wanted_ids(&intent) {
        if !plan.steps.iter().any(|s| matches!(s, ShareStep::PutReplication { id: i, .. } if *i == id)) {
            lines.push(format!("= CouchShare {name}: replication document {replicator}/{id} unchanged"));
        }
    }
    Ok(())
}
