//! What each share's last pass in this process wrote of its replications (each document's id and
//! state), ahead of the shares' store. The replicator feed and the scheduler watch do not wake a
//! share whose status already shows what they read; the store lags a status write by its watch
//! event, so a feed row arriving just after a pass would otherwise find the status behind and
//! wake the share for nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{CouchShare, CouchShareStatus, ReplicationStatus};

/// Per share: the replications its last successful pass wrote into its status.
#[derive(Default, Clone)]
pub struct Shown(Arc<Mutex<HashMap<ObjectRef<CouchShare>, Vec<ReplicationStatus>>>>);

impl Shown {
    /// Records what a pass of `share` wrote (`None`: a pass that failed, or the share's
    /// deletion: the store is asked again).
    pub fn record(&self, share: &CouchShare, replications: Option<&[ReplicationStatus]>) {
        let mut shown = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = ObjectRef::from_obj(share);
        match replications {
            // Only what the triggers compare: the id and the state of each document.
            Some(r) => {
                let kept = r
                    .iter()
                    .map(|r| ReplicationStatus { id: r.id.clone(), state: r.state.clone(), ..Default::default() })
                    .collect();
                shown.insert(key, kept);
            }
            None => {
                shown.remove(&key);
            }
        }
    }

    /// The status the triggers compare against: the replications the last pass wrote, or the
    /// stored status when no pass of this process recorded any.
    pub fn status(&self, shares: &Store<CouchShare>, share: &ObjectRef<CouchShare>) -> Option<CouchShareStatus> {
        let recorded = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(share).cloned();
        match recorded {
            Some(replications) => Some(CouchShareStatus { replications, ..Default::default() }),
            None => shares.get(share).and_then(|s| s.status.clone()),
        }
    }
}
