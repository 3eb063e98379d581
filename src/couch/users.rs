//! CouchDB users: `_users/org.couchdb.user:NAME` documents and `_session` logins.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::{CouchClient, Request};
use super::documents::DocWrite;
use super::error::CouchError;
use super::path::doc_path;

/// The database of users.
pub const USERS_DB: &str = "_users";

/// The `_users` document id of a user name.
pub fn user_doc_id(name: &str) -> String {
    format!("org.couchdb.user:{name}")
}

/// A `_users` document. CouchDB never returns `password`; it keeps a hash (`derived_key`,
/// `salt`, ...) in `extra`, and writing the document back without `password` keeps it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Plain text, only when setting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Always `"user"`.
    #[serde(rename = "type", default = "user_type")]
    pub kind: String,
    #[serde(rename = "_rev", default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// Everything else (`_id`, the password hash fields, custom fields), written back as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn user_type() -> String {
    "user".to_owned()
}

impl UserDoc {
    pub fn new(name: impl Into<String>, roles: Vec<String>, password: Option<String>) -> Self {
        UserDoc { name: name.into(), roles, password, kind: user_type(), rev: None, extra: Map::new() }
    }
}

impl std::fmt::Debug for UserDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDoc")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("type", &self.kind)
            .field("rev", &self.rev)
            // Keys only: the values include the password hash and salt.
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Who a session is: `name` is `None` for anonymous.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserContext {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Deserialize)]
struct SessionInfo {
    #[serde(rename = "userCtx")]
    user_ctx: UserContext,
}

impl CouchClient {
    /// The user's document; `None` when there is no such user.
    pub async fn get_user(&self, name: &str) -> Result<Option<UserDoc>, CouchError> {
        self.call_opt(Request::new(Method::GET, doc_path(USERS_DB, &user_doc_id(name)))).await
    }

    /// Creates (no `rev`) or updates (`rev` set) a user; returns the new revision.
    /// A stale `rev` is `Conflict`.
    pub async fn put_user(&self, user: &UserDoc) -> Result<String, CouchError> {
        let id = user_doc_id(&user.name);
        let mut body = serde_json::to_value(user).map_err(|e| CouchError::encode("PUT", "/_users", e))?;
        if let Value::Object(map) = &mut body {
            map.insert("_id".into(), Value::String(id.clone()));
        }
        let req = Request::new(Method::PUT, doc_path(USERS_DB, &id)).json(&body)?;
        let written: DocWrite = self.call(req).await?;
        Ok(written.rev)
    }

    /// Deletes a user at revision `rev`.
    pub async fn delete_user(&self, name: &str, rev: &str) -> Result<String, CouchError> {
        self.delete_document(USERS_DB, &user_doc_id(name), rev).await
    }

    /// `POST /_session` with these credentials (not the client's): the user's context when
    /// they are right, `None` when CouchDB refuses them.
    pub async fn session_login(&self, username: &str, password: &str) -> Result<Option<UserContext>, CouchError> {
        let mut req =
            Request::new(Method::POST, "/_session").json(&json!({ "name": username, "password": password }))?;
        req.anonymous = true;
        match self.call::<UserContext>(req).await {
            Ok(ctx) => Ok(Some(ctx)),
            Err(CouchError::Unauthorized { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /_session`: who the client's credentials make it.
    pub async fn session(&self) -> Result<UserContext, CouchError> {
        let info: SessionInfo = self.call(Request::new(Method::GET, "/_session")).await?;
        Ok(info.user_ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_docs_round_trip_their_hash_and_never_show_passwords() {
        let doc: UserDoc = serde_json::from_value(json!({
            "_id": "org.couchdb.user:bob", "_rev": "1-a", "name": "bob", "roles": ["r"],
            "type": "user", "derived_key": "dk", "salt": "s", "custom": 1
        }))
        .expect("parses");
        assert_eq!(doc.rev.as_deref(), Some("1-a"));
        let back = serde_json::to_value(&doc).expect("serializes");
        assert_eq!(back["derived_key"], json!("dk"));
        assert_eq!(back["_rev"], json!("1-a"));
        assert!(back.get("password").is_none());

        let new = UserDoc::new("alice", vec![], Some("pw-secret-1".into()));
        let shown = format!("{new:?} {doc:?}");
        assert!(!shown.contains("pw-secret-1") && !shown.contains("\"dk\""), "{shown}");
        let body = serde_json::to_value(&new).expect("serializes");
        assert_eq!(body["type"], json!("user"));
        assert!(body.get("_rev").is_none());
    }

    #[test]
    fn user_doc_ids() {
        assert_eq!(user_doc_id("alice"), "org.couchdb.user:alice");
    }
}
