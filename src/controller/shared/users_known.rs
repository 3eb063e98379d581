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
//! A verdict counts only under the feed that was following when it was recorded (its epoch):
//! a feed that fails, restarts or ends takes its verdicts with it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use super::ServerKey;

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
    /// Up to date at `rev` for an intent whose digest is `digest`.
    Verdict { epoch: u64, rev: String, digest: u64 },
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
    servers: HashMap<ServerKey, Server>,
    next_epoch: u64,
    /// Counts the changes no pass explained.
    tick: u64,
    /// When each name last had one: a read of it that began before is not recorded.
    recent: HashMap<String, u64>,
    /// Names forgotten from `recent` (bounded) changed at `floor` at the latest.
    floor: u64,
}

impl Inner {
    /// A change of `name` no pass explained.
    fn unexplained(&mut self, name: &str) {
        self.tick += 1;
        if self.recent.len() >= MAX_RECENT {
            self.recent.clear();
            self.floor = self.tick;
        }
        self.recent.insert(name.to_string(), self.tick);
    }

    /// Whether `name` may have changed since `tick`.
    fn changed_since(&self, name: &str, tick: u64) -> bool {
        self.floor > tick || self.recent.get(name).is_some_and(|t| *t > tick)
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

    /// Whether `name` on `server` is known up to date for an intent whose digest is `digest`.
    pub fn up_to_date(&self, server: &ServerKey, name: &str, digest: u64) -> bool {
        let inner = self.inner();
        let Some(s) = inner.servers.get(server) else { return false };
        matches!(s.users.get(name), Some(Entry::Verdict { epoch, digest: d, .. })
            if Some(*epoch) == s.epoch && *d == digest)
    }

    /// Where a read of a user document on `server` begins (`None`: no feed follows it).
    pub fn ticket(&self, server: &ServerKey) -> Option<Ticket> {
        let inner = self.inner();
        let epoch = inner.servers.get(server)?.epoch?;
        Some(Ticket { epoch, tick: inner.tick })
    }

    /// A read that began at `ticket` found `name` up to date at `rev`: recorded unless the feed
    /// changed since, or brought a change of `name` no pass explained (the read may have come
    /// before it).
    pub fn read_up_to_date(&self, server: &ServerKey, name: &str, rev: &str, digest: u64, ticket: Option<Ticket>) {
        let Some(ticket) = ticket else { return };
        let mut inner = self.inner();
        if inner.changed_since(name, ticket.tick) {
            return;
        }
        let Some(s) = inner.servers.get_mut(server).filter(|s| s.epoch == Some(ticket.epoch)) else { return };
        if matches!(s.users.get(name), Some(Entry::Writing { .. })) {
            return;
        }
        s.users.insert(name.to_string(), Entry::Verdict { epoch: ticket.epoch, rev: rev.to_string(), digest });
    }

    /// A pass is about to write `name`: the revisions the feed brings until [`Self::written`]
    /// are held, not taken as changes.
    pub fn writing(&self, server: &ServerKey, name: &str) {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server) else { return };
        match s.epoch {
            Some(epoch) => s.users.insert(name.to_string(), Entry::Writing { epoch, seen: Vec::new() }),
            None => s.users.remove(name),
        };
    }

