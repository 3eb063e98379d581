//! Types shared by several kinds: references, principals, deletion policy, conditions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// A reference to a `CouchServer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerRef {
    /// Name of the CouchServer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the CouchServer; defaults to the referring resource's namespace. A
    /// server in another namespace must allow this one in its `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// A reference to a namespaced object of another kind, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referenced object; defaults to the referring resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// A Secret in the resource's own namespace, and the keys to read from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret (same namespace as the resource).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the username.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1))]
    pub username_key: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1))]
    pub password_key: String,
}

/// One key of a Secret in the resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as the resource).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

pub(crate) fn default_username_key() -> String {
    "username".into()
}

pub(crate) fn default_password_key() -> String {
    "password".into()
}

/// What happens to the CouchDB object when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the CouchDB object in place; only the finalizer is removed.
    #[default]
    Retain,
    /// Delete the CouchDB object.
    Delete,
}

/// Names and roles of one `_security` section (`admins` or `members`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Principals {
    /// CouchDB usernames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 255)), extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
    /// CouchDB roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 255)), extend("x-kubernetes-list-type" = "set"))]
    pub roles: Vec<String>,
}

/// A database's base `_security` object. Grants are merged into it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Database admins: may change design documents and `_security`.
    #[serde(default)]
    pub admins: Principals,
    /// Database members: may read and write documents. When this ends up empty the
    /// database is kept admin-only, unless the database is explicitly `public`.
    #[serde(default)]
    pub members: Principals,
}

/// Consent, given on a CouchDatabase or a CouchUser, for resources in another namespace to use
/// it. Nothing from another namespace may reference an object without it; removing an entry
/// withdraws it (the access goes, replications stop).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// The namespace whose CouchGrants and CouchShares may reference this object.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// What they may do: `member` or `admin` — CouchGrants giving that access (`admin`
    /// includes `member`); `replicateFrom` — CouchShares reading from it (as a source);
    /// `replicateTo` — CouchShares writing into it (as a target). A `TwoWay` share needs both.
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub allow: Vec<ConsentScope>,
}

/// One thing a consent allows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConsentScope {
    /// CouchGrants with `access: member`.
    Member,
    /// CouchGrants with `access: admin` or `member`.
    Admin,
    /// CouchShares replicating from this database.
    ReplicateFrom,
    /// CouchShares replicating into this database.
    ReplicateTo,
}

/// Standard condition types.
pub mod condition {
    /// The resource's CouchDB state matches its spec.
    pub const READY: &str = "Ready";
    /// A CouchUser's password in CouchDB matches its source.
    pub const PASSWORD_SYNCED: &str = "PasswordSynced";
    /// A CouchServer's cluster lacks a node: configured but not connected, or not answering.
    pub const DEGRADED: &str = "Degraded";
}
