//! Every manifest under `examples/` parses into the operator's types.

use std::path::{Path, PathBuf};

use couchshare::api::{
    CouchBackup, CouchDatabase, CouchGrant, CouchScheduledBackup, CouchServer, CouchShare, CouchUser,
};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable examples dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_parses_into_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 5, "examples found: {files:?}");
    let mut kinds = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable example");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("valid YAML");
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let what = format!("{} ({kind})", file.display());
            let parsed = match kind.as_str() {
                "CouchServer" => serde_yaml_ng::from_value::<CouchServer>(value).map(|_| ()),
                "CouchDatabase" => serde_yaml_ng::from_value::<CouchDatabase>(value).map(|_| ()),
                "CouchUser" => serde_yaml_ng::from_value::<CouchUser>(value).map(|_| ()),
                "CouchGrant" => serde_yaml_ng::from_value::<CouchGrant>(value).map(|_| ()),
                "CouchShare" => serde_yaml_ng::from_value::<CouchShare>(value).map(|_| ()),
                "CouchBackup" => serde_yaml_ng::from_value::<CouchBackup>(value).map(|_| ()),
                "CouchScheduledBackup" => serde_yaml_ng::from_value::<CouchScheduledBackup>(value).map(|_| ()),
                "Secret" => serde_yaml_ng::from_value::<Secret>(value).map(|_| ()),
                other => panic!("{what}: unexpected kind {other:?}"),
            };
            parsed.unwrap_or_else(|e| panic!("{what} does not parse: {e}"));
            kinds.insert(kind);
        }
    }
    for kind in ["CouchServer", "CouchDatabase", "CouchUser", "CouchGrant", "CouchShare", "CouchScheduledBackup"] {
        assert!(kinds.contains(kind), "no example of {kind}");
    }
}
