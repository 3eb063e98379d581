//! The sharing document the receiving side reads (the Inventory app's `db_sharing-…` format).

use serde_json::{Map, Value, json};

use super::{SHARE_FIELD, owner_json};
use crate::plan::ownership::Owner;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner { kind: "CouchShare".into(), namespace: "ns".into(), name: format!("s-{uid}"), uid: uid.into() }
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
}
