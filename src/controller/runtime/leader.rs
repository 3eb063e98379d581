//! Leader election on a `coordination.k8s.io` Lease, so two replicas are safe: only the
//! leader runs the controllers; a standby takes over when the leader's lease expires.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch::Receiver;
use tokio::task::JoinHandle;

use super::error::Error;

/// Where the Lease is and who this process is.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This process's identity (the Pod name in a cluster).
    pub identity: String,
    /// Seconds a lease lasts without renewal.
    pub lease_seconds: u64,
}

/// Held leadership; dropping it releases the Lease.
pub struct Leadership {
    changes: Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Waits until this process holds the Lease.
pub async fn acquire(client: Client, config: &LeaderElection) -> Result<Leadership, Error> {
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_seconds)
        .with_grace(config.lease_seconds.div_ceil(6).max(1))
        .build()
        .await
        .map_err(|e| Error::Leadership(e.to_string()))?;
    let (mut changes, task) = manager.watch().await;
    tracing::info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "waiting for leadership");
    while !*changes.borrow_and_update() {
        if changes.changed().await.is_err() {
            return Err(Error::Leadership("the lease watcher stopped".into()));
        }
    }
    tracing::info!(identity = %config.identity, "became the leader");
    Ok(Leadership { changes, task })
}

impl Leadership {
    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        loop {
            if !*self.changes.borrow_and_update() {
                return;
            }
            if self.changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Releases the Lease so a standby takes over at once.
    pub async fn release(self) {
        drop(self.changes);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
