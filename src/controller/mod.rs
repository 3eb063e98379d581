//! The operator: one kube-runtime `Controller` per kind on one shared watch per kind, sharing a
//! [`Context`]. The only module that holds both a Kubernetes client and a CouchDB client. This
//! file starts the controllers ([`run`]); the rest is in folders.
//!
//! The map: each folder, what it owns, who may use it.
//!
//! - `runtime/`: what every reconciler shares and nothing kind-specific: the [`Context`] and
//!   the channels that requeue objects (`requeues`), the shared watches (`reflectors`,
//!   `watches`, `wiring`), leader election, health, metrics, the one `backoff`, the reconcile
//!   `tail`, status writes, `finalize`, the errors, server keys, per-server tasks, the client
//!   cache and `state_metrics` (what each scrape reads from the watches). Anyone in
//!   `controller/` may use it.
//! - `triggers/`: what wakes a reconciler from outside its kind's Kubernetes watch, each with
//!   one contract: `db_events` (database events from `_db_updates` or an `_all_dbs` diff), `drift`
//!   (wakes a database whose CouchDB side changed), `audit` (the `_security` audit),
//!   `replicator_feed` (the `_replicator` `_changes` follower), `scheduler` and `scheduler_watch`
//!   (`_scheduler/docs`, read only while a share waits), `wakeups` (a server that becomes Ready),
//!   `own_writes` (the operator's own Secret writes, which wake nobody). They use `runtime/` and
//!   `shared/`. The context holds the state of some (feeds, watches): those take nothing from
//!   the context's file, only the channel types of `runtime/requeues`.
//! - `shared/`: what several kinds use: `servers` (a reference to a connected client),
//!   `access` (what grants and shares add to a database's `_security`), `unmanaged` (per-user and
//!   unmanaged databases, written entry by entry), `credentials`, `tenancy` (the tenancy rules
//!   against live objects), `ledger` (the `_security` each database was last brought to: one
//!   writer, the database reconciler). What grants and shares contribute is filtered by
//!   `plan::access`, which `access` and `unmanaged` call. Every kind may use it; it uses no
//!   kind's folder.
//! - one folder per kind: `server/`, `database/`, `user/`, `grant/`, `share/`, `backup/`,
//!   `scheduled_backup/`, each holding its
//!   reconciler (in its `mod.rs`) and the parts only it uses (`share/` holds the on-change
//!   `engine/`). A kind's folder uses `runtime/`, `triggers/` and `shared/`, never another
//!   kind's folder (`tools/layout-check` fails on that, and on any circle between files).

mod backup;
mod database;
mod grant;
mod runtime;
mod scheduled_backup;
mod server;
mod share;
mod shared;
mod triggers;
mod user;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tokio::task::JoinHandle;

pub use runtime::context::{Context, DEFAULT_SECURITY_AUDIT_RATE, Options};
pub use runtime::error::Error;
pub use runtime::health::Readiness;
pub use runtime::keys::ServerKey;
pub use runtime::leader::LeaderElection;
pub use server::SYSTEM_DATABASES;

use runtime::reflectors::Reflectors;
use runtime::{context, health, leader, metrics, wiring};

/// How the operator process runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only this namespace (default: every namespace).
    pub namespace: Option<String>,
    /// Reconciles running at once, per kind.
    pub concurrency: u16,
    /// Where `/healthz` and `/readyz` are served.
    pub health_addr: SocketAddr,
    /// Tunables shared by the reconcilers.
    pub options: Options,
    /// Run only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
}

