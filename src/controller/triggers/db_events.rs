//! Database events of one server — created, deleted and, from the feed, updated — for the drift
//! follower and the on-change engines: from CouchDB's `_db_updates` while it answers, and from a
//! diff of `_all_dbs` every [`LISTING_EVERY`] while it does not. A cluster just finished answers
//! `_db_updates` with 404 (its `_global_changes` half made by `finish_cluster`, until the server
//! reconciler creates it again), a deployment without `_global_changes` never has it, and
//! pouchdb-server has no such feed at all.
//!
//! Every listing round first asks the feed for its position, so the round that finds it back
//! switches to it with nothing falling between the listing and the feed. A nudge (the server
//! reconciler's, when it has just finished a cluster) makes the next round start at once.
//! [`ServerFeeds`] records which source each server's follower uses, for the CouchServer's
//! status and metrics.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::controller::runtime::keys::ServerKey;
use crate::couch::{CouchClient, CouchError, DbUpdate, DbUpdatesQuery, FeedMode};
use crate::plan::listing::listing_changes;

/// How often the databases are listed while `_db_updates` cannot be read.
pub const LISTING_EVERY: Duration = Duration::from_secs(2);
/// The longpoll wait of the feed.
const FEED_WAIT: Duration = Duration::from_secs(25);

/// Where database events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// CouchDB's `_db_updates` feed.
    Feed,
    /// A diff of `_all_dbs` every [`LISTING_EVERY`].
    Listing,
}

impl EventSource {
    /// How the CouchServer's status and metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            EventSource::Feed => "_db_updates",
            EventSource::Listing => "_all_dbs",
        }
    }
}

/// Events from one wait.
#[derive(Debug)]
pub struct Batch {
    pub updates: Vec<DbUpdate>,
    /// The feed's position after them; `None` while listing.
    pub position: Option<Value>,
    /// Where they came from.
    pub source: EventSource,
    /// While listing: every database listed (a database created and deleted between two
    /// listings makes no event; whoever knows what should exist compares with this).
    pub listed: Option<Arc<BTreeSet<String>>>,
    /// Changes inside databases before these may be missing — the feed is back after a time
    /// without it, or CouchDB refused the old position: whoever needs them makes a full pass.
    pub gap: bool,
}

/// Whether an error means there is no feed to read (rather than a server that failed).
fn feed_missing(e: &CouchError) -> bool {
    matches!(e, CouchError::NotSupported { .. } | CouchError::NotFound { .. })
}

/// The feed's current position.
pub async fn now_seq(couch: &CouchClient) -> Result<Value, CouchError> {
    let query = DbUpdatesQuery { feed: FeedMode::Normal, since: Some(json!("now")), timeout: None };
    Ok(couch.db_updates(&query).await?.last_seq)
}

/// The feed's current position, or `None` when there is no feed to read.
pub async fn position(couch: &CouchClient) -> Result<Option<Value>, CouchError> {
    match now_seq(couch).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if feed_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The events of the databases whose names start with `prefix` (all: `""`).
pub struct DbEvents {
    couch: CouchClient,
    prefix: String,
    since: Option<Value>,
    /// The last listing, while listing.
    known: Option<Arc<BTreeSet<String>>>,
    /// The feed was lost: when it is back, say there is a gap.
    lost: bool,
    nudge: Arc<Notify>,
}

impl DbEvents {
    /// Events after feed position `since`, or (`None`) after a first listing.
    pub fn new(couch: CouchClient, prefix: String, since: Option<Value>, nudge: Arc<Notify>) -> Self {
        DbEvents { couch, prefix, since, known: None, lost: false, nudge }
    }

    /// Waits for the next events: up to [`FEED_WAIT`] on the feed (an empty batch when nothing
    /// happened), one [`LISTING_EVERY`] without it. An error is the server's: retry with backoff.
    pub async fn next(&mut self) -> Result<Batch, CouchError> {
        if let Some(since) = self.since.clone() {
            let query = DbUpdatesQuery { feed: FeedMode::Longpoll, since: Some(since), timeout: Some(FEED_WAIT) };
            match self.couch.db_updates(&query).await {
                Ok(u) => {
                    self.since = Some(u.last_seq.clone());
                    let source = EventSource::Feed;
                    return Ok(Batch {
                        updates: u.results,
                        position: Some(u.last_seq),
                        source,
                        listed: None,
                        gap: false,
                    });
                }
                Err(e) if feed_missing(&e) => {
                    tracing::info!(error = %e, every = ?LISTING_EVERY, "no _db_updates; listing the databases instead");
                    self.lose_feed();
                }
                Err(e @ CouchError::BadRequest { .. }) => {
                    tracing::warn!(error = %e, "CouchDB refused the _db_updates position; starting again from now");
                    if let Some(now) = position(&self.couch).await? {
                        self.since = Some(now.clone());
                        let source = EventSource::Feed;
                        return Ok(Batch { updates: vec![], position: Some(now), source, listed: None, gap: true });
                    }
                    self.lose_feed();
                }
                Err(e) => return Err(e),
            }
        }
        self.list_round().await
    }

    fn lose_feed(&mut self) {
        self.since = None;
        self.known = None;
        self.lost = true;
    }

    /// One listing round: the feed's position first (found back: switch to it), then the
    /// listing, compared with the last one.
    async fn list_round(&mut self) -> Result<Batch, CouchError> {
        if self.known.is_some() {
            tokio::select! {
                () = tokio::time::sleep(LISTING_EVERY) => {}
                () = self.nudge.notified() => {}
            }
        }
        let position = position(&self.couch).await?;
        let listed: Arc<BTreeSet<String>> =
            Arc::new(self.couch.databases_with_prefix(&self.prefix).await?.into_iter().collect());
        let updates = self.known.as_ref().map(|known| listing_changes(known, &listed)).unwrap_or_default();
        let Some(now) = position else {
            self.known = Some(listed.clone());
            let source = EventSource::Listing;
            return Ok(Batch { updates, position: None, source, listed: Some(listed), gap: false });
        };
        let gap = self.lost || self.known.is_some();
        if gap {
            tracing::info!("_db_updates answers again; following it");
        }
        self.since = Some(now.clone());
        self.known = None;
        self.lost = false;
        Ok(Batch { updates, position: Some(now), source: EventSource::Feed, listed: Some(listed), gap })
    }
}

/// Per server: the nudge its followers wait on while listing, and the source its drift follower
/// uses (written by the follower, read by the server reconciler).
#[derive(Default)]
pub struct ServerFeeds {
    nudges: Mutex<HashMap<ServerKey, Arc<Notify>>>,
    sources: Mutex<HashMap<ServerKey, EventSource>>,
}

impl ServerFeeds {
    /// What the followers of `server` wait on while listing.
    pub fn nudge(&self, server: &ServerKey) -> Arc<Notify> {
        self.nudges.lock().unwrap_or_else(|e| e.into_inner()).entry(server.clone()).or_default().clone()
    }

    /// Makes the followers of `server` that are listing look for the feed at once.
    pub fn wake(&self, server: &ServerKey) {
        self.nudge(server).notify_waiters();
    }

    /// Records the source the drift follower of `server` uses; whether it changed.
    pub fn set_source(&self, server: &ServerKey, source: EventSource) -> bool {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).insert(server.clone(), source) != Some(source)
    }

    /// The source the drift follower of `server` uses, once it has one.
    pub fn source(&self, server: &ServerKey) -> Option<EventSource> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).get(server).copied()
    }
}
