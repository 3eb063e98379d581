//! What each share's last pass in this process wrote of its replications (each document's id and
//! state), ahead of the shares' store. The replicator feed and the scheduler watch do not wake a
//! share whose status already shows what they read; the store lags a status write by its watch
//! event, so a feed row arriving just after a pass would otherwise find the status behind and
//! wake the share for nothing.

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{CouchShare, CouchShareStatus, ReplicationStatus};
use crate::controller::shared::last_pass::LastPasses;

/// Per share: the replications its last successful pass wrote into its status.
#[derive(Default, Clone)]
pub struct Shown(LastPasses<CouchShare, Vec<ReplicationStatus>>);

impl Shown {
    /// Records what a pass of `share` wrote (`None`: a pass that failed, or the share's
    /// deletion: the store is asked again).
    pub fn record(&self, share: &CouchShare, replications: Option<&[ReplicationStatus]>) {
        // Only what the triggers compare: the id and the state of each document.
        let kept = replications.map(|r| {
            r.iter()
                .map(|r| ReplicationStatus { id: r.id.clone(), state: r.state.clone(), ..Default::default() })
                .collect()
        });
        self.0.record(share, kept);
    }

    /// The status the triggers compare against: the replications the last pass wrote, or the
    /// stored status when no pass of this process recorded any.
    pub fn status(&self, shares: &Store<CouchShare>, share: &ObjectRef<CouchShare>) -> Option<CouchShareStatus> {
        match self.0.get(share) {
            Some(replications) => Some(CouchShareStatus { replications, ..Default::default() }),
            None => shares.get(share).and_then(|s| s.status.clone()),
        }
    }
}
