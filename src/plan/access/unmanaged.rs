//! Who couchshare lets into a database no CouchDatabase manages: a per-user database
//! (`userdb-<hex>`) or one a `couchName` grant names. couchshare adds and removes only its own
//! entries there (`plan::grant::merge_unmanaged`) and leaves every other one alone — CouchDB's
//! own `couch_peruser` entry for the owner, or a hand-written one. [`unmanaged_contributions`]
//! is the one filter: the operator's unmanaged `_security` writer calls it with what its
//! watches hold, and `kubectl couchshare access` explains with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde::Serialize;

use super::tenants::Tenants;
use super::{Causes, Contributions, Entry, Refusal, server_of};
use crate::api::{Access, ConsentScope, CouchDatabase, CouchGrant, CouchShare, CouchUser};
use crate::plan::security::GrantEntries;
use crate::plan::tenancy::{self, EndpointRole, TrustedAct, grant_needs, share_needs};

/// An unmanaged database and what may reach it.
pub struct UnmanagedWorld<'a> {
    pub tenants: Tenants<'a>,
    /// Its name on CouchDB.
    pub couch_name: &'a str,
    /// The CouchDatabases listed, to tell whether one manages the name after all.
    pub databases: &'a [Arc<CouchDatabase>],
    /// A grant or share being deleted (its UID): what it gave leaves.
    pub leaving: Option<&'a str>,
    /// The UID of a share whose pass has just made its replication user, before its status
    /// names it.
    pub arriving: Option<&'a str>,
}

/// The explanation of one unmanaged database's access.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainedUnmanaged {
    /// Its name on CouchDB.
    pub couch_name: String,
    /// `namespace/name` of its CouchServer.
    pub server: String,
    /// The CouchUser whose per-user database it is, if one is.
    pub owner: Option<String>,
    /// The entries couchshare keeps in its `_security`; any other entry is not couchshare's.
    pub entries: Vec<Entry>,
    pub refused: Vec<Refusal>,
}

impl<'a> UnmanagedWorld<'a> {
    /// The database `couch_name` of `tenants.server`, with nothing leaving or arriving.
    pub fn new(tenants: Tenants<'a>, couch_name: &'a str, databases: &'a [Arc<CouchDatabase>]) -> Self {
        UnmanagedWorld { tenants, couch_name, databases, leaving: None, arriving: None }
    }
}

impl UnmanagedWorld<'_> {
    fn on_server(&self, user: &CouchUser) -> bool {
        server_of(user, &user.spec.server_ref) == (self.tenants.server_key())
    }

    /// The live CouchUser whose per-user database this is.
    fn owner(&self) -> Option<&Arc<CouchUser>> {
        per_user_owner(self.tenants.users, &self.tenants.server_key(), self.couch_name)
    }

    /// The resource that manages the name, if one does.
    fn manager(&self) -> Option<String> {
        manager(self.databases, self.tenants.users, &self.tenants.server_key(), self.couch_name)
    }

    /// Whether namespace `from` may use the per-user database of the CouchUser `user_ns/name`
    /// for `needs`: it is this database, and its owner consents.
    fn user_database(&self, user_ns: &str, name: &str, from: &str, needs: &[ConsentScope]) -> Result<bool, String> {
        let Some(u) = self.tenants.users.iter().find(|u| {
            u.namespace().as_deref() == Some(user_ns) && u.name_any() == name && u.metadata.deletion_timestamp.is_none()
        }) else {
            return Ok(false);
        };
        if !self.on_server(u) || u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) != Some(self.couch_name)
        {
            return Ok(false);
        }
        let what = format!("CouchUser {user_ns}/{name} (its per-user database)");
        tenancy::reference(&what, user_ns, &u.spec.shared_with, from, needs).map(|()| true).map_err(|e| e.to_string())
    }

    /// Whether a grant aims at this database (`Ok(false)`: it does not), or why it may not.
    fn grant_aims(&self, grant: &CouchGrant) -> Result<bool, String> {
        let from = grant.namespace().unwrap_or_default();
        let target = &grant.spec.database;
        if let (Some(name), Some(r)) = (&target.couch_name, &target.server_ref) {
            if name != self.couch_name || server_of(grant, r) != self.tenants.server_key() {
                return Ok(false);
            }
            let what = format!("database {name}");
            tenancy::unmanaged(&what, self.manager().as_deref()).map_err(|e| e.to_string())?;
            let trusted = self.tenants.allowed(&from) && self.tenants.trusted(&from);
            let act = TrustedAct::UnmanagedDatabase(name.clone());
            tenancy::trusted(act, &from, &self.tenants.server_name(), trusted).map_err(|e| e.to_string())?;
            return Ok(true);
        }
        let Some(reference) = &target.user_database else { return Ok(false) };
        let user_ns = reference.namespace.clone().unwrap_or_else(|| from.clone());
        if !self.user_database(&user_ns, &reference.user, &from, &grant_needs(grant.spec.access))? {
            return Ok(false);
        }
        if !self.tenants.allowed(&from) {
            return Err(format!(
                "namespace {from} is not in the allowedNamespaces of CouchServer {}",
                self.tenants.server_name()
            ));
        }
        Ok(true)
    }

    /// Whether a share touches this database, and in what role (`None`: it does not).
    fn share_touches(&self, share: &CouchShare) -> Result<Option<&'static str>, String> {
        let ns = share.namespace().unwrap_or_default();
        for (r, role, label) in [
            (&share.spec.source.user_database, EndpointRole::Source, "source"),
            (&share.spec.target.user_database, EndpointRole::Target, "target"),
        ] {
            let Some(r) = r else { continue };
            let user_ns = r.namespace.as_deref().unwrap_or(&ns);
            if self.user_database(user_ns, &r.user, &ns, &share_needs(role, share.spec.mode))? {
                return Ok(Some(label));
            }
        }
        let Some(fan_in) = &share.spec.source.user_databases else { return Ok(None) };
        let Ok(selector) = Selector::try_from(fan_in.selector.clone()) else { return Ok(None) };
        let selected = self.tenants.users.iter().any(|u| {
            u.namespace().as_deref() == Some(ns.as_str())
                && u.metadata.deletion_timestamp.is_none()
                && selector.matches(u.labels())
                && self.on_server(u)
                && u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(self.couch_name)
        });
        Ok(selected.then_some("fan-in source"))
    }
}

