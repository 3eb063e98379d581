//! The CouchServer reconciler: connect → observe (`GET /`, membership, system databases, cluster
//! settings, the declared configuration on each node) → [`plan_server`] → execute the steps →
//! status through the reconcile tail. It also starts the server's `_db_updates` follower, its
//! `_security` audit and, on a cluster, its membership watch: it keeps no timer but the resync.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::Instrument;

use crate::api::{CouchServer, NodeConfigFailure, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::servers::connect;
use crate::couch::{CouchClient, CouchError};
use crate::plan::cluster::NodeSettings;
use crate::plan::config::display_key;
pub use crate::plan::server::SYSTEM_DATABASES;
use crate::plan::server::{
    ConfigReads, ObservedServer, ServerIntent, ServerStep, applied_config, config_reads, plan_server,
};
use sha2::{Digest, Sha256};

/// Reconciles one CouchServer.
pub async fn reconcile(server: Arc<CouchServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores_ready().await;
    let ns = server.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = "CouchServer", namespace = %ns, name = %server.name_any());
    reconcile_server(server, ctx).instrument(span).await
}

async fn reconcile_server(server: Arc<CouchServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = server.namespace().unwrap_or_default();
    let mut pass = Pass::begin(server.as_ref());
    let was_ready = pass.was(condition::READY).is_some_and(|(status, _)| status == "True");
    let mut created = false;
    let result = ensure(&server, &ctx, &mut pass, &mut created).await;
    let ready_now = result.is_ok();
    let reachable = !matches!(result, Err(Error::Unreachable { .. } | Error::Unauthorized(_)));
    let budget = pass.status.replication_budget.as_ref().map(|b| (b.total, b.used));
    ctx.metrics.server(&ns, &server.name_any(), reachable, budget);
    if let Some(m) = &pass.status.membership {
        let missing = m.missing_nodes.len() + m.silent_nodes.len();
        ctx.metrics.server_nodes_missing(&ns, &server.name_any(), missing);
    }
    let action = pass.finish(&ctx, server.as_ref(), result).await;
    // What waits on the server (its system databases, a first connection) has no timer but
    // the resync: this wakes it, once the status says Ready.
    if (ready_now && !was_ready) || created {
        let why = if created { "system databases created" } else { "became Ready" };
        crate::controller::triggers::wakeups::wake_server_objects(&ctx, &super::ServerKey::of(&server), why);
    }
    if let Ok(couch) = connect(&ctx, &server).await {
        crate::controller::triggers::drift::follow(&ctx, &server, couch.clone());
        crate::controller::triggers::membership::watch(&ctx, &server, couch.clone());
        crate::controller::triggers::users_feed::follow(&ctx, &server, couch.clone());
        crate::controller::triggers::audit::run(&ctx, &server, couch).await;
    }
    action
}

