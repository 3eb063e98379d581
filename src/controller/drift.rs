//! Fast drift detection: one task per CouchServer follows CouchDB's `_db_updates` feed and
//! requeues the CouchDatabase that owns a database someone created or deleted behind our
//! back. The periodic resync stays the safety net (and the only path on servers without
//! `_db_updates`, and for `_security` edits, which the feed does not report).

use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::backoff::delay;
use super::context::Context;
use super::keys::ServerKey;
use super::servers::server_key;
use super::tasks::{Task, server_exists};
use crate::api::{CouchDatabase, CouchServer};
use crate::couch::{CouchClient, DbUpdatesQuery, FeedMode};

/// Where database events turn into reconcile requests.
pub type DatabaseTrigger = UnboundedSender<ObjectRef<CouchDatabase>>;

/// Makes sure a follower runs for `server` (one per server and client; a new admin Secret or
/// URL replaces it).
pub fn follow(ctx: &Context, server: &CouchServer, couch: CouchClient) {
    let Some(trigger) = ctx.database_trigger.clone() else { return };
    let server_ref = ServerKey::of(server);
    let databases = ctx.stores.databases.clone();
    let ledger = ctx.ledger.clone();
    let servers = ctx.stores.servers.clone();
    ctx.tasks.keep(Task::Follower, server, move || {
        tokio::spawn(async move {
            let mut since = Value::String("now".into());
            let mut failures = 0u32;
            loop {
                if !server_exists(&servers, &server_ref) {
                    return;
                }
                let query = DbUpdatesQuery {
                    feed: FeedMode::Longpoll,
                    since: Some(since.clone()),
                    timeout: Some(Duration::from_secs(25)),
                };
                match couch.db_updates(&query).await {
                    Ok(updates) => {
                        failures = 0;
                        for update in &updates.results {
                            if !matches!(update.kind.as_str(), "deleted" | "created") {
                                continue;
                            }
                            // The creation of a database this process just created is not drift.
                            if update.kind == "created" && ledger.created_here(&server_ref, &update.db_name) {
                                continue;
                            }
                            for db in databases.state() {
                                if server_key(db.as_ref(), &db.spec.server_ref) == server_ref
                                    && db.couch_name() == update.db_name
                                {
                                    tracing::debug!(database = %update.db_name, kind = %update.kind, "database event; requeueing");
                                    let _ = trigger.send(ObjectRef::from_obj(db.as_ref()));
                                }
                            }
                        }
                        since = updates.last_seq;
                    }
                    Err(crate::couch::CouchError::NotSupported { .. }) => {
                        tracing::info!("server has no _db_updates; drift is found by the periodic resync only");
                        return;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::debug!(error = %e, "_db_updates failed; retrying");
                        let pause = delay(Duration::from_millis(500), Duration::from_secs(32), failures.saturating_add(1));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        })
    });
}