    /// The pass wrote `name` at `rev`, up to date for `digest`. Returns whether the feed brought
    /// another revision meanwhile (someone else wrote it too): then nothing is recorded, and
    /// the caller wakes the owner.
    pub fn written(&self, server: &ServerKey, name: &str, rev: &str, digest: u64) -> bool {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server) else { return false };
        let Some(Entry::Writing { epoch, seen }) = s.users.remove(name) else { return false };
        if seen.iter().any(|r| r != rev) {
            inner.unexplained(name);
            return true;
        }
        if s.epoch == Some(epoch) {
            s.users.insert(name.to_string(), Entry::Verdict { epoch, rev: rev.to_string(), digest });
        }
        false
    }

    /// Forgets `name` on `server` (a failed write, a deletion).
    pub fn forget(&self, server: &ServerKey, name: &str) {
        if let Some(s) = self.inner().servers.get_mut(server) {
            s.users.remove(name);
        }
    }

    /// A feed starts following `server`: returns its epoch. Verdicts of an earlier feed go.
    pub fn following(&self, server: &ServerKey) -> u64 {
        let mut inner = self.inner();
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        inner.servers.insert(server.clone(), Server { epoch: Some(epoch), users: HashMap::new() });
        epoch
    }

    /// The feed of `epoch` no longer follows `server` (failed, replaced, ended): its verdicts go.
    pub fn lost(&self, server: &ServerKey, epoch: u64) {
        let mut inner = self.inner();
        if inner.servers.get(server).is_some_and(|s| s.epoch == Some(epoch)) {
            inner.servers.remove(server);
        }
    }

    /// The feed of `epoch` brought revision `rev` of `name`. Returns whether it is news to a pass
    /// that took a verdict on it (the owner is then woken): a revision a pass wrote, or is
    /// writing, is not; nor is a document no verdict covers.
    pub fn changed(&self, server: &ServerKey, epoch: u64, name: &str, rev: &str) -> bool {
        let mut inner = self.inner();
        let Some(s) = inner.servers.get_mut(server).filter(|s| s.epoch == Some(epoch)) else { return false };
        let news = match s.users.get_mut(name) {
            Some(Entry::Writing { seen, .. }) => {
                seen.push(rev.to_string());
                return false;
            }
            Some(Entry::Verdict { rev: known, .. }) if known == rev => return false,
            Some(Entry::Verdict { .. }) => {
                s.users.remove(name);
                true
            }
            None => false,
        };
        inner.unexplained(name);
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerKey {
        ServerKey::new("ns", "couch")
    }

    #[test]
    fn a_verdict_holds_until_the_feed_brings_another_revision() {
        let known = UsersKnown::default();
        let s = server();
        let d = digest(&["alice", "uid", "fp"]);
        assert!(known.ticket(&s).is_none(), "no feed: nothing is recorded");
        let epoch = known.following(&s);
        let ticket = known.ticket(&s);
        known.read_up_to_date(&s, "alice", "1-a", d, ticket);
        assert!(known.up_to_date(&s, "alice", d));
        assert!(!known.up_to_date(&s, "alice", digest(&["alice", "uid", "other password"])), "another intent");
        assert!(!known.changed(&s, epoch, "alice", "1-a"), "the revision it was found at");
        assert!(known.up_to_date(&s, "alice", d));
        assert!(known.changed(&s, epoch, "alice", "2-b"), "edited by someone else: the owner is woken");
        assert!(!known.up_to_date(&s, "alice", d), "and reads again");
    }

    #[test]
    fn a_change_during_a_read_keeps_it_from_being_recorded() {
        let known = UsersKnown::default();
        let s = server();
        let epoch = known.following(&s);
        let ticket = known.ticket(&s);
        assert!(!known.changed(&s, epoch, "bob", "3-c"), "no verdict on bob: nobody to wake");
        known.read_up_to_date(&s, "bob", "2-b", 1, ticket);
        assert!(!known.up_to_date(&s, "bob", 1), "the read may have seen the revision before 3-c");
        known.read_up_to_date(&s, "bob", "3-c", 1, known.ticket(&s));
        assert!(known.up_to_date(&s, "bob", 1));
        let ticket = known.ticket(&s);
        assert!(!known.changed(&s, epoch, "an-app-user", "1-x"), "another user signs up meanwhile");
        known.read_up_to_date(&s, "erin", "1-e", 1, ticket);
        assert!(known.up_to_date(&s, "erin", 1), "another name's change does not count");
    }

    #[test]
    fn a_pass_own_write_is_not_a_change_but_another_write_meanwhile_is() {
        let known = UsersKnown::default();
        let s = server();
        let epoch = known.following(&s);
        known.writing(&s, "carol");
        assert!(!known.changed(&s, epoch, "carol", "1-a"), "the feed was quicker than the PUT's answer");
        assert!(!known.written(&s, "carol", "1-a", 7));
        assert!(known.up_to_date(&s, "carol", 7));
        assert!(!known.changed(&s, epoch, "carol", "1-a"), "or slower");
        known.writing(&s, "carol");
        assert!(!known.changed(&s, epoch, "carol", "2-b"));
        assert!(!known.changed(&s, epoch, "carol", "3-c"));
        assert!(known.written(&s, "carol", "2-b", 7), "3-c was someone else's");
        assert!(!known.up_to_date(&s, "carol", 7));
    }

    #[test]
    fn a_feed_that_stops_takes_its_verdicts_with_it() {
        let known = UsersKnown::default();
        let s = server();
        let first = known.following(&s);
        known.read_up_to_date(&s, "dave", "1-a", 1, known.ticket(&s));
        let second = known.following(&s);
        assert!(!known.up_to_date(&s, "dave", 1), "a new feed starts from nothing");
        known.read_up_to_date(&s, "dave", "1-a", 1, known.ticket(&s));
        known.lost(&s, first);
        assert!(known.up_to_date(&s, "dave", 1), "an older feed ending is not this one's");
        known.lost(&s, second);
        assert!(!known.up_to_date(&s, "dave", 1));
        assert!(known.ticket(&s).is_none());
    }
}
