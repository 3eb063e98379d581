//! `CouchShare`: a one-way or two-way replication between two databases, its sharing
//! document and its scoped replication credentials.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CredentialsSecretRef, ObjectRef, ServerRef};
use super::share_status::CouchShareStatus;

/// A replication share between two databases.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchShare",
    namespaced,
    shortname = "cshare",
    category = "couchshare",
    status = "CouchShareStatus",
    doc = "A one-way or two-way, optionally filtered, replication between two CouchDB databases.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.changesPending"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'TwoWay' || has(self.selector) || self.allowUnfiltered",
     "message": "a TwoWay share needs a selector (or allowUnfiltered: true to replicate every document both ways)"},
    {"rule": "self.mode != 'TwoWay' || !has(self.source.userDatabases)",
     "message": "source.userDatabases (fan-in) only works with mode OneWay"},
    {"rule": "!has(self.source.perUserDatabases) || self.strategy == 'OnChange'",
     "message": "source.perUserDatabases (every per-user database on the server) needs strategy: OnChange"},
    {"rule": "!has(self.source.perUserDatabases) || self.credentials == 'Admin'",
     "message": "source.perUserDatabases reads databases no resource declares: it needs credentials: Admin (from a namespace the server trusts)"},
    {"rule": "self.strategy != 'OnChange' || has(self.source.userDatabases) || has(self.source.perUserDatabases)",
     "message": "strategy: OnChange is for fan-in: source.userDatabases or source.perUserDatabases"},
    {"rule": "self.strategy != 'OnChange' || self.mode == 'OneWay'",
     "message": "strategy: OnChange only works with mode OneWay"},
    {"rule": "self.strategy != 'OnChange' || !has(self.sharingDocument)",
     "message": "strategy: OnChange writes no sharing document; remove sharingDocument"},
    {"rule": "self.strategy == 'OnChange' || !has(self.maxConcurrent)",
     "message": "maxConcurrent only applies to strategy: OnChange"},
    {"rule": "has(self.source.database) || has(self.source.userDatabase) || has(self.source.userDatabases) || has(self.source.perUserDatabases) || has(self.target.database) || has(self.target.userDatabase) || has(self.serverRef)",
     "message": "serverRef is required when both source and target are remote"},
    {"rule": "!(has(self.source.database) && has(self.target.database) && self.source.database.name == self.target.database.name && !has(self.source.database.namespace) && !has(self.target.database.namespace))",
     "message": "source and target are the same database: a share replicates between two databases"},
    {"rule": "!(has(self.source.userDatabase) && has(self.target.userDatabase) && self.source.userDatabase.user == self.target.userDatabase.user && !has(self.source.userDatabase.namespace) && !has(self.target.userDatabase.namespace))",
     "message": "source and target are the same per-user database: a share replicates between two databases"},
    {"rule": "!has(oldSelf.revoke) || !oldSelf.revoke.revoked || (has(self.revoke) && self.revoke.revoked)",
     "message": "a revoked share stays revoked; create a new CouchShare to share again"}
]))]
pub struct CouchShareSpec {
    /// Where documents come from.
    pub source: ShareSource,
    /// Where documents go (for `TwoWay`, also where they come back from).
    pub target: ShareTarget,
    /// The server whose `_replicator` runs the replications; defaults to the server of the
    /// local endpoint. Required when both endpoints are remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ServerRef>,
    /// Replicator database for the replication documents: `_replicator` (default) or a
    /// per-tenant `<prefix>/_replicator` for fair-share scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 11, max = 238), extend("x-kubernetes-validations" = [
        {"rule": "self == '_replicator' || self.matches('^[a-z][a-z0-9_$()+/-]*/_replicator$')",
         "message": "replicatorDatabase must be _replicator or end in /_replicator, e.g. tenant-a/_replicator"}
    ]))]
    pub replicator_database: Option<String>,
    /// `OneWay` (source → target) or `TwoWay` (both directions).
    #[serde(default)]
    pub mode: ShareMode,
    /// Mango selector: only matching documents replicate. Required for `TwoWay` unless
    /// `allowUnfiltered` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::free_form_object")]
    pub selector: Option<serde_json::Value>,
    /// Allow a `TwoWay` share without a selector (every document, both ways).
    #[serde(default)]
    pub allow_unfiltered: bool,
    /// Keep replicating (default) or replicate once; a completed one-shot share is never re-run.
    /// Applies to strategy `Continuous`.
    #[serde(default = "default_true")]
    pub continuous: bool,
    /// `Continuous` (default): one replication document per source, kept by CouchDB's
    /// scheduler. `OnChange` (fan-in only): no replication documents; a source database is
    /// replicated by a one-shot `POST /_replicate` when `_db_updates` says it changed, at most
    /// `maxConcurrent` at once.
    #[serde(default)]
    pub strategy: ShareStrategy,
    /// With strategy `OnChange`: how many one-shot replications run at once (default 10;
    /// they count against the server's replication budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: Option<u32>,
    /// A sharing document written into the source database, so the receiving app sees
    /// what was shared and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_document: Option<SharingDocument>,
    /// `Scoped` (default): a dedicated replication user per share; `Admin`: the server
    /// admin's credentials, only from a namespace the server trusts (`trustedNamespaces`).
    #[serde(default)]
    pub credentials: ShareCredentials,
    /// Revocation: stop sharing and clean up, in an order that cannot replicate a deletion back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Revoke>,
}

fn default_true() -> bool {
    true
}

