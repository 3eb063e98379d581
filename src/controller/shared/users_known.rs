//! What this process knows of the `_users` documents it manages, while a follower of each
//! server's `_users/_changes` (see `triggers::users_feed`) says nobody else wrote them.
//!
//! A CouchUser's pass, and a CouchShare's for its scoped replication user, reads the user's
//! document before deciding whether to write it: its owner record decides whether it may. Once
//! a pass has found (or made) the document as it declares, at revision R, it records a
//! *verdict*: "`name` at R is up to date for an intent whose digest is D". The next pass with the
//! same intent takes that verdict instead of reading, as long as the feed has brought no other
//! revision of the document since. A revision the feed brings that no pass wrote drops the
//! verdict and wakes the owner: a user deleted or edited in Fauxton is repaired within seconds,
//! not at the resync. Only verdicts are kept, never documents: nothing is ever written from
//! here, and a pass that has to write reads the document first.
//!
//! A verdict counts only under the feed that was following when it was recorded (its epoch),
//! for the server's URL and UID the feed follows ([`feed_key`]): a feed that fails, restarts or
//! ends takes its verdicts with it, and a server whose URL changed starts from none. It also
//! counts for a bounded time only (the caller's `max_age`): what no feed shows — a purge, a
//! `_users` database made anew under a feed that resumes from an old sequence — is read again
//! after it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::api::CouchServer;
use crate::couch::{CouchClient, CouchError, UserDoc};

/// The key of a server's entries: the CouchServer, its URL and its UID. A pass and the feed
/// compute it from the CouchServer each has; a pass for a URL no feed follows yet finds none.
pub fn feed_key(server: &CouchServer) -> String {
    format!(
        "{}/{}|{}|{}",
        server.namespace().unwrap_or_default(),
        server.name_any(),
        server.spec.url,
        server.uid().unwrap_or_default()
    )
}

/// How long a verdict is trusted, for an operator resyncing every `resync`: six resyncs, so that
/// at most one resync pass in six reads a user its feed has said nothing of.
pub fn max_age(resync: Duration) -> Duration {
    resync.saturating_mul(6)
}

/// The digest of what a pass declares of a user (whatever decides whether it writes).
pub fn digest(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// One managed user document, as this process knows it.
enum Entry {
    /// A pass is writing it: the revisions the feed brought meanwhile.
    Writing { epoch: u64, seen: Vec<String> },
    /// Up to date at `rev` for an intent whose digest is `digest`, since `at`.
    Verdict { epoch: u64, rev: String, digest: u64, at: Instant },
    /// Deleted by a pass, at `rev`: the deletion coming back through the feed is not a change.
    Gone { rev: String },
}

/// The feed of one server and its users' entries.
#[derive(Default)]
struct Server {
    /// The epoch of the feed following it, if one is.
    epoch: Option<u64>,
    users: HashMap<String, Entry>,
}

#[derive(Default)]
struct Inner {
    servers: HashMap<String, Server>,
    next_epoch: u64,
    /// Counts the changes no pass explained, and the writes passes begin.
    tick: u64,
    /// When each name last had one, and the revision the feed brought (`None`: a pass's write):
    /// a read of it that began before, or that found another revision, is not recorded.
    recent: HashMap<String, (u64, Option<String>)>,
    /// Names forgotten from `recent` (bounded) changed at `floor` at the latest.
    floor: u64,
}

impl Inner {
    /// A change of `name` no pass explained (at revision `rev`), or a write a pass begins.
    fn unexplained(&mut self, name: &str, rev: Option<&str>) {
        self.tick += 1;
        if self.recent.len() >= MAX_RECENT {
            self.recent.clear();
            self.floor = self.tick;
        }
        self.recent.insert(name.to_string(), (self.tick, rev.map(str::to_string)));
    }

    /// Whether a read of `name` that began at `tick` and found `rev` may be behind: it changed
    /// since, or the feed brought another revision of it (on a cluster, a read can find an
    /// older shard copy than the one the feed reported).
    fn behind(&self, name: &str, tick: u64, rev: &str) -> bool {
        self.floor > tick
            || self.recent.get(name).is_some_and(|(t, r)| *t > tick || r.as_deref().is_some_and(|r| r != rev))
    }
}

/// How many names' last unexplained change is remembered (apps' own users change too).
const MAX_RECENT: usize = 10_000;

/// Where a read began: the feed's epoch and the count of unexplained changes then.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    tick: u64,
}

