//! What the CouchServer reconciler does with a server, decided from what it read: finish a
//! cluster formed by a seedlist alone, create missing system databases, write the declared
//! configuration values a node lacks, and the status — nodes, membership health, the
//! replication budget, what the server cannot do. Pure: the controller reads, this decides.

use std::collections::BTreeMap;

use super::cluster::{ClusterPlan, MembershipView, NodeSettings, ObservedCluster, plan_cluster};
use super::config::{ConfigKey, ConfigLayout, config_changes, desired_config, display_key, replication_budget};
use crate::api::{MembershipStatus, NodeConfigFailure, ReplicationBudget, ServerConfig};
use crate::couch::{Capabilities, Membership, ServerInfo};

/// System databases CouchDB needs and a fresh single node or cluster lacks until set up.
pub const SYSTEM_DATABASES: [&str; 3] = ["_users", "_replicator", "_global_changes"];

/// What the spec asks of the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerIntent<'a> {
    /// `spec.config`.
    pub config: Option<&'a ServerConfig>,
}

/// What to read before planning: the declared keys, on the nodes that hold a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReads {
    /// Every node with `/_node/{node}/_config`; the first only without it (one configuration
    /// for the whole server).
    pub nodes: Vec<String>,
    /// The declared values.
    pub desired: BTreeMap<ConfigKey, String>,
}

/// The nodes a server reports: `cluster_nodes`, or `all_nodes` when that is empty.
pub fn server_nodes(membership: &Membership) -> Vec<String> {
    if membership.cluster_nodes.is_empty() { membership.all_nodes.clone() } else { membership.cluster_nodes.clone() }
}

/// Which configuration the controller reads, and where.
pub fn config_reads(intent: &ServerIntent, caps: &Capabilities, membership: &Membership) -> ConfigReads {
    let layout = if caps.node_config { ConfigLayout::Clustered } else { ConfigLayout::Legacy };
    let desired = intent.config.map(|c| desired_config(c, layout)).unwrap_or_default();
    let nodes = server_nodes(membership);
    let nodes = if caps.node_config { nodes } else { nodes.into_iter().take(1).collect() };
    ConfigReads { nodes, desired }
}

/// What the controller read from the server.
#[derive(Debug, Clone)]
pub struct ObservedServer {
    /// `GET /`.
    pub info: ServerInfo,
    /// `/_membership`.
    pub membership: Membership,
    /// System databases that do not exist.
    pub missing_system_databases: Vec<String>,
    /// Fingerprints of each answering node's cluster settings; read only on a cluster of more
    /// than one node.
    pub cluster_settings: BTreeMap<String, NodeSettings>,
    /// The declared keys' values on each node of [`ConfigReads::nodes`], or why the node could
    /// not be read.
    pub node_config: BTreeMap<String, Result<BTreeMap<ConfigKey, Option<String>>, String>>,
    /// `replicator/max_jobs` on the first configuration node, when it could be read.
    pub max_jobs: Option<String>,
    /// Replications couchshare's shares run on this server.
    pub replications_used: i32,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// `POST /_cluster_setup {"action": "finish_cluster"}`, and why.
    FinishCluster(String),
    /// Create these system databases ("already exists" is success).
    CreateSystemDatabases(Vec<String>),
    /// Write one configuration value on one node.
    SetConfig {
        /// The node.
        node: String,
        /// `(section, key)`.
        key: ConfigKey,
        /// The value.
        value: String,
    },
}

/// The `Degraded` condition, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// Some node is missing or silent.
    pub status: bool,
    /// `NodesMissing`, `AllNodesConnected` or `SingleNode`.
    pub reason: &'static str,
    /// Message for people.
    pub message: String,
}

/// The status once the steps are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedServerStatus {
    /// Vendor, version and features from `GET /`.
    pub info: ServerInfo,
    /// What the server cannot do, named as in the status.
    pub unsupported: Vec<String>,
    /// The server's nodes.
    pub nodes: Vec<String>,
    /// Every declared key (`section/key`); the controller drops those that failed.
    pub declared: Vec<String>,
    /// Nodes whose configuration could not be read: every declared key failed there.
    pub failures: Vec<NodeConfigFailure>,
    /// `max_jobs` (as the first configuration node has it after the steps) × nodes.
    pub budget: ReplicationBudget,
    /// Membership health, on a cluster.
    pub membership: Option<MembershipStatus>,
    /// The `Degraded` condition.
    pub degraded: Degraded,
    /// Why the cluster is finished in this pass (for the Event).
    pub finished_now: Option<String>,
    /// On a cluster, the membership this pass planned from: the membership watch wakes the
    /// server when its reads differ (`None` on a single node: nothing to watch).
    pub membership_view: Option<MembershipView>,
}

impl PlannedServerStatus {
    /// The `Ready=True` message.
    pub fn connected_message(&self) -> String {
        format!(
            "connected to {} {} ({} node{})",
            self.info.vendor.as_deref().unwrap_or("CouchDB-compatible server"),
            self.info.version,
            self.nodes.len(),
            if self.nodes.len() == 1 { "" } else { "s" }
        )
    }
}

