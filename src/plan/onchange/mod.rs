//! The queue of an on-change fan-in: which source databases to replicate next, at most `k` at
//! once, each queued once however many changes arrive (coalescing), a failing one retried with
//! its own backoff without holding up the others, and the counts the share's status shows.
//!
//! Pure: the caller passes the time in, and runs the replications the queue hands out.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

mod progress;
#[cfg(test)]
mod tests;

/// Where one source database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing to do until it changes.
    Idle,
    /// Waiting in the queue.
    Queued,
    /// A replication runs; `again` when it changed meanwhile (replicated once more after).
    Running { again: bool },
    /// Its last replication failed; queued again at this time.
    Retrying(Instant),
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// The earliest change not yet replicated, when one was seen.
    seen: Option<Instant>,
    /// A change seen while running: the next run's `seen`.
    seen_again: Option<Instant>,
    /// Replicated at least once (or known to be, from a checkpoint).
    synced: bool,
    failures: u32,
    error: Option<String>,
    /// Deleted while its replication ran: forgotten when it ends.
    gone: bool,
    /// The source sequence (its leading number) its last replication got to.
    replicated: Option<u64>,
}

impl Entry {
    fn new(synced: bool) -> Self {
        Entry {
            state: State::Idle,
            seen: None,
            seen_again: None,
            synced,
            failures: 0,
            error: None,
            gone: false,
            replicated: None,
        }
    }
}

/// How a replication ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Replicated up to what it read.
    Done,
    /// Nothing was new since the last run. Clears nothing: a source whose last changes the
    /// target refused stays failing until a run writes its changes.
    Unchanged,
    /// The source database does not exist (any more).
    SourceGone,
    /// Failed, with CouchDB's error.
    Failed(String),
}

/// The counts of [`crate::api::OnChangeStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub discovered: usize,
    pub in_sync: usize,
    pub behind: usize,
    pub failing: usize,
    pub running: usize,
    pub queued: usize,
}

/// One failing source, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub database: String,
    pub failures: u32,
    pub error: String,
}

/// The leading number of a CouchDB sequence (`"12-g1AAAA…"` → 12; pouchdb-server's plain
/// integers as they are). A database's sequences only grow, so the same number means no
/// document changed (a `_local` write, such as the replicator's own checkpoint, changes none).
pub fn seq_number(seq: &serde_json::Value) -> Option<u64> {
    match seq {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.split('-').next()?.parse().ok(),
        _ => None,
    }
}

/// First retry after a failure; doubled per further failure up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest a failing source waits between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// The delay before attempt `failures + 1`.
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    RETRY_BASE.saturating_mul(factor).min(RETRY_MAX)
}

/// The on-change queue of one share.
#[derive(Debug)]
pub struct FanInQueue {
    k: usize,
    dbs: HashMap<String, Entry>,
    queue: VecDeque<String>,
    retries: BTreeSet<(Instant, String)>,
    running: usize,
    failing: usize,
    unsynced: usize,
    /// Bumped by every change of state, so a caller can tell whether anything changed
    /// without comparing the whole queue.
    version: u64,
}

impl FanInQueue {
    /// An empty queue running at most `k` (at least 1) replications at once.
    pub fn new(k: usize) -> Self {
        FanInQueue {
            k: k.max(1),
            dbs: HashMap::new(),
            queue: VecDeque::new(),
            retries: BTreeSet::new(),
            running: 0,
            failing: 0,
            unsynced: 0,
            version: 0,
        }
    }

    /// The most replications handed out at once.
    pub fn limit(&self) -> usize {
        self.k
    }

    /// Whether `db` is known.
    pub fn contains(&self, db: &str) -> bool {
        self.dbs.get(db).is_some_and(|e| !e.gone)
    }

    /// Notes a source found by listing. `synced`: known to be replicated up to date (a
    /// checkpoint says so); otherwise it is queued for one replication.
    pub fn discover(&mut self, db: &str, synced: bool) {
        self.version += 1;
        if self.contains(db) {
            return;
        }
        let revived = self.dbs.contains_key(db);
        self.insert(db, synced);
        if !synced && !revived {
            self.enqueue(db, None);
        }
    }

    fn insert(&mut self, db: &str, synced: bool) {
        // Deleted while its replication ran and created again: replicated once more after.
        if let Some(e) = self.dbs.get_mut(db)
            && e.gone
        {
            e.gone = false;
            e.state = State::Running { again: true };
            return;
        }
        if !synced {
            self.unsynced += 1;
        }
        self.dbs.insert(db.to_string(), Entry::new(synced));
    }

    fn forget_counts(&mut self, e: &Entry) {
        if !e.synced {
            self.unsynced -= 1;
        }
        if e.failures > 0 {
            self.failing -= 1;
        }
    }

    fn enqueue(&mut self, db: &str, seen: Option<Instant>) {
        if let Some(e) = self.dbs.get_mut(db) {
            e.state = State::Queued;
            e.seen = seen;
            self.queue.push_back(db.to_string());
        }
    }

