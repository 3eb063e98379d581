//! What every reconciler shares and nothing kind-specific.

pub(crate) mod backoff;
pub(crate) mod changed;
pub(crate) mod clients;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod finalize;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod leader;
pub(crate) mod metrics;
pub(crate) mod reflectors;

pub(crate) mod requeues;
pub(crate) mod state_metrics;
pub(crate) mod status;
pub(crate) mod tail;
pub(crate) mod tasks;
pub(crate) mod watches;
pub(crate) mod wiring;

pub(crate) use keys::ServerKey;
