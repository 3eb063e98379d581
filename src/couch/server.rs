//! Server-wide calls: `GET /` and the capabilities derived from it, `/_up`, `/_membership`,
//! and node configuration (`/_node/{node}/_config` or, on older servers, `/_config`).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::client::{CouchClient, Request};
use super::error::CouchError;
use super::info::{Capabilities, ServerInfo};
use super::path::encode_db;

/// `/_membership`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Membership {
    pub all_nodes: Vec<String>,
    pub cluster_nodes: Vec<String>,
}

/// The node name reported for servers without `/_membership`: CouchDB 1.x's name for its
/// only node. On such servers config goes through `/_config`, which ignores the node.
pub const SINGLE_NODE_NAME: &str = "nonode@nohost";

impl CouchClient {
    /// The server's `GET /` answer, fetched once and shared by clones.
    pub async fn cached_server_info(&self) -> Result<&ServerInfo, CouchError> {
        self.server_info.get_or_try_init(|| self.server_info()).await
    }

    /// `GET /`, fresh (see [`cached_server_info`](Self::cached_server_info)).
    pub async fn server_info(&self) -> Result<ServerInfo, CouchError> {
        let body: Value = self.call(Request::new(Method::GET, "/")).await?;
        Ok(ServerInfo::from_welcome(&body))
    }

    /// The capabilities of the server, from the cached `GET /`.
    pub async fn capabilities(&self) -> Result<Capabilities, CouchError> {
        Ok(self.cached_server_info().await?.capabilities())
    }

    /// `GET /_up`: `Some("ok")` when up, `Some("maintenance_mode")` and the like when not;
    /// `None` on servers without the endpoint.
    pub async fn up(&self) -> Result<Option<String>, CouchError> {
        if !self.capabilities().await?.up {
            return Ok(None);
        }
        let req = Request::new(Method::GET, "/_up");
        let (status, body) = self.send_raw(&req).await?;
        if status.is_success() || status.as_u16() == 503 {
            let v: Value = serde_json::from_slice(&body).map_err(|e| CouchError::decode("GET", "/_up", e))?;
            return Ok(Some(v.get("status").and_then(Value::as_str).unwrap_or("unknown").to_owned()));
        }
        Err(CouchError::from_response("GET", "/_up", status, &body))
    }

    /// `GET /_membership`; a server without it counts as one node, [`SINGLE_NODE_NAME`].
    pub async fn membership(&self) -> Result<Membership, CouchError> {
        match self.call(Request::new(Method::GET, "/_membership")).await {
            Ok(m) => Ok(m),
            Err(CouchError::NotFound { .. } | CouchError::BadRequest { .. }) => Ok(Membership {
                all_nodes: vec![SINGLE_NODE_NAME.to_owned()],
                cluster_nodes: vec![SINGLE_NODE_NAME.to_owned()],
            }),
            Err(e) => Err(e),
        }
    }

    async fn config_path(&self, node: &str, section: &str) -> Result<String, CouchError> {
        let section = encode_db(section);
        Ok(if self.capabilities().await?.node_config {
            format!("/_node/{}/_config/{section}", encode_db(node))
        } else {
            format!("/_config/{section}")
        })
    }

    /// `POST /_cluster_setup {"action": "finish_cluster"}`: creates the system databases with the
    /// cluster's `n`, and copies this node's admin password hashes, `[couchdb] uuid` and
    /// `[chttpd_auth] secret` to the other nodes. A cluster already finished answers 400 and
    /// copies them all the same: that is success here.
    pub async fn finish_cluster(&self) -> Result<(), CouchError> {
        let req =
            Request::new(Method::POST, "/_cluster_setup").json(&serde_json::json!({"action": "finish_cluster"}))?;
        match self.call::<Value>(req).await {
            Ok(_) => Ok(()),
            Err(CouchError::BadRequest { reason, .. }) if reason.contains("already finished") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One config value of `node` (`_local` for the node answering); `None` when unset.
    pub async fn config_get(&self, node: &str, section: &str, key: &str) -> Result<Option<String>, CouchError> {
        let path = format!("{}/{}", self.config_path(node, section).await?, encode_db(key));
        self.call_opt(Request::new(Method::GET, path)).await
    }

    /// A whole config section of `node` (empty when the section does not exist).
    pub async fn config_section(&self, node: &str, section: &str) -> Result<BTreeMap<String, String>, CouchError> {
        let path = self.config_path(node, section).await?;
        Ok(self.call_opt(Request::new(Method::GET, path)).await?.unwrap_or_default())
    }

    /// Sets one config value of `node`; returns the previous value (`""` when it was unset).
    pub async fn config_set(&self, node: &str, section: &str, key: &str, value: &str) -> Result<String, CouchError> {
        let path = format!("{}/{}", self.config_path(node, section).await?, encode_db(key));
        self.call(Request::new(Method::PUT, path).json(value)?).await
    }

    /// Removes one config value of `node`; returns the previous value, `None` when it was unset.
    pub async fn config_delete(&self, node: &str, section: &str, key: &str) -> Result<Option<String>, CouchError> {
        let path = format!("{}/{}", self.config_path(node, section).await?, encode_db(key));
        self.call_opt(Request::new(Method::DELETE, path)).await
    }
}