    /// `db` changed (or was created) at `now`: queued unless it already is, or replicated once
    /// more after the run in progress. Returns whether it was queued now.
    pub fn changed(&mut self, db: &str, now: Instant) -> bool {
        self.version += 1;
        if !self.contains(db) {
            let revived = self.dbs.contains_key(db);
            self.insert(db, false);
            if revived {
                if let Some(e) = self.dbs.get_mut(db) {
                    e.seen_again = Some(now);
                }
                return false;
            }
            self.enqueue(db, Some(now));
            return true;
        }
        let Some(e) = self.dbs.get_mut(db) else { return false };
        match e.state {
            State::Idle => {
                self.enqueue(db, Some(now));
                true
            }
            State::Queued | State::Retrying(_) => {
                e.seen = Some(e.seen.map_or(now, |s| s.min(now)));
                false
            }
            State::Running { .. } => {
                e.state = State::Running { again: true };
                e.seen_again = Some(e.seen_again.map_or(now, |s| s.min(now)));
                false
            }
        }
    }

    /// `db` is to be replicated once more, though no change of it was seen (a full pass after
    /// the feed was down, or without a feed): queued unless it already is, with no lag sample.
    pub fn recheck(&mut self, db: &str) {
        self.version += 1;
        if !self.contains(db) {
            self.discover(db, false);
            return;
        }
        match self.dbs.get_mut(db).map(|e| e.state) {
            Some(State::Idle) => self.enqueue(db, None),
            Some(State::Running { .. }) => {
                if let Some(e) = self.dbs.get_mut(db) {
                    e.state = State::Running { again: true };
                }
            }
            _ => {}
        }
    }

    /// `db` was deleted: forgotten (a run in progress is let finish and then forgotten).
    pub fn deleted(&mut self, db: &str) {
        self.version += 1;
        let Some(e) = self.dbs.get(db).cloned() else { return };
        if let State::Running { .. } = e.state {
            if let Some(e) = self.dbs.get_mut(db) {
                e.gone = true;
            }
            return;
        }
        if let State::Retrying(at) = e.state {
            self.retries.remove(&(at, db.to_string()));
        }
        self.forget_counts(&e);
        self.dbs.remove(db);
    }

    /// The next source to replicate, if fewer than `k` run; marks it running. Failing sources
    /// whose retry time has come are queued first.
    pub fn next(&mut self, now: Instant) -> Option<String> {
        while let Some((at, db)) = self.retries.first().cloned() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            if let Some(e) = self.dbs.get_mut(&db)
                && e.state == State::Retrying(at)
            {
                e.state = State::Queued;
                self.queue.push_back(db);
            }
        }
        if self.running >= self.k {
            return None;
        }
        while let Some(db) = self.queue.pop_front() {
            if let Some(e) = self.dbs.get_mut(&db)
                && e.state == State::Queued
                && !e.gone
            {
                e.state = State::Running { again: false };
                self.running += 1;
                self.version += 1;
                return Some(db);
            }
        }
        None
    }

    /// The replication of `db` ended at `now`. Returns the lag it closed (from the earliest
    /// change it replicated being seen), when a change was seen.
    pub fn finished(&mut self, db: &str, ended: Ended, now: Instant) -> Option<Duration> {
        self.version += 1;
        let e = self.dbs.get(db)?.clone();
        let State::Running { again } = e.state else { return None };
        self.running -= 1;
        if e.gone || ended == Ended::SourceGone {
            self.forget_counts(&e);
            self.dbs.remove(db);
            return None;
        }
        let ended = match ended {
            Ended::Unchanged if e.failures > 0 => Ended::Failed(e.error.clone().unwrap_or_default()),
            Ended::Unchanged => Ended::Done,
            other => other,
        };
        let mut next = e.clone();
        let lag = match ended {
            Ended::Done => {
                if !next.synced {
                    self.unsynced -= 1;
                }
                if next.failures > 0 {
                    self.failing -= 1;
                }
                next.synced = true;
                next.failures = 0;
                next.error = None;
                let lag = next.seen.map(|s| now.saturating_duration_since(s));
                next.seen = None;
                if again {
                    next.state = State::Queued;
                    next.seen = next.seen_again.take();
                    self.queue.push_back(db.to_string());
                } else {
                    next.state = State::Idle;
                }
                lag
            }
            Ended::Failed(error) => {
                if next.failures == 0 {
                    self.failing += 1;
                }
                next.failures = next.failures.saturating_add(1);
                next.error = Some(error);
                if again {
                    next.seen = match (next.seen, next.seen_again.take()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                let at = now + retry_delay(next.failures);
                next.state = State::Retrying(at);
                self.retries.insert((at, db.to_string()));
                None
            }
            Ended::SourceGone | Ended::Unchanged => None,
        };
        self.dbs.insert(db.to_string(), next);
        lag
    }
}
