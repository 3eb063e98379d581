//! `CouchDatabase`: one CouchDB database, its creation options and its base `_security`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::{RestoreFrom, RestoreStatus};
use super::common::{Condition, Consent, DeletionPolicy, SecuritySpec, ServerRef};

/// One CouchDB database owned by this resource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchDatabase",
    namespaced,
    shortname = "cdb",
    category = "couchshare",
    status = "CouchDatabaseStatus",
    doc = "A CouchDB database: creation options, base _security and deletion policy.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".status.couchName"}"#,
    printcolumn = r#"{"name":"Docs","type":"integer","jsonPath":".status.docCount"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)",
     "message": "name is immutable", "fieldPath": ".name"},
    {"rule": "self.partitioned == oldSelf.partitioned",
     "message": "partitioned is immutable", "fieldPath": ".partitioned"},
    {"rule": "has(self.shards) == has(oldSelf.shards) && (!has(self.shards) || self.shards == oldSelf.shards)",
     "message": "shards is immutable", "fieldPath": ".shards"},
    {"rule": "!has(self.restoreFrom) || !has(oldSelf.restoreFrom) || self.restoreFrom == oldSelf.restoreFrom",
     "message": "restoreFrom cannot be changed (it may be removed)", "fieldPath": ".restoreFrom"}
]))]
pub struct CouchDatabaseSpec {
    /// The CouchServer this database lives on.
    pub server_ref: ServerRef,
    /// CouchDB database name; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 238), extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-z][a-z0-9_$()+/-]*$')",
         "message": "must be a valid CouchDB database name: start with a lowercase letter, then only lowercase letters, digits and _ $ ( ) + - /"}
    ]))]
    pub name: Option<String>,
    /// Create a partitioned database. Immutable.
    #[serde(default)]
    pub partitioned: bool,
    /// Sharding of a clustered database. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Shards>,
    /// Base `_security`: admins and members; grants are merged into it.
    #[serde(default)]
    pub security: SecuritySpec,
    /// `Retain` (default) keeps the database when the resource is deleted; `Delete` deletes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over a database that already exists on the server instead of refusing it. Only
    /// from a namespace the CouchServer trusts (`trustedNamespaces`), and never a database
    /// another resource manages.
    #[serde(default)]
    pub adopt: bool,
    /// Only `true` allows an empty members list, which makes the database readable and
    /// writable by anyone, even anonymous requests.
    #[serde(default)]
    pub public: bool,
    /// Namespaces whose CouchGrants and CouchShares may use this database, and how. Resources
    /// in the database's own namespace need no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["namespace"]))]
    pub shared_with: Vec<Consent>,
    /// Fill the database, once, from a backup. Only a database with no documents (a new one)
    /// is filled; one that holds documents is refused with `DatabaseNotEmpty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// Shard settings: CouchDB's `q` and `n`, under names every YAML parser reads the same (YAML
/// 1.1, which kubectl speaks, reads a key `n` as the boolean `false`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shards {
    /// Number of shards (CouchDB's `q`); the cluster's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub count: Option<i32>,
    /// Copies of each shard (CouchDB's `n`); the cluster's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub copies: Option<i32>,
}

/// Observed state of a CouchDatabase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchDatabaseStatus {
    /// Standard conditions; `Ready` is always present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The database's name on CouchDB, recorded once it is owned by this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couch_name: Option<String>,
    /// The server URL it lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Number of documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_count: Option<i64>,
    /// Active size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_size: Option<i64>,
    /// Whether the database is partitioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// The restore of `spec.restoreFrom`, once it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

impl CouchDatabase {
    /// The CouchDB name: `spec.name`, or `metadata.name`.
    pub fn couch_name(&self) -> &str {
        self.spec.name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}
