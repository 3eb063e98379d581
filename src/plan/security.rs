//! The one computation that owns a database's `_security`: the base from the CouchDatabase
//! merged with every grant on it, sorted and de-duplicated, never accidentally public.

use std::collections::BTreeSet;

use crate::api::{Access, Principals, SecuritySpec};
use crate::couch;

/// The role CouchDB gives server admins; a members list of only this role is admin-only.
pub const ADMIN_ROLE: &str = "_admin";

/// What one grant contributes to a database's `_security`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantEntries {
    /// `member` or `admin`.
    pub access: Access,
    /// CouchDB usernames.
    pub names: Vec<String>,
    /// CouchDB roles.
    pub roles: Vec<String>,
}

/// The `_security` a managed database must have. Members that would end up empty are written
/// as admin-only (`roles: ["_admin"]`) unless `public`, since empty members make CouchDB serve
/// the database to anyone, even anonymous requests.
pub fn desired_security(base: &SecuritySpec, grants: &[GrantEntries], public: bool) -> couch::Security {
    let mut admins = Sets::from(&base.admins);
    let mut members = Sets::from(&base.members);
    for grant in grants {
        let sets = match grant.access {
            Access::Admin => &mut admins,
            Access::Member => &mut members,
        };
        sets.names.extend(grant.names.iter().cloned());
        sets.roles.extend(grant.roles.iter().cloned());
    }
    if members.names.is_empty() && members.roles.is_empty() && !public {
        members.roles.insert(ADMIN_ROLE.to_string());
    }
    couch::Security { admins: admins.into_principals(), members: members.into_principals(), extra: Default::default() }
}

/// Whether the observed `_security` grants exactly what `desired` does (order and duplicates
/// do not matter; fields other tools keep there are not ours to judge).
pub fn security_matches(actual: &couch::Security, desired: &couch::Security) -> bool {
    same_principals(&actual.admins, &desired.admins) && same_principals(&actual.members, &desired.members)
}

/// The document to write: `desired`, keeping the fields other tools keep in `_security`.
pub fn security_to_write(actual: Option<&couch::Security>, desired: &couch::Security) -> couch::Security {
    let mut out = desired.clone();
    if let Some(actual) = actual {
        out.extra = actual.extra.clone();
        out.admins.extra = actual.admins.extra.clone();
        out.members.extra = actual.members.extra.clone();
    }
    out
}

/// Whether anonymous requests can read the database (CouchDB: members empty).
pub fn is_public(security: &couch::Security) -> bool {
    security.members.names.is_empty() && security.members.roles.is_empty()
}

fn same_principals(a: &couch::Principals, b: &couch::Principals) -> bool {
    set(&a.names) == set(&b.names) && set(&a.roles) == set(&b.roles)
}

fn set(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

#[derive(Default)]
struct Sets {
    names: BTreeSet<String>,
    roles: BTreeSet<String>,
}

impl From<&Principals> for Sets {
    fn from(p: &Principals) -> Self {
        Sets { names: p.names.iter().cloned().collect(), roles: p.roles.iter().cloned().collect() }
    }
}

impl Sets {
    fn into_principals(self) -> couch::Principals {
        couch::Principals {
            names: self.names.into_iter().collect(),
            roles: self.roles.into_iter().collect(),
            extra: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(names: &[&str], roles: &[&str]) -> Principals {
        Principals {
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cp(names: &[&str], roles: &[&str]) -> couch::Principals {
        couch::Principals {
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            extra: Default::default(),
        }
    }

    fn grant(access: Access, names: &[&str], roles: &[&str]) -> GrantEntries {
        GrantEntries {
            access,
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn desired_security_table() {
        struct Case {
            what: &'static str,
            base: SecuritySpec,
            grants: Vec<GrantEntries>,
            public: bool,
            admins: couch::Principals,
            members: couch::Principals,
        }
        let cases = vec![
            Case {
                what: "empty base is admin-only, never public",
                base: SecuritySpec::default(),
                grants: vec![],
                public: false,
                admins: cp(&[], &[]),
                members: cp(&[], &["_admin"]),
            },
            Case {
                what: "public: true allows empty members",
                base: SecuritySpec::default(),
                grants: vec![],
                public: true,
                admins: cp(&[], &[]),
                members: cp(&[], &[]),
            },
            Case {
                what: "base members kept, sorted and de-duplicated",
                base: SecuritySpec {
                    admins: p(&["zed", "amy", "zed"], &[]),
                    members: p(&["bob", "alice", "bob"], &["w"]),
                },
                grants: vec![],
                public: false,
                admins: cp(&["amy", "zed"], &[]),
                members: cp(&["alice", "bob"], &["w"]),
            },
            Case {
                what: "grants merge into their section",
                base: SecuritySpec { admins: p(&[], &[]), members: p(&["alice"], &[]) },
                grants: vec![grant(Access::Member, &["bob"], &["readers"]), grant(Access::Admin, &["carol"], &[])],
                public: false,
                admins: cp(&["carol"], &[]),
                members: cp(&["alice", "bob"], &["readers"]),
            },
            Case {
                what: "two grants naming one user give one entry",
                base: SecuritySpec::default(),
                grants: vec![grant(Access::Member, &["bob"], &[]), grant(Access::Member, &["bob"], &[])],
                public: false,
                admins: cp(&[], &[]),
                members: cp(&["bob"], &[]),
            },
            Case {
                what: "admin-only grants leave members admin-only",
                base: SecuritySpec::default(),
                grants: vec![grant(Access::Admin, &["root"], &[])],
                public: false,
                admins: cp(&["root"], &[]),
                members: cp(&[], &["_admin"]),
            },
        ];
        for c in cases {
            let got = desired_security(&c.base, &c.grants, c.public);
            assert_eq!(got.admins, c.admins, "{}: admins", c.what);
            assert_eq!(got.members, c.members, "{}: members", c.what);
        }
    }

    #[test]
    fn matching_ignores_order_duplicates_and_foreign_fields() {
        let desired = desired_security(&SecuritySpec { admins: p(&[], &[]), members: p(&["a", "b"], &[]) }, &[], false);
        let mut actual =
            couch::Security { admins: cp(&[], &[]), members: cp(&["b", "a", "a"], &[]), extra: Default::default() };
        actual.extra.insert("couchdb_auth_only".into(), serde_json::Value::Bool(true));
        assert!(security_matches(&actual, &desired));
        actual.members.names.push("mallory".into());
        assert!(!security_matches(&actual, &desired));
        let public = couch::Security::default();
        assert!(is_public(&public));
        assert!(!security_matches(&public, &desired), "a public database never matches an admin-only one");
    }

    #[test]
    fn writing_keeps_fields_other_tools_keep() {
        let mut actual = couch::Security::default();
        actual.extra.insert("couchdb_auth_only".into(), serde_json::Value::Bool(true));
        let desired = desired_security(&SecuritySpec::default(), &[], false);
        let out = security_to_write(Some(&actual), &desired);
        assert_eq!(out.extra.get("couchdb_auth_only"), Some(&serde_json::Value::Bool(true)));
        assert_eq!(out.members.roles, vec!["_admin".to_string()]);
    }
}
