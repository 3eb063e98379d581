//! `CouchGrant`: membership of users and roles in one database's `_security`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, ObjectRef, ServerRef};
use super::share::UserDatabaseRef;

/// Access to one database for users and roles, merged into its `_security`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchGrant",
    namespaced,
    shortname = "cgrant",
    category = "couchshare",
    status = "CouchGrantStatus",
    doc = "Member or admin access to one CouchDB database for users and roles.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".status.database"}"#,
    printcolumn = r#"{"name":"Access","type":"string","jsonPath":".spec.access"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "size(self.users) + size(self.usernames) + size(self.roles) > 0",
     "message": "a grant needs at least one of users, usernames or roles"}
]))]
pub struct CouchGrantSpec {
    /// The database the access is granted on.
    pub database: GrantDatabase,
    /// `member` (read and write documents) or `admin` (also design documents and `_security`).
    #[serde(default)]
    pub access: Access,
    /// CouchUser resources to grant access to.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub users: Vec<ObjectRef>,
    /// Raw CouchDB usernames, for users not managed by couchshare.
    #[serde(default)]
    #[schemars(length(max = 1000), inner(length(max = 255)), extend(
        "x-kubernetes-list-type" = "set",
        "x-kubernetes-validations" = [
            {"rule": "self.all(u, size(u) > 0 && !u.contains(':'))",
             "message": "usernames must be non-empty and must not contain :"}
        ]
    ))]
    pub usernames: Vec<String>,
    /// CouchDB roles to grant access to.
    #[serde(default)]
    #[schemars(length(max = 1000), inner(length(max = 255)), extend(
        "x-kubernetes-list-type" = "set",
        "x-kubernetes-validations" = [
            {"rule": "self.all(r, size(r) > 0)", "message": "roles must be non-empty"}
        ]
    ))]
    pub roles: Vec<String>,
}

/// A managed CouchDatabase, a CouchUser's per-user database, or an unmanaged database by its
/// CouchDB name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.name) ? 1 : 0) + (has(self.userDatabase) ? 1 : 0) + (has(self.couchName) ? 1 : 0) == 1",
     "message": "database needs exactly one of name (a CouchDatabase), userDatabase (a CouchUser's per-user database) or couchName (an unmanaged database)"},
    {"rule": "!has(self.namespace) || has(self.name)",
     "message": "database.namespace is only used with name; userDatabase names its own namespace"},
    {"rule": "!has(self.couchName) || has(self.serverRef)",
     "message": "database.serverRef is required with couchName"},
    {"rule": "has(self.couchName) || !has(self.serverRef)",
     "message": "database.serverRef is only used with couchName; a CouchDatabase or CouchUser names its own server"}
]))]
pub struct GrantDatabase {
    /// Name of a CouchDatabase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Namespace of the CouchDatabase; defaults to the grant's namespace. A database in another
    /// namespace must consent to this one in its `sharedWith`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// A CouchUser's per-user database (`perUserDatabase: true`). Only the entries this grant
    /// contributes are added and removed; the user stays its admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_database: Option<UserDatabaseRef>,
    /// CouchDB name of a database couchshare does not manage (one an app created, say). Only
    /// the entries this grant contributes are added and removed. Only from a namespace the
    /// server trusts (`trustedNamespaces`); a database a CouchDatabase or CouchUser manages is
    /// reached through that resource instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 238), extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-z][a-z0-9_$()+/-]*$')",
         "message": "must be a valid CouchDB database name: start with a lowercase letter, then only lowercase letters, digits and _ $ ( ) + - /"}
    ]))]
    pub couch_name: Option<String>,
    /// The server of a `couchName` database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ServerRef>,
}

/// Level of access.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read and write documents.
    #[default]
    Member,
    /// Database admin.
    Admin,
}

/// Observed state of a CouchGrant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchGrantStatus {
    /// Standard conditions; `Ready` is always present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CouchDB name of the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// CouchDB usernames this grant contributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usernames: Vec<String>,
    /// Roles this grant contributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Referenced CouchUsers that do not exist (yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_users: Vec<String>,
}
