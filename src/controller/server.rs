//! The CouchServer reconciler: connect → detect → system databases → configuration on every
//! node → replication budget → status.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::Instrument;

use super::context::{Context, now, object_key};
use super::error::Error;
use super::servers::connect;
use super::status::{NewCondition, apply_status, condition_state, set_condition};
use crate::api::{CouchServer, MembershipStatus, NodeConfigFailure, ReplicationBudget, condition};
use crate::couch::{Capabilities, CouchClient, CouchError, ServerInfo};
use crate::plan::cluster::{ClusterPlan, NodeSettings, ObservedCluster, plan_cluster};
use crate::plan::config::{ConfigKey, ConfigLayout, config_changes, desired_config, display_key, replication_budget};
use sha2::{Digest, Sha256};

/// System databases CouchDB needs and a fresh single node or cluster lacks until set up.
pub const SYSTEM_DATABASES: [&str; 3] = ["_users", "_replicator", "_global_changes"];

/// What one successful pass observed.
struct Observed {
    info: ServerInfo,
    caps: Capabilities,
    nodes: Vec<String>,
    applied: Vec<String>,
    failures: Vec<NodeConfigFailure>,
    budget: ReplicationBudget,
    written: usize,
    /// The cluster's finishing and membership, on more than one node.
    cluster: Option<ClusterOutcome>,
}

/// What a pass found and did about the cluster.
struct ClusterOutcome {
    plan: ClusterPlan,
    /// Finished in this pass.
    finished_now: bool,
}

/// Reconciles one CouchServer.
pub async fn reconcile(server: Arc<CouchServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores_ready().await;
    let ns = server.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = "CouchServer", namespace = %ns, name = %server.name_any());
    reconcile_server(server, ctx).instrument(span).await
}