/// Waits until every couchshare CRD is Established, logging while it waits.
pub async fn wait_for_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut logged = false;
    loop {
        let mut missing = Vec::new();
        for crd in crate::api::crds() {
            let name = crd.name_any();
            let established = api.get_opt(&name).await?.is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            });
            if !established {
                missing.push(name);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if !logged {
            tracing::info!(?missing, "waiting for the CRDs to be Established (apply crds/ first)");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// After an error. Waiting for something that announces itself (a database, a user, the
/// server's system databases, CouchDB's scheduler) has no timer of its own: the watches, the
/// other reconcilers' requeues and CouchDB's feeds wake the object (see `wiring`, `wakeups`,
/// `replicator_feed`, `scheduler_watch`), and the resync is the safety net. Other transient
/// errors back off per object; an invalid spec waits for a change; the rest wait for the
/// resync (a referenced object may appear without an event for it).
fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = context::object_key(obj.as_ref());
    if error.waits_for_trigger() {
        tracing::info!(object = %key, reason = error.reason(), error = %error, "waiting for a trigger");
        Action::requeue(ctx.resync())
    } else if error.is_transient() {
        let delay = ctx.next_backoff(&key);
        tracing::warn!(object = %key, reason = error.reason(), error = %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    } else if error.waits_for_change() {
        tracing::warn!(object = %key, reason = error.reason(), error = %error, "invalid spec; waiting for a change");
        Action::await_change()
    } else {
        tracing::info!(object = %key, reason = error.reason(), error = %error, "waiting");
        Action::requeue(ctx.resync())
    }
}

/// A reconcile function that also counts itself in the metrics.
macro_rules! measured {
    ($kind:literal, $f:path) => {
        |obj, ctx| async move {
            let (started, metrics) = (std::time::Instant::now(), ctx.metrics.clone());
            let result = $f(obj, ctx).await;
            metrics.reconciled($kind, started.elapsed(), result.as_ref().err().map(Error::reason));
            result
        }
    };
}

/// What each scrape counts in the watches: each kind's objects, and those not Ready by reason.
fn census(stores: context::Stores) -> runtime::state_metrics::Census {
    use runtime::state_metrics::count;
    type Counted = (i64, std::collections::BTreeMap<String, i64>);
    fn of<K, S>(
        store: &kube::runtime::reflector::Store<K>,
        status: impl Fn(&K) -> Option<&S>,
        conditions: impl Fn(&S) -> &[crate::api::Condition],
    ) -> Counted
    where
        K: kube::runtime::reflector::Lookup + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        count(store.state().iter().map(|o| status(o).map(&conditions)))
    }
    Box::new(move || {
        vec![
            ("CouchServer", of(&stores.servers, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchDatabase", of(&stores.databases, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchUser", of(&stores.users, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchGrant", of(&stores.grants, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchShare", of(&stores.shares, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchBackup", of(&stores.backups, |o| o.status.as_ref(), |s| &s.conditions)),
            ("CouchScheduledBackup", of(&stores.scheduled_backups, |o| o.status.as_ref(), |s| &s.conditions)),
        ]
    })
}

/// What each scrape shows of the backups: per database its newest completed backup, per
/// schedule its interval and its newest success.
fn backup_census(stores: context::Stores) -> runtime::state_metrics::BackupCensus {
    use runtime::state_metrics::{BackedUp, BackupFigures, LastBackup, Scheduled};
    let seconds =
        |t: Option<&str>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond() as f64 / 1000.0);
    Box::new(move || {
        let mut databases: std::collections::BTreeMap<(String, String), LastBackup> = Default::default();
        for backup in stores.backups.state() {
            let Some(status) = backup.status.as_ref().filter(|s| s.phase == Some(crate::api::BackupPhase::Completed))
            else {
                continue;
            };
            let (Some(ended), Some(started)) =
                (seconds(status.completed_at.as_deref()), seconds(status.started_at.as_deref()))
            else {
                continue;
            };
            // A group's figures are its members'.
            let Some(database) = backup.spec.database.clone() else { continue };
            let key = (backup.namespace().unwrap_or_default(), database);
            let last =
                LastBackup { ended, seconds: (ended - started).max(0.0), bytes: status.bytes.unwrap_or_default() };
            if databases.get(&key).is_none_or(|l| l.ended < ended) {
                databases.insert(key, last);
            }
        }
        let schedules = stores
            .scheduled_backups
            .state()
            .iter()
            .filter_map(|s| {
                let status = s.status.as_ref()?;
                let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond() as f64 / 1000.0);
                let last = seconds(status.last_successful_time.as_deref()).or(created)?;
                let labels = Scheduled {
                    namespace: s.namespace().unwrap_or_default(),
                    schedule: s.name_any(),
                    database: s.spec.database.clone(),
                };
                Some((labels, status.interval_seconds?, last))
            })
            .collect();
        BackupFigures {
            databases: databases
                .into_iter()
                .map(|((namespace, database), last)| (BackedUp { namespace, database }, last))
                .collect(),
            schedules,
        }
    })
}

/// Runs the controllers until SIGTERM or Ctrl-C (or until a lost lease).
pub async fn run(client: Client, config: RunConfig) -> Result<(), Error> {
    let ready = Readiness::default();
    let metrics = Arc::new(metrics::Metrics::new());
    let bound = health::serve(config.health_addr, ready.clone(), metrics.clone())
        .await
        .map_err(|e| Error::Startup(format!("cannot serve health endpoints on {}: {e}", config.health_addr)))?;
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    // A standby is ready (it serves probes and waits); only the leader reconciles.
    ready.set(true);
    let mut leadership = match &config.leader_election {
        Some(election) => Some(leader::acquire(client.clone(), election).await?),
        None => None,
    };
    metrics.state.leading(true);
    wait_for_crds(&client).await?;
    let ns = config.namespace.as_deref();

    let mut reflectors = Reflectors::new();
    let (server_trigger, servers_requested) = tokio::sync::mpsc::unbounded_channel();
    let (database_trigger, databases_requested) = tokio::sync::mpsc::unbounded_channel();
    let (grant_trigger, grants_requested) = tokio::sync::mpsc::unbounded_channel();
    let (share_trigger, shares_requested) = tokio::sync::mpsc::unbounded_channel();
    let (user_trigger, users_requested) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.options.clone(),
        reflectors.stores(),
        runtime::requeues::Triggers {
            servers: Some(server_trigger),
            databases: Some(database_trigger),
            grants: Some(grant_trigger),
            shares: Some(share_trigger),
            users: Some(user_trigger),
        },
        metrics.clone(),
    ));
    metrics.state.watch(census(reflectors.stores()));
    metrics.state.watch_backups(backup_census(reflectors.stores()));

    let per_kind = controller::Config::default().concurrency(config.concurrency);
    let servers = wiring::servers(&mut reflectors, per_kind.clone(), servers_requested);
    let databases = wiring::databases(&mut reflectors, per_kind.clone(), databases_requested);
    let users = wiring::users(&mut reflectors, per_kind.clone(), ctx.own_writes.clone(), users_requested);
    let grants = wiring::grants(&mut reflectors, per_kind.clone(), grants_requested);
    let shares = wiring::shares(&mut reflectors, per_kind.clone(), shares_requested);
    let backups = wiring::backups(&mut reflectors, per_kind.clone());
    let scheduled_backups = wiring::scheduled_backups(&mut reflectors, per_kind);
    let watches = reflectors.start(&client, ns);
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        concurrency = config.concurrency,
        watches = watches.len(),
        "controllers running"
    );

    let controllers = async {
        tokio::join!(
            drive("CouchServer", servers, measured!("CouchServer", server::reconcile), ctx.clone()),
            drive("CouchDatabase", databases, measured!("CouchDatabase", database::reconcile), ctx.clone()),
            drive("CouchUser", users, measured!("CouchUser", user::reconcile), ctx.clone()),
            drive("CouchGrant", grants, measured!("CouchGrant", grant::reconcile), ctx.clone()),
            drive("CouchShare", shares, measured!("CouchShare", share::reconcile), ctx.clone()),
            drive("CouchBackup", backups, measured!("CouchBackup", backup::reconcile), ctx.clone()),
            drive(
                "CouchScheduledBackup",
                scheduled_backups,
                measured!("CouchScheduledBackup", scheduled_backup::reconcile),
                ctx.clone()
            ),
        )
    };
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = controllers => Ok(()),
        _ = lost => Err(Error::Leadership("lost the lease; stopping so that only one replica reconciles".into())),
    };
    ready.set(false);
    metrics.state.leading(false);
    watches.iter().for_each(JoinHandle::abort);
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("controllers stopped");
    outcome
}

/// Runs one controller until shutdown, logging each reconcile's outcome.
async fn drive<K, F, Fut>(kind: &'static str, controller: Controller<K>, reconcile: F, ctx: Arc<Context>)
where
    K: runtime::reflectors::Watched,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy::<K>, ctx)
        .for_each(|r| async move { log_result(kind, r) })
        .await
}

fn log_result<K: Resource, E: std::fmt::Display>(kind: &str, result: Result<(ObjectRef<K>, Action), E>) {
    match result {
        Ok((obj, _)) => tracing::debug!(kind, object = %obj, "reconciled"),
        Err(e) => tracing::debug!(kind, error = %e, "reconcile error"),
    }
}
