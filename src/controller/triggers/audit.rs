//! The `_security` audit. CouchDB reports a `_security` edit in no feed (`_db_updates` stays
//! silent), so a database made public by one wrong click in Fauxton would stay public until the
//! resync. One task per CouchServer re-reads, round-robin, the `_security` of every database its
//! reconciler has brought to the declared state in this process, at most `--security-audit-rate`
//! reads a second, and requeues a database whose `_security` differs at once. A cycle takes at
//! least [`MIN_CYCLE`]: with few databases, each is read every few seconds, not `rate` times a
//! second.

use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use crate::api::CouchServer;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::tasks::{Task, server_exists};
use crate::controller::shared::servers::server_key;
use crate::couch::CouchClient;
use crate::plan::security::security_matches;

/// The shortest time one audit cycle over a server's databases takes.
pub const MIN_CYCLE: Duration = Duration::from_secs(10);

/// The pause before each read of a cycle over `count` databases at `rate` reads a second.
fn pause_for(rate: f64, count: usize) -> Duration {
    let at_rate = Duration::from_secs_f64(1.0 / rate);
    let spread = MIN_CYCLE / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    at_rate.max(spread)
}

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
    let databases = ctx.stores.databases.clone();
    let servers = ctx.stores.servers.clone();
    let ledger = ctx.ledger.clone();
    let metrics = ctx.metrics.clone();
    ctx.tasks.keep(Task::Auditor, server, couch.instance(), move || {
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
                let pause = pause_for(rate, cycle.len());
                for db in cycle {
                    let name = db.couch_name().to_string();
                    // Only what a reconcile left in this process: it is the declared state right now.
                    if ledger.recorded(&server_ref, &name).is_none() {
                        continue;
                    }
                    tokio::time::sleep(pause).await;
                    audited += 1;
                    metrics.security_audited(&server_ref.namespace, &server_ref.name);
                    // Compared with what is recorded after the read, not before the pause: a
                    // pass may have written since.
                    let read = couch.security(&name).await.map(|actual| (actual, ledger.recorded(&server_ref, &name)));
                    match read {
                        Ok((_, None)) => {}
                        Ok((actual, Some(want))) if !security_matches(&actual, &want) => {
                            tracing::info!(database = %name, "_security differs from the declared state; requeueing");
                            metrics.security_drift(&server_ref.namespace, &server_ref.name);
                            ledger.stale(&server_ref, &name);
                            let _ = trigger.send(ObjectRef::from_obj(db.as_ref()));
                        }
                        // As recorded: the database's resync pass may take the ledger's word.
                        Ok(_) => ledger.audited(&server_ref, &name),
                        Err(e) => tracing::debug!(database = %name, error = %e, "audit read failed"),
                    }
                }
                metrics.security_audit_cycle(&server_ref.namespace, &server_ref.name, started.elapsed(), audited);
                if audited == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_spread_over_at_least_min_cycle_and_never_faster_than_the_rate() {
        assert_eq!(pause_for(50.0, 1), MIN_CYCLE, "one database: read once per cycle");
        assert_eq!(pause_for(50.0, 10), MIN_CYCLE / 10);
        assert_eq!(pause_for(50.0, 10_000), Duration::from_millis(20), "many: the rate bounds it");
        assert_eq!(pause_for(50.0, 0), MIN_CYCLE);
    }
}
