//! Who may reach what on a shared CouchServer. A namespace the server allows may use it, but
//! reaches another namespace's objects only with their consent (`sharedWith`), reaches what
//! couchshare does not manage only when the server trusts it (`trustedNamespaces`), and never
//! reaches a managed object except through its resource. Pure: the controller passes in what
//! it found (the consents, the namespace's labels, who manages a name).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::api::{Access, AllowedNamespaces, Consent, ConsentScope, NamespacesFrom, ShareMode};

/// Why a reference or an act is refused. Nothing is written for a refused resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An object in another namespace has not consented.
    #[error(
        "{what} has not consented to {needs} from namespace {from}; its owner can add {{namespace: {from}, allow: [{needs}]}} to its spec.sharedWith"
    )]
    NoConsent {
        /// The referenced object, e.g. `CouchDatabase team-a/payroll`.
        what: String,
        /// The referring namespace.
        from: String,
        /// What is missing, comma-separated scopes.
        needs: String,
    },
    /// The CouchDB object is managed by a resource, and is reached only through it.
    #[error("{what} is managed by {owner}; reference that resource instead")]
    Managed {
        /// The CouchDB object, e.g. `database payroll-1`.
        what: String,
        /// The managing resource.
        owner: String,
    },
    /// A server-wide name outside the declaring namespace's scope.
    #[error(
        "{kind} {name:?} is outside the names of namespace {from} on CouchServer {server}: a namespace the server does not trust declares only {kind}s that start with {prefix:?} (or the server lists it in spec.trustedNamespaces)"
    )]
    OutOfScope {
        /// What kind of name.
        kind: NameKind,
        /// The name.
        name: String,
        /// The declaring namespace.
        from: String,
        /// The prefix its names must carry.
        prefix: String,
        /// `namespace/name` of the server.
        server: String,
    },
    /// A name couchshare derives itself: nobody declares it.
    #[error("{kind} {name:?} is reserved: couchshare derives the {kind}s that start with {prefix:?} itself ({why})")]
    Reserved {
        /// What kind of name.
        kind: NameKind,
        /// The name.
        name: String,
        /// The reserved prefix.
        prefix: String,
        /// What couchshare derives from it.
        why: &'static str,
    },
    /// The act needs a namespace the server trusts.
    #[error("namespace {from} is not trusted by CouchServer {server} for {act} (its spec.trustedNamespaces)")]
    Untrusted {
        /// What was attempted.
        act: TrustedAct,
        /// The namespace that attempted it.
        from: String,
        /// `namespace/name` of the server.
        server: String,
    },
}

/// What only a trusted namespace may do on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedAct {
    /// Grant access to a database couchshare does not manage (`couchName`).
    UnmanagedDatabase(String),
    /// Adopt an existing database.
    AdoptDatabase(String),
    /// Adopt an existing user.
    AdoptUser(String),
    /// Put the server admin's credentials in replication documents.
    AdminCredentials,
}

impl std::fmt::Display for TrustedAct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustedAct::UnmanagedDatabase(db) => write!(f, "granting access to the unmanaged database {db}"),
            TrustedAct::AdoptDatabase(db) => write!(f, "adopting the existing database {db}"),
            TrustedAct::AdoptUser(user) => write!(f, "adopting the existing user {user}"),
            TrustedAct::AdminCredentials => write!(f, "replicating with the server admin's credentials"),
        }
    }
}

impl Refused {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NoConsent { .. } | Refused::Managed { .. } => "ReferenceNotPermitted",
            Refused::Untrusted { act: TrustedAct::UnmanagedDatabase(_), .. } => "ReferenceNotPermitted",
            Refused::Untrusted { act: TrustedAct::AdoptDatabase(_) | TrustedAct::AdoptUser(_), .. } => {
                "AdoptionNotPermitted"
            }
            Refused::Untrusted { act: TrustedAct::AdminCredentials, .. } => "AdminCredentialsNotPermitted",
            Refused::OutOfScope { kind: NameKind::Role, .. } => "RoleNotPermitted",
            Refused::OutOfScope { .. } => "NameOutOfScope",
            Refused::Reserved { .. } => "NameReserved",
        }
    }
}

/// The three kinds of names CouchDB keeps server-wide, while Kubernetes gives every namespace
/// its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A database name.
    Database,
    /// A username (`_users/org.couchdb.user:NAME`).
    Username,
    /// A role, in a user's roles or a `_security` entry.
    Role,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Database => "database name",
            NameKind::Username => "username",
            NameKind::Role => "role",
        })
    }
}

