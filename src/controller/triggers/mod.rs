//! What wakes a reconciler from outside its kind's Kubernetes watch.

pub(crate) mod audit;
pub(crate) mod db_events;
pub(crate) mod drift;
pub(crate) mod membership;
pub(crate) mod membership_views;
pub(crate) mod own_writes;
pub(crate) mod replicator_feed;
pub(crate) mod scheduler;
pub(crate) mod scheduler_watch;
pub(crate) mod shown;
pub(crate) mod users_feed;
pub(crate) mod wakeups;
