//! "Who can reach this database, and through what": a CouchDatabase's effective `_security`
//! with the cause of every entry (its base, which CouchGrant, which share's replication user,
//! which consent let it in) and what was refused and why. Pure: the `kubectl couchshare access`
//! command passes in what it listed. The `_security` itself comes from
//! [`super::security::desired_security`], and each admission from the tenancy rules
//! ([`super::tenancy`]) and share functions ([`super::share`]) the operator's reconcilers use.
//! [`contributions`] is the one filter of grants and shares: the database reconciler's
//! `grants_for_database` calls it with what its watches hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use serde::Serialize;

use super::security::{ADMIN_ROLE, GrantEntries, desired_security};
use super::tenancy::{self, EndpointRole, grant_needs, share_needs};
use crate::api::{Access, CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser, ServerRef, condition};
use crate::couch;

mod tenants;
mod unmanaged;

pub use tenants::Tenants;
pub use unmanaged::{
    ExplainedUnmanaged, UnmanagedWorld, explain_unmanaged, manager, per_user_owner, unmanaged_contributions,
};

/// Everything the explanation reads: what the plugin listed from the API server, or what the
/// operator's watches hold.
pub struct World<'a> {
    pub server: &'a CouchServer,
    pub database: &'a CouchDatabase,
    pub grants: &'a [Arc<CouchGrant>],
    pub users: &'a [Arc<CouchUser>],
    pub shares: &'a [Arc<CouchShare>],
    /// Labels of the namespaces a `Selector` policy asks about (absent: the namespace does not
    /// exist, or could not be read).
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
}

/// One name or role in one section of the `_security`, and why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `admins` or `members`.
    pub section: &'static str,
    /// `name` or `role`.
    pub kind: &'static str,
    pub value: String,
    /// Every reason it is there (one entry can have several).
    pub causes: Vec<String>,
}

/// A grant, share or user that would have added entries and did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// `CouchGrant ns/name`, ...
    pub source: String,
    pub why: String,
}

/// The explanation of one database's access.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explained {
    /// `namespace/name` of the CouchDatabase.
    pub database: String,
    /// Its name on CouchDB.
    pub couch_name: String,
    /// `namespace/name` of its CouchServer.
    pub server: String,
    /// The `_security` the operator keeps on it.
    pub security: couch::Security,
    pub entries: Vec<Entry>,
    pub refused: Vec<Refusal>,
}

fn server_of<K: kube::Resource>(obj: &K, reference: &ServerRef) -> (String, String) {
    let ns = reference.namespace.clone().unwrap_or_else(|| obj.meta().namespace.clone().unwrap_or_default());
    (ns, reference.name.clone())
}

fn ready_of(conditions: &[crate::api::Condition]) -> Option<(String, String)> {
    conditions.iter().find(|c| c.type_ == condition::READY).map(|c| (c.status.clone(), c.reason.clone()))
}

fn admitted(recorded: Option<&str>, name: &str, conditions: Option<&[crate::api::Condition]>) -> Result<(), String> {
    let ready = conditions.and_then(ready_of);
    tenancy::admitted(recorded, name, ready.as_ref().map(|(s, r)| (s.as_str(), r.as_str())))
}

struct Causes {
    by_entry: BTreeMap<(&'static str, &'static str, String), Vec<String>>,
}

impl Causes {
    /// Each entry with its causes, sorted by section, kind and value.
    fn into_entries(self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .by_entry
            .into_iter()
            .map(|((section, kind, value), causes)| Entry { section, kind, value, causes })
            .collect();
        entries.sort_by(|a, b| (a.section, a.kind, &a.value).cmp(&(b.section, b.kind, &b.value)));
        entries
    }

    fn add(&mut self, access: Access, names: &[String], roles: &[String], cause: &str) {
        let section = match access {
            Access::Admin => "admins",
            Access::Member => "members",
        };
        for (kind, values) in [("name", names), ("role", roles)] {
            for v in values {
                self.by_entry.entry((section, kind, v.clone())).or_default().push(cause.to_string());
            }
        }
    }
}

