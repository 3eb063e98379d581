//! `--fan-in`: N per-user databases (made as the app makes them: `q=1`, one document each,
//! no `_users` documents — hashing 10,000 passwords would measure PBKDF2, not replication)
//! replicated into one main database, two ways in the same run on the same server:
//!
//! - **baseline**: what the seed's author does, one continuous `_replicator` document per
//!   database (CouchDB runs `replicator/max_jobs` of them and rotates the rest);
//! - **ours**: one CouchShare, `source.perUserDatabases` with `strategy: OnChange`.
//!
//! For each: time to the first full sync, CouchDB requests per second and CPU while idle and
//! under the write load (1% of the databases written per minute, by default), p50/p99 lag
//! from a write to its arrival in the main database, peak replication jobs
//! (`_scheduler/jobs`), and for ours the operator's peak RSS. The bench's own requests are
//! counted and taken off CouchDB's request figures.

mod drive;
mod measure;
mod report;
mod setup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use drive::run;
pub use report::report;
pub use setup::{jitter_before, restore_jitter};

/// What one way of replicating measured.
#[derive(Debug, Default, Clone)]
pub struct Way {
    pub first_full_sync: Option<Duration>,
    pub idle_rps: Option<f64>,
    pub idle_cpu: Option<f64>,
    pub load_rps: Option<f64>,
    pub load_cpu: Option<f64>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub arrived: usize,
    pub written: usize,
    pub peak_jobs: usize,
    pub peak_rss_mib: Option<f64>,
    /// The operator's CouchDB calls during the idle window, by call.
    pub idle_calls: crate::metrics::Counts,
}

/// Requests the bench itself made to CouchDB (taken off CouchDB's count).
static OWN_REQUESTS: AtomicU64 = AtomicU64::new(0);

fn own(n: u64) {
    OWN_REQUESTS.fetch_add(n, Ordering::Relaxed);
}

fn source_name(tag: &str, i: usize) -> String {
    format!("op-{tag}-userdb-{}", hex::encode(format!("user{i:06}")))
}
