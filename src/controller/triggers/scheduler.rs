//! A short-lived cache of `_scheduler/docs` reads, per server and replicator database: one
//! paged read serves every share reconciled within [`SCHEDULER_TTL`].
//!
//! Each key has its own lock, held across its read so that shares asking at once for the same
//! key share one read; the map's lock is held only to find a key's slot, never across I/O, so
//! one slow server never stalls the shares of another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::couch::{CouchClient, CouchError, ReplicationStatus};

/// How long one `_scheduler/docs` read serves every share on the same replicator database.
pub const SCHEDULER_TTL: Duration = Duration::from_secs(1);

/// One read and when it was made.
type Read = (Instant, Arc<Vec<ReplicationStatus>>);

/// The last read of each server and replicator database.
#[derive(Default)]
pub struct SchedulerCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Read>>>>>,
}

impl SchedulerCache {
    /// The replication states of `replicator` on `server` (its URL), read at most once per TTL.
    pub async fn statuses(
        &self,
        server: &str,
        couch: &CouchClient,
        replicator: &str,
    ) -> Result<Arc<Vec<ReplicationStatus>>, CouchError> {
        let slot = self.slot(&format!("{server}|{replicator}"));
        let mut last = slot.lock().await;
        if let Some((at, statuses)) = last.as_ref()
            && at.elapsed() < SCHEDULER_TTL
        {
            return Ok(statuses.clone());
        }
        let statuses = Arc::new(couch.replication_statuses(replicator).await?);
        *last = Some((Instant::now(), statuses.clone()));
        Ok(statuses)
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Read>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_being_read_does_not_block_another_key() {
        let cache = SchedulerCache::default();
        let slow = cache.slot("http://slow|_replicator");
        let _reading = slow.lock().await;
        // Another key's slot is free while the slow one is held across its read.
        let other = cache.slot("http://fast|_replicator");
        assert!(other.try_lock().is_ok());
        assert!(cache.slot("http://slow|_replicator").try_lock().is_err());
    }
}
