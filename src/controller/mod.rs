//! The operator: one kube-runtime `Controller` per kind, sharing a [`Context`]. The only
//! module that holds both a Kubernetes client and a CouchDB client.

mod audit;
mod context;
mod database;
mod drift;
mod error;
mod finalize;
mod grant;
mod health;
mod keys;
mod leader;
mod metrics;
mod server;
mod servers;
mod share;
mod share_endpoints;
mod share_revoke;
mod status;
mod tenancy;
mod user;
mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

pub use context::{Context, DEFAULT_SECURITY_AUDIT_RATE, Options};
pub use error::Error;
pub use health::Readiness;
pub use keys::ServerKey;
pub use leader::LeaderElection;
pub use server::SYSTEM_DATABASES;

use crate::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use watches::{controller_for, declared, watched, watched_when};

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

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
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

/// After an error: transient ones back off per object; the rest wait for a change, with the
/// periodic resync as a safety net (a referenced object may appear without an event for it).
fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = context::object_key(obj.as_ref());
    if error.is_transient() {
        let mut delay = ctx.next_backoff(&key);
        // Waiting on another resource in progress: watches requeue sooner; keep polls frequent.
        if matches!(error, Error::Waiting { .. }) {
            delay = delay.min(std::time::Duration::from_secs(5));
        }
        tracing::warn!(object = %key, reason = error.reason(), error = %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    } else if matches!(error, Error::InvalidSpec(_) | Error::InvalidSelector(_) | Error::Tls(_)) {
        tracing::warn!(object = %key, reason = error.reason(), error = %error, "invalid spec; waiting for a change");
        Action::await_change()
    } else {
        tracing::info!(object = %key, reason = error.reason(), error = %error, "waiting");
        Action::requeue(ctx.resync())
    }
}

fn uses_secret(server: &CouchServer, secret: &str) -> bool {
    server.spec.admin_credentials.secret_ref.name == secret
        || server.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()).is_some_and(|c| c.name == secret)
}

/// A reconcile function that also counts itself in the metrics.
macro_rules! measured {
    ($kind:literal, $f:path) => {
        |obj, ctx| async move {
            let started = std::time::Instant::now();
            let result = $f(obj, ctx).await;
            metrics::metrics().reconciled($kind, started.elapsed(), result.as_ref().err().map(Error::reason));
            result
        }
    };
}

/// CouchServer changes that matter to the resources on it: spec changes, not status writes
/// (a server's status changes with every share; requeueing every database and user on each
/// would be a reconcile storm).
fn server_spec_changes(
    client: &Client,
    ns: Option<&str>,
) -> impl futures::Stream<Item = Result<CouchServer, watcher::Error>> + Send + 'static {
    watched_when::<CouchServer>(client, ns, kube::runtime::predicates::generation)
}

/// References to every object in `store` that `related` picks: the mapper of a watch.
fn matching<K>(store: &kube::runtime::reflector::Store<K>, related: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().into_iter().filter(|o| related(o)).map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// Whether a grant names this CouchUser, as a member or admin, or for its per-user database.
fn refers_to_user(grant: &CouchGrant, user: &CouchUser) -> bool {
    let grant_ns = grant.namespace().unwrap_or_default();
    let is_user = |name: &str, ns: Option<&str>| {
        name == user.name_any() && ns.unwrap_or(&grant_ns) == user.namespace().unwrap_or_default()
    };
    grant.spec.users.iter().any(|r| is_user(&r.name, r.namespace.as_deref()))
        || grant.spec.database.user_database.as_ref().is_some_and(|r| is_user(&r.user, r.namespace.as_deref()))
}

/// Whether CouchUser changes matter to a share: a fan-in over its namespace's users, or a
/// per-user database it names (in any namespace: that user's consent can change).
fn uses_user_database(share: &CouchShare, user: &CouchUser) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let names = |r: &Option<crate::api::UserDatabaseRef>| {
        r.as_ref().is_some_and(|r| {
            r.user == user.name_any() && r.namespace.as_deref().unwrap_or(&ns) == user.namespace().unwrap_or_default()
        })
    };
    (share.spec.source.user_databases.is_some() && share.namespace() == user.namespace())
        || names(&share.spec.source.user_database)
        || names(&share.spec.target.user_database)
}

