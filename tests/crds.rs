//! The committed CRD YAML is what the types generate, and every schema is structural.

use std::path::Path;

use serde_json::Value;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = couchshare::api::crd_files().expect("CRDs serialize");
    assert_eq!(files.len(), 7, "seven kinds");
    for (name, yaml) in files {
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `couchshare crd --out-dir crds`"));
        assert!(committed == yaml, "crds/{name} is stale; regenerate with `cargo run -- crd --out-dir crds`");
    }
    let committed: Vec<_> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(committed.len(), 7, "crds/ holds exactly the seven CRDs: {committed:?}");
}

/// Every node of a structural schema has a type, or explicitly preserves unknown fields.
fn untyped_nodes(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !typed {
        out.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "not"] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: uses {forbidden}"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            untyped_nodes(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        untyped_nodes(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        untyped_nodes(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_schema_node_is_typed_or_preserves_unknown_fields() {
    for crd in couchshare::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let json = serde_json::to_value(&crd).expect("CRD to JSON");
        let versions = json["spec"]["versions"].as_array().expect("versions");
        for v in versions {
            let schema = &v["schema"]["openAPIV3Schema"];
            let mut bad = Vec::new();
            untyped_nodes(schema, &name, &mut bad);
            assert!(bad.is_empty(), "non-structural nodes in {name}: {bad:#?}");
        }
    }
}

#[test]
fn the_walker_flags_an_untyped_node() {
    let mut bad = Vec::new();
    let schema = serde_json::json!({"type":"object","properties":{"selector":{"description":"x"}}});
    untyped_nodes(&schema, "t", &mut bad);
    assert_eq!(bad, vec!["t.selector: no type".to_string()]);
}

#[test]
fn every_kind_has_short_name_category_status_and_ready_column() {
    let expected = [
        ("CouchServer", "csrv"),
        ("CouchDatabase", "cdb"),
        ("CouchUser", "cuser"),
        ("CouchGrant", "cgrant"),
        ("CouchShare", "cshare"),
        ("CouchBackup", "cbackup"),
        ("CouchScheduledBackup", "csbackup"),
    ];
    let crds = couchshare::api::crds();
    for ((kind, short), crd) in expected.iter().zip(&crds) {
        let names = &crd.spec.names;
        assert_eq!(names.kind, *kind);
        assert_eq!(names.short_names.as_deref(), Some(&[short.to_string()][..]));
        assert_eq!(names.categories.as_deref(), Some(&["couchshare".to_string()][..]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{kind} has /status");
        let cols: Vec<_> = v.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert!(cols.contains(&"Ready") && cols.contains(&"Age"), "{kind} columns {cols:?}");
        assert!(cols.len() >= 4, "{kind} has its own columns too: {cols:?}");
    }
}

/// Every field below `node` as (path, schema), depth first.
fn fields<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            out.push((p.clone(), v));
            fields(v, &p, out);
        }
    }
    if let Some(items) = node.get("items") {
        fields(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_spec_field_has_a_description() {
    for crd in couchshare::api::crds() {
        let json = serde_json::to_value(&crd).expect("CRD to JSON");
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut all = Vec::new();
        fields(&schema["properties"]["spec"], "spec", &mut all);
        fields(&schema["properties"]["status"], "status", &mut all);
        let missing: Vec<&String> = all
            .iter()
            .filter(|(_, v)| v.get("description").and_then(Value::as_str).is_none_or(str::is_empty))
            .map(|(p, _)| p)
            .collect();
        // Condition and LabelSelector come from k8s-openapi with their own descriptions.
        assert!(missing.is_empty(), "{}: fields without description: {missing:#?}", crd.spec.names.kind);
    }
}

/// kubectl reads YAML 1.1, where these keys are booleans or null: a field named so would
/// vanish from what a person writes (`shards: {n: 1}` arrives as `{"false": 1}`).
#[test]
fn no_field_is_named_what_yaml_1_1_reads_as_a_boolean_or_null() {
    const YAML_1_1: [&str; 22] = [
        "y", "Y", "n", "N", "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "true",
        "false", "null", "Null", "NULL", "~",
    ];
    for crd in couchshare::api::crds() {
        let json = serde_json::to_value(&crd).expect("CRD to JSON");
        let mut all = Vec::new();
        fields(&json["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "", &mut all);
        let bad: Vec<&String> = all
            .iter()
            .filter(|(p, _)| p.rsplit('.').next().is_some_and(|k| YAML_1_1.contains(&k)))
            .map(|(p, _)| p)
            .collect();
        assert!(bad.is_empty(), "{}: fields YAML 1.1 reads as booleans or null: {bad:?}", crd.spec.names.kind);
    }
}
