//! `CouchServer`: the connection to one CouchDB deployment and its server-wide configuration.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, CredentialsSecretRef};

/// Connection to one CouchDB deployment (single node or cluster), its server configuration
/// and its system databases.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchServer",
    namespaced,
    shortname = "csrv",
    category = "couchshare",
    status = "CouchServerStatus",
    doc = "A CouchDB deployment managed by couchshare: connection, configuration, system databases.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.url.startsWith('http://') || self.url.startsWith('https://')",
     "message": "url must start with http:// or https://", "fieldPath": ".url"},
    {"rule": "!has(self.replicationUrl) || self.replicationUrl.startsWith('http://') || self.replicationUrl.startsWith('https://')",
     "message": "replicationUrl must start with http:// or https://", "fieldPath": ".replicationUrl"}
]))]
pub struct CouchServerSpec {
    /// Base URL of CouchDB as the operator reaches it, e.g. `http://couchdb.couchdb.svc:5984`.
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    /// URL by which CouchDB reaches itself, used in replication documents for local
    /// endpoints. Defaults to `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub replication_url: Option<String>,
    /// The server admin's credentials.
    pub admin_credentials: AdminCredentials,
    /// TLS settings for `https://` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Server configuration, applied on every node of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ServerConfig>,
    /// Which namespaces' resources may use this server. Defaults to the server's own namespace.
    /// Using the server does not reach another namespace's objects: that needs their consent
    /// (`sharedWith`).
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
    /// Which namespaces may reach what couchshare does not manage on this server: `couchName`
    /// grants on unmanaged databases, `adopt: true` of existing databases and users, and shares
    /// with `credentials: Admin` (the admin's credentials in replication documents). Defaults to
    /// the server's own namespace. A namespace must also be allowed by `allowedNamespaces`.
    #[serde(default)]
    pub trusted_namespaces: AllowedNamespaces,
}

/// Where the server admin's credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    /// The Secret (in the CouchServer's namespace) holding the admin username and password.
    pub secret_ref: CredentialsSecretRef,
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret key holding a PEM CA bundle that signs the server's certificate, trusted in
    /// addition to the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

/// A Secret key holding a PEM CA bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret (same namespace as the CouchServer).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// Server configuration applied on every node listed in `_membership`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// Cross-origin resource sharing, for browser apps (PouchDB) talking to CouchDB directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// CouchDB's own per-user databases (`couch_peruser`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_databases: Option<PerUserDatabasesConfig>,
    /// Refuse anonymous requests (`chttpd/require_valid_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_valid_user: Option<bool>,
    /// Any other setting, as `section/key` to value, e.g. `replicator/max_jobs: "500"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "x-kubernetes-validations" = [
        {"rule": "self.all(k, k.matches('^[^/]+/[^/]+$'))",
         "message": "settings keys must have the form section/key"}
    ]))]
    pub settings: BTreeMap<String, String>,
}

/// CORS settings (`[chttpd] enable_cors` and the `[cors]` section).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.credentials) && self.credentials && self.origins.exists(o, o == '*'))",
     "message": "cors: origin * cannot be combined with credentials: true; list the origins"}
]))]
pub struct CorsConfig {
    /// Turn CORS on or off.
    pub enabled: bool,
    /// Allowed origins, e.g. `https://app.example`; `*` allows any origin (not together
    /// with `credentials`).
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(max = 2048)))]
    pub origins: Vec<String>,
    /// Allow credentials (cookies, Authorization) on cross-origin requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<bool>,
    /// Allowed methods; CouchDB's default when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 32)))]
    pub methods: Vec<String>,
    /// Allowed request headers; CouchDB's default when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 256)))]
    pub headers: Vec<String>,
}

/// CouchDB's `couch_peruser` settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerUserDatabasesConfig {
    /// Let CouchDB create a private database for every user.
    pub enabled: bool,
    /// Let CouchDB delete a user's database when the user is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_dbs: Option<bool>,
    /// Shard count of per-user databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub q: Option<i32>,
    /// Name prefix of per-user databases (CouchDB's default: `userdb-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_$()+/-]*$"), length(max = 100))]
    pub database_prefix: Option<String>,
}

/// A set of namespaces: the server's own, all, or those whose labels match a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.from != 'Selector' || has(self.selector)",
     "message": "selector is required when from is Selector"},
    {"rule": "self.from == 'Selector' || !has(self.selector)",
     "message": "selector is only used when from is Selector"}
]))]
pub struct AllowedNamespaces {
    /// `Same` (default): only the server's namespace; `All`: every namespace; `Selector`:
    /// namespaces whose labels match `selector`.
    #[serde(default)]
    pub from: NamespacesFrom,
    /// Label selector over namespaces, with `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::label_selector")]
    pub selector: Option<LabelSelector>,
}

/// Which namespaces are allowed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespacesFrom {
    /// Only the CouchServer's own namespace.
    #[default]
    Same,
    /// Every namespace.
    All,
    /// Namespaces matching the selector.
    Selector,
}

/// Observed state of a CouchServer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchServerStatus {
    /// Standard conditions; `Ready` is always present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Vendor reported by `GET /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Version reported by `GET /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Features reported by `GET /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// What the operator could not do on this server (missing capabilities).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
    /// Cluster nodes from `_membership`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Configuration keys (`section/key`) applied on every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_config: Vec<String>,
    /// Configuration failures, per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_failures: Vec<NodeConfigFailure>,
    /// The replication budget: `replicator/max_jobs` times the number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_budget: Option<ReplicationBudget>,
    /// Cluster nodes that are missing: configured (`cluster_nodes`) but not connected
    /// (`all_nodes`), or connected but not answering. The `Degraded` condition names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipStatus>,
    /// Where the operator learns that a database was created or deleted on this server:
    /// `_db_updates` (CouchDB's feed), or `_all_dbs` (a listing compared every 2 s, while the
    /// feed cannot be read — a cluster just finished, or no `_global_changes` database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_events: Option<String>,
}

/// How whole a cluster is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipStatus {
    /// Configured nodes that are not connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_nodes: Vec<String>,
    /// Connected nodes that did not answer a request routed to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent_nodes: Vec<String>,
    /// Whether the cluster is finished: system databases, and one admin password hash, uuid and
    /// auth secret on every node (the operator finishes a cluster formed by a seedlist alone).
    #[serde(default)]
    pub finished: bool,
}

/// A configuration key that could not be applied on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigFailure {
    /// Node name.
    pub node: String,
    /// `section/key`.
    pub key: String,
    /// What CouchDB answered.
    pub message: String,
}

/// How many replication jobs the server runs at once, and how many couchshare uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationBudget {
    /// `replicator/max_jobs` per node.
    pub max_jobs_per_node: i32,
    /// Number of nodes.
    pub nodes: i32,
    /// `max_jobs_per_node × nodes`.
    pub total: i32,
    /// Replication documents written by couchshare shares on this server.
    #[serde(default)]
    pub used: i32,
}