/// Which server-wide names a namespace may declare on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameScope {
    /// Any name: the server's own namespace, and the namespaces it trusts.
    Unrestricted,
    /// Only names that start with `prefix` (`<namespace>_`).
    Prefixed {
        /// The declaring namespace.
        namespace: String,
        /// `<namespace>_`.
        prefix: String,
        /// `namespace/name` of the server.
        server: String,
    },
}

/// The prefix of a namespace's names on a server that does not trust it: `<namespace>_`. A
/// namespace name has no `_`, so no namespace's prefix starts another's: `team_` never claims
/// `team-a_payroll`, and `team-a_` never claims `team_x`.
pub fn scope_prefix(namespace: &str) -> String {
    format!("{namespace}_")
}

/// The names namespace `from` may declare on the server `server_ns/server_name`.
pub fn name_scope(from: &str, server_ns: &str, server_name: &str, trusted: bool) -> NameScope {
    if from == server_ns || trusted {
        return NameScope::Unrestricted;
    }
    NameScope::Prefixed {
        namespace: from.to_string(),
        prefix: scope_prefix(from),
        server: format!("{server_ns}/{server_name}"),
    }
}

/// `Ok` when `scope` may declare `name`. In a `_security` entry (`entry: true`) the role
/// `_admin` is allowed to everyone: it admits the server's admins, who are admitted anyway.
pub fn in_scope(scope: &NameScope, kind: NameKind, name: &str, entry: bool) -> Result<(), Refused> {
    let NameScope::Prefixed { namespace, prefix, server } = scope else { return Ok(()) };
    if name.starts_with(prefix.as_str()) || (entry && kind == NameKind::Role && name == "_admin") {
        return Ok(());
    }
    Err(Refused::OutOfScope {
        kind,
        name: name.into(),
        from: namespace.clone(),
        prefix: prefix.clone(),
        server: server.clone(),
    })
}

/// Every name of `names` in `scope`, or the first refusal.
pub fn all_in_scope<'a>(
    scope: &NameScope,
    kind: NameKind,
    names: impl IntoIterator<Item = &'a String>,
    entry: bool,
) -> Result<(), Refused> {
    names.into_iter().try_for_each(|n| in_scope(scope, kind, n, entry))
}

/// The Ready reasons of an object that was refused: it owns nothing on the server, so no
/// `_security` admits what it names (a user in `Conflict` over a username another namespace
/// holds, a share whose replication document CouchDB refused).
pub const REFUSAL_REASONS: &[&str] = &[
    "AlreadyExists",
    "Conflict",
    "NameOutOfScope",
    "RoleNotPermitted",
    "NameReserved",
    "AdoptionNotPermitted",
    "ReferenceNotPermitted",
    "AdminCredentialsNotPermitted",
    "NotAllowed",
    "SecretConflict",
    "InvalidSpec",
    "InvalidSelector",
    "ReplicationRefused",
    "RemoteUnusable",
];

/// Whether an object that recorded `recorded` as its CouchDB name (in its status, once it wrote
/// or adopted it as its owner) may have `name` admitted to a `_security`: it must own the name
/// and not be refused now (`ready`: its Ready condition's status and reason). A transient
/// failure (CouchDB unreachable for a moment) keeps what it owns admitted.
pub fn admitted(recorded: Option<&str>, name: &str, ready: Option<(&str, &str)>) -> Result<(), String> {
    match ready {
        Some((status, reason)) if status != "True" && REFUSAL_REASONS.contains(&reason) => {
            Err(format!("not Ready: {reason}"))
        }
        _ if recorded != Some(name) => Err("not Ready: it does not own the name yet".into()),
        Some(_) => Ok(()),
        None => Err("not Ready yet".into()),
    }
}

/// The username prefix of couchshare's own users (a share's scoped replication user).
pub const RESERVED_USERNAME_PREFIX: &str = "couchshare-";

/// `Ok` unless a CouchUser's `username` is one couchshare derives (its replication users).
pub fn username_not_reserved(username: &str) -> Result<(), Refused> {
    if !username.starts_with(RESERVED_USERNAME_PREFIX) {
        return Ok(());
    }
    Err(Refused::Reserved {
        kind: NameKind::Username,
        name: username.into(),
        prefix: RESERVED_USERNAME_PREFIX.into(),
        why: "the scoped replication users of shares",
    })
}

