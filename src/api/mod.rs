//! The CRD types of `couchshare.io/v1alpha1`: the seven kinds, their specs, statuses and
//! admission-time validation (OpenAPI schema plus CEL rules). Knows nothing of HTTP.

mod backup;
mod common;
mod database;
mod grant;
pub mod labels;
mod scheduled_backup;
mod schema;
mod server;
mod share;
mod share_status;
mod user;
pub mod validation;

pub use backup::*;
pub use common::*;
pub use database::*;
pub use grant::*;
pub use scheduled_backup::*;
pub use server::*;
pub use share::*;
pub use share_status::*;
pub use user::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every couchshare kind.
pub const GROUP: &str = "couchshare.io";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Every CRD of the project, in a stable order (the order `couchshare crd` prints them in).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut database = CouchDatabase::crd();
    // Rules on metadata can only sit at the root of the schema, which the derive does not
    // reach: a database named after the resource needs a name CouchDB accepts (no dots).
    add_root_rule(
        &mut database,
        "has(self.spec.name) || self.metadata.name.matches('^[a-z][a-z0-9_$()+/-]*$')",
        "metadata.name is not a valid CouchDB database name (no dots, no uppercase); set spec.name",
    );
    let mut user = CouchUser::crd();
    // The username defaults to metadata.name, which a rule on spec cannot see.
    add_root_rule(
        &mut user,
        "!(has(self.spec.username) ? self.spec.username : self.metadata.name).startsWith('couchshare-')",
        "usernames that start with couchshare- are reserved for the scoped replication users of shares; choose another username",
    );
    let mut scheduled = CouchScheduledBackup::crd();
    // The pattern is built from its parts (see `cron_pattern`), so the rule is added here.
    add_rule_at(
        &mut scheduled,
        &["spec", "schedule"],
        &format!("self.matches('{}')", cron_pattern()),
        "must be a cron expression of five fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or jan-dec, day of week 0-7 or sun-sat; with * , - and /) or @hourly, @daily, @weekly, @monthly, @yearly",
    );
    vec![CouchServer::crd(), database, user, CouchGrant::crd(), CouchShare::crd(), CouchBackup::crd(), scheduled]
}

/// Adds a CEL rule to the schema node at `path` (property names from the root).
fn add_rule_at(crd: &mut CustomResourceDefinition, path: &[&str], rule: &str, message: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        let mut node = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
        for key in path {
            node = node.and_then(|n| n.properties.as_mut()).and_then(|p| p.get_mut(*key));
        }
        if let Some(node) = node {
            node.x_kubernetes_validations.get_or_insert_with(Vec::new).push(ValidationRule {
                rule: rule.into(),
                message: Some(message.into()),
                ..Default::default()
            });
        }
    }
}

fn add_root_rule(crd: &mut CustomResourceDefinition, rule: &str, message: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            schema.x_kubernetes_validations.get_or_insert_with(Vec::new).push(ValidationRule {
                rule: rule.into(),
                message: Some(message.into()),
                ..Default::default()
            });
        }
    }
}

/// The CRDs as one multi-document YAML stream (what `couchshare crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (_, yaml) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

/// One `(file name, YAML)` per CRD, exactly as committed under `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_yaml_ng::to_string(&crd)?))
        })
        .collect()
}
