//! The `_security` audit. CouchDB reports a `_security` edit in no feed (`_db_updates` stays
//! silent), so a database made public by one wrong click in Fauxton would stay public until the
//! resync. One task per CouchServer re-reads, round-robin, the `_security` of every database its
//! reconciler has brought to the declared state in this process, at most `--security-audit-rate`
//! reads a second, and requeues a database whose `_security` differs at once.

use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use super::context::{Context, keep_task, server_exists};
use super::keys::ServerKey;
use super::servers::server_key;
use crate::api::CouchServer;
use crate::couch::CouchClient;
use crate::plan::security::security_matches;

/// Makes sure an auditor runs for `server` (one per server and client), on servers that have the
/// `_db_updates` feed (CouchDB 2+); elsewhere the resync is the path, and reading `_security` of a
/// deleted database would create it again on pouchdb-server.
pub async fn run(ctx: &Context, server: &CouchServer, couch: CouchClient) {
    let rate = ctx.options.security_audit_rate;
    let Some(trigger) = ctx.database_trigger.clone() else { return };
    if rate <= 0.0 || !couch.capabilities().await.is_ok_and(|c| c.db_updates) {
        return;
    }
    let server_ref = ServerKey::of(server);
    let databases = ctx.databases.clone();
    let servers = ctx.servers.clone();
    let recorded = ctx.security.clone();
    let pause = Duration::from_secs_f64(1.0 / rate);
    keep_task(&ctx.auditors, server, move || {
        tokio::spawn(async move {
            loop {
                if !server_exists(&servers, &server_ref) {
                    return;
                }
                let started = Instant::now();
                let mut audited = 0usize;
                let cycle: Vec<_> = databases
                    .state()
                    .into_iter()
                    .filter(|d| d.metadata.deletion_timestamp.is_none())
                    .filter(|d| server_key(d.as_ref(), &d.spec.server_ref) == server_ref)
                    .collect();
                for db in cycle {
                    let name = db.couch_name().to_string();
                    let key = (server_ref.clone(), name.clone());
                    // Only what a reconcile left in this process: it is the declared state right now.
                    let Some(want) = recorded.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned() else {
                        continue;
                    };
                    tokio::time::sleep(pause).await;
                    audited += 1;
                    super::metrics::metrics().security_audited(&server_ref.namespace, &server_ref.name);
                    match couch.security(&name).await {
                        Ok(actual) if !security_matches(&actual, &want) => {
                            tracing::info!(database = %name, "_security differs from the declared state; requeueing");
                            super::metrics::metrics().security_drift(&server_ref.namespace, &server_ref.name);
                            let _ = trigger.send(ObjectRef::from_obj(db.as_ref()));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(database = %name, error = %e, "audit read failed"),
                    }
                }
                super::metrics::metrics().security_audit_cycle(
                    &server_ref.namespace,
                    &server_ref.name,
                    started.elapsed(),
                    audited,
                );
                if audited == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        })
    });
}
