//! On-change fan-in: one task per CouchShare with strategy `OnChange` (not one per database).
//! It lists its source databases once (a paged `_all_dbs` range read on the prefix, or the
//! selected CouchUsers' databases), then follows `_db_updates`, and replicates a database by a
//! one-shot `POST /_replicate` when the feed says it changed — at most `maxConcurrent` at once,
//! each queued once however many changes arrive ([`FanInQueue`](crate::plan::onchange::FanInQueue)).
//!
//! Restarts and outages: the feed position and the sources not yet replicated are kept in a
//! checkpoint, `_local/couchshare-onchange-<share uid>` in the target database (a `_local`
//! document never replicates). A new task resumes the feed from there and replicates what the
//! checkpoint lists; without a checkpoint (or one written while more than
//! [`CHECKPOINT_PENDING_MAX`](spec::CHECKPOINT_PENDING_MAX) sources were not replicated yet), or when CouchDB refuses its
//! position, every source is replicated once (CouchDB's own replication checkpoints make that read only what is new).
//! While `_db_updates` cannot be read — a cluster just finished, a server without
//! `_global_changes`, pouchdb-server — new and deleted sources come from an `_all_dbs` diff every
//! few seconds instead (see `db_events`), every source is replicated once per resync, and the
//! status says so; when the feed is back, one full pass catches up.
//!
//! The task publishes counts for the share's status, and requeues the share when they cross a
//! line the conditions show (failing or not, first full sync) or, at most every
//! [`STATUS_EVERY`](spec::STATUS_EVERY), when they changed.
//!
//! The parts: `spec` (what an engine is started with, what it shares with the reconciler),
//! `engines` (the engines of this process, by share), `sources` (which databases, listed
//! how), `task` (one engine's run: follow, replicate, publish), `checkpoint` (where a task
//! resumes from).

mod checkpoint;
mod engines;
mod sources;
mod spec;
mod task;

pub use engines::Engines;
pub use spec::{EngineSpec, Membership};