async fn reconcile_server(server: Arc<CouchServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = server.namespace().unwrap_or_default();
    let api: Api<CouchServer> = Api::namespaced(ctx.client.clone(), &ns);
    let result = observe_and_apply(&server, &ctx).await;

    let current = server.status.clone();
    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = server.metadata.generation;
    let was = condition_state(&status.conditions, condition::READY);
    let was_degraded = condition_state(&status.conditions, condition::DEGRADED);
    let mut degraded = false;
    let mut finished_now = None;
    let outcome = match result {
        Ok(observed) => {
            let health = observed.cluster.as_ref().map(|c| c.plan.health.clone()).unwrap_or_default();
            degraded = health.degraded();
            status.membership = observed.cluster.as_ref().map(|c| MembershipStatus {
                missing_nodes: c.plan.health.missing.clone(),
                silent_nodes: c.plan.health.silent.clone(),
                finished: c.plan.finish_waits.is_none(),
            });
            finished_now = observed.cluster.as_ref().filter(|c| c.finished_now).and_then(|c| c.plan.finish.clone());
            let degraded_condition = match (&observed.cluster, degraded) {
                (_, true) => NewCondition {
                    type_: condition::DEGRADED,
                    status: true,
                    reason: "NodesMissing".into(),
                    message: match observed.cluster.as_ref().and_then(|c| c.plan.finish_waits.as_ref()) {
                        Some(why) => format!("{}; finishing the cluster waits for them ({why})", health.message()),
                        None => health.message(),
                    },
                },
                (Some(_), false) => NewCondition {
                    type_: condition::DEGRADED,
                    status: false,
                    reason: "AllNodesConnected".into(),
                    message: health.message(),
                },
                (None, false) => NewCondition {
                    type_: condition::DEGRADED,
                    status: false,
                    reason: "SingleNode".into(),
                    message: "a single node".into(),
                },
            };
            set_condition(&mut status.conditions, degraded_condition, server.metadata.generation, now());
            status.vendor = observed.info.vendor.clone();
            status.version = Some(observed.info.version.clone());
            status.features = observed.info.features.clone();
            status.unsupported = unsupported(&observed.caps);
            status.nodes = observed.nodes.clone();
            status.applied_config = observed.applied.clone();
            status.config_failures = observed.failures.clone();
            status.replication_budget = Some(observed.budget.clone());
            if observed.failures.is_empty() {
                let message = format!(
                    "connected to {} {} ({} node{})",
                    observed.info.vendor.as_deref().unwrap_or("CouchDB-compatible server"),
                    observed.info.version,
                    observed.nodes.len(),
                    if observed.nodes.len() == 1 { "" } else { "s" }
                );
                set_condition(
                    &mut status.conditions,
                    NewCondition::ready("Connected", message),
                    server.metadata.generation,
                    now(),
                );
                if observed.written > 0 {
                    ctx.event(
                        server.as_ref(),
                        false,
                        "ConfigApplied",
                        format!("{} configuration value(s) written", observed.written),
                    )
                    .await;
                }
                Ok(())
            } else {
                let summary: Vec<String> =
                    observed.failures.iter().map(|f| format!("{} on {}: {}", f.key, f.node, f.message)).collect();
                let err = Error::ConfigFailed(summary.join("; "));
                set_condition(&mut status.conditions, NewCondition::not_ready(&err), server.metadata.generation, now());
                Err(err)
            }
        }
        Err(err) => {
            set_condition(&mut status.conditions, NewCondition::not_ready(&err), server.metadata.generation, now());
            Err(err)
        }
    };
    let reachable = !matches!(outcome, Err(Error::Unreachable { .. } | Error::Unauthorized(_)));
    let budget = status.replication_budget.as_ref().map(|b| (b.total, b.used));
    ctx.metrics.server(&ns, &server.name_any(), reachable, budget);
    if let Some(m) = &status.membership {
        let missing = m.missing_nodes.len() + m.silent_nodes.len();
        ctx.metrics.server_nodes_missing(&ns, &server.name_any(), missing);
    }
    if let Some(why) = finished_now {
        let note = format!("cluster finished ({why}): system databases, one admin hash, uuid and secret on every node");
        ctx.event(server.as_ref(), false, "ClusterFinished", note).await;
    }
    let is_degraded = condition_state(&status.conditions, condition::DEGRADED);
    if was_degraded != is_degraded
        && let Some((s, reason)) = &is_degraded
        && (s == "True" || was_degraded.as_ref().is_some_and(|(w, _)| w == "True"))
    {
        let note = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::DEGRADED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(server.as_ref(), s == "True", reason, note).await;
    }
    let is = condition_state(&status.conditions, condition::READY);
    if was != is {
        match &outcome {
            Ok(()) => {
                ctx.event(server.as_ref(), false, "Connected", "CouchDB is reachable and configured".into()).await
            }
            Err(e) => ctx.event(server.as_ref(), true, e.reason(), e.to_string()).await,
        }
    }
    apply_status(&api, server.as_ref(), current.as_ref(), &status).await?;
    if let Ok(couch) = connect(&ctx, &server).await {
        super::drift::follow(&ctx, &server, couch.clone());
        super::audit::run(&ctx, &server, couch).await;
    }
    outcome?;
    ctx.backoff.reset(&object_key(server.as_ref()));
    // A cluster's membership is looked at every 30 s (nothing reports a node leaving), and a
    // degraded one every 10 s, so it turns healthy by itself soon after the node returns.
    let next = match (degraded, status.membership.is_some()) {
        (true, _) => std::time::Duration::from_secs(10).min(ctx.resync()),
        (false, true) => std::time::Duration::from_secs(30).min(ctx.resync()),
        (false, false) => ctx.resync(),
    };
    Ok(Action::requeue(next))
}

