//! The `_security` ledger: what each managed database's `_security` was last brought to in this
//! process, and which databases this process is creating.
//!
//! **One writer.** Only the database reconciler records (and forgets) an entry: it is the one
//! writer of a managed database's `_security`, and records what it wrote right after writing it.
//! Grants check themselves against the ledger instead of reading `_security` again, and the
//! audit compares CouchDB's `_security` with it; neither writes it.
//!
//! **What a pass need not read again.** The database reconciler also notes, after a pass that
//! read everything, the owner record it left (`seen`). Its next passes within half a resync trust
//! that note and the recorded `_security` instead of reading both again: they read only the
//! database's info, which also says whether it still exists. What could make the note wrong is
//! announced, and makes it stale: the database-events follower on a database created or deleted
//! by someone else, the `_security` audit on a difference. The resync's pass, later than half a
//! resync, reads the owner record again, and `_security` too unless the audit read it and found
//! it as recorded within the last resync ([`Seen::audited_within`]) and the owner record is as
//! the note says.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controller::runtime::keys::ServerKey;
use crate::couch::Security;
use crate::plan::ownership::Owner;

/// What a database pass that read everything left: the owner record and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The owner record's owner.
    pub owner: Owner,
    /// The owner record's revision.
    pub rev: Option<String>,
    /// When the pass read everything.
    at: Instant,
    /// When the `_security` audit last found `_security` as recorded, since that pass.
    audited: Option<Instant>,
}

impl Seen {
    /// How long ago the pass read everything.
    pub fn age(&self) -> Duration {
        self.at.elapsed()
    }

    /// Whether the audit found `_security` as recorded less than `max_age` ago.
    pub fn audited_within(&self, max_age: Duration) -> bool {
        self.audited.is_some_and(|at| at.elapsed() < max_age)
    }
}

/// The `_security` of each managed database, by server and database; and the creations in flight.
#[derive(Default)]
pub struct Ledger {
    security: Mutex<HashMap<(ServerKey, String), Security>>,
    created_here: Mutex<HashSet<(ServerKey, String)>>,
    seen: Mutex<HashMap<(ServerKey, String), Seen>>,
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

    /// Notes what a database pass that read everything left: `owner`'s record at `rev`.
    pub fn saw(&self, server: &ServerKey, database: &str, owner: Owner, rev: Option<String>) {
        let seen = Seen { owner, rev, at: Instant::now(), audited: None };
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert((server.clone(), database.into()), seen);
    }

    /// What the last pass that read everything saw, if it was less than `max_age` ago, nothing
    /// made it stale since, and the `_security` it left is recorded.
    pub fn seen(&self, server: &ServerKey, database: &str, max_age: Duration) -> Option<(Seen, Security)> {
        let key = (server.clone(), database.to_string());
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned()?;
        if seen.at.elapsed() >= max_age {
            return None;
        }
        Some((seen, self.recorded(server, database)?))
    }

    /// The audit read `database`'s `_security` and found it as recorded.
    pub fn audited(&self, server: &ServerKey, database: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(&(server.clone(), database.to_string())) {
            s.audited = Some(Instant::now());
        }
    }

    /// A trigger says CouchDB changed `database` (created or deleted by someone else, or its
    /// `_security` differs): its next pass reads everything.
    pub fn stale(&self, server: &ServerKey, database: &str) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).remove(&(server.clone(), database.into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_trusts_what_it_saw_until_it_is_old_stale_or_its_security_forgotten() {
        let ledger = Ledger::default();
        let server = ServerKey::new("ns", "main");
        let owner = Owner { kind: "CouchDatabase".into(), namespace: "ns".into(), name: "a".into(), uid: "u".into() };
        let long = Duration::from_secs(60);
        ledger.saw(&server, "a", owner.clone(), Some("0-1".into()));
        assert!(ledger.seen(&server, "a", long).is_none(), "no _security recorded: read everything");
        ledger.record(&server, "a", Security::default());
        let (seen, _) = ledger.seen(&server, "a", long).expect("trusted");
        assert_eq!((seen.owner.clone(), seen.rev.as_deref()), (owner.clone(), Some("0-1")));
        assert!(ledger.seen(&server, "a", Duration::ZERO).is_none(), "older than max_age");
        assert!(ledger.seen(&server, "a", Duration::MAX).is_some_and(|(s, _)| s.age() < long), "known, at any age");
        assert!(!seen.audited_within(long), "not audited yet");
        ledger.audited(&server, "a");
        let audited = |max_age| ledger.seen(&server, "a", long).is_some_and(|(s, _)| s.audited_within(max_age));
        assert!(audited(long), "the audit found it as recorded");
        assert!(!audited(Duration::ZERO), "too long ago");
        assert!(ledger.seen(&server, "b", long).is_none(), "another database");
        ledger.stale(&server, "a");
        assert!(ledger.seen(&server, "a", long).is_none(), "a trigger made it stale");
        ledger.saw(&server, "a", owner, None);
        ledger.forget(&server, "a");
        assert!(ledger.seen(&server, "a", long).is_none(), "its _security forgotten");
    }
}
