//! `CouchUser`: one `_users` document, its password and its ready-to-use credentials Secret.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, Consent, DeletionPolicy, ServerRef};

/// A CouchDB user (`_users/org.couchdb.user:NAME`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchUser",
    namespaced,
    shortname = "cuser",
    category = "couchshare",
    status = "CouchUserStatus",
    doc = "A CouchDB user, its roles, its password and a Secret with ready-to-use credentials.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Username","type":"string","jsonPath":".status.username"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.credentialsSecret"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.username) == has(oldSelf.username) && (!has(self.username) || self.username == oldSelf.username)",
     "message": "username is immutable", "fieldPath": ".username"}
]))]
pub struct CouchUserSpec {
    /// The CouchServer this user lives on.
    pub server_ref: ServerRef,
    /// CouchDB username; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('_')", "message": "username must not start with _ (reserved by CouchDB)"},
        {"rule": "!self.contains(':')", "message": "username must not contain :"}
    ]))]
    pub username: Option<String>,
    /// Roles of the user (CouchDB roles starting with `_` are reserved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 255)), extend(
        "x-kubernetes-list-type" = "set",
        "x-kubernetes-validations" = [
            {"rule": "self.all(r, size(r) > 0 && !r.startsWith('_'))",
             "message": "roles must be non-empty and must not start with _ (reserved by CouchDB)"}
        ]
    ))]
    pub roles: Vec<String>,
    /// Where the password comes from; omit to have the operator generate one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    /// The Secret the operator writes with ready-to-use credentials.
    #[serde(default)]
    pub credentials_secret: CredentialsSecretSpec,
    /// Rotation of a generated password: increase `generation` to rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// Make sure the user's private database `userdb-<hex(username)>` exists.
    #[serde(default)]
    pub per_user_database: bool,
    /// `Retain` (default) keeps the user document, the credentials Secret and the per-user
    /// database when the resource is deleted; `Delete` removes all three.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over a user that already exists on the server instead of refusing it. Only from a
    /// namespace the CouchServer trusts (`trustedNamespaces`), and never a user another
    /// resource manages.
    #[serde(default)]
    pub adopt: bool,
    /// Namespaces whose CouchGrants and CouchShares may use this user's per-user database, and
    /// how. Resources in the user's own namespace need no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["namespace"]))]
    pub shared_with: Vec<Consent>,
}

/// A password supplied by the user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSource {
    /// A Secret key (same namespace) holding the password. Editing it changes the password.
    pub secret_ref: PasswordSecretRef,
}

/// A Secret key holding a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "super::common::default_password_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The credentials Secret written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretSpec {
    /// Name of the Secret; defaults to `<metadata.name>-couchdb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Databases to write connection URLs for (key `url-<database>`, credentials
    /// percent-encoded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 238)), extend("x-kubernetes-list-type" = "set"))]
    pub databases: Vec<String>,
    /// Extra labels on the Secret (e.g. for tools that copy Secrets into other namespaces).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra keys, each rendered from a minijinja template, e.g.
    /// `COUCHDB_URL: "{{ urlWithCredentials }}"`. Names: `username`, `password`,
    /// `usernameEncoded`, `passwordEncoded` (percent-encoded), `url` (the server's),
    /// `urlWithCredentials`, `databaseURL("NAME")`. Re-rendered whenever the password changes.
    /// An unknown name makes the user `Ready=False` (`InvalidSpec`) with nothing written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 50,
        "additionalProperties" = {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations" = [
            {"rule": "self.all(k, k.matches('^[-._a-zA-Z0-9]+$') && size(k) <= 253)",
             "message": "template keys must be valid Secret keys (letters, digits, -, _ and .)"},
            {"rule": "self.all(k, !(k in ['username', 'password', 'url']) && !k.startsWith('url-'))",
             "message": "template keys username, password, url and url-* are written by the operator"},
            {"rule": "self.all(k, !self[k].contains('{{ .') && !self[k].contains('{{.'))",
             "message": "templates use minijinja names without a leading dot: {{ urlWithCredentials }}, not {{ .URLWithCredentials }}"},
            {"rule": "self.all(k, self[k].split('{{').size() == self[k].split('}}').size())",
             "message": "every {{ in a template needs its }}"}
        ]
    ))]
    pub template: BTreeMap<String, String>,
}

/// Rotation trigger for a generated password.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Increase to generate a new password and apply it to CouchDB and the Secret together
    /// (generated passwords only; a referenced Secret rotates by editing it).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub generation: i64,
}

/// Observed state of a CouchUser. Never holds a password.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchUserStatus {
    /// Standard conditions; `Ready` and `PasswordSynced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The CouchDB username, recorded once the user is owned by this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the credentials Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// SHA-256 of the password source that was applied (never the password itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// The rotation generation last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_generation: Option<i64>,
    /// The user's private database, with `perUserDatabase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_database: Option<String>,
}

impl CouchUser {
    /// The CouchDB username: `spec.username`, or `metadata.name`.
    pub fn couch_username(&self) -> &str {
        self.spec.username.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}
