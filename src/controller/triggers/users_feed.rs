//! The `_users` follower: one task per CouchServer follows `_users/_changes` and keeps the
//! verdicts of [`UsersKnown`] true. A revision of a managed user that no pass wrote drops its
//! verdict and wakes the CouchUser (or the CouchShare whose scoped replication user it is): a
//! user deleted or edited by hand is put back within seconds. While it follows, a pass that
//! found its user up to date does not read it again (see `shared::users_known`).

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};

use crate::api::{CouchServer, CouchShare, CouchUser};
use crate::controller::runtime::backoff::delay;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::keys::ServerKey;
use crate::controller::runtime::requeues::{ShareTrigger, UserTrigger};
use crate::controller::runtime::tasks::{Task, server_exists};
use crate::controller::shared::servers::server_key;
use crate::controller::shared::users_known::{UsersKnown, feed_key};
use crate::couch::{ChangesQuery, CouchClient, FeedMode};
use crate::plan::share::replication_username;

/// The longpoll wait of the feed.
const FEED_WAIT: Duration = Duration::from_secs(25);

/// The prefix of a user document's id.
const USER_PREFIX: &str = "org.couchdb.user:";

/// Ends the feed's epoch however its task ends (an error, a replacement's abort, its server gone).
struct Following {
    known: Arc<UsersKnown>,
    /// The server's [`feed_key`].
    server: String,
    epoch: Option<u64>,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(epoch) = self.epoch.take() {
            self.known.lost(&self.server, epoch);
        }
    }
}

/// Makes sure `_users` is followed on `server` (one task per server and client).
pub fn follow(ctx: &Context, server: &CouchServer, couch: CouchClient) {
    let server_ref = ServerKey::of(server);
    let feed = feed_key(server);
    let known = ctx.users_known.clone();
    let servers = ctx.stores.servers.clone();
    let owners = Owners {
        users: (ctx.stores.users.clone(), ctx.user_trigger.clone()),
        shares: (ctx.stores.shares.clone(), ctx.share_trigger.clone()),
    };
    ctx.tasks.keep(Task::Users, server, couch.instance(), move || {
        tokio::spawn(async move {
            let mut following = Following { known, server: feed.clone(), epoch: None };
            let mut since: Value = json!("now");
            let mut failures = 0u32;
            while server_exists(&servers, &server_ref) {
                // A new epoch once the feed's position is known: a read after it is covered.
                if following.epoch.is_none() {
                    let now = ChangesQuery { feed: FeedMode::Normal, since: Some(since.clone()), ..Default::default() };
                    match couch.changes("_users", &now).await {
                        Ok(changes) => {
                            // From the first position on, every change comes through below;
                            // those since an earlier position (after a failure) wake their owners.
                            following.epoch = Some(following.known.following(&feed));
                            if since != json!("now") {
                                owners.wake(&server_ref, changes.results.iter().filter_map(|c| c.id.strip_prefix(USER_PREFIX)));
                            }
                            since = changes.last_seq;
                            failures = 0;
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            tracing::debug!(server = %server_ref, error = %e, "reading _users/_changes failed; retrying");
                            tokio::time::sleep(delay(Duration::from_millis(500), Duration::from_secs(30), failures)).await;
                        }
                    }
                    continue;
                }
                let Some(epoch) = following.epoch else { continue };
                let query = ChangesQuery {
                    feed: FeedMode::Longpoll,
                    since: Some(since.clone()),
                    timeout: Some(FEED_WAIT),
                    ..Default::default()
                };
                match couch.changes("_users", &query).await {
                    Ok(changes) => {
                        let news = changes.results.iter().filter(|c| {
                            let (Some(name), Some(rev)) = (c.id.strip_prefix(USER_PREFIX), c.changes.first()) else {
                                return false;
                            };
                            following.known.changed(&feed, epoch, name, &rev.rev)
                        });
                        let names: Vec<&str> = news.filter_map(|c| c.id.strip_prefix(USER_PREFIX)).collect();
                        owners.wake(&server_ref, names.into_iter());
                        since = changes.last_seq;
                    }
                    Err(e) => {
                        // Its verdicts go; it resumes from `since`, so nothing is missed.
                        following.known.lost(&feed, epoch);
                        following.epoch = None;
                        failures = failures.saturating_add(1);
                        tracing::debug!(server = %server_ref, error = %e, "_users/_changes failed; retrying");
                        tokio::time::sleep(delay(Duration::from_millis(500), Duration::from_secs(30), failures)).await;
                    }
                }
            }
        })
    });
}

/// Who owns a user document: the CouchUsers and CouchShares, with their triggers.
struct Owners {
    users: (Store<CouchUser>, Option<UserTrigger>),
    shares: (Store<CouchShare>, Option<ShareTrigger>),
}

impl Owners {
    /// Wakes the CouchUser and the CouchShare on `server` whose user is one of `names`.
    fn wake<'a>(&self, server: &ServerKey, names: impl Iterator<Item = &'a str>) {
        let names: std::collections::BTreeSet<&str> = names.collect();
        if names.is_empty() {
            return;
        }
        if let (store, Some(trigger)) = &self.users {
            for user in store.state() {
                if names.contains(user.couch_username()) && server_key(user.as_ref(), &user.spec.server_ref) == *server
                {
                    tracing::info!(user = %user.name_any(), "_users document changed by someone else; requeueing");
                    let _ = trigger.send(ObjectRef::from_obj(user.as_ref()));
                }
            }
        }
        if let (store, Some(trigger)) = &self.shares {
            for share in store.state() {
                let username = replication_username(&share.namespace().unwrap_or_default(), &share.name_any());
                let on_server =
                    share.status.as_ref().and_then(|s| s.server.as_deref()) == Some(server.to_string().as_str());
                if names.contains(username.as_str()) && on_server {
                    tracing::info!(share = %share.name_any(), "replication user changed by someone else; requeueing");
                    let _ = trigger.send(ObjectRef::from_obj(share.as_ref()));
                }
            }
        }
    }
}
