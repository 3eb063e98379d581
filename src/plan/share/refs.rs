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
    let me = Some((db.namespace().unwrap_or_default(), db.name_any()));
    end_of(share, &share.spec.source.database) == me || end_of(share, &share.spec.target.database) == me
}

/// The (namespace, name) of the CouchDatabase an end of `share` names, in the share's namespace
/// unless it says another.
fn end_of(share: &CouchShare, end: &Option<crate::api::ObjectRef>) -> Option<(String, String)> {
    end.as_ref().map(|r| (r.namespace.clone().unwrap_or_else(|| share.namespace().unwrap_or_default()), r.name.clone()))
}

/// The CouchDatabases (namespace, name) a share's two ends name, when those are all it has:
/// `None` for a share with a per-user database, a fan-in or a remote end, whose wait is not only
/// its databases'.
pub fn database_ends(share: &CouchShare) -> Option<Vec<(String, String)>> {
    let (source, target) = (&share.spec.source, &share.spec.target);
    let only_databases = source.user_database.is_none()
        && source.user_databases.is_none()
        && source.per_user_databases.is_none()
        && source.remote.is_none()
        && target.user_database.is_none()
        && target.remote.is_none();
    match (only_databases, end_of(share, &source.database), end_of(share, &target.database)) {
        (true, Some(source), Some(target)) => Some(vec![source, target]),
        _ => None,
    }
}

/// Whether what a share waits for from its CouchDatabases has all come: each one created — its
/// reconciler recorded the `_security` it left it with (`recorded`, one per database, `None`
/// when not) — and, once the share names its scoped replication user (`entry`), each holding
/// that user's entry. Until then a pass of the share would only wait again.
pub fn databases_ready_for(entry: Option<&GrantEntries>, recorded: &[Option<&crate::couch::Security>]) -> bool {
    !recorded.is_empty()
        && recorded.iter().all(|s| s.is_some_and(|s| entry.is_none_or(|e| crate::plan::grant::grants_present(s, e))))
}

#[cfg(test)]
mod wait_tests {
    use serde_json::json;

    use super::*;

    fn share(source: serde_json::Value, target: serde_json::Value) -> CouchShare {
        serde_json::from_value(json!({
            "apiVersion": "couchshare.io/v1alpha1", "kind": "CouchShare",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u"},
            "spec": {"source": source, "target": target},
        }))
        .expect("a valid share")
    }

    #[test]
    fn only_a_share_between_two_couch_databases_has_database_ends() {
        let db = |name: &str| json!({"database": {"name": name}});
        let cases = vec![
            (db("a"), db("b"), Some(vec![("ns".into(), "a".into()), ("ns".into(), "b".into())])),
            (
                db("a"),
                json!({"database": {"name": "b", "namespace": "other"}}),
                Some(vec![("ns".into(), "a".into()), ("other".into(), "b".into())]),
            ),
            (json!({"userDatabase": {"user": "ana"}}), db("b"), None),
            (json!({"userDatabases": {"selector": {}}}), db("b"), None),
            (
                db("a"),
                json!({"remote": {"url": "https://x", "database": "y", "credentialsSecretRef": {"name": "s"}}}),
                None,
            ),
        ];
        for (source, target, expect) in cases {
            assert_eq!(database_ends(&share(source.clone(), target.clone())), expect, "{source} → {target}");
        }
    }

    #[test]
    fn a_share_waits_until_every_database_is_created_and_then_holds_its_entry() {
        let entry = GrantEntries { access: crate::api::Access::Member, names: vec!["repl".into()], roles: vec![] };
        let empty = crate::couch::Security::default();
        let mut with = crate::couch::Security::default();
        with.members.names.push("repl".into());
        let mut other = crate::couch::Security::default();
        other.members.names.push("alice".into());
        type Case<'a> = (Option<&'a GrantEntries>, Vec<Option<&'a crate::couch::Security>>, bool);
        let cases: Vec<Case> = vec![
            (None, vec![], false),
            // Before it names its replication user: each database created is enough.
            (None, vec![Some(&empty), None], false),
            (None, vec![Some(&empty), Some(&other)], true),
            // Then: each must hold the user's entry, not only another user's.
            (Some(&entry), vec![Some(&with), Some(&other)], false),
            (Some(&entry), vec![Some(&with), None], false),
            (Some(&entry), vec![Some(&with), Some(&with)], true),
        ];
        for (entry, recorded, expect) in cases {
            assert_eq!(databases_ready_for(entry, &recorded), expect, "{entry:?} {recorded:?}");
        }
    }
}
