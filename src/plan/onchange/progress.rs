//! What the queue tells about its progress: the position each source got to, the counts and
//! the failing sources the share's status shows, and what the engine's checkpoint lists as not
//! done.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Counts, Failing, FanInQueue, State};

impl FanInQueue {
    /// Records the source sequence a replication of `db` got to.
    pub fn replicated_to(&mut self, db: &str, seq: Option<u64>) {
        if let Some(e) = self.dbs.get_mut(db)
            && seq.is_some()
        {
            e.replicated = seq;
        }
    }

    /// The source sequence the last replication of `db` got to, when known.
    pub fn replicated(&self, db: &str) -> Option<u64> {
        self.dbs.get(db).and_then(|e| e.replicated)
    }

    /// A number that changes whenever the queue's state does.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the earliest failing source is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// The counts for the status.
    pub fn counts(&self) -> Counts {
        let queued = self.dbs.values().filter(|e| e.state == State::Queued && !e.gone).count();
        let discovered = self.dbs.values().filter(|e| !e.gone).count();
        let in_sync = self.dbs.values().filter(|e| !e.gone && e.synced && e.state == State::Idle).count();
        Counts {
            discovered,
            in_sync,
            behind: discovered - in_sync - self.failing.min(discovered - in_sync),
            failing: self.failing,
            running: self.running,
            queued,
        }
    }

    /// Whether every source has been replicated at least once.
    pub fn all_synced(&self) -> bool {
        self.unsynced == 0
    }

    /// Whether nothing is queued, running or waiting for a retry.
    pub fn quiet(&self) -> bool {
        self.running == 0 && self.retries.is_empty() && self.queue.iter().all(|db| !self.is_queued(db))
    }

    fn is_queued(&self, db: &str) -> bool {
        self.dbs.get(db).is_some_and(|e| e.state == State::Queued && !e.gone)
    }

    /// The `n` sources that failed most often, with their last error.
    pub fn worst(&self, n: usize) -> Vec<Failing> {
        let mut failing: Vec<Failing> = self
            .dbs
            .iter()
            .filter(|(_, e)| e.failures > 0 && !e.gone)
            .map(|(db, e)| Failing {
                database: db.clone(),
                failures: e.failures,
                error: e.error.clone().unwrap_or_default(),
            })
            .collect();
        failing.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.database.cmp(&b.database)));
        failing.truncate(n);
        failing
    }

    /// The sources a restart must replicate again: everything not idle and in sync. With the
    /// feed position, this is the on-change checkpoint.
    pub fn pending(&self) -> BTreeSet<String> {
        self.dbs
            .iter()
            .filter(|(_, e)| !e.gone && (!e.synced || e.state != State::Idle))
            .map(|(db, _)| db.clone())
            .collect()
    }

    /// How many sources [`FanInQueue::pending`] would list, without listing them.
    pub fn pending_count(&self) -> usize {
        self.dbs.values().filter(|e| !e.gone && (!e.synced || e.state != State::Idle)).count()
    }

    /// The sources by state, for tests and the dry run.
    pub fn states(&self) -> BTreeMap<String, &'static str> {
        self.dbs
            .iter()
            .map(|(db, e)| {
                let s = match e.state {
                    State::Idle if e.synced => "in-sync",
                    State::Idle => "behind",
                    State::Queued => "queued",
                    State::Running { .. } => "running",
                    State::Retrying(_) => "failing",
                };
                (db.clone(), s)
            })
            .collect()
    }
}
