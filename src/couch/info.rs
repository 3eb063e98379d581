//! What `GET /` says about a server, and the capabilities decided from it once: every
//! fallback in the client and the operator hangs off one of them. Apart from the calls (see
//! `server`), so that the client can cache it without using the calls.

use serde_json::Value;

/// What `GET /` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `vendor.name` (`"The Apache Software Foundation"`, `"PouchDB authors"`).
    pub vendor: Option<String>,
    pub version: String,
    pub features: Vec<String>,
    /// The answer has `"couchdb": "Welcome"`, which only Apache CouchDB and its forks give.
    pub is_couchdb: bool,
}

/// What this server can do, decided once from [`ServerInfo`]; every fallback in the client
/// and the operator hangs off one of these flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `_scheduler/docs` (CouchDB ≥ 2.1); otherwise `_replication_state` fields.
    pub scheduler: bool,
    /// `/_node/{node}/_config` (CouchDB ≥ 2.0); otherwise `/_config`.
    pub node_config: bool,
    /// `POST /{db}/_purge` (clustered purge, CouchDB ≥ 2.3).
    pub purge: bool,
    /// `selector` in replication documents (CouchDB ≥ 2.0).
    pub selector_replication: bool,
    /// `{"auth": {"basic": ...}}` in replication endpoints (CouchDB ≥ 3.2); otherwise a Basic
    /// `Authorization` header in `headers`.
    pub auth_object_in_endpoints: bool,
    /// Partitioned databases (the `partitioned` feature, CouchDB ≥ 3.0).
    pub partitioned: bool,
    /// `couch_peruser` per-user databases (CouchDB ≥ 2.0).
    pub peruser: bool,
    /// `GET /_db_updates`.
    pub db_updates: bool,
    /// `GET /_up` (CouchDB ≥ 2.0).
    pub up: bool,
    /// `filter=_selector` on `_changes` (CouchDB ≥ 2.0).
    pub changes_selector: bool,
}

impl ServerInfo {
    /// Reads the `GET /` body.
    pub fn from_welcome(body: &Value) -> Self {
        let vendor = match body.get("vendor") {
            Some(Value::Object(v)) => v.get("name").and_then(Value::as_str).map(str::to_owned),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        ServerInfo {
            vendor,
            version: body.get("version").and_then(Value::as_str).unwrap_or_default().to_owned(),
            features: body
                .get("features")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            is_couchdb: body.get("couchdb").is_some(),
        }
    }

    /// `(major, minor)` of the version; `(0, 0)` when it does not parse.
    pub fn version_tuple(&self) -> (u32, u32) {
        let mut parts = self.version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// Anything that is not Apache CouchDB (pouchdb-server reports its own version, 4.2.0,
    /// which says nothing about CouchDB features) gets none of the optional features.
    pub fn capabilities(&self) -> Capabilities {
        if !self.is_couchdb {
            return Capabilities::default();
        }
        let v = self.version_tuple();
        let at_least = |major, minor| v >= (major, minor);
        Capabilities {
            scheduler: self.has_feature("scheduler") || at_least(2, 1),
            node_config: at_least(2, 0),
            purge: at_least(2, 3),
            selector_replication: at_least(2, 0),
            auth_object_in_endpoints: at_least(3, 2),
            partitioned: self.has_feature("partitioned"),
            peruser: at_least(2, 0),
            db_updates: at_least(1, 4),
            up: at_least(2, 0),
            changes_selector: at_least(2, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn couchdb_3_5_has_every_capability() {
        let info = ServerInfo::from_welcome(&json!({
            "couchdb": "Welcome", "version": "3.5.0", "git_sha": "11f0d3643",
            "uuid": "x", "features": ["access-ready", "partitioned", "pluggable-storage-engines", "reshard", "scheduler"],
            "vendor": {"name": "The Apache Software Foundation"}
        }));
        assert!(info.is_couchdb);
        assert_eq!(info.vendor.as_deref(), Some("The Apache Software Foundation"));
        assert_eq!(info.version_tuple(), (3, 5));
        let caps = info.capabilities();
        assert!(caps.scheduler && caps.node_config && caps.purge && caps.selector_replication);
        assert!(caps.auth_object_in_endpoints && caps.partitioned && caps.peruser);
        assert!(caps.db_updates && caps.up && caps.changes_selector);
    }

    #[test]
    fn pouchdb_server_has_none_of_the_optional_capabilities() {
        let info = ServerInfo::from_welcome(&json!({
            "express-pouchdb": "Welcome!", "version": "4.2.0", "pouchdb-adapters": ["memory"],
            "vendor": {"name": "PouchDB authors", "version": "4.2.0"}, "uuid": "x"
        }));
        assert!(!info.is_couchdb);
        assert_eq!(info.vendor.as_deref(), Some("PouchDB authors"));
        assert_eq!(info.capabilities(), Capabilities::default());
    }

    #[test]
    fn older_couchdb_versions_lose_newer_capabilities() {
        let v31 = ServerInfo::from_welcome(&json!({
            "couchdb": "Welcome", "version": "3.1.2", "features": ["partitioned", "scheduler"]
        }))
        .capabilities();
        assert!(v31.scheduler && v31.purge && v31.partitioned);
        assert!(!v31.auth_object_in_endpoints);

        let v22 = ServerInfo::from_welcome(&json!({"couchdb": "Welcome", "version": "2.2.0"})).capabilities();
        assert!(v22.scheduler && v22.node_config && !v22.purge && !v22.partitioned);

        let v16 = ServerInfo::from_welcome(&json!({"couchdb": "Welcome", "version": "1.6.1"})).capabilities();
        assert!(!v16.scheduler && !v16.node_config && !v16.up && v16.db_updates);
    }

    #[test]
    fn odd_versions_do_not_panic() {
        for v in ["", "x", "3", "3.5.0-rc.1", "10.0"] {
            let info = ServerInfo::from_welcome(&json!({"couchdb": "Welcome", "version": v}));
            let _ = info.capabilities();
        }
        let info = ServerInfo::from_welcome(&json!({"couchdb": "Welcome", "version": "3.5.0-rc.1"}));
        assert_eq!(info.version_tuple(), (3, 5));
        assert_eq!(ServerInfo::from_welcome(&json!({})).version_tuple(), (0, 0));
    }
}