/// Whether a grant names a database on this server directly (`couchName`): the server's trust
/// decides whether it may.
fn grant_on_server(grant: &CouchGrant, key: &ServerKey) -> bool {
    grant.spec.database.server_ref.as_ref().is_some_and(|r| &servers::server_key(grant, r) == key)
}

/// Whether a share runs (or ran) on this server: its allowed and trusted namespaces matter.
fn share_on_server(share: &CouchShare, key: &ServerKey) -> bool {
    let recorded = share.status.as_ref().and_then(|s| s.server.as_deref()) == Some(&key.to_string());
    recorded || share.spec.server_ref.as_ref().is_some_and(|r| &servers::server_key(share, r) == key)
}

/// Runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(client: Client, config: RunConfig) -> Result<(), Error> {
    let ready = Readiness::default();
    let bound = health::serve(config.health_addr, ready.clone())
        .await
        .map_err(|e| Error::InvalidSpec(format!("cannot serve health endpoints on {}: {e}", config.health_addr)))?;
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    // A standby is ready (it serves probes and waits); only the leader reconciles.
    ready.set(true);
    let mut leadership = match &config.leader_election {
        Some(election) => Some(leader::acquire(client.clone(), election).await?),
        None => None,
    };
    wait_for_crds(&client).await?;
    let ns = config.namespace.as_deref();
    let controller_config = controller::Config::default().concurrency(config.concurrency);

    let server_controller = controller_for::<CouchServer>(&client, ns);
    let servers = server_controller.store();
    let database_controller = controller_for::<CouchDatabase>(&client, ns);
    let databases = database_controller.store();
    let user_controller = controller_for::<CouchUser>(&client, ns);
    let users = user_controller.store();
    let grant_controller = controller_for::<CouchGrant>(&client, ns);
    let grants = grant_controller.store();
    let share_controller = controller_for::<CouchShare>(&client, ns);
    let shares = share_controller.store();
    // Secret metadata, kept in a store: a client is rebuilt only when its Secrets'
    // resourceVersions change, instead of reading them on every reconcile.
    let (secret_store, secret_writer) = kube::runtime::reflector::store();
    let secrets = watcher(scoped::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(watches::forget_managed_fields)
        .reflect(secret_writer)
        .touched_objects();
    let (trigger, triggered) = tokio::sync::mpsc::unbounded_channel();
    let (grant_trigger, grants_triggered) = tokio::sync::mpsc::unbounded_channel();
    let stores = context::Stores {
        servers: servers.clone(),
        databases: databases.clone(),
        users: users.clone(),
        grants: grants.clone(),
        shares: shares.clone(),
        secrets: secret_store,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.options.clone(),
        stores,
        context::Triggers { databases: Some(trigger), grants: Some(grant_trigger) },
    ));

    // A change to an admin or CA Secret requeues the servers that use it. Only metadata is
    // watched: the operator never keeps Secret data in memory.
    let servers_by_secret = servers.clone();
    let server_controller = server_controller
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let (sns, sname) = (secret.namespace(), secret.name_any());
            matching(&servers_by_secret, |s| s.namespace() == sns && uses_secret(s, &sname))
        })
        .with_config(controller_config.clone())
        .shutdown_on_signal();

    // A change to a CouchServer requeues its databases; `_db_updates` requeues the owner of a
    // database created or deleted out of band.
    let databases_by_server = databases.clone();
    let database_controller = database_controller
        .watches_stream(server_spec_changes(&client, ns), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&databases_by_server, |d| servers::server_key(d, &d.spec.server_ref) == key)
        })
        .watches_stream(watched_when::<CouchGrant>(&client, ns, declared), |grant: CouchGrant| {
            grant::database_refs(&grant)
        })
        .watches_stream(watched_when::<CouchUser>(&client, ns, declared), {
            let grants = grants.clone();
            move |user: CouchUser| {
                grants
                    .state()
                    .into_iter()
                    .filter(|g| refers_to_user(g, &user))
                    .filter_map(|g| grant::database_refs(&g))
                    .collect::<Vec<_>>()
            }
        })
        .watches_stream(watched_when::<CouchShare>(&client, ns, watches::share_for_databases), {
            let databases = databases.clone();
            move |share: CouchShare| matching(&databases, |d| share::touches_database(&share, d))
        })
        .reconcile_on(futures::stream::unfold(triggered, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }))
        .with_config(controller_config.clone())
        .shutdown_on_signal();

    // A user's password Secret or credentials Secret changing (edited, deleted) and its
    // server changing requeue the user.
    let user_secrets = watcher(scoped::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .touched_objects();
    let users_by_secret = users.clone();
    let users_by_server = users.clone();
    let user_controller = user_controller
        .watches_stream(user_secrets, move |secret: PartialObjectMeta<Secret>| {
            let (sns, sname) = (secret.namespace(), secret.name_any());
            matching(&users_by_secret, |u| {
                u.namespace() == sns
                    && (u.spec.password.as_ref().is_some_and(|p| p.secret_ref.name == sname)
                        || user::credentials_secret_name(u) == sname)
            })
        })
        .watches_stream(server_spec_changes(&client, ns), move |server: CouchServer| {
            let key = ServerKey::of(&server);
            matching(&users_by_server, |u| servers::server_key(u, &u.spec.server_ref) == key)
        })
        .with_config(controller_config)
        .shutdown_on_signal();

    // A grant follows its users (appearing, renamed, deleted) and its database's state.
    let grant_controller = grant_controller
        .watches_stream(watched_when::<CouchUser>(&client, ns, declared), {
            let grants = grants.clone();
            move |user: CouchUser| matching(&grants, |g| refers_to_user(g, &user))
        })
        .watches_stream(watched_when::<CouchDatabase>(&client, ns, watches::database_for_grants), {
            let grants = grants.clone();
            move |db: CouchDatabase| matching(&grants, |g| grant::targets(g, &db))
        })
        .watches_stream(server_spec_changes(&client, ns), {
            let grants = grants.clone();
            move |server: CouchServer| {
                let key = ServerKey::of(&server);
                matching(&grants, |g| grant_on_server(g, &key))
            }
        })
        .reconcile_on(futures::stream::unfold(
            grants_triggered,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        ))
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal();

    // A share follows its databases and the users whose databases it replicates.
    let share_controller = share_controller
        .watches_stream(watched::<CouchDatabase>(&client, ns), {
            let shares = shares.clone();
            move |db: CouchDatabase| matching(&shares, |s| share::touches_database(s, &db))
        })
        .watches_stream(watched::<CouchUser>(&client, ns), {
            let shares = shares.clone();
            move |user: CouchUser| matching(&shares, |s| uses_user_database(s, &user))
        })
        .watches_stream(server_spec_changes(&client, ns), {
            let shares = shares.clone();
            move |server: CouchServer| {
                let key = ServerKey::of(&server);
                matching(&shares, |s| share_on_server(s, &key))
            }
        })
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal();

    tracing::info!(namespace = ns.unwrap_or("<all>"), concurrency = config.concurrency, "controllers running");
    let servers_done = server_controller
        .run(measured!("CouchServer", server::reconcile), error_policy::<CouchServer>, ctx.clone())
        .for_each(|r| async move { log_result("CouchServer", r) });
    let databases_done = database_controller
        .run(measured!("CouchDatabase", database::reconcile), error_policy::<CouchDatabase>, ctx.clone())
        .for_each(|r| async move { log_result("CouchDatabase", r) });
    let users_done = user_controller
        .run(measured!("CouchUser", user::reconcile), error_policy::<CouchUser>, ctx.clone())
        .for_each(|r| async move { log_result("CouchUser", r) });
    let grants_done = grant_controller
        .run(measured!("CouchGrant", grant::reconcile), error_policy::<CouchGrant>, ctx.clone())
        .for_each(|r| async move { log_result("CouchGrant", r) });
    let shares_done = share_controller
        .run(measured!("CouchShare", share::reconcile), error_policy::<CouchShare>, ctx.clone())
        .for_each(|r| async move { log_result("CouchShare", r) });
    let controllers = async { tokio::join!(servers_done, databases_done, users_done, grants_done, shares_done) };
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
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("controllers stopped");
    outcome
}

fn log_result<K: Resource, E: std::fmt::Display>(kind: &str, result: Result<(ObjectRef<K>, Action), E>) {
    match result {
        Ok((obj, _)) => tracing::debug!(kind, object = %obj, "reconciled"),
        Err(e) => tracing::debug!(kind, error = %e, "reconcile error"),
    }
}
