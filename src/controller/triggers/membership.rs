//! The CouchServer's trigger for its cluster's membership. Nothing in CouchDB announces a node
//! leaving, coming back or going silent, so one task per clustered server reads `_membership`
//! and asks each connected node for one configuration value, every 30 s (every 10 s while a
//! node is missing or silent), and wakes the CouchServer only when what it read differs from
//! what the server's last pass planned from. The server's reconciler itself keeps no timer but
//! the resync. The cost is 1 + nodes reads per interval per cluster, where a pass of the server
//! costs about 5 + 3 × nodes and a status write.

use kube::runtime::reflector::ObjectRef;

use super::membership_views::MembershipWatch;
use crate::api::CouchServer;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::tasks::{Task, server_exists};
use crate::couch::{CouchClient, CouchError};
use crate::plan::cluster::{MembershipView, membership_interval, membership_wakes};

/// Makes sure a watch runs for `server` while its last pass found a cluster (one per server and
/// client, like the database-events follower). The task ends when the server is deleted or its
/// last pass found a single node.
pub fn watch(ctx: &Context, server: &CouchServer, couch: CouchClient) {
    let Some(trigger) = ctx.server_trigger.clone() else { return };
    let key = ServerKey::of(server);
    let planned = ctx.membership.planned.clone();
    let Some(first) = MembershipWatch::view(&planned, &key) else { return };
    let this_server = ObjectRef::from_obj(server);
    let servers = ctx.stores.servers.clone();
    ctx.tasks.keep(Task::Membership, server, couch.instance(), move || {
        tokio::spawn(async move {
            let mut last = first;
            let mut woken_for: Option<MembershipView> = None;
            loop {
                tokio::time::sleep(membership_interval(&last)).await;
                let seen = MembershipWatch::view(&planned, &key);
                if seen.is_none() || !server_exists(&servers, &key) {
                    return;
                }
                // An unreachable server is the database-events follower's to report.
                let read = match read(&couch).await {
                    Ok(read) => read,
                    Err(e) => {
                        tracing::debug!(server = %key, error = %e, "reading the membership failed");
                        continue;
                    }
                };
                if membership_wakes(seen.as_ref(), &read, woken_for.as_ref()) {
                    tracing::info!(server = %key, degraded = read.degraded(), "cluster membership moved; looking at the server");
                    let _ = trigger.send(this_server.clone());
                    woken_for = Some(read.clone());
                }
                last = read;
            }
        })
    });
}

/// `_membership`, and which connected nodes answer a request routed to them: `[couchdb] uuid`
/// of each, the first of the three values the server's pass reads (`observe_cluster`), so a node
/// that is silent to one is silent to the other.
async fn read(couch: &CouchClient) -> Result<MembershipView, CouchError> {
    let membership = couch.membership().await?;
    let mut answering = Vec::new();
    for node in &membership.all_nodes {
        match couch.config_get(node, "couchdb", "uuid").await {
            Ok(_) => answering.push(node.clone()),
            Err(e @ CouchError::Transport { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(MembershipView::new(membership.cluster_nodes, membership.all_nodes, answering))
}
