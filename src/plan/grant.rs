//! Grants on databases couchshare does not manage (`couchName`): add and remove exactly the
//! entries grants contribute, leaving everything else in `_security` untouched.
//!
//! What grants added is recorded inside `_security` itself, in the field [`GRANTED_FIELD`],
//! so any reconcile — of any grant on that database, after any restart — can tell the entries
//! that were there on their own (an owner in a per-user database) from the ones grants added.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::api::Access;
use crate::couch;
use crate::plan::security::GrantEntries;

/// Field of `_security` recording the entries grants added.
pub const GRANTED_FIELD: &str = "couchshare.io/granted";

/// Names and roles per section, as sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    /// `admins` names and roles.
    #[serde(default)]
    pub admins: Section,
    /// `members` names and roles.
    #[serde(default)]
    pub members: Section,
}

/// Names and roles of one section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Usernames.
    #[serde(default)]
    pub names: BTreeSet<String>,
    /// Roles.
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

impl Section {
    fn of(p: &couch::Principals) -> Self {
        Section { names: p.names.iter().cloned().collect(), roles: p.roles.iter().cloned().collect() }
    }
    fn union(&self, o: &Section) -> Section {
        Section { names: &self.names | &o.names, roles: &self.roles | &o.roles }
    }
    fn minus(&self, o: &Section) -> Section {
        Section { names: &self.names - &o.names, roles: &self.roles - &o.roles }
    }
    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.roles.is_empty()
    }
}

impl Entries {
    fn of(s: &couch::Security) -> Self {
        Entries { admins: Section::of(&s.admins), members: Section::of(&s.members) }
    }
    fn union(&self, o: &Entries) -> Entries {
        Entries { admins: self.admins.union(&o.admins), members: self.members.union(&o.members) }
    }
    fn minus(&self, o: &Entries) -> Entries {
        Entries { admins: self.admins.minus(&o.admins), members: self.members.minus(&o.members) }
    }
    /// No entries at all.
    pub fn is_empty(&self) -> bool {
        self.admins.is_empty() && self.members.is_empty()
    }
    /// The entries of a set of grants.
    pub fn from_grants(grants: &[GrantEntries]) -> Entries {
        let mut out = Entries::default();
        for g in grants {
            let section = match g.access {
                Access::Admin => &mut out.admins,
                Access::Member => &mut out.members,
            };
            section.names.extend(g.names.iter().cloned());
            section.roles.extend(g.roles.iter().cloned());
        }
        out
    }
}

/// The `_security` of an unmanaged database with exactly `grants` applied, or `None` when it
/// already is. Entries present on their own stay; entries grants added and no grant gives any
/// more are removed.
pub fn merge_unmanaged(actual: &couch::Security, grants: &[GrantEntries]) -> Option<couch::Security> {
    let recorded: Entries =
        actual.extra.get(GRANTED_FIELD).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let current = Entries::of(actual);
    // What is there independently of grants.
    let base = current.minus(&recorded);
    let wanted = Entries::from_grants(grants);
    let added = wanted.minus(&base);
    let result = base.union(&wanted);
    if result == current && added == recorded {
        return None;
    }
    let mut out = actual.clone();
    let apply = |p: &mut couch::Principals, s: &Section| {
        p.names = s.names.iter().cloned().collect();
        p.roles = s.roles.iter().cloned().collect();
    };
    apply(&mut out.admins, &result.admins);
    apply(&mut out.members, &result.members);
    if added.is_empty() {
        out.extra.remove(GRANTED_FIELD);
    } else if let Ok(v) = serde_json::to_value(&added) {
        out.extra.insert(GRANTED_FIELD.into(), v);
    }
    Some(out)
}

/// Whether `actual` grants everything in `entries`.
pub fn grants_present(actual: &couch::Security, entries: &GrantEntries) -> bool {
    let have = Entries::of(actual);
    let section = match entries.access {
        Access::Admin => &have.admins,
        Access::Member => &have.members,
    };
    entries.names.iter().all(|n| section.names.contains(n)) && entries.roles.iter().all(|r| section.roles.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(admins: &[&str], members: &[&str], member_roles: &[&str]) -> couch::Security {
        let p = |names: &[&str], roles: &[&str]| couch::Principals {
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            extra: Default::default(),
        };
        couch::Security { admins: p(admins, &[]), members: p(members, member_roles), extra: Default::default() }
    }

    fn member(names: &[&str], roles: &[&str]) -> GrantEntries {
        GrantEntries {
            access: Access::Member,
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_grant_adds_only_its_entries_and_removing_it_restores_the_original() {
        // A per-user database: its owner is admin and member on their own.
        let original = sec(&["alice"], &["alice"], &[]);
        let with_bob = merge_unmanaged(&original, &[member(&["bob"], &["readers"])]).expect("a change");
        assert_eq!(with_bob.members.names, ["alice", "bob"]);
        assert_eq!(with_bob.members.roles, ["readers"]);
        assert_eq!(with_bob.admins.names, ["alice"]);
        assert_eq!(merge_unmanaged(&with_bob, &[member(&["bob"], &["readers"])]), None, "applied: nothing to do");
        let without = merge_unmanaged(&with_bob, &[]).expect("revocation");
        assert_eq!(without.members.names, ["alice"], "the owner's entry is intact");
        assert!(without.members.roles.is_empty());
        assert!(!without.extra.contains_key(GRANTED_FIELD));
    }

    #[test]
    fn a_grant_naming_an_entry_that_was_there_never_removes_it() {
        let original = sec(&[], &["alice"], &[]);
        let granted = merge_unmanaged(&original, &[member(&["alice", "bob"], &[])]).expect("bob added");
        let revoked = merge_unmanaged(&granted, &[]).expect("bob removed");
        assert_eq!(revoked.members.names, ["alice"]);
    }

    #[test]
    fn two_grants_naming_one_user_keep_it_until_both_are_gone() {
        let original = sec(&[], &["owner"], &[]);
        let both = merge_unmanaged(&original, &[member(&["bob"], &[]), member(&["bob", "carol"], &[])]).expect("added");
        assert_eq!(both.members.names, ["bob", "carol", "owner"]);
        let one = merge_unmanaged(&both, &[member(&["bob"], &[])]).expect("carol removed");
        assert_eq!(one.members.names, ["bob", "owner"]);
        let none = merge_unmanaged(&one, &[]).expect("bob removed");
        assert_eq!(none.members.names, ["owner"]);
    }

    #[test]
    fn a_granted_entry_removed_by_hand_is_restored_and_foreign_fields_stay() {
        let mut original = sec(&[], &["owner"], &[]);
        original.extra.insert("couchdb_auth_only".into(), serde_json::Value::Bool(true));
        let granted = merge_unmanaged(&original, &[member(&["bob"], &[])]).expect("added");
        let mut edited = granted.clone();
        edited.members.names.retain(|n| n != "bob");
        let restored = merge_unmanaged(&edited, &[member(&["bob"], &[])]).expect("restored");
        assert_eq!(restored.members.names, ["bob", "owner"]);
        assert_eq!(restored.extra.get("couchdb_auth_only"), Some(&serde_json::Value::Bool(true)));
        assert!(grants_present(&restored, &member(&["bob"], &[])));
        assert!(!grants_present(&edited, &member(&["bob"], &[])));
    }
}
