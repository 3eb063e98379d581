//! What every explanation reads besides the database: the server, the objects listed and the
//! namespaces' labels, with the rules a grant's entries and a share's replication user pass
//! whatever database they reach.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use super::{Refusal, admitted, server_of};
use crate::api::{CouchGrant, CouchServer, CouchShare, CouchUser};
use crate::plan::security::GrantEntries;
use crate::plan::tenancy::{self, NameKind};

/// What every explanation reads besides the database: the server, the objects listed, and
/// the labels of the namespaces a policy asks about.
#[derive(Clone, Copy)]
pub struct Tenants<'a> {
    pub server: &'a CouchServer,
    pub grants: &'a [Arc<CouchGrant>],
    pub users: &'a [Arc<CouchUser>],
    pub shares: &'a [Arc<CouchShare>],
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl Tenants<'_> {
    pub(super) fn server_ns(&self) -> String {
        self.server.namespace().unwrap_or_default()
    }

    pub(super) fn server_name(&self) -> String {
        format!("{}/{}", self.server_ns(), self.server.name_any())
    }

    pub(super) fn server_key(&self) -> (String, String) {
        (self.server_ns(), self.server.name_any())
    }

    pub(super) fn allowed(&self, from: &str) -> bool {
        tenancy::in_namespaces(
            &self.server.spec.allowed_namespaces,
            &self.server_ns(),
            from,
            self.namespace_labels.get(from),
        )
    }

    pub(super) fn trusted(&self, from: &str) -> bool {
        let own = self.server_ns();
        from == own
            || tenancy::in_namespaces(&self.server.spec.trusted_namespaces, &own, from, self.namespace_labels.get(from))
    }

    pub(super) fn scope(&self, from: &str) -> tenancy::NameScope {
        tenancy::name_scope(from, &self.server_ns(), &self.server.name_any(), self.trusted(from))
    }

    /// The entries of a grant from `from` that may reach the database: its names and roles in
    /// the namespace's scope, its users resolved and admitted (each one refused is said).
    pub(super) fn grant_entries(&self, grant: &CouchGrant, refused: &mut Vec<Refusal>) -> Option<GrantEntries> {
        let from = grant.namespace().unwrap_or_default();
        let source = format!("CouchGrant {from}/{}", grant.name_any());
        let refuse = |refused: &mut Vec<Refusal>, why: String| refused.push(Refusal { source: source.clone(), why });
        let scope = self.scope(&from);
        let in_scope = tenancy::all_in_scope(&scope, NameKind::Username, &grant.spec.usernames, true)
            .and_then(|()| tenancy::all_in_scope(&scope, NameKind::Role, &grant.spec.roles, true));
        if let Err(e) = in_scope {
            refuse(refused, e.to_string());
            return None;
        }
        let server = self.server_key();
        let mut names = grant.spec.usernames.clone();
        for reference in &grant.spec.users {
            let user_ns = reference.namespace.clone().unwrap_or_else(|| from.clone());
            let found = self.users.iter().find(|u| {
                u.namespace().as_deref() == Some(user_ns.as_str())
                    && u.name_any() == reference.name
                    && u.metadata.deletion_timestamp.is_none()
            });
            let who = format!("CouchUser {user_ns}/{}", reference.name);
            match found {
                Some(u) if server_of(u.as_ref(), &u.spec.server_ref) == server => {
                    let status = u.status.as_ref();
                    match admitted(
                        status.and_then(|s| s.username.as_deref()),
                        u.couch_username(),
                        status.map(|s| s.conditions.as_slice()),
                    ) {
                        Ok(()) => names.push(u.couch_username().to_string()),
                        Err(why) => refuse(refused, format!("{who}: {why}")),
                    }
                }
                Some(_) => refuse(refused, format!("{who} is on another CouchServer")),
                None => refuse(refused, format!("{who} does not exist")),
            }
        }
        names.sort();
        names.dedup();
        let mut roles = grant.spec.roles.clone();
        roles.sort();
        roles.dedup();
        Some(GrantEntries { access: grant.spec.access, names, roles })
    }

    /// Whether a share's replication user may enter (or why not): it wants access, the share
    /// wrote it as its own and is not refused now, and the server allows its namespace.
    pub(super) fn share_user(&self, share: &CouchShare) -> Result<(), String> {
        let from = share.namespace().unwrap_or_default();
        let status = share.status.as_ref();
        let me = crate::plan::share::owner(share);
        let username = crate::plan::share::replication_username(&me.namespace, &me.name);
        admitted(
            status.and_then(|s| s.replication_user.as_deref()),
            &username,
            status.map(|s| s.conditions.as_slice()),
        )
        .map_err(|why| format!("its replication user {username}: {why}"))?;
        if !self.allowed(&from) {
            return Err(format!("namespace {from} is not in the server's allowedNamespaces"));
        }
        Ok(())
    }
}
