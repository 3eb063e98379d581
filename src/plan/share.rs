//! What to do for one CouchShare: its replication documents (one per direction, or per fan-in
//! source), its sharing document, its scoped replication user's name, and its summary state.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::couch;
use crate::plan::ownership::{Owner, Refusal};

/// Field recording, in replication documents, sharing documents and scoped users, which CouchShare wrote them.
pub const SHARE_FIELD: &str = "couchshare.io/share";
/// Field in replication documents holding the fingerprint of the spec they were written from.
pub const SPEC_HASH_FIELD: &str = "couchshare.io/spec-hash";

/// Which way a replication runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Source → target.
    Forward,
    /// Target → source (`TwoWay` only).
    Backward,
}

impl Direction {
    fn suffix(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::Backward => "back",
        }
    }
}

/// Error for a bad Mango selector: `path` like `$.$or[1].age`, `message` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {path}: {message}")]
pub struct SelectorError {
    /// Where in the selector: `$` is the selector itself, then `.key` and `[index]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

fn selector_error(path: &str, message: impl Into<String>) -> SelectorError {
    SelectorError { path: path.to_string(), message: message.into() }
}

/// Operators combining selectors.
const COMBINATION_OPERATORS: &[&str] = &["$and", "$or", "$nor", "$not"];
/// Operators on a field's value.
const CONDITION_OPERATORS: &[&str] = &[
    "$lt",
    "$lte",
    "$eq",
    "$ne",
    "$gte",
    "$gt",
    "$exists",
    "$type",
    "$in",
    "$nin",
    "$size",
    "$mod",
    "$regex",
    "$all",
    "$elemMatch",
    "$allMatch",
    "$keyMapMatch",
    "$beginsWith",
];
/// The values `$type` accepts.
const MANGO_TYPES: &[&str] = &["null", "boolean", "number", "string", "array", "object"];

/// Checks a Mango selector is well formed: an object; every key starting with `$` is a known
/// operator (combination: $and $or $nor $not; condition: $lt $lte $eq $ne $gte $gt $exists $type $in $nin $size $mod $regex $all $elemMatch $allMatch $keyMapMatch $beginsWith);
/// $and/$or/$nor take a non-empty array of objects; $not, $elemMatch, $allMatch, $keyMapMatch an object;
/// $in/$nin/$all an array; $exists a bool; $type a string among null boolean number string array object;
/// $size a non-negative integer; $mod an array of two integers with a non-zero divisor; $regex a string; $beginsWith a string.
/// Field names (keys not starting with `$`) may hold any value (an implicit $eq) or an object of operators.
pub fn validate_selector(selector: &Value) -> Result<(), SelectorError> {
    validate_object(selector, "$")
}

/// An object of field names and operators, at `path`.
fn validate_object(value: &Value, path: &str) -> Result<(), SelectorError> {
    let Value::Object(map) = value else {
        return Err(selector_error(path, format!("must be an object, not {}", json_type(value))));
    };
    for (key, arg) in map {
        let here = format!("{path}.{key}");
        if !key.starts_with('$') {
            // A field: a literal (implicit $eq), or an object of operators or sub-fields.
            if arg.is_object() {
                validate_object(arg, &here)?;
            }
            continue;
        }
        if !COMBINATION_OPERATORS.contains(&key.as_str()) && !CONDITION_OPERATORS.contains(&key.as_str()) {
            return Err(selector_error(path, format!("unknown operator {key}")));
        }
        validate_operator(key, arg, &here)?;
    }
    Ok(())
}

/// The argument of a known operator `op`, at `path` (which ends in `.op`).
fn validate_operator(op: &str, arg: &Value, path: &str) -> Result<(), SelectorError> {
    let fail = |message: &str| Err(selector_error(path, format!("{op} {message}, not {}", json_type(arg))));
    match op {
        "$and" | "$or" | "$nor" => {
            let Value::Array(items) = arg else { return fail("takes an array of selectors") };
            if items.is_empty() {
                return Err(selector_error(path, format!("{op} takes a non-empty array of selectors")));
            }
            for (i, item) in items.iter().enumerate() {
                validate_object(item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        "$not" | "$elemMatch" | "$allMatch" | "$keyMapMatch" => validate_object(arg, path),
        "$in" | "$nin" | "$all" => {
            if arg.is_array() {
                Ok(())
            } else {
                fail("takes an array")
            }
        }
        "$exists" => {
            if arg.is_boolean() {
                Ok(())
            } else {
                fail("takes true or false")
            }
        }
        "$type" => match arg.as_str() {
            Some(t) if MANGO_TYPES.contains(&t) => Ok(()),
            Some(t) => Err(selector_error(path, format!("$type {t:?} is not one of {}", MANGO_TYPES.join(", ")))),
            None => fail("takes a type name"),
        },
        "$size" => {
            if arg.as_u64().is_some() {
                Ok(())
            } else {
                fail("takes a non-negative integer")
            }
        }
        "$mod" => match arg.as_array().map(Vec::as_slice) {
            Some([divisor, remainder]) if is_integer(divisor) && is_integer(remainder) => {
                if divisor.as_i64() == Some(0) {
                    Err(selector_error(path, "$mod divisor must not be zero"))
                } else {
                    Ok(())
                }
            }
            _ => fail("takes [divisor, remainder], two integers"),
        },
        "$regex" | "$beginsWith" => {
            if arg.is_string() {
                Ok(())
            } else {
                fail("takes a string")
            }
        }
        // $lt $lte $eq $ne $gte $gt: any value.
        _ => Ok(()),
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The selector a replication uses: the share's selector, widened with `{"_id": sharing_id}` in an `$or`
/// when there is a sharing document, so the receiving side always gets it. `None` when neither is set
/// (replicate everything). With a selector but no sharing doc: the selector unchanged. With a sharing doc
/// but no selector: `None` too, since everything, the sharing document included, replicates.
pub fn replication_selector(selector: Option<&Value>, sharing_doc_id: Option<&str>) -> Option<Value> {
    let selector = selector?;
    Some(match sharing_doc_id {
        Some(id) => json!({ "$or": [selector.clone(), { "_id": id }] }),
        None => selector.clone(),
    })
}

/// The sharing document id: the template with `{source}` and `{target}` replaced by the database names.
pub fn sharing_doc_id(template: &str, source_db: &str, target_db: &str) -> String {
    // One pass, so a database name that looks like a placeholder is left as it is.
    let mut out = String::with_capacity(template.len() + source_db.len() + target_db.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{source}") {
            out.push_str(source_db);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{target}") {
            out.push_str(target_db);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Deterministic replication document id for one direction of a share, from its identity:
/// `couchshare_<namespace>_<name>_<fwd|back>` plus `_<hex(source_user)>` for one fan-in source.
/// Characters outside [A-Za-z0-9_.-] are replaced by `_`. Never starts with `_`.
pub fn replication_doc_id(namespace: &str, name: &str, direction: Direction, fan_in_user: Option<&str>) -> String {
    // `_` cannot appear in Kubernetes names: with it as separator, no two shares share an id.
    let mut id = format!("couchshare_{namespace}_{name}_{}", direction.suffix());
    if let Some(user) = fan_in_user {
        id.push('_');
        id.push_str(&hex::encode(user.as_bytes()));
    }
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// The prefix every replication document id of one share starts with.
pub fn replication_doc_prefix(namespace: &str, name: &str) -> String {
    replication_doc_id(namespace, name, Direction::Forward, None)
        .trim_end_matches(Direction::Forward.suffix())
        .to_string()
}

/// Deterministic name of the scoped replication user of a share:
/// `couchshare-repl-` + the first 20 hex chars of sha256("<namespace>/<name>"). Valid CouchDB username.
pub fn replication_username(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("couchshare-repl-{}", &hex::encode(digest)[..20])
}

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

fn owner_json(owner: &Owner) -> Value {
    json!({ "kind": owner.kind, "namespace": owner.namespace, "name": owner.name, "uid": owner.uid })
}

/// The owner recorded in a document's [`SHARE_FIELD`], if it is well formed.
fn recorded_owner(doc: &Value) -> Option<Owner> {
    serde_json::from_value(doc.get(SHARE_FIELD)?.clone()).ok()
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

/// The sharing document: `body` exactly as declared — by default the Inventory app's own
/// format, `{"data": {"permissions": ["read"]}}` one-way and `["read", "write"]` two-way — plus
/// the operator's record under the one key [`SHARE_FIELD`] (the share, and the source and
/// target databases). Nothing else is added: apps key their documents on `type`, so the
/// operator never writes one. A body that is not an object, or that has a key starting with `_`
/// (CouchDB reserves them, and would refuse or reinterpret it), or that sets [`SHARE_FIELD`]
/// itself, is refused with what is wrong: nothing declared is dropped silently.
pub fn sharing_doc(
    body: Option<&Value>,
    mode: crate::api::ShareMode,
    source_db: &str,
    target_db: &str,
    owner: &Owner,
) -> Result<Value, String> {
    let mut doc: Map<String, Value> = match body {
        None => {
            let permissions = match mode {
                crate::api::ShareMode::OneWay => json!(["read"]),
                crate::api::ShareMode::TwoWay => json!(["read", "write"]),
            };
            json!({"data": {"permissions": permissions}}).as_object().cloned().unwrap_or_default()
        }
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("sharingDocument.body must be an object".into()),
    };
    if let Some(key) = doc.keys().find(|k| k.starts_with('_') || k.as_str() == SHARE_FIELD) {
        return Err(format!(
            "sharingDocument.body may not set {key:?}: keys starting with _ are CouchDB's, and {SHARE_FIELD} is the operator's"
        ));
    }
    let mut record = owner_json(owner);
    record["source"] = Value::String(source_db.to_string());
    record["target"] = Value::String(target_db.to_string());
    doc.insert(SHARE_FIELD.into(), record);
    Ok(Value::Object(doc))
}

/// Whether an existing sharing document matches the wanted body (ignore `_id`, `_rev`, and any field starting with `_`).
pub fn sharing_doc_matches(existing: &Value, wanted: &Value) -> bool {
    fn public_fields(v: &Value) -> Option<Map<String, Value>> {
        let map = v.as_object()?;
        Some(map.iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
    match (public_fields(existing), public_fields(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => existing == wanted,
    }
}

/// How unhealthy a replication state is: lower is worse.
fn state_rank(state: Option<&str>) -> u8 {
    match state {
        Some("failed") => 0,
        Some("error") => 1,
        Some("crashing") => 2,
        Some("pending" | "initializing") => 3,
        Some("running" | "triggered") => 5,
        Some("completed") => 6,
        // None, and states this version does not know.
        _ => 4,
    }
}

/// Summary across directions for status: the least healthy state wins, in this order (worst first):
/// failed, error, crashing, pending (and initializing), (unknown/None, or an unrecognised state), running (and CouchDB 1.x's
/// triggered), completed. Returns the chosen state string ("unknown" for None, or for no states at all).
pub fn summary_state(states: &[Option<&str>]) -> String {
    states
        .iter()
        .copied()
        .min_by_key(|s| state_rank(*s))
        .flatten()
        .map_or_else(|| "unknown".to_string(), str::to_string)
}

/// Whether a set of per-direction states is Ready: every state is "running" (or CouchDB 1.x's "triggered") or,
/// for one-shot (continuous == false), "completed". Empty → false.
pub fn replications_ready(states: &[Option<&str>], continuous: bool) -> bool {
    !states.is_empty()
        && states.iter().all(|s| match s {
            Some("running" | "triggered") => true,
            Some("completed") => !continuous,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner { kind: "CouchShare".into(), namespace: "ns".into(), name: format!("s-{uid}"), uid: uid.into() }
    }

    fn auth(username: &str, password: &str) -> Option<EndpointAuth> {
        Some(EndpointAuth { username: username.into(), password: password.into() })
    }

    fn spec() -> ReplicationSpec {
        ReplicationSpec {
            id: "couchshare-ns-s-fwd".into(),
            source: Endpoint {
                base_url: "http://couch:5984".into(),
                database: "team/a".into(),
                auth: auth("repl", "s3cret:pw"),
            },
            target: Endpoint { base_url: "https://remote.example/couch".into(), database: "b".into(), auth: None },
            continuous: true,
            selector: Some(json!({"type": "task"})),
            owner: owner("me"),
        }
    }

    #[test]
    fn validate_selector_table() {
        // Ok, or Err((path, a word of the message)).
        type Expect = Result<(), (&'static str, &'static str)>;
        let cases: Vec<(Value, Expect)> = vec![
            (json!({}), Ok(())),
            (json!({"type": "task", "n": 3, "tags": ["a"], "nested": {"x": null}}), Ok(())),
            (json!({"age": {"$gt": 3, "$lte": 9}, "name": {"$regex": "^a", "$beginsWith": "a"}}), Ok(())),
            (json!({"$or": [{"a": 1}, {"b": {"$in": [1, 2]}}], "$not": {"c": {"$exists": false}}}), Ok(())),
            (json!({"a": {"$type": "string"}, "b": {"$size": 0}, "c": {"$mod": [3, 1]}, "d": {"$nin": []}}), Ok(())),
            (json!({"tags": {"$elemMatch": {"$eq": "x"}}, "m": {"$keyMapMatch": {"$gt": 1}}}), Ok(())),
            (json!({"$nor": [{"a": {"$allMatch": {"$ne": 0}}}], "e": {"$all": [1], "$eq": {"$literal": 1}}}), Ok(())),
            (json!({"a": {"b": {"$ne": null}}}), Ok(())),
            (json!([{"a": 1}]), Err(("$", "object"))),
            (json!("type"), Err(("$", "object"))),
            (json!({"$or": [{"a": 1}, {"b": {"$bad": 1}}]}), Err(("$.$or[1].b", "$bad"))),
            (json!({"$where": "1"}), Err(("$", "$where"))),
            (json!({"$and": []}), Err(("$.$and", "non-empty"))),
            (json!({"$or": {"a": 1}}), Err(("$.$or", "array"))),
            (json!({"$or": [{"a": 1}, 2]}), Err(("$.$or[1]", "object"))),
            (json!({"$not": [{"a": 1}]}), Err(("$.$not", "object"))),
            (json!({"a": {"$elemMatch": 1}}), Err(("$.a.$elemMatch", "object"))),
            (json!({"a": {"$in": 1}}), Err(("$.a.$in", "array"))),
            (json!({"a": {"$exists": "yes"}}), Err(("$.a.$exists", "true or false"))),
            (json!({"a": {"$type": "integer"}}), Err(("$.a.$type", "integer"))),
            (json!({"a": {"$type": 1}}), Err(("$.a.$type", "type name"))),
            (json!({"a": {"$size": -1}}), Err(("$.a.$size", "non-negative integer"))),
            (json!({"a": {"$size": 1.5}}), Err(("$.a.$size", "non-negative integer"))),
            (json!({"a": {"$mod": [0, 1]}}), Err(("$.a.$mod", "zero"))),
            (json!({"a": {"$mod": [2]}}), Err(("$.a.$mod", "two integers"))),
            (json!({"a": {"$mod": [2.5, 1]}}), Err(("$.a.$mod", "two integers"))),
            (json!({"a": {"$regex": 1}}), Err(("$.a.$regex", "string"))),
            (json!({"a": {"$beginsWith": ["x"]}}), Err(("$.a.$beginsWith", "string"))),
            (
                json!({"$and": [{"$or": [{"x": {"$gt": 1}}, {"y": {"$exists": 1}}]}]}),
                Err(("$.$and[0].$or[1].y.$exists", "true")),
            ),
        ];
        for (selector, expect) in cases {
            let got = validate_selector(&selector);
            match (&got, expect) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err((path, word))) => {
                    assert_eq!(e.path, path, "{selector}: {e}");
                    assert!(e.message.contains(word), "{selector}: {e:?} should mention {word}");
                    assert_eq!(e.to_string(), format!("selector {}: {}", e.path, e.message));
                }
                _ => panic!("{selector}: got {got:?}, expected {expect:?}"),
            }
        }
    }

    #[test]
    fn the_replication_selector_always_carries_the_sharing_document() {
        let s = json!({"type": "task"});
        assert_eq!(replication_selector(None, None), None);
        assert_eq!(replication_selector(None, Some("db_sharing-a--b")), None, "everything replicates anyway");
        assert_eq!(replication_selector(Some(&s), None), Some(s.clone()));
        let widened = replication_selector(Some(&s), Some("db_sharing-a--b")).expect("a selector");
        assert_eq!(widened, json!({"$or": [{"type": "task"}, {"_id": "db_sharing-a--b"}]}));
        assert_eq!(validate_selector(&widened), Ok(()));
    }

    #[test]
    fn sharing_doc_ids_fill_the_template() {
        assert_eq!(sharing_doc_id("db_sharing-{source}--{target}", "a", "b"), "db_sharing-a--b");
        assert_eq!(sharing_doc_id("{target}/{source}/{target}", "a", "b"), "b/a/b");
        assert_eq!(sharing_doc_id("fixed", "a", "b"), "fixed");
        assert_eq!(sharing_doc_id("{x}-{source", "a", "b"), "{x}-{source", "other braces stay");
        assert_eq!(sharing_doc_id("{source}-{target}", "{target}", "b"), "{target}-b", "one pass");
    }

    #[test]
    fn replication_doc_ids_are_deterministic_and_sanitized() {
        let fwd = replication_doc_id("ns", "share", Direction::Forward, None);
        assert_eq!(fwd, "couchshare_ns_share_fwd");
        assert_eq!(fwd, replication_doc_id("ns", "share", Direction::Forward, None));
        assert_eq!(replication_doc_id("ns", "share", Direction::Backward, None), "couchshare_ns_share_back");
        assert_eq!(
            replication_doc_id("ns", "share", Direction::Forward, Some("alice")),
            "couchshare_ns_share_fwd_616c696365"
        );
        assert_ne!(
            replication_doc_id("ns", "share", Direction::Forward, Some("alice")),
            replication_doc_id("ns", "share", Direction::Forward, Some("bob"))
        );
        let odd = replication_doc_id("n s", "a/b:c.d_e", Direction::Forward, Some("Ünï"));
        assert_eq!(odd, "couchshare_n_s_a_b_c.d_e_fwd_c39c6ec3af");
        assert!(odd.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        assert!(!replication_doc_id("_x", "_y", Direction::Backward, None).starts_with('_'));
        let prefix = replication_doc_prefix("ns", "share");
        assert_eq!(prefix, "couchshare_ns_share_");
        for id in [fwd.clone(), replication_doc_id("ns", "share", Direction::Forward, Some("alice"))] {
            assert!(id.starts_with(&prefix));
        }
        assert!(!replication_doc_id("ns", "share-2", Direction::Forward, None).starts_with(&prefix));
        assert_ne!(
            replication_doc_id("a-b", "c", Direction::Forward, None),
            replication_doc_id("a", "b-c", Direction::Forward, None),
            "namespace a-b/name c and namespace a/name b-c never share an id"
        );
    }

    #[test]
    fn replication_usernames_are_valid_and_stable() {
        let u = replication_username("ns", "share");
        assert_eq!(u, replication_username("ns", "share"));
        assert_ne!(u, replication_username("ns", "share2"));
        assert_ne!(u, replication_username("ns-share", ""), "the separator counts");
        assert_eq!(u.len(), "couchshare-repl-".len() + 20);
        let suffix = u.strip_prefix("couchshare-repl-").expect("prefix");
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!u.starts_with('_') && !u.contains(':'), "CouchDB refuses names starting with _ or with :");
        assert_eq!(
            u,
            format!("couchshare-repl-{}", &hex::encode(Sha256::digest(b"ns/share"))[..20]),
            "sha256 of <namespace>/<name>"
        );
    }

    #[test]
    fn endpoints_never_carry_credentials_in_the_url() {
        let e = spec().source;
        let obj = endpoint_json(&e, EndpointStyle::AuthObject);
        assert_eq!(
            obj,
            json!({"url": "http://couch:5984/team%2Fa", "auth": {"basic": {"username": "repl", "password": "s3cret:pw"}}})
        );
        let header = endpoint_json(&e, EndpointStyle::BasicHeader);
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("repl:s3cret:pw"));
        assert_eq!(header, json!({"url": "http://couch:5984/team%2Fa", "headers": {"Authorization": expected}}));
        assert_eq!(expected, "Basic cmVwbDpzM2NyZXQ6cHc=");
        for v in [&obj, &header] {
            let url = v["url"].as_str().expect("url");
            assert!(!url.contains("s3cret") && !url.contains('@'), "{url}");
        }
        let anonymous = Endpoint { base_url: "https://h/couch/".into(), database: "b".into(), auth: None };
        assert_eq!(endpoint_json(&anonymous, EndpointStyle::AuthObject), json!({"url": "https://h/couch/b"}));
        let leaky = Endpoint { base_url: "http://u:p@h:5984".into(), database: "b".into(), auth: None };
        assert_eq!(endpoint_json(&leaky, EndpointStyle::BasicHeader), json!({"url": "http://h:5984/b"}));
        let debug = format!("{:?}", e);
        assert!(debug.contains("repl") && !debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn spec_hash_follows_what_the_replication_does() {
        let base = spec_hash(&spec());
        assert_eq!(base.len(), 32);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(base, spec_hash(&spec()));
        let unchanged: Vec<(&str, ReplicationSpec)> = vec![
            ("id", ReplicationSpec { id: "other".into(), ..spec() }),
            ("owner", ReplicationSpec { owner: owner("other"), ..spec() }),
        ];
        for (what, s) in unchanged {
            assert_eq!(spec_hash(&s), base, "{what} must not change the hash");
        }
        let ab = ReplicationSpec { selector: Some(json!({"a": 1, "b": {"$in": [1]}})), ..spec() };
        let ba = ReplicationSpec { selector: Some(json!({"b": {"$in": [1]}, "a": 1})), ..spec() };
        assert_eq!(spec_hash(&ab), spec_hash(&ba), "selector key order must not change the hash");
        let mut password = spec();
        password.source.auth = auth("repl", "rotated");
        let mut username = spec();
        username.source.auth = auth("repl2", "s3cret:pw");
        let mut no_auth = spec();
        no_auth.source.auth = None;
        let mut database = spec();
        database.target.database = "c".into();
        let mut url = spec();
        url.target.base_url = "https://elsewhere.example".into();
        let changed: Vec<(&str, ReplicationSpec)> = vec![
            ("selector", ReplicationSpec { selector: Some(json!({"type": "note"})), ..spec() }),
            ("no selector", ReplicationSpec { selector: None, ..spec() }),
            ("continuous", ReplicationSpec { continuous: false, ..spec() }),
            ("password", password),
            ("username", username),
            ("credentials dropped", no_auth),
            ("database", database),
            ("url", url),
        ];
        for (what, s) in changed {
            assert_ne!(spec_hash(&s), base, "{what} must change the hash");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut a = String::new();
        canonical_json(&json!({"b": [{"z": 1, "a": "x\"y"}], "a": null}), &mut a);
        assert_eq!(a, r#"{"a":null,"b":[{"a":"x\"y","z":1}]}"#);
    }

    #[test]
    fn replication_docs_carry_owner_and_hash() {
        let s = spec();
        let doc = replication_doc(&s, EndpointStyle::AuthObject);
        assert_eq!(doc["source"], endpoint_json(&s.source, EndpointStyle::AuthObject));
        assert_eq!(doc["target"], json!({"url": "https://remote.example/couch/b"}));
        assert_eq!(doc["continuous"], json!(true));
        assert_eq!(doc["selector"], json!({"type": "task"}));
        assert_eq!(doc["create_target"], json!(false));
        assert_eq!(doc[SHARE_FIELD], serde_json::to_value(&s.owner).expect("owner"));
        assert_eq!(doc[SPEC_HASH_FIELD], json!(spec_hash(&s)));
        assert!(doc.get("_id").is_none() && doc.get("_rev").is_none());
        let unfiltered = replication_doc(&ReplicationSpec { selector: None, ..spec() }, EndpointStyle::BasicHeader);
        assert!(unfiltered.get("selector").is_none());
    }

    #[test]
    fn plan_replication_table() {
        let s = spec();
        let body = replication_doc(&s, EndpointStyle::AuthObject);
        let with = |extra: Value| {
            let mut doc = body.clone();
            doc["_id"] = json!(s.id);
            doc["_rev"] = json!("3-abc");
            if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
                doc.extend(extra);
            }
            doc
        };
        let mut no_owner = with(json!({}));
        no_owner.as_object_mut().expect("object").remove(SHARE_FIELD);
        type Expect = Result<ReplicationAction, &'static str>;
        let cases: Vec<(&str, Option<Value>, Expect)> = vec![
            ("missing: create", None, Ok(ReplicationAction::Create(body.clone()))),
            ("same hash: keep", Some(with(json!({}))), Ok(ReplicationAction::Keep)),
            (
                "completed one-shot, same hash: keep, never re-run",
                Some(with(json!({"_replication_state": "completed", "continuous": false}))),
                Ok(ReplicationAction::Keep),
            ),
            (
                "another spec: update in place",
                Some(with(json!({SPEC_HASH_FIELD: "0123"}))),
                Ok(ReplicationAction::Update { rev: "3-abc".into(), body: body.clone() }),
            ),
            (
                "no hash at all: update",
                Some(with(json!({SPEC_HASH_FIELD: null}))),
                Ok(ReplicationAction::Update { rev: "3-abc".into(), body: body.clone() }),
            ),
            ("another share's: conflict", Some(with(json!({SHARE_FIELD: owner("other")}))), Err("Conflict")),
            ("nobody's: already exists", Some(no_owner), Err("AlreadyExists")),
            ("malformed owner: already exists", Some(with(json!({SHARE_FIELD: "me"}))), Err("AlreadyExists")),
        ];
        for (what, existing, expect) in cases {
            let got = plan_replication(&s, existing.as_ref(), EndpointStyle::AuthObject).map_err(|e| match e {
                Refusal::AlreadyExists { what } => {
                    assert_eq!(what, "replication document couchshare-ns-s-fwd");
                    "AlreadyExists"
                }
                Refusal::Conflict { what, owner: o } => {
                    assert_eq!(what, "replication document couchshare-ns-s-fwd");
                    assert_eq!(o, owner("other"));
                    "Conflict"
                }
                Refusal::NotPermitted(r) => r.reason(),
            });
            assert_eq!(got, expect, "{what}");
        }
    }

    #[test]
    fn stale_replications_are_ours_and_unwanted() {
        let me = owner("me");
        let doc = |id: &str, o: Option<Owner>| {
            let mut d = json!({"_id": id, "_rev": format!("1-{id}"), "source": "a", "target": "b"});
            if let Some(o) = o {
                d[SHARE_FIELD] = serde_json::to_value(o).expect("owner");
            }
            d
        };
        let docs = vec![
            doc("couchshare-ns-s-fwd", Some(me.clone())),
            doc("couchshare-ns-s-back", Some(me.clone())),
            doc("couchshare-ns-s-fwd-616c696365", Some(me.clone())),
            doc("couchshare-ns-t-fwd", Some(owner("other"))),
            doc("by-hand", None),
            json!({"_id": "no-rev", SHARE_FIELD: me.clone()}),
        ];
        let wanted = vec!["couchshare-ns-s-fwd".to_string()];
        assert_eq!(
            stale_replications(&docs, &me, &wanted),
            vec![
                ("couchshare-ns-s-back".to_string(), "1-couchshare-ns-s-back".to_string()),
                ("couchshare-ns-s-fwd-616c696365".to_string(), "1-couchshare-ns-s-fwd-616c696365".to_string()),
            ]
        );
        assert_eq!(stale_replications(&docs[..1], &me, &wanted), vec![]);
        assert_eq!(stale_replications(&docs, &owner("nobody"), &[]), vec![]);
    }

    #[test]
    fn sharing_docs_and_matching() {
        use crate::api::ShareMode::{OneWay, TwoWay};
        let me = owner("me");
        let record =
            json!({"kind": "CouchShare", "namespace": "ns", "name": "s-me", "uid": "me", "source": "a", "target": "b"});
        // The Inventory app's own format by default: data.permissions, no type.
        let plain = sharing_doc(None, OneWay, "a", "b", &me).expect("default");
        assert_eq!(plain, json!({"data": {"permissions": ["read"]}, SHARE_FIELD: record.clone()}));
        let both = sharing_doc(None, TwoWay, "a", "b", &me).expect("default");
        assert_eq!(both["data"]["permissions"], json!(["read", "write"]));
        assert!(both.get("type").is_none(), "never a type field: apps key their documents on it");
        // A declared body, exactly as declared.
        let body = json!({"data": {"permissions": ["read", "write"], "collection_id": "tools"}, "type": "app.sharing", "source": "mine"});
        let doc = sharing_doc(Some(&body), OneWay, "a", "b", &me).expect("body");
        let mut want = body.clone();
        want[SHARE_FIELD] = record.clone();
        assert_eq!(doc, want);
        for bad in [json!("text"), json!({"_rev": "9-x"}), json!({SHARE_FIELD: "forged"})] {
            assert!(sharing_doc(Some(&bad), OneWay, "a", "b", &me).is_err(), "{bad} is refused, not dropped");
        }

        let mut stored = doc.clone();
        stored["_id"] = json!("db_sharing-a--b");
        stored["_rev"] = json!("2-xyz");
        stored["_conflicts"] = json!(["1-q"]);
        assert!(sharing_doc_matches(&stored, &doc));
        assert!(sharing_doc_matches(&doc, &doc));
        let mut edited = stored.clone();
        edited["data"]["permissions"] = json!(["read"]);
        assert!(!sharing_doc_matches(&edited, &doc));
        let mut extra = stored.clone();
        extra["note"] = json!("by hand");
        assert!(!sharing_doc_matches(&extra, &doc));
        assert!(!sharing_doc_matches(&stored, &plain));
    }

    #[test]
    fn summary_state_picks_the_least_healthy() {
        let cases: Vec<(Vec<Option<&str>>, &str)> = vec![
            (vec![], "unknown"),
            (vec![Some("running")], "running"),
            (vec![Some("running"), Some("completed")], "running"),
            (vec![Some("completed"), Some("completed")], "completed"),
            (vec![Some("running"), None], "unknown"),
            (vec![None, Some("pending")], "pending"),
            (vec![Some("pending"), Some("crashing")], "crashing"),
            (vec![Some("crashing"), Some("error"), Some("running")], "error"),
            (vec![Some("error"), Some("failed")], "failed"),
            (vec![Some("completed"), Some("somethingnew")], "somethingnew"),
            (vec![Some("triggered"), Some("completed")], "triggered"),
        ];
        for (states, expect) in cases {
            assert_eq!(summary_state(&states), expect, "{states:?}");
        }
    }

    #[test]
    fn replications_ready_table() {
        let cases: Vec<(Vec<Option<&str>>, bool, bool)> = vec![
            (vec![], true, false),
            (vec![], false, false),
            (vec![Some("running")], true, true),
            (vec![Some("running"), Some("running")], true, true),
            (vec![Some("running"), Some("pending")], true, false),
            (vec![Some("running"), None], true, false),
            (vec![Some("completed")], true, false),
            (vec![Some("completed")], false, true),
            (vec![Some("completed"), Some("running")], false, true),
            (vec![Some("completed"), Some("crashing")], false, false),
            (vec![Some("triggered")], true, true),
        ];
        for (states, continuous, expect) in cases {
            assert_eq!(replications_ready(&states, continuous), expect, "{states:?} continuous={continuous}");
        }
    }
}
