//! Databases as wholes: create (with `q`, `n`, `partitioned`), info, existence, delete, list,
//! and their `_security` object.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::{CouchClient, Request};
use super::error::CouchError;
use super::path::encode_db;

/// Options of `PUT /{db}`; `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateDatabase {
    /// Shards (`q`).
    pub q: Option<u32>,
    /// Replicas (`n`).
    pub n: Option<u32>,
    pub partitioned: bool,
}

/// `GET /{db}`, the parts the operator reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DatabaseInfo {
    pub db_name: String,
    #[serde(default)]
    pub doc_count: u64,
    #[serde(default)]
    pub doc_del_count: u64,
    /// Opaque: an integer on pouchdb-server and CouchDB 1.x, a string on CouchDB 2+.
    #[serde(default)]
    pub update_seq: Value,
    #[serde(default)]
    pub sizes: Option<DatabaseSizes>,
    #[serde(default)]
    pub props: DatabaseProps,
    /// Sharding on a CouchDB 2+ cluster (absent on servers without shards).
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
}

/// `cluster` of `GET /{db}`: how the database is sharded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterInfo {
    /// Shards.
    pub q: u32,
    /// Copies of each shard.
    pub n: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DatabaseSizes {
    #[serde(default)]
    pub active: Option<u64>,
    #[serde(default)]
    pub external: Option<u64>,
    #[serde(default)]
    pub file: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DatabaseProps {
    #[serde(default)]
    pub partitioned: Option<bool>,
}

impl DatabaseInfo {
    /// `sizes.active`, when the server reports it.
    pub fn active_size(&self) -> Option<u64> {
        self.sizes.as_ref().and_then(|s| s.active)
    }

    pub fn is_partitioned(&self) -> bool {
        self.props.partitioned.unwrap_or(false)
    }
}

/// Names and roles in one part of `_security`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Principals {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Anything else someone stored there, written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Principals {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.roles.is_empty()
    }
}

/// A database's `_security` object. On CouchDB, empty `members` make the database public.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    #[serde(default)]
    pub admins: Principals,
    #[serde(default)]
    pub members: Principals,
    /// Fields other tools keep in `_security` (e.g. `couchdb_auth_only`), written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CouchClient {
    /// `PUT /{db}`. An existing database is `PreconditionFailed`; asking for a partitioned
    /// database on a server without them is `NotSupported`.
    pub async fn create_database(&self, name: &str, options: &CreateDatabase) -> Result<(), CouchError> {
        let mut req = Request::new(Method::PUT, format!("/{}", encode_db(name)));
        if let Some(q) = options.q {
            req = req.query("q", q);
        }
        if let Some(n) = options.n {
            req = req.query("n", n);
        }
        if options.partitioned {
            if !self.capabilities().await?.partitioned {
                return Err(CouchError::not_supported("partitioned databases"));
            }
            req = req.query("partitioned", true);
        }
        let _: Value = self.call(req).await?;
        Ok(())
    }

    /// `GET /{db}`.
    pub async fn database_info(&self, name: &str) -> Result<DatabaseInfo, CouchError> {
        self.call(Request::new(Method::GET, format!("/{}", encode_db(name)))).await
    }

    /// `HEAD /{db}`.
    pub async fn database_exists(&self, name: &str) -> Result<bool, CouchError> {
        let req = Request::new(Method::HEAD, format!("/{}", encode_db(name)));
        match self.send(&req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /{db}`. A missing database is `NotFound` on CouchDB (pouchdb-server says 200).
    pub async fn delete_database(&self, name: &str) -> Result<(), CouchError> {
        let _: Value = self.call(Request::new(Method::DELETE, format!("/{}", encode_db(name)))).await?;
        Ok(())
    }

    /// `GET /_all_dbs`.
    pub async fn all_databases(&self) -> Result<Vec<String>, CouchError> {
        self.call(Request::new(Method::GET, "/_all_dbs")).await
    }

    /// `GET /{db}/_security`.
    pub async fn security(&self, db: &str) -> Result<Security, CouchError> {
        self.call(Request::new(Method::GET, format!("/{}/_security", encode_db(db)))).await
    }

    /// `PUT /{db}/_security`, the whole object.
    pub async fn put_security(&self, db: &str, security: &Security) -> Result<(), CouchError> {
        let req = Request::new(Method::PUT, format!("/{}/_security", encode_db(db))).json(security)?;
        let _: Value = self.call(req).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn security_keeps_fields_it_does_not_know() {
        let raw = json!({
            "admins": {"names": ["a"], "roles": [], "note": "x"},
            "members": {"roles": ["r"]},
            "couchdb_auth_only": true
        });
        let sec: Security = serde_json::from_value(raw).expect("parses");
        assert_eq!(sec.admins.names, ["a"]);
        assert_eq!(sec.members.roles, ["r"]);
        assert!(sec.members.names.is_empty());
        let back = serde_json::to_value(&sec).expect("serializes");
        assert_eq!(back["couchdb_auth_only"], json!(true));
        assert_eq!(back["admins"]["note"], json!("x"));
        assert_eq!(back["members"]["names"], json!([]));
    }

    #[test]
    fn an_empty_security_object_parses() {
        let sec: Security = serde_json::from_value(json!({})).expect("parses");
        assert_eq!(sec, Security::default());
    }

    #[test]
    fn database_info_of_couchdb_and_pouchdb_server() {
        let couch: DatabaseInfo = serde_json::from_value(json!({
            "db_name": "d", "doc_count": 2, "doc_del_count": 1, "update_seq": "3-g1AAAA",
            "sizes": {"active": 10, "external": 20, "file": 30},
            "props": {"partitioned": true}, "instance_start_time": "0"
        }))
        .expect("parses");
        assert_eq!(couch.active_size(), Some(10));
        assert!(couch.is_partitioned());
        assert_eq!(couch.update_seq, json!("3-g1AAAA"));

        let pouch: DatabaseInfo = serde_json::from_value(json!({
            "doc_count": 0, "update_seq": 0, "backend_adapter": "MemDOWN", "db_name": "d"
        }))
        .expect("parses");
        assert_eq!(pouch.active_size(), None);
        assert!(!pouch.is_partitioned());
    }
}
