//! Schema overrides for fields whose Rust type has no structural OpenAPI schema.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// Free-form JSON object (a Mango selector, sharing-document data): Kubernetes needs
/// `type: object` plus `x-kubernetes-preserve-unknown-fields` to keep it structural.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A label selector, as Kubernetes defines it, from k8s-openapi's own schema.
pub(crate) fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::json_schema(generator)
}