async fn observe_and_apply(server: &CouchServer, ctx: &Context) -> Result<Observed, Error> {
    let couch = connect(ctx, server).await?;
    let url = server.spec.url.as_str();
    let info = couch.server_info().await.map_err(|e| Error::couch("reading GET /", url, e))?;
    let caps = info.capabilities();
    let membership = couch.membership().await.map_err(|e| Error::couch("reading _membership", url, e))?;
    // A cluster formed by a seedlist alone has no system databases and a different admin hash,
    // uuid and auth secret on every node: finish it, the way `/_cluster_setup` does.
    let missing = missing_system_databases(&couch, url).await?;
    let cluster = if membership.cluster_nodes.len() > 1 {
        let observed = observe_cluster(&couch, &membership, missing.clone(), url).await?;
        let plan = plan_cluster(&observed);
        if let Some(why) = &plan.finish {
            couch.finish_cluster().await.map_err(|e| Error::couch("finishing the cluster", url, e))?;
            tracing::info!(why = %why, "finished the cluster");
        }
        Some(ClusterOutcome { finished_now: plan.finish.is_some(), plan })
    } else {
        None
    };
    let mut nodes = membership.cluster_nodes;
    if nodes.is_empty() {
        nodes = membership.all_nodes;
    }
    // What finishing a cluster did not create (a single node, or a cluster waiting for a node).
    if !cluster.as_ref().is_some_and(|c| c.finished_now) {
        create_system_databases(&couch, &missing, url).await?;
    }

    let layout = if caps.node_config { ConfigLayout::Clustered } else { ConfigLayout::Legacy };
    let desired = server.spec.config.as_ref().map(|c| desired_config(c, layout)).unwrap_or_default();
    let mut failures = Vec::new();
    let mut written = 0;
    // Without /_node/{node}/_config there is one configuration for the whole server.
    let config_nodes: Vec<String> =
        if caps.node_config { nodes.clone() } else { nodes.iter().take(1).cloned().collect() };
    for node in &config_nodes {
        match apply_node_config(&couch, node, &desired).await {
            Ok((n, node_failures)) => {
                written += n;
                failures.extend(node_failures);
            }
            Err(e) if matches!(e, CouchError::Transport { .. }) => return Err(Error::couch("configuring", url, e)),
            Err(e) => failures.extend(desired.keys().map(|k| NodeConfigFailure {
                node: node.clone(),
                key: display_key(k),
                message: e.to_string(),
            })),
        }
    }
    let max_jobs = match config_nodes.first() {
        Some(node) => couch.config_get(node, "replicator", "max_jobs").await.ok().flatten(),
        None => None,
    };
    let (per_node, total) = replication_budget(max_jobs.as_deref(), nodes.len());
    let budget = ReplicationBudget {
        max_jobs_per_node: per_node,
        nodes: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
        total,
        used: replications_on(ctx, server),
    };
    let failed: std::collections::BTreeSet<&str> = failures.iter().map(|f| f.key.as_str()).collect();
    let applied = desired.keys().map(display_key).filter(|k| !failed.contains(k.as_str())).collect();
    Ok(Observed { info, caps, nodes, applied, failures, budget, written, cluster })
}

/// Reads what finishing and membership health depend on: the system databases, and on every
/// connected node the admin's password hash, `[couchdb] uuid` and `[chttpd_auth] secret` — kept
/// only as fingerprints, never logged (the secret signs session cookies).
async fn observe_cluster(
    couch: &CouchClient,
    membership: &crate::couch::Membership,
    missing_system_databases: Vec<String>,
    url: &str,
) -> Result<ObservedCluster, Error> {
    let fingerprint = |v: Option<String>| v.map(|v| hex::encode(Sha256::digest(v.as_bytes())));
    let admin = couch.username().map(str::to_owned);
    let mut settings = BTreeMap::new();
    for node in &membership.all_nodes {
        let read = async {
            let admin_hash = match &admin {
                Some(name) => couch.config_get(node, "admins", name).await?,
                None => None,
            };
            let uuid = couch.config_get(node, "couchdb", "uuid").await?;
            let secret = couch.config_get(node, "chttpd_auth", "secret").await?;
            Ok::<_, CouchError>(NodeSettings {
                admin_hash: fingerprint(admin_hash),
                uuid: fingerprint(uuid),
                secret: fingerprint(secret),
            })
        };
        match read.await {
            Ok(s) => {
                settings.insert(node.clone(), s);
            }
            Err(e @ CouchError::Transport { .. }) => return Err(Error::couch("reading node configuration", url, e)),
            // A connected node that cannot answer through its peer: silent, which health reports.
            Err(e) => tracing::debug!(node, error = %e, "node did not answer"),
        }
    }
    Ok(ObservedCluster {
        cluster_nodes: membership.cluster_nodes.clone(),
        all_nodes: membership.all_nodes.clone(),
        missing_system_databases,
        settings,
    })
}