/// `Ok` unless a CouchDatabase's `name` is a per-user database name (`userdb_prefix`, the
/// server's `couch_peruser/database_prefix`): those belong to the user whose hex name follows.
pub fn database_not_reserved(name: &str, userdb_prefix: &str) -> Result<(), Refused> {
    if userdb_prefix.is_empty() || !name.starts_with(userdb_prefix) {
        return Ok(());
    }
    Err(Refused::Reserved {
        kind: NameKind::Database,
        name: name.into(),
        prefix: userdb_prefix.into(),
        why: "per-user databases; declare the CouchUser with perUserDatabase: true",
    })
}

/// Which end of a share a database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRole {
    /// Documents are read from it (and, two-way, written back).
    Source,
    /// Documents are written into it (and, two-way, read back).
    Target,
}

/// What a grant of `access` needs consent for.
pub fn grant_needs(access: Access) -> Vec<ConsentScope> {
    match access {
        Access::Member => vec![ConsentScope::Member],
        Access::Admin => vec![ConsentScope::Admin],
    }
}

/// What a share needs consent for on one of its endpoints: a two-way share reads and writes
/// both ends.
pub fn share_needs(role: EndpointRole, mode: ShareMode) -> Vec<ConsentScope> {
    match (role, mode) {
        (EndpointRole::Source, ShareMode::OneWay) => vec![ConsentScope::ReplicateFrom],
        (EndpointRole::Target, ShareMode::OneWay) => vec![ConsentScope::ReplicateTo],
        (_, ShareMode::TwoWay) => vec![ConsentScope::ReplicateFrom, ConsentScope::ReplicateTo],
    }
}

fn scope_name(scope: ConsentScope) -> &'static str {
    match scope {
        ConsentScope::Member => "member",
        ConsentScope::Admin => "admin",
        ConsentScope::ReplicateFrom => "replicateFrom",
        ConsentScope::ReplicateTo => "replicateTo",
    }
}

/// A reference from namespace `from` to `what`, an object in `owner_namespace` with `consents`:
/// always allowed in the object's own namespace, otherwise only for what its consent names.
pub fn reference(
    what: &str,
    owner_namespace: &str,
    consents: &[Consent],
    from: &str,
    needs: &[ConsentScope],
) -> Result<(), Refused> {
    if from == owner_namespace {
        return Ok(());
    }
    let given = consents.iter().find(|c| c.namespace == from).map(|c| c.allow.as_slice()).unwrap_or_default();
    let covered = |need: &ConsentScope| {
        given.contains(need) || (*need == ConsentScope::Member && given.contains(&ConsentScope::Admin))
    };
    let missing: Vec<&str> = needs.iter().filter(|n| !covered(n)).map(|n| scope_name(*n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Refused::NoConsent { what: what.into(), from: from.into(), needs: missing.join(", ") })
}

/// Whether namespace `from` is in the set `policy` describes, for a server in `own`.
/// `labels` are `from`'s labels, needed only for `Selector` (`None`: the namespace does not
/// exist). A selector that does not parse matches nothing.
pub fn in_namespaces(
    policy: &AllowedNamespaces,
    own: &str,
    from: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if from == own {
        return true;
    }
    match policy.from {
        NamespacesFrom::Same => false,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            let (Some(selector), Some(labels)) = (policy.selector.as_ref(), labels) else { return false };
            selector_matches(selector, labels)
        }
    }
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// Whether `policy` needs the namespace's labels to decide.
pub fn needs_labels(policy: &AllowedNamespaces, own: &str, from: &str) -> bool {
    from != own && policy.from == NamespacesFrom::Selector
}

/// An act only trusted namespaces may do: allowed when `trusted`.
pub fn trusted(act: TrustedAct, from: &str, server: &str, trusted: bool) -> Result<(), Refused> {
    if trusted { Ok(()) } else { Err(Refused::Untrusted { act, from: from.into(), server: server.into() }) }
}

/// A CouchDB object named directly (a `couchName` grant): refused when a resource manages it.
pub fn unmanaged(what: &str, managed_by: Option<&str>) -> Result<(), Refused> {
    match managed_by {
        Some(owner) => Err(Refused::Managed { what: what.into(), owner: owner.into() }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "tenancy_tests.rs"]
mod tests;
