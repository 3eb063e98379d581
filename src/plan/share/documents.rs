//! Replication documents: endpoints (credentials never in a URL), the body, its fingerprint,
//! and whether an existing document is kept, rewritten or refused.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{SHARE_FIELD, SPEC_HASH_FIELD, owner_json, recorded_owner};
use crate::couch;
use crate::plan::ownership::{Owner, Refusal};

/// Credentials for one endpoint of a replication document (never logged: `Debug` redacts the password).
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointAuth {
    /// CouchDB username.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for EndpointAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// One end of a replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Server URL without trailing slash or credentials.
    pub base_url: String,
    /// Database name (not encoded).
    pub database: String,
    /// Credentials the replicator uses there, if any.
    pub auth: Option<EndpointAuth>,
}

/// How a server takes credentials in replication endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStyle {
    /// `{"url", "auth": {"basic": {"username", "password"}}}` (CouchDB >= 3.2).
    AuthObject,
    /// `{"url", "headers": {"Authorization": "Basic <b64>"}}`.
    BasicHeader,
}

/// `base_url/encoded-database`, any credentials in `base_url` dropped.
fn endpoint_url(endpoint: &Endpoint) -> String {
    let mut base = endpoint.base_url.clone();
    if let Ok(mut parsed) = url::Url::parse(&base)
        && (!parsed.username().is_empty() || parsed.password().is_some())
        && parsed.set_username("").is_ok()
        && parsed.set_password(None).is_ok()
    {
        base = parsed.to_string();
    }
    format!("{}/{}", base.trim_end_matches('/'), couch::encode_db(&endpoint.database))
}

/// The endpoint as one URL with its credentials inside, for servers whose `POST /_replicate`
/// takes nothing else (pouchdb-server). Only ever sent in a request body, never stored.
pub fn endpoint_url_with_credentials(endpoint: &Endpoint) -> String {
    let plain = endpoint_url(endpoint);
    let Some(auth) = &endpoint.auth else { return plain };
    let Ok(mut parsed) = url::Url::parse(&plain) else { return plain };
    if parsed.set_username(&auth.username).is_ok() && parsed.set_password(Some(&auth.password)).is_ok() {
        parsed.to_string()
    } else {
        plain
    }
}

/// The JSON of an endpoint: url = base_url + "/" + percent-encoded database,
/// credentials never inside the URL.
pub fn endpoint_json(endpoint: &Endpoint, style: EndpointStyle) -> Value {
    let mut out = Map::new();
    out.insert("url".into(), Value::String(endpoint_url(endpoint)));
    if let Some(auth) = &endpoint.auth {
        match style {
            EndpointStyle::AuthObject => {
                out.insert("auth".into(), json!({ "basic": { "username": auth.username, "password": auth.password } }));
            }
            EndpointStyle::BasicHeader => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", auth.username, auth.password).as_bytes());
                out.insert("headers".into(), json!({ "Authorization": format!("Basic {token}") }));
            }
        }
    }
    Value::Object(out)
}

/// Everything one replication document says.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationSpec {
    /// Document id in the replicator database.
    pub id: String,
    /// Where documents come from.
    pub source: Endpoint,
    /// Where documents go.
    pub target: Endpoint,
    /// Keep replicating, or replicate once.
    pub continuous: bool,
    /// Mango selector (see [`replication_selector`]).
    pub selector: Option<Value>,
    /// The CouchShare.
    pub owner: Owner,
}

/// The fingerprint of a ReplicationSpec (sha256 hex, first 32 chars) over source/target url+database+username+password,
/// continuous and selector (canonical JSON) — a change of any of them changes it. Used to tell "spec changed" from "restart".
pub fn spec_hash(spec: &ReplicationSpec) -> String {
    let endpoint = |e: &Endpoint| {
        json!({
            "url": endpoint_url(e),
            "username": e.auth.as_ref().map(|a| a.username.as_str()),
            "password": e.auth.as_ref().map(|a| a.password.as_str()),
        })
    };
    let fingerprinted = json!({
        "v": "couchshare.io/replication/v1",
        "source": endpoint(&spec.source),
        "target": endpoint(&spec.target),
        "continuous": spec.continuous,
        "selector": spec.selector,
    });
    let mut text = String::new();
    canonical_json(&fingerprinted, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))[..32].to_string()
}