/// Replications couchshare runs on this server: the replications of every share whose status
/// names it.
fn replications_on(ctx: &Context, server: &CouchServer) -> i32 {
    let key = format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any());
    let n: usize = ctx
        .stores
        .shares
        .state()
        .iter()
        .filter_map(|s| s.status.as_ref())
        .filter(|s| s.server.as_deref() == Some(key.as_str()) && !s.revoked)
        .map(|s| s.replications.len())
        .sum();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The system databases that do not exist.
async fn missing_system_databases(couch: &CouchClient, url: &str) -> Result<Vec<String>, Error> {
    let mut missing = Vec::new();
    for db in SYSTEM_DATABASES {
        if !couch.database_exists(db).await.map_err(|e| Error::couch("checking system databases", url, e))? {
            missing.push(db.to_string());
        }
    }
    Ok(missing)
}

async fn create_system_databases(couch: &CouchClient, missing: &[String], url: &str) -> Result<(), Error> {
    for db in missing {
        match couch.create_database(db, &Default::default()).await {
            Ok(()) | Err(CouchError::PreconditionFailed { .. }) => {
                tracing::info!(database = %db, "created system database");
            }
            Err(e) => return Err(Error::couch("creating system databases", url, e)),
        }
    }
    Ok(())
}

/// Writes the values that differ on one node; returns how many were written and what failed.
async fn apply_node_config(
    couch: &CouchClient,
    node: &str,
    desired: &BTreeMap<ConfigKey, String>,
) -> Result<(usize, Vec<NodeConfigFailure>), CouchError> {
    let mut observed = BTreeMap::new();
    for (section, key) in desired.keys() {
        let value = couch.config_get(node, section, key).await?;
        observed.insert((section.clone(), key.clone()), value);
    }
    let mut written = 0;
    let mut failures = Vec::new();
    for ((section, key), value) in config_changes(desired, &observed) {
        match couch.config_set(node, &section, &key, &value).await {
            Ok(_) => {
                written += 1;
                tracing::info!(node, section, key, "configuration value written");
            }
            Err(e @ CouchError::Transport { .. }) => return Err(e),
            Err(e) => failures.push(NodeConfigFailure {
                node: node.into(),
                key: display_key(&(section, key)),
                message: e.to_string(),
            }),
        }
    }
    Ok((written, failures))
}

/// The capabilities this server lacks, named as in the status.
fn unsupported(caps: &Capabilities) -> Vec<String> {
    let flags = [
        ("scheduler", caps.scheduler),
        ("nodeConfig", caps.node_config),
        ("purge", caps.purge),
        ("selectorReplication", caps.selector_replication),
        ("authObjectInEndpoints", caps.auth_object_in_endpoints),
        ("partitioned", caps.partitioned),
        ("perUserDatabases", caps.peruser),
        ("dbUpdates", caps.db_updates),
    ];
    flags.iter().filter(|(_, has)| !has).map(|(name, _)| name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_capabilities_lists_them_all() {
        let all = unsupported(&Capabilities::default());
        assert!(all.contains(&"scheduler".to_string()) && all.contains(&"purge".to_string()));
        let none = unsupported(&Capabilities {
            scheduler: true,
            node_config: true,
            purge: true,
            selector_replication: true,
            auth_object_in_endpoints: true,
            partitioned: true,
            peruser: true,
            db_updates: true,
            up: true,
            changes_selector: true,
        });
        assert!(none.is_empty());
    }
}
