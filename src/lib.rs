//! couchshare: CouchDB databases, users, permissions and replication shares as
//! Kubernetes custom resources.
//!
//! The seams: [`api`] holds the CRD types, [`couch`] speaks HTTP to CouchDB and
//! knows nothing of Kubernetes, [`plan`] is pure (spec + observed state → steps).

pub mod api;
pub mod backup;
pub mod cli;
pub mod controller;
pub mod couch;
pub mod plan;
pub mod preview;
