//! Fast drift detection: one task per CouchServer follows the server's database events
//! (`_db_updates`, or an `_all_dbs` diff while that feed cannot be read; see `db_events`) and
//! requeues the CouchDatabase that owns a database someone created or deleted behind our back.
//! It records which source it uses and requeues its CouchServer when that changes, for the
//! status, and when it stops or starts reaching the server (the server's Ready follows CouchDB
//! going away and coming back without waiting for the resync). The periodic resync stays the safety net (and the only path for `_security` edits,
//! which no feed reports).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::db_events::{DbEvents, EventSource, position};
use crate::api::{CouchDatabase, CouchServer};
use crate::controller::runtime::backoff::delay;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::tasks::{Task, server_exists};
use crate::controller::shared::ledger::Ledger;
use crate::controller::shared::servers::server_key;
use crate::couch::CouchClient;

/// Makes sure a follower runs for `server` (one per server and client; a new admin Secret or
/// URL replaces it).
pub fn follow(ctx: &Context, server: &CouchServer, couch: CouchClient) {
    let Some(trigger) = ctx.database_trigger.clone() else { return };
    let server_trigger = ctx.server_trigger.clone();
    let server_ref = ServerKey::of(server);
    let this_server = ObjectRef::from_obj(server);
    let databases = ctx.stores.databases.clone();
    let ledger = ctx.ledger.clone();
    let servers = ctx.stores.servers.clone();
    let feeds = ctx.server_feeds.clone();
    let metrics = ctx.metrics.clone();
    ctx.tasks.keep(Task::Follower, server, couch.instance(), move || {
        tokio::spawn(async move {
            // Whether the feed answers is known at once, for the status: not after a first wait.
            let (since, source) = match position(&couch).await {
                Ok(Some(p)) => (Some(p), Some(EventSource::Feed)),
                Ok(None) => {
                    tracing::info!(server = %server_ref, "no _db_updates; listing the databases instead until it answers");
                    (None, Some(EventSource::Listing))
                }
                Err(_) => (Some(json!("now")), None),
            };
            let mut events = DbEvents::new(couch, String::new(), since, feeds.nudge(&server_ref));
            let mut failures = 0u32;
            let mut missing = Missing::default();
            let note_source = |source: EventSource| {
                metrics.database_events(&server_ref.namespace, &server_ref.name, source.name());
                if feeds.set_source(&server_ref, source)
                    && let Some(t) = &server_trigger
                {
                    let _ = t.send(this_server.clone());
                }
            };
            if let Some(source) = source {
                note_source(source);
            }
            loop {
                if !server_exists(&servers, &server_ref) {
                    return;
                }
                match events.next().await {
                    Ok(batch) => {
                        // Back after failing to reach it: the server is looked at again now.
                        if failures > 0
                            && let Some(t) = &server_trigger
                        {
                            let _ = t.send(this_server.clone());
                        }
                        failures = 0;
                        note_source(batch.source);
                        // A listing also shows managed databases gone between two listings.
                        if let Some(listed) = &batch.listed {
                            for db in missing.newly_missing(&databases, &ledger, &server_ref, listed) {
                                ledger.stale(&server_ref, db.couch_name());
                                tracing::debug!(database = %db.couch_name(), "managed database not listed; requeueing");
                                let _ = trigger.send(ObjectRef::from_obj(db.as_ref()));
                            }
                        }
                        for update in &batch.updates {
                            if !matches!(update.kind.as_str(), "deleted" | "created") {
                                continue;
                            }
                            // The creation of a database this process just created is not drift.
                            if update.kind == "created" && ledger.created_here(&server_ref, &update.db_name) {
                                continue;
                            }
                            // Its next pass reads everything again (see `ledger`).
                            ledger.stale(&server_ref, &update.db_name);
                            for db in databases.state() {
                                if server_key(db.as_ref(), &db.spec.server_ref) == server_ref
                                    && db.couch_name() == update.db_name
                                {
                                    tracing::debug!(database = %update.db_name, kind = %update.kind, source = batch.source.name(), "database event; requeueing");
                                    let _ = trigger.send(ObjectRef::from_obj(db.as_ref()));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::debug!(error = %e, "reading database events failed; retrying");
                        // The follower is the first to see the server go away: its CouchServer
                        // is looked at now (and says Unreachable), not at its resync.
                        if failures == 1
                            && let Some(t) = &server_trigger
                        {
                            let _ = t.send(this_server.clone());
                        }
                        let pause = delay(Duration::from_millis(500), Duration::from_secs(32), failures.saturating_add(1));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        })
    });
}

/// The managed databases a listing did not show, each reported once until it is listed again
/// or its reconciler has created it since (a reconciler that cannot recreate one is not
/// requeued on every listing: it backs off; one recreated and deleted again between two
/// listings is reported again).
#[derive(Default)]
struct Missing(BTreeSet<String>);

impl Missing {
    /// The CouchDatabases of `server` whose database `listed` lacks and that were not reported
    /// missing since they were last listed or created by this process.
    fn newly_missing(
        &mut self,
        databases: &Store<CouchDatabase>,
        ledger: &Ledger,
        server: &ServerKey,
        listed: &BTreeSet<String>,
    ) -> Vec<Arc<CouchDatabase>> {
        self.0.retain(|name| !listed.contains(name));
        let ours = databases.state().into_iter().filter(|db| server_key(db.as_ref(), &db.spec.server_ref) == *server);
        ours.filter(|db| {
            let name = db.couch_name();
            !listed.contains(name) && (self.0.insert(name.to_string()) || ledger.created_here(server, name))
        })
        .collect()
    }
}