/// The verdicts on managed `_users` documents, per server (see the module).
#[derive(Default)]
pub struct UsersKnown(Mutex<Inner>);

impl UsersKnown {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` on `server` (its [`feed_key`]) is known up to date for an intent whose
    /// digest is `digest`, by a verdict younger than `max_age`.
    pub fn up_to_date(&self, server: &str, name: &str, digest: u64, max_age: Duration) -> bool {
        let inner = self.inner();
        let Some(s) = inner.servers.get(server) else { return false };
        matches!(s.users.get(name), Some(Entry::Verdict { epoch, digest: d, at, .. })
            if Some(*epoch) == s.epoch && *d == digest && at.elapsed() < max_age)
    }

    /// Where a read of a user document on `server` begins (`None`: no feed follows it).
    pub fn ticket(&self, server: &str) -> Option<Ticket> {
        let inner = self.inner();
        let epoch = inner.servers.get(server)?.epoch?;
        Some(Ticket { epoch, tick: inner.tick })
    }

    /// A read that began at `ticket` found `name` up to date at `rev`: recorded unless the feed
    /// changed since, or brought a change of `name` no pass explained (the read may have come
    /// before it).
    pub fn read_up_to_date(&self, server: &str, name: &str, rev: &str, digest: u64, ticket: Option<Ticket>) {
        let Some(ticket) = ticket else { return };
        let mut inner = self.inner();
        if inner.behind(name, ticket.tick, rev) {
            return;
        }
        let Some(s) = inner.servers.get_mut(server).filter(|s| s.epoch == Some(ticket.epoch)) else { return };
        if matches!(s.users.get(name), Some(Entry::Writing { .. })) {
            return;
        }
        let at = Instant::now();
        s.users.insert(name.to_string(), Entry::Verdict { epoch: ticket.epoch, rev: rev.to_string(), digest, at });
    }

    /// A pass is about to write `name`: the revisions the feed brings until [`Self::written`]
    /// are held, not taken as changes; a read of it under way records nothing.
    pub fn writing(&self, server: &str, name: &str) {
        let mut inner = self.inner();
        inner.unexplained(name, None);
        let Some(s) = inner.servers.get_mut(server) else { return };
        match s.epoch {
            Some(epoch) => s.users.insert(name.to_string(), Entry::Writing { epoch, seen: Vec::new() }),
            None => s.users.remove(name),
        };
    }

    /// The pass wrote `name` at `rev`, up to date for `digest`. Returns whether the feed brought
    /// another revision meanwhile (someone else wrote it too): then nothing is recorded, and
    /// the caller wakes the owner.
    pub fn written(&self, server: &str, name: &str, rev: &str, digest: u64) -> bool {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server) else { return false };
        let Some(Entry::Writing { epoch, seen }) = s.users.remove(name) else { return false };
        if let Some(other) = seen.iter().find(|r| *r != rev).cloned() {
            inner.unexplained(name, Some(&other));
            return true;
        }
        if s.epoch == Some(epoch) {
            let at = Instant::now();
            s.users.insert(name.to_string(), Entry::Verdict { epoch, rev: rev.to_string(), digest, at });
        }
        false
    }

    /// A pass that called [`Self::writing`] deleted `name` at `rev`: the feed's deletion wakes
    /// nobody, and nothing is known up to date.
    pub fn deleted(&self, server: &str, name: &str, rev: &str) {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server) else { return };
        match s.users.remove(name) {
            Some(Entry::Writing { seen, .. }) if seen.iter().any(|r| r == rev) => {}
            Some(Entry::Writing { .. }) => drop(s.users.insert(name.to_string(), Entry::Gone { rev: rev.to_string() })),
            _ => {}
        }
    }

    /// Writes `doc` to `_users` on `server` as a pass of an intent whose digest is `digest`:
    /// its revision coming back through the feed is not a change, and it is recorded up to date.
    /// Returns whether someone else wrote it too meanwhile (the caller wakes the owner).
    pub async fn put(&self, couch: &CouchClient, server: &str, doc: &UserDoc, digest: u64) -> Result<bool, CouchError> {
        self.writing(server, &doc.name);
        match couch.put_user(doc).await {
            Ok(rev) => Ok(self.written(server, &doc.name, &rev, digest)),
            Err(e) => {
                self.forget(server, &doc.name);
                Err(e)
            }
        }
    }

    /// Deletes the user `name` at `rev` on `server`: its deletion coming back through the feed
    /// is not a change.
    pub async fn delete(&self, couch: &CouchClient, server: &str, name: &str, rev: &str) -> Result<(), CouchError> {
        self.writing(server, name);
        match couch.delete_user(name, rev).await {
            Ok(rev) => {
                self.deleted(server, name, &rev);
                Ok(())
            }
            Err(e) => {
                self.forget(server, name);
                Err(e)
            }
        }
    }

    /// Forgets `name` on `server` (a failed write).
    pub fn forget(&self, server: &str, name: &str) {
        if let Some(s) = self.inner().servers.get_mut(server) {
            s.users.remove(name);
        }
    }

    /// A feed starts following `server`: returns its epoch. Verdicts of an earlier feed go.
    pub fn following(&self, server: &str) -> u64 {
        let mut inner = self.inner();
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        inner.servers.insert(server.to_string(), Server { epoch: Some(epoch), users: HashMap::new() });
        epoch
    }

    /// The feed of `epoch` no longer follows `server` (failed, replaced, ended): its verdicts go.
    pub fn lost(&self, server: &str, epoch: u64) {
        let mut inner = self.inner();
        if inner.servers.get(server).is_some_and(|s| s.epoch == Some(epoch)) {
            inner.servers.remove(server);
        }
    }

    /// The feed of `epoch` brought revision `rev` of `name`. Returns whether it is news (its owner,
    /// if any, is then woken): a revision a pass wrote, is writing, or found is not.
    pub fn changed(&self, server: &str, epoch: u64, name: &str, rev: &str) -> bool {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server).filter(|s| s.epoch == Some(epoch)) else { return false };
        let news = match s.users.get_mut(name) {
            Some(Entry::Writing { seen, .. }) => {
                seen.push(rev.to_string());
                return false;
            }
            Some(Entry::Verdict { rev: known, .. }) if known == rev => return false,
            Some(Entry::Gone { rev: gone }) if gone == rev => {
                s.users.remove(name);
                return false;
            }
            Some(Entry::Gone { .. }) => {
                s.users.remove(name);
                true
            }
            Some(Entry::Verdict { .. }) => {
                s.users.remove(name);
                true
            }
            None => true,
        };
        inner.unexplained(name, Some(rev));
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "ns/couch|http://couchdb:5984|uid";
    const AGE: Duration = Duration::from_secs(3600);

    #[test]
    fn a_verdict_holds_until_the_feed_brings_another_revision() {
        let known = UsersKnown::default();
        let d = digest(&["alice", "uid", "fp"]);
        assert!(known.ticket(S).is_none(), "no feed: nothing is recorded");
        let epoch = known.following(S);
        known.read_up_to_date(S, "alice", "1-a", d, known.ticket(S));
        assert!(known.up_to_date(S, "alice", d, AGE));
        assert!(!known.up_to_date(S, "alice", digest(&["alice", "uid", "other password"]), AGE), "another intent");
        assert!(!known.up_to_date(S, "alice", d, Duration::ZERO), "older than the caller trusts");
        assert!(!known.up_to_date("ns/couch|http://elsewhere:5984|uid", "alice", d, AGE), "another URL");
        assert!(!known.changed(S, epoch, "alice", "1-a"), "the revision it was found at");
        assert!(known.up_to_date(S, "alice", d, AGE));
        assert!(known.changed(S, epoch, "alice", "2-b"), "edited by someone else: the owner is woken");
        assert!(!known.up_to_date(S, "alice", d, AGE), "and reads again");
        assert!(known.changed(S, epoch, "alice", "3-c"), "a change of a user no verdict covers wakes its owner too");
    }

    #[test]
    fn a_read_racing_a_change_is_not_recorded() {
        let known = UsersKnown::default();
        let epoch = known.following(S);
        let ticket = known.ticket(S);
        assert!(known.changed(S, epoch, "bob", "3-c"));
        known.read_up_to_date(S, "bob", "2-b", 1, ticket);
        assert!(!known.up_to_date(S, "bob", 1, AGE), "the read may have come before 3-c");
        known.read_up_to_date(S, "bob", "2-b", 1, known.ticket(S));
        assert!(!known.up_to_date(S, "bob", 1, AGE), "an older shard copy than the feed reported");
        known.read_up_to_date(S, "bob", "3-c", 1, known.ticket(S));
        assert!(known.up_to_date(S, "bob", 1, AGE));
        let ticket = known.ticket(S);
        assert!(known.changed(S, epoch, "an-app-user", "1-x"), "another user signs up meanwhile");
        known.read_up_to_date(S, "erin", "1-e", 1, ticket);
        assert!(known.up_to_date(S, "erin", 1, AGE), "another name's change does not count");
        let ticket = known.ticket(S);
        known.writing(S, "frank");
        known.read_up_to_date(S, "frank", "1-f", 1, ticket);
        assert!(!known.up_to_date(S, "frank", 1, AGE), "another pass writes it meanwhile");
    }

    #[test]
    fn a_pass_own_write_is_not_a_change_but_another_write_meanwhile_is() {
        let known = UsersKnown::default();
        let epoch = known.following(S);
        known.writing(S, "carol");
        assert!(!known.changed(S, epoch, "carol", "1-a"), "the feed was quicker than the PUT's answer");
        assert!(!known.written(S, "carol", "1-a", 7));
        assert!(known.up_to_date(S, "carol", 7, AGE));
        assert!(!known.changed(S, epoch, "carol", "1-a"), "or slower");
        known.writing(S, "carol");
        assert!(!known.changed(S, epoch, "carol", "2-b"));
        assert!(!known.changed(S, epoch, "carol", "3-c"));
        assert!(known.written(S, "carol", "2-b", 7), "3-c was someone else's");
        assert!(!known.up_to_date(S, "carol", 7, AGE));
        known.writing(S, "carol");
        known.deleted(S, "carol", "4-d");
        assert!(!known.changed(S, epoch, "carol", "4-d"), "its own deletion");
        assert!(known.changed(S, epoch, "carol", "5-e"), "made again by someone else");
    }

    #[test]
    fn a_feed_that_stops_takes_its_verdicts_with_it() {
        let known = UsersKnown::default();
        let first = known.following(S);
        known.read_up_to_date(S, "dave", "1-a", 1, known.ticket(S));
        let second = known.following(S);
        assert!(!known.up_to_date(S, "dave", 1, AGE), "a new feed starts from nothing");
        known.read_up_to_date(S, "dave", "1-a", 1, known.ticket(S));
        known.lost(S, first);
        assert!(known.up_to_date(S, "dave", 1, AGE), "an older feed ending is not this one's");
        known.lost(S, second);
        assert!(!known.up_to_date(S, "dave", 1, AGE));
        assert!(known.ticket(S).is_none());
    }
}
