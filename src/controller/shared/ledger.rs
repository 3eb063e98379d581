//! The `_security` ledger: what each managed database's `_security` was last brought to in this
//! process, and which databases this process is creating.
//!
//! **One writer.** Only the database reconciler records (and forgets) an entry: it is the one
//! writer of a managed database's `_security`, and records what it wrote right after writing it.
//! Grants check themselves against the ledger instead of reading `_security` again, and the
//! audit compares CouchDB's `_security` with it; neither writes it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::controller::runtime::keys::ServerKey;
use crate::couch::Security;

/// The `_security` of each managed database, by server and database; and the creations in flight.
#[derive(Default)]
pub struct Ledger {
    security: Mutex<HashMap<(ServerKey, String), Security>>,
    created_here: Mutex<HashSet<(ServerKey, String)>>,
}

impl Ledger {
    /// Records the `_security` the database reconciler left `database` on `server` with.
    pub fn record(&self, server: &ServerKey, database: &str, security: Security) {
        self.security.lock().unwrap_or_else(|e| e.into_inner()).insert((server.clone(), database.into()), security);
    }

    /// The `_security` recorded for `database` on `server`, if its reconciler ran in this process.
    pub fn recorded(&self, server: &ServerKey, database: &str) -> Option<Security> {
        self.security.lock().unwrap_or_else(|e| e.into_inner()).get(&(server.clone(), database.into())).cloned()
    }

    /// Forgets the `_security` of a database (deleted, or its reconcile failed).
    pub fn forget(&self, server: &ServerKey, database: &str) {
        self.security.lock().unwrap_or_else(|e| e.into_inner()).remove(&(server.clone(), database.into()));
    }

    /// Notes that this process is creating `database` on `server`: the `_db_updates` creation
    /// event that follows is ours, not drift.
    pub fn note_created(&self, server: &ServerKey, database: &str) {
        self.created_here.lock().unwrap_or_else(|e| e.into_inner()).insert((server.clone(), database.into()));
    }

    /// Whether `database` on `server` was created by this process; takes the note back.
    pub fn created_here(&self, server: &ServerKey, database: &str) -> bool {
        self.created_here.lock().unwrap_or_else(|e| e.into_inner()).remove(&(server.clone(), database.into()))
    }
}