impl World<'_> {
    fn tenants(&self) -> Tenants<'_> {
        Tenants {
            server: self.server,
            grants: self.grants,
            users: self.users,
            shares: self.shares,
            namespace_labels: self.namespace_labels,
        }
    }

    fn database_what(&self) -> String {
        format!("CouchDatabase {}/{}", self.database.namespace().unwrap_or_default(), self.database.name_any())
    }

    fn consent_note(&self, from: &str) -> Option<String> {
        let db_ns = self.database.namespace().unwrap_or_default();
        (from != db_ns).then(|| {
            let allow = self
                .database
                .spec
                .shared_with
                .iter()
                .find(|c| c.namespace == from)
                .map(|c| {
                    let scopes: Vec<String> = c
                        .allow
                        .iter()
                        .filter_map(|a| serde_json::to_value(a).ok()?.as_str().map(str::to_string))
                        .collect();
                    format!("[{}]", scopes.join(", "))
                })
                .unwrap_or_default();
            format!("consent: {} sharedWith {from} {allow}", self.database_what())
        })
    }

    fn targets(&self, grant: &CouchGrant) -> bool {
        let Some(name) = &grant.spec.database.name else { return false };
        let grant_ns = grant.namespace().unwrap_or_default();
        let ns = grant.spec.database.namespace.as_deref().unwrap_or(&grant_ns);
        self.database.name_any() == *name && self.database.namespace().as_deref() == Some(ns)
    }

    /// A grant's entries, or why it adds none.
    fn grant(&self, grant: &CouchGrant, refused: &mut Vec<Refusal>) -> Option<GrantEntries> {
        let from = grant.namespace().unwrap_or_default();
        let source = format!("CouchGrant {from}/{}", grant.name_any());
        let db_ns = self.database.namespace().unwrap_or_default();
        let consent = tenancy::reference(
            &self.database_what(),
            &db_ns,
            &self.database.spec.shared_with,
            &from,
            &grant_needs(grant.spec.access),
        );
        if let Err(e) = consent {
            refused.push(Refusal { source, why: e.to_string() });
            return None;
        }
        let tenants = self.tenants();
        if !tenants.allowed(&from) {
            let why =
                format!("namespace {from} is not in the allowedNamespaces of CouchServer {}", tenants.server_name());
            refused.push(Refusal { source, why });
            return None;
        }
        tenants.grant_entries(grant, refused)
    }

    /// Whether a share may use this database for every role it has in it (its own namespace, or
    /// the database's consent), or why not.
    fn share_permitted(&self, share: &CouchShare) -> Result<Vec<&'static str>, String> {
        let ns = share.namespace().unwrap_or_default();
        let db_ns = self.database.namespace().unwrap_or_default();
        let names = |r: &Option<crate::api::ObjectRef>| {
            r.as_ref()
                .is_some_and(|r| r.name == self.database.name_any() && r.namespace.as_deref().unwrap_or(&ns) == db_ns)
        };
        let mut roles = Vec::new();
        for (r, role, label) in [
            (&share.spec.source.database, EndpointRole::Source, "source"),
            (&share.spec.target.database, EndpointRole::Target, "target"),
        ] {
            if names(r) {
                tenancy::reference(
                    &self.database_what(),
                    &db_ns,
                    &self.database.spec.shared_with,
                    &ns,
                    &share_needs(role, share.spec.mode),
                )
                .map_err(|e| e.to_string())?;
                roles.push(label);
            }
        }
        Ok(roles)
    }
}

/// What the live grants and shares of `world` contribute to `world.database`'s `_security`,
/// each with its cause, and what was refused and why.
pub struct Contributions {
    /// The entries to merge, grant by grant and share by share.
    pub entries: Vec<GrantEntries>,
    causes: Causes,
    /// The grants, users and shares that would have added entries and did not.
    pub refused: Vec<Refusal>,
}

/// The contributions to `world.database`: grants that target it from a namespace it consents to
/// and the server allows, with names and roles in that namespace's scope and admitted users;
/// replication users of shares that touch it, may use it, and whose user is admitted.
pub fn contributions(world: &World<'_>) -> Contributions {
    let db = world.database;
    let mut causes = Causes { by_entry: BTreeMap::new() };
    let mut refused = Vec::new();
    let mut contributions = Vec::new();
    for grant in world.grants {
        if grant.metadata.deletion_timestamp.is_some() || !world.targets(grant) {
            continue;
        }
        if let Some(entries) = world.grant(grant, &mut refused) {
            let from = grant.namespace().unwrap_or_default();
            let access = match grant.spec.access {
                Access::Member => "member",
                Access::Admin => "admin",
            };
            let mut cause = format!("CouchGrant {from}/{} ({access})", grant.name_any());
            if let Some(note) = world.consent_note(&from) {
                cause = format!("{cause}; {note}");
            }
            causes.add(entries.access, &entries.names, &entries.roles, &cause);
            contributions.push(entries);
        }
    }
    for share in world.shares {
        if !super::share::touches_database(share, db) || !super::share::wants_access(share) {
            continue;
        }
        let from = share.namespace().unwrap_or_default();
        let source = format!("CouchShare {from}/{}", share.name_any());
        let roles = match world.share_permitted(share) {
            Ok(roles) => roles,
            Err(why) => {
                refused.push(Refusal { source, why });
                continue;
            }
        };
        if let Err(why) = world.tenants().share_user(share) {
            refused.push(Refusal { source, why });
            continue;
        }
        let entries = super::share::contribution(share);
        let mut cause = format!("replication user of {source} ({})", roles.join(" and "));
        if let Some(note) = world.consent_note(&from) {
            cause = format!("{cause}; {note}");
        }
        causes.add(entries.access, &entries.names, &entries.roles, &cause);
        contributions.push(entries);
    }
    Contributions { entries: contributions, causes, refused }
}

/// The explanation of `world.database`'s access.
pub fn explain(world: &World<'_>) -> Explained {
    let db = world.database;
    let db_ns = db.namespace().unwrap_or_default();
    let Contributions { entries: contributions, causes: granted, refused } = contributions(world);
    let mut causes = Causes { by_entry: BTreeMap::new() };
    let base = format!("base _security of {}", world.database_what());
    for (access, part) in [(Access::Admin, &db.spec.security.admins), (Access::Member, &db.spec.security.members)] {
        causes.add(access, &part.names, &part.roles, &base);
    }
    for (entry, why) in granted.by_entry {
        causes.by_entry.entry(entry).or_default().extend(why);
    }
    let security = desired_security(&db.spec.security, &contributions, db.spec.public);
    if security.members.roles.iter().any(|r| r == ADMIN_ROLE)
        && !causes.by_entry.contains_key(&("members", "role", ADMIN_ROLE.to_string()))
    {
        causes.add(
            Access::Member,
            &[],
            &[ADMIN_ROLE.to_string()],
            "no members declared or granted: server admins only (an empty members list would make the database public; spec.public is false)",
        );
    }
    let entries = causes.into_entries();
    let (sns, sname) = server_of(db, &db.spec.server_ref);
    Explained {
        database: format!("{db_ns}/{}", db.name_any()),
        couch_name: db.couch_name().to_string(),
        server: format!("{sns}/{sname}"),
        security,
        entries,
        refused,
    }
}

#[cfg(test)]
mod tests;