/// JSON with object keys sorted, whatever order the map keeps.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(&Value::String(key.clone()), out);
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        // Scalars serialize the same whatever the map order; writing to a String cannot fail.
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// The `_replicator` document body (without `_id`/`_rev`): source, target (endpoint_json), continuous,
/// selector (when Some), "create_target": false, SHARE_FIELD: owner (serialized Owner), SPEC_HASH_FIELD: spec_hash.
pub fn replication_doc(spec: &ReplicationSpec, style: EndpointStyle) -> Value {
    let mut doc = Map::new();
    doc.insert("source".into(), endpoint_json(&spec.source, style));
    doc.insert("target".into(), endpoint_json(&spec.target, style));
    doc.insert("continuous".into(), Value::Bool(spec.continuous));
    if let Some(selector) = &spec.selector {
        doc.insert("selector".into(), selector.clone());
    }
    doc.insert("create_target".into(), Value::Bool(false));
    doc.insert(SHARE_FIELD.into(), owner_json(&spec.owner));
    doc.insert(SPEC_HASH_FIELD.into(), Value::String(spec_hash(spec)));
    Value::Object(doc)
}
/// What to do with one replication document.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicationAction {
    /// Missing: write it.
    Create(Value),
    /// Written from another spec: rewrite it in place (rev given) so CouchDB restarts the job.
    Update {
        /// The revision to replace.
        rev: String,
        /// The new body (without `_id`/`_rev`).
        body: Value,
    },
    /// Up to date (including a completed one-shot replication whose spec did not change: never re-run).
    Keep,
}

/// The first of a share's replication documents (those under its id prefix) that is not its
/// own: a share checks this before it makes its replication user, so a document someone else
/// wrote under its ids refuses it with nothing written.
pub fn foreign_replication_doc(docs: &[Value], me: &Owner) -> Option<Refusal> {
    docs.iter().find_map(|doc| {
        let what = format!("replication document {}", doc.get("_id").and_then(Value::as_str).unwrap_or_default());
        match recorded_owner(doc) {
            None => Some(Refusal::AlreadyExists { what }),
            Some(owner) if owner.uid != me.uid => Some(Refusal::Conflict { what, owner }),
            Some(_) => None,
        }
    })
}

/// Decides, from the existing document (as read from `_replicator`, with `_rev`, maybe `_replication_state`), what to do.
/// Up to date means: its SPEC_HASH_FIELD equals spec_hash(spec). A document without our SHARE_FIELD, or whose owner uid differs,
/// is not ours: `Refusal::Conflict` for a different owner, `Refusal::AlreadyExists` when it has no (well-formed) owner field.
/// An existing document of ours without a `_rev` (which CouchDB always returns) is written as new: `Create`.
pub fn plan_replication(
    spec: &ReplicationSpec,
    existing: Option<&Value>,
    style: EndpointStyle,
) -> Result<ReplicationAction, Refusal> {
    let Some(existing) = existing else {
        return Ok(ReplicationAction::Create(replication_doc(spec, style)));
    };
    let what = format!("replication document {}", spec.id);
    match recorded_owner(existing) {
        None => return Err(Refusal::AlreadyExists { what }),
        Some(owner) if owner.uid != spec.owner.uid => return Err(Refusal::Conflict { what, owner }),
        Some(_) => {}
    }
    let hash = spec_hash(spec);
    if existing.get(SPEC_HASH_FIELD).and_then(Value::as_str) == Some(hash.as_str()) {
        return Ok(ReplicationAction::Keep);
    }
    let body = replication_doc(spec, style);
    Ok(match existing.get("_rev").and_then(Value::as_str) {
        Some(rev) => ReplicationAction::Update { rev: rev.to_string(), body },
        None => ReplicationAction::Create(body),
    })
}

/// Replication documents (as listed from `_replicator`) owned by this share (SHARE_FIELD.uid == owner.uid) whose ids are not in `wanted`:
/// returned as (id, rev) to delete (a fan-in user gone, a TwoWay turned OneWay). Documents without `_id` or `_rev` are skipped.
pub fn stale_replications(docs: &[Value], owner: &Owner, wanted: &[String]) -> Vec<(String, String)> {
    docs.iter()
        .filter(|doc| recorded_owner(doc).is_some_and(|o| o.uid == owner.uid))
        .filter_map(|doc| {
            let id = doc.get("_id")?.as_str()?;
            let rev = doc.get("_rev")?.as_str()?;
            (!wanted.iter().any(|w| w == id)).then(|| (id.to_string(), rev.to_string()))
        })
        .collect()
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;