/// How a share's replications run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShareStrategy {
    /// One replication document per source, run by CouchDB's scheduler.
    #[default]
    Continuous,
    /// A one-shot replication of a source database each time it changes (fan-in).
    OnChange,
}

/// The default of `maxConcurrent`: far below `replicator/max_jobs` (500).
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;

impl CouchShareSpec {
    /// How many on-change replications may run at once, or `None` for strategy `Continuous`.
    pub fn on_change_concurrency(&self) -> Option<u32> {
        (self.strategy == ShareStrategy::OnChange).then(|| self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT))
    }
}

/// The source of a share: exactly one of its fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.database) ? 1 : 0) + (has(self.userDatabase) ? 1 : 0) + (has(self.userDatabases) ? 1 : 0) + (has(self.perUserDatabases) ? 1 : 0) + (has(self.remote) ? 1 : 0) == 1",
     "message": "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote"}
]))]
pub struct ShareSource {
    /// A CouchDatabase on the managed server (in another namespace: with its consent,
    /// `replicateFrom`, and `replicateTo` too for `TwoWay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ObjectRef>,
    /// A CouchUser's per-user database (in another namespace: with the user's consent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_database: Option<UserDatabaseRef>,
    /// Fan-in: the per-user databases of every CouchUser matching the selector, one
    /// replication each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_databases: Option<UserDatabasesSelector>,
    /// Fan-in from every per-user database on the managed server, by name prefix, those the
    /// app or `couch_peruser` created included (strategy `OnChange`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_databases: Option<PerUserDatabases>,
    /// A database on another CouchDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteDatabase>,
}

/// Every database on the server whose name starts with a prefix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerUserDatabases {
    /// Name prefix; default: the server's `couch_peruser/database_prefix`, else `userdb-`.
    /// It must start with a lowercase letter, so no system database (`_users`,
    /// `_replicator`, ...) can match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-z][a-z0-9_$()+-]*$')",
         "message": "prefix must start with a lowercase letter and hold only lowercase letters, digits and _ $ ( ) + - (a prefix that is empty or starts with _ would match system databases)"}
    ]))]
    pub prefix: Option<String>,
}

/// The target of a share: exactly one of its fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.database) ? 1 : 0) + (has(self.userDatabase) ? 1 : 0) + (has(self.remote) ? 1 : 0) == 1",
     "message": "target needs exactly one of database, userDatabase or remote"}
]))]
pub struct ShareTarget {
    /// A CouchDatabase on the managed server (in another namespace: with its consent,
    /// `replicateTo`, and `replicateFrom` too for `TwoWay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ObjectRef>,
    /// A CouchUser's per-user database (in another namespace: with the user's consent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_database: Option<UserDatabaseRef>,
    /// A database on another CouchDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteDatabase>,
}

/// A CouchUser whose per-user database is an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDatabaseRef {
    /// Name of the CouchUser.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// Namespace of the CouchUser; defaults to the referring resource's namespace. A user in
    /// another namespace must consent to this one in its `sharedWith`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// CouchUsers selected by labels, in the share's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDatabasesSelector {
    /// Label selector over CouchUsers.
    #[schemars(schema_with = "super::schema::label_selector")]
    pub selector: LabelSelector,
}

/// A database on a CouchDB that couchshare does not manage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.url.startsWith('http://') || self.url.startsWith('https://')",
     "message": "remote.url must start with http:// or https://", "fieldPath": ".url"},
    {"rule": "!self.url.matches('^https?://[^/]*@')",
     "message": "remote.url must not contain credentials; use credentialsSecretRef", "fieldPath": ".url"}
]))]
pub struct RemoteDatabase {
    /// Base URL of the remote CouchDB, without credentials.
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    /// Database name on the remote CouchDB.
    #[schemars(length(min = 1, max = 238), extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-z][a-z0-9_$()+/-]*$')",
         "message": "must be a valid CouchDB database name: start with a lowercase letter, then only lowercase letters, digits and _ $ ( ) + - /"}
    ]))]
    pub database: String,
    /// Secret (same namespace) with the remote username and password.
    pub credentials_secret_ref: CredentialsSecretRef,
}

/// Replication direction(s).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShareMode {
    /// Source → target.
    #[default]
    OneWay,
    /// Source → target and target → source.
    TwoWay,
}

/// Which credentials the replication documents carry for local endpoints.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShareCredentials {
    /// A dedicated replication user per share, member of exactly the databases it needs.
    #[default]
    Scoped,
    /// The server admin (needed to replicate design documents).
    Admin,
}

/// The sharing document written into the source database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharingDocument {
    /// Document id; `{source}` and `{target}` are replaced by the database names.
    #[serde(default = "default_sharing_id")]
    #[schemars(length(min = 1, max = 512), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('_')", "message": "sharing document id must not start with _"}
    ]))]
    pub id: String,
    /// The document's fields, written exactly as declared (its `_id` comes from `id`; keys
    /// starting with `_` are refused). Default: the Inventory app's format,
    /// `{data: {permissions: [read]}}` for `OneWay` and `[read, write]` for `TwoWay`. The
    /// operator adds only its own record, under the key `couchshare.io/share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::free_form_object")]
    pub body: Option<serde_json::Value>,
}

fn default_sharing_id() -> String {
    "db_sharing-{source}--{target}".into()
}

/// Revocation settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoke {
    /// Stop sharing now, keeping the resource as a record. Cannot be undone.
    #[serde(default)]
    pub revoked: bool,
    /// On revocation, also purge every target document matching the selector (never a
    /// delete, which would replicate back).
    #[serde(default)]
    pub purge_shared_documents: bool,
}
