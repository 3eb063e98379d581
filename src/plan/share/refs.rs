//! What a CouchShare asks of the databases it touches, from the resource alone: its identity,
//! its replicator database, and the `_security` entry its scoped replication user needs. The
//! database and grant reconcilers and the dry run use these, never the share reconciler.

use kube::ResourceExt;

use super::replication_username;
use crate::api::{CouchShare, ShareCredentials};
use crate::plan::ownership::Owner;
use crate::plan::security::GrantEntries;

/// The share as the owner recorded in what it writes.
pub fn owner(share: &CouchShare) -> Owner {
    Owner {
        kind: "CouchShare".into(),
        namespace: share.namespace().unwrap_or_default(),
        name: share.name_any(),
        uid: share.uid().unwrap_or_default(),
    }
}

/// The replicator database of a share.
pub fn replicator_db(share: &CouchShare) -> String {
    share.spec.replicator_database.clone().unwrap_or_else(|| crate::couch::REPLICATOR_DB.to_string())
}

/// Name of the Secret holding the scoped replication user's password.
pub fn replication_secret_name(share: &CouchShare) -> String {
    format!("{}-replication", share.name_any())
}

/// Whether the share (still) needs its scoped user's access on local databases: not once it is
/// declared revoked, revoked, or being deleted. Access goes with the declaration — the deletion
/// mark, `revoke.revoked` — not when the revocation has finished: a database reconciled on that
/// event must not wait for the share's status, and taking access away first only stops data
/// flowing earlier.
pub fn wants_access(share: &CouchShare) -> bool {
    share.spec.credentials == ShareCredentials::Scoped
        && share.metadata.deletion_timestamp.is_none()
        && !share.spec.revoke.as_ref().is_some_and(|r| r.revoked)
        && !share.status.as_ref().is_some_and(|s| s.revoked)
}

/// What a share contributes to a local database's `_security`: its replication user as member.
pub fn contribution(share: &CouchShare) -> GrantEntries {
    let owner = owner(share);
    GrantEntries {
        access: crate::api::Access::Member,
        names: vec![replication_username(&owner.namespace, &owner.name)],
        roles: vec![],
    }
}

/// Whether this share touches the CouchDatabase `db` (as source or target).
pub fn touches_database(share: &CouchShare, db: &crate::api::CouchDatabase) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let matches = |r: &Option<crate::api::ObjectRef>| {
        r.as_ref().is_some_and(|r| {
            r.name == db.name_any() && r.namespace.as_deref().unwrap_or(&ns) == db.namespace().unwrap_or_default()
        })
    };
    matches(&share.spec.source.database) || matches(&share.spec.target.database)
}
