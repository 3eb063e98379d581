//! The per-server task keeper: one `_db_updates` follower, one `_security` auditor and, on a
//! cluster, one membership watch per CouchServer, each replaced when its server's URL or UID
//! changes or its client is built again (a rotated admin Secret or CA), and ended when the
//! server is gone.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::task::JoinHandle;

use super::keys::ServerKey;
use crate::api::CouchServer;

/// A running task and what it was started for (URL and server UID; the client's generation).
type Kept = (String, u64, JoinHandle<()>);

/// Which per-server task.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Task {
    /// The `_db_updates` follower (see `drift`).
    Follower,
    /// The `_security` auditor (see `audit`).
    Auditor,
    /// The membership watch of a cluster (see `membership`).
    Membership,
    /// The `_users` follower (see `users_feed`).
    Users,
}

/// The per-server tasks running in this process.
#[derive(Default)]
pub struct Tasks {
    running: Mutex<HashMap<(Task, ServerKey), Kept>>,
}

impl Tasks {
    /// Keeps one `task` for `server`: a running one started for the same URL and UID, with the
    /// same client or a newer one (`client`: [`crate::couch::CouchClient::instance`] of the one
    /// `start()` uses), stays; one started for another URL or UID, with an older client, or
    /// finished, is replaced by `start()`. A task keeps the client it started with, so a client
    /// built again for new credentials must replace it: the old one would fail every read (and
    /// count towards CouchDB's lockout).
    pub fn keep(&self, task: Task, server: &CouchServer, client: u64, start: impl FnOnce() -> JoinHandle<()>) {
        let key = (task, ServerKey::of(server));
        let fingerprint = format!("{}|{}", server.spec.url, server.uid().unwrap_or_default());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fp, generation, handle)) = running.get(&key) {
            if *fp == fingerprint && *generation >= client && !handle.is_finished() {
                return;
            }
            handle.abort();
        }
        running.insert(key, (fingerprint, client, start()));
    }

    /// Whether `task` runs for `server`.
    pub fn running(&self, task: Task, server: &ServerKey) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(&(task, server.clone())).is_some_and(|(_, _, handle)| !handle.is_finished())
    }
}

/// Whether the CouchServer `key` still exists: a per-server task ends when it does not.
pub fn server_exists(servers: &Store<CouchServer>, key: &ServerKey) -> bool {
    servers.state().iter().any(|s| ServerKey::of(s) == *key)
}
