//! Helpers shared by the integration tests; each test binary uses a part of them.
#![allow(dead_code)]

pub mod couchdb;
pub mod k8s;
pub mod operator;
pub mod s3;
pub mod tenants;

/// Both test servers ready for a test: a Kubernetes client with the CRDs installed and a
/// CouchDB admin client with the system databases; `None` (after a printed SKIP) without them.
pub async fn servers(test: &str) -> Option<(kube::Client, couchshare::couch::CouchClient)> {
    let client = k8s::client(test).await?;
    let couch = couchdb::client(test)?;
    couchdb::ensure_system_databases(&couch).await;
    k8s::install_crds(&client).await;
    Some((client, couch))
}