/// The live CouchUser of `users` whose per-user database on `server` (namespace, name) is
/// `name`.
pub fn per_user_owner<'a>(
    users: &'a [Arc<CouchUser>],
    server: &(String, String),
    name: &str,
) -> Option<&'a Arc<CouchUser>> {
    users.iter().find(|u| {
        u.metadata.deletion_timestamp.is_none()
            && u.spec.per_user_database
            && u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(name)
            && &server_of(u.as_ref(), &u.spec.server_ref) == server
    })
}

/// The live resource that manages the CouchDB database `name` on `server`, if one does: a
/// CouchDatabase naming it, or the CouchUser whose per-user database it is.
pub fn manager(
    databases: &[Arc<CouchDatabase>],
    users: &[Arc<CouchUser>],
    server: &(String, String),
    name: &str,
) -> Option<String> {
    let database = databases.iter().find(|d| {
        d.metadata.deletion_timestamp.is_none()
            && d.couch_name() == name
            && &server_of(d.as_ref(), &d.spec.server_ref) == server
    });
    if let Some(d) = database {
        return Some(format!("CouchDatabase {}/{}", d.namespace().unwrap_or_default(), d.name_any()));
    }
    per_user_owner(users, server, name)
        .map(|u| format!("CouchUser {}/{} (its per-user database)", u.namespace().unwrap_or_default(), u.name_any()))
}

/// What live grants and shares contribute to the unmanaged database: grants that name it
/// (`couchName`, from a namespace the server trusts, while no resource manages the name) or
/// name its owner's per-user database with the owner's consent; replication users of shares
/// that use it (a per-user database they name, or one a fan-in selects).
pub fn unmanaged_contributions(world: &UnmanagedWorld<'_>) -> Contributions {
    let mut causes = Causes { by_entry: BTreeMap::new() };
    let mut refused = Vec::new();
    let mut entries = Vec::new();
    let leaving = |uid: Option<String>| uid.is_some() && uid.as_deref() == world.leaving;
    for grant in world.tenants.grants {
        if grant.metadata.deletion_timestamp.is_some() || leaving(grant.uid()) {
            continue;
        }
        let source = format!("CouchGrant {}/{}", grant.namespace().unwrap_or_default(), grant.name_any());
        match world.grant_aims(grant) {
            Ok(false) => continue,
            Err(why) => {
                refused.push(Refusal { source, why });
                continue;
            }
            Ok(true) => {}
        }
        if let Some(e) = world.tenants.grant_entries(grant, &mut refused) {
            let access = match grant.spec.access {
                Access::Member => "member",
                Access::Admin => "admin",
            };
            causes.add(e.access, &e.names, &e.roles, &format!("{source} ({access})"));
            entries.push(e);
        }
    }
    for share in world.tenants.shares {
        if !crate::plan::share::wants_access(share) || leaving(share.uid()) {
            continue;
        }
        let source = format!("CouchShare {}/{}", share.namespace().unwrap_or_default(), share.name_any());
        let role = match world.share_touches(share) {
            Ok(Some(role)) => role,
            Ok(None) => continue,
            Err(why) => {
                refused.push(Refusal { source, why });
                continue;
            }
        };
        let arriving = world.arriving.is_some() && share.uid().as_deref() == world.arriving;
        if !arriving && let Err(why) = world.tenants.share_user(share) {
            refused.push(Refusal { source, why });
            continue;
        }
        let e: GrantEntries = crate::plan::share::contribution(share);
        causes.add(e.access, &e.names, &e.roles, &format!("replication user of {source} ({role})"));
        entries.push(e);
    }
    Contributions { entries, causes, refused }
}

/// The explanation of the unmanaged database's access: couchshare's entries with their causes.
pub fn explain_unmanaged(world: &UnmanagedWorld<'_>) -> ExplainedUnmanaged {
    let Contributions { causes, refused, .. } = unmanaged_contributions(world);
    let owner = world.owner().map(|u| format!("{}/{}", u.namespace().unwrap_or_default(), u.name_any()));
    let entries = causes.into_entries();
    ExplainedUnmanaged {
        couch_name: world.couch_name.to_string(),
        server: world.tenants.server_name(),
        owner,
        entries,
        refused,
    }
}