/// The steps and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPlan {
    /// Steps in order.
    pub steps: Vec<ServerStep>,
    /// The status they lead to.
    pub status: PlannedServerStatus,
}

/// Decides what to do with a server.
pub fn plan_server(intent: &ServerIntent, observed: &ObservedServer) -> ServerPlan {
    let caps = observed.info.capabilities();
    let reads = config_reads(intent, &caps, &observed.membership);
    let nodes = server_nodes(&observed.membership);
    let observed_cluster = (observed.membership.cluster_nodes.len() > 1).then(|| ObservedCluster {
        cluster_nodes: observed.membership.cluster_nodes.clone(),
        all_nodes: observed.membership.all_nodes.clone(),
        missing_system_databases: observed.missing_system_databases.clone(),
        settings: observed.cluster_settings.clone(),
    });
    let membership_view = observed_cluster.as_ref().map(MembershipView::of);
    let cluster = observed_cluster.as_ref().map(plan_cluster);
    let finished_now = cluster.as_ref().and_then(|c| c.finish.clone());
    let mut steps = Vec::new();
    // Finishing a cluster creates the system databases, but on CouchDB 3.5 leaves
    // `_global_changes` half made (`_db_updates` answered 404 for minutes, until a `PUT` of it
    // succeeded): every one is created after it, "already exists" being success. Otherwise (a
    // single node, or a cluster waiting for a node) the missing ones are created one by one.
    match &finished_now {
        Some(why) => {
            steps.push(ServerStep::FinishCluster(why.clone()));
            let all = SYSTEM_DATABASES.iter().map(|d| d.to_string()).collect();
            steps.push(ServerStep::CreateSystemDatabases(all));
        }
        None if !observed.missing_system_databases.is_empty() => {
            steps.push(ServerStep::CreateSystemDatabases(observed.missing_system_databases.clone()))
        }
        None => {}
    }
    let mut failures = Vec::new();
    for node in &reads.nodes {
        match observed.node_config.get(node) {
            Some(Ok(values)) => steps.extend(
                config_changes(&reads.desired, values).into_iter().map(|(key, value)| ServerStep::SetConfig {
                    node: node.clone(),
                    key,
                    value,
                }),
            ),
            Some(Err(message)) => failures.extend(reads.desired.keys().map(|k| NodeConfigFailure {
                node: node.clone(),
                key: display_key(k),
                message: message.clone(),
            })),
            None => {}
        }
    }
    let max_jobs_key: ConfigKey = ("replicator".into(), "max_jobs".into());
    let first = reads.nodes.first();
    let max_jobs = steps
        .iter()
        .find_map(|s| match s {
            ServerStep::SetConfig { node, key, value } if Some(node) == first && *key == max_jobs_key => {
                Some(value.clone())
            }
            _ => None,
        })
        .or_else(|| observed.max_jobs.clone());
    let (per_node, total) = replication_budget(max_jobs.as_deref(), nodes.len());
    let budget = ReplicationBudget {
        max_jobs_per_node: per_node,
        nodes: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
        total,
        used: observed.replications_used,
    };
    let degraded = degraded(cluster.as_ref());
    let status = PlannedServerStatus {
        unsupported: unsupported(&caps),
        info: observed.info.clone(),
        nodes,
        declared: reads.desired.keys().map(display_key).collect(),
        failures,
        budget,
        membership: cluster.as_ref().map(|c| MembershipStatus {
            missing_nodes: c.health.missing.clone(),
            silent_nodes: c.health.silent.clone(),
            finished: c.finish_waits.is_none(),
        }),
        degraded,
        finished_now,
        membership_view,
    };
    ServerPlan { steps, status }
}

fn degraded(cluster: Option<&ClusterPlan>) -> Degraded {
    let health = cluster.map(|c| c.health.clone()).unwrap_or_default();
    match cluster {
        _ if health.degraded() => Degraded {
            status: true,
            reason: "NodesMissing",
            message: match cluster.and_then(|c| c.finish_waits.as_ref()) {
                Some(why) => format!("{}; finishing the cluster waits for them ({why})", health.message()),
                None => health.message(),
            },
        },
        Some(_) => Degraded { status: false, reason: "AllNodesConnected", message: health.message() },
        None => Degraded { status: false, reason: "SingleNode", message: "a single node".into() },
    }
}

/// The declared keys that did not fail, for `status.appliedConfig`.
pub fn applied_config(declared: &[String], failures: &[NodeConfigFailure]) -> Vec<String> {
    let failed: std::collections::BTreeSet<&str> = failures.iter().map(|f| f.key.as_str()).collect();
    declared.iter().filter(|k| !failed.contains(k.as_str())).cloned().collect()
}

/// The capabilities this server lacks, named as in the status.
pub fn unsupported(caps: &Capabilities) -> Vec<String> {
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

/// The replications a share counts for in its server's budget (none once revoked). An on-change
/// share runs up to maxConcurrent one-shots, however many sources it has.
pub fn replications_of(status: &crate::api::CouchShareStatus) -> usize {
    if status.revoked {
        return 0;
    }
    status.replications.len() + status.on_change.as_ref().map_or(0, |o| o.max_concurrent as usize)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