/// Observe → plan → execute; fills the status and the Events of `pass`, and says in `created`
/// whether it finished the cluster or created a system database.
async fn ensure(
    server: &CouchServer,
    ctx: &Context,
    pass: &mut Pass<CouchServer>,
    created: &mut bool,
) -> Result<Outcome, Error> {
    let couch = connect(ctx, server).await?;
    let url = server.spec.url.as_str();
    let intent = ServerIntent { config: server.spec.config.as_ref() };
    let observed = observe(&couch, &intent, url, replications_on(ctx, server)).await?;
    let plan = plan_server(&intent, &observed);
    let mut failures = plan.status.failures.clone();
    let mut written = 0;
    for step in &plan.steps {
        match step {
            ServerStep::FinishCluster(why) => {
                couch.finish_cluster().await.map_err(|e| Error::couch("finishing the cluster", url, e))?;
                *created = true;
                tracing::info!(why = %why, "finished the cluster");
                // Its `_db_updates` may answer now: the followers listing instead look at once.
                ctx.server_feeds.wake(&super::ServerKey::of(server));
            }
            ServerStep::CreateSystemDatabases(missing) => {
                create_system_databases(&couch, missing, url).await?;
                *created = true;
            }
            ServerStep::SetConfig { node, key: (section, key), value } => {
                match couch.config_set(node, section, key, value).await {
                    Ok(_) => {
                        written += 1;
                        tracing::info!(node, section, key, "configuration value written");
                    }
                    Err(e @ CouchError::Transport { .. }) => return Err(Error::couch("configuring", url, e)),
                    Err(e) => failures.push(NodeConfigFailure {
                        node: node.clone(),
                        key: display_key(&(section.clone(), key.clone())),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }
    let planned = plan.status;
    ctx.membership.planned(&super::ServerKey::of(server), planned.membership_view.clone());
    let degraded = NewCondition {
        type_: condition::DEGRADED,
        status: planned.degraded.status,
        reason: planned.degraded.reason.into(),
        message: planned.degraded.message.clone(),
    };
    let was_degraded = pass.was(condition::DEGRADED);
    pass.set(server, degraded);
    let is_degraded = crate::controller::runtime::status::condition_state(&pass.status.conditions, condition::DEGRADED);
    if let Some(why) = &planned.finished_now {
        let note = format!("cluster finished ({why}): system databases, one admin hash, uuid and secret on every node");
        pass.events.push(Note::normal("ClusterFinished", note));
    }
    // Degraded, and back from it, are Events; a healthy server's first look is not.
    if was_degraded != is_degraded
        && let Some((s, reason)) = &is_degraded
        && (s == "True" || was_degraded.as_ref().is_some_and(|(w, _)| w == "True"))
    {
        let note = if s == "True" {
            Note::warning(reason, &planned.degraded.message)
        } else {
            Note::normal(reason, &planned.degraded.message)
        };
        pass.events.push(note);
    }
    let status = &mut pass.status;
    status.membership = planned.membership.clone();
    status.vendor = planned.info.vendor.clone();
    status.version = Some(planned.info.version.clone());
    status.features = planned.info.features.clone();
    status.unsupported = planned.unsupported.clone();
    status.nodes = planned.nodes.clone();
    status.applied_config = applied_config(&planned.declared, &failures);
    status.config_failures = failures.clone();
    status.replication_budget = Some(planned.budget.clone());
    let events = ctx.server_feeds.source(&super::ServerKey::of(server));
    status.database_events = events.map(|s| s.name().to_string()).or(status.database_events.take());
    if !failures.is_empty() {
        let summary: Vec<String> = failures.iter().map(|f| format!("{} on {}: {}", f.key, f.node, f.message)).collect();
        return Err(Error::ConfigFailed(summary.join("; ")));
    }
    let requeue = Action::requeue(ctx.resync());
    let mut outcome = Outcome::new(NewCondition::ready("Connected", planned.connected_message()), requeue)
        .on_transition(Note::normal("Connected", "CouchDB is reachable and configured"));
    if written > 0 {
        outcome =
            outcome.with_event(Note::normal("ConfigApplied", format!("{written} configuration value(s) written")));
    }
    Ok(outcome)
}

/// Reads everything [`plan_server`] decides from. A node whose configuration cannot be read
/// is recorded as such; an unreachable server fails the pass.
async fn observe(
    couch: &CouchClient,
    intent: &ServerIntent<'_>,
    url: &str,
    used: i32,
) -> Result<ObservedServer, Error> {
    let info = couch.server_info().await.map_err(|e| Error::couch("reading GET /", url, e))?;
    let membership = couch.membership().await.map_err(|e| Error::couch("reading _membership", url, e))?;
    // A cluster formed by a seedlist alone has no system databases and a different admin hash,
    // uuid and auth secret on every node: the plan finishes it, the way `/_cluster_setup` does.
    let missing_system_databases = missing_system_databases(couch, url).await?;
    let cluster_settings = if membership.cluster_nodes.len() > 1 {
        observe_cluster(couch, &membership.all_nodes, url).await?
    } else {
        BTreeMap::new()
    };
    let ConfigReads { nodes, desired } = config_reads(intent, &info.capabilities(), &membership);
    let mut node_config = BTreeMap::new();
    for node in &nodes {
        let mut values = BTreeMap::new();
        let mut read = Ok(());
        for (section, key) in desired.keys() {
            match couch.config_get(node, section, key).await {
                Ok(value) => {
                    values.insert((section.clone(), key.clone()), value);
                }
                Err(e @ CouchError::Transport { .. }) => return Err(Error::couch("configuring", url, e)),
                Err(e) => {
                    read = Err(e.to_string());
                    break;
                }
            }
        }
        node_config.insert(node.clone(), read.map(|()| values));
    }
    let max_jobs = match nodes.first() {
        Some(node) => couch.config_get(node, "replicator", "max_jobs").await.ok().flatten(),
        None => None,
    };
    Ok(ObservedServer {
        info,
        membership,
        missing_system_databases,
        cluster_settings,
        node_config,
        max_jobs,
        replications_used: used,
    })
}

/// Reads what finishing and membership health depend on, on every connected node: the admin's password hash, `[couchdb] uuid` and `[chttpd_auth] secret` — kept
/// only as fingerprints, never logged (the secret signs session cookies).
async fn observe_cluster(
    couch: &CouchClient,
    all_nodes: &[String],
    url: &str,
) -> Result<BTreeMap<String, NodeSettings>, Error> {
    let fingerprint = |v: Option<String>| v.map(|v| hex::encode(Sha256::digest(v.as_bytes())));
    let admin = couch.username().map(str::to_owned);
    let mut settings = BTreeMap::new();
    for node in all_nodes {
        let read = async {
            // The membership watch's probe comes first: a node that does not answer it is
            // silent for both.
            let uuid = couch.config_get(node, "couchdb", "uuid").await?;
            let admin_hash = match &admin {
                Some(name) => couch.config_get(node, "admins", name).await?,
                None => None,
            };
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
    Ok(settings)
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
        .filter(|s| s.server.as_deref() == Some(key.as_str()))
        .map(crate::plan::server::replications_of)
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
