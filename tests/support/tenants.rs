//! Two tenant namespaces on one CouchServer, the operator cluster-wide (as the chart installs
//! it) on a private control plane of their own; manifests applied with `kubectl apply -f`.

use couchshare::couch::{CouchClient, Credentials};
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::json;

use super::operator::{Operator, secret_data, wait_ready};
use super::{couchdb, k8s};

/// A private control plane, the operator watching every namespace, and two tenants.
pub struct Tenants {
    pub client: Client,
    pub couch: CouchClient,
    pub kubeconfig: std::path::PathBuf,
    pub kubectl: std::path::PathBuf,
    /// The server's namespace, team A's.
    pub a: String,
    /// Tenant B's namespace.
    pub b: String,
    pub op: Operator,
    _plane: k8s::ControlPlane,
}

impl Tenants {
    /// Applies YAML in `ns` with kubectl, as a person would: whether it was accepted, and what
    /// kubectl said.
    pub fn try_apply(&self, ns: &str, yaml: &str) -> (bool, String) {
        k8s::kubectl(&self.kubectl, Some(&self.kubeconfig), ns, yaml)
    }

    /// Applies YAML in `ns` with kubectl, as a person would; panics with kubectl's message.
    pub fn apply(&self, ns: &str, yaml: &str) {
        let (ok, said) = k8s::kubectl(&self.kubectl, Some(&self.kubeconfig), ns, yaml);
        assert!(ok, "kubectl apply failed: {said}\n{yaml}");
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The API of a couchshare `kind` in `ns`, for code that treats every kind alike.
    pub fn dynamic(&self, ns: &str, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(couchshare::api::GROUP, couchshare::api::VERSION, kind);
        Api::namespaced_with(self.client.clone(), ns, &ApiResource::from_gvk(&gvk))
    }

    /// Whether an Event with `reason` was recorded for `name` in `ns`.
    /// Whether `name` has an Event with `reason` within 10 s: the reconcile tail posts its
    /// Events after the status write a test has just seen.
    pub async fn has_event(&self, ns: &str, name: &str, reason: &str) -> bool {
        let events: Api<Event> = self.api(ns);
        couchdb::eventually(std::time::Duration::from_secs(10), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
                .then_some(())
        })
        .await
        .is_some()
    }
}

/// Starts the private control plane and the operator, and makes namespaces A (with the
/// CouchServer `main`, whose spec gets `server_extra`) and B (labelled `tenant: "yes"`).
pub async fn tenants(test: &str, server_extra: &str) -> Option<Tenants> {
    let couch = couchdb::client(test)?;
    let plane = k8s::ControlPlane::start(test)?;
    couchdb::ensure_system_databases(&couch).await;
    let client = plane.client().await;
    k8s::install_crds(&client).await;
    let a = k8s::namespace(&client, "team-a").await;
    let b = k8s::namespace(&client, "team-b").await;
    let kubectl =
        std::path::PathBuf::from(std::env::var_os("COUCHSHARE_K8S_BIN").expect("COUCHSHARE_K8S_BIN")).join("kubectl");
    let op = Operator::start_cluster_wide(&plane.kubeconfig);
    let env = Tenants { client, couch, kubeconfig: plane.kubeconfig.clone(), kubectl, a, b, op, _plane: plane };
    env.apply(
        &env.b,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}, labels: {{tenant: \"yes\"}}}}\n", env.b),
    );
    let creds = couchdb::admin_credentials();
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    env.apply(
        &env.a,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: couchdb-admin}}\nstringData: {{username: {}, password: {}}}\n---\n\
             apiVersion: couchshare.io/v1alpha1\nkind: CouchServer\nmetadata: {{name: main}}\n\
             spec:\n  url: {url}\n  adminCredentials: {{secretRef: {{name: couchdb-admin}}}}\n{server_extra}",
            json!(creds.username),
            json!(creds.password)
        ),
    );
    wait_ready(&env.api::<couchshare::api::CouchServer>(&env.a), "main", &env.op).await;
    Some(env)
}

/// A client acting as the CouchUser `name` in `ns`, from its credentials Secret.
pub async fn as_user(env: &Tenants, ns: &str, name: &str) -> CouchClient {
    let data = secret_data(&env.client, ns, &format!("{name}-couchdb")).await.expect("credentials Secret");
    env.couch.with_credentials(Credentials::new(data["username"].clone(), data["password"].clone()))
}

pub async fn can_read(who: &CouchClient, db: &str, id: &str) -> bool {
    who.get_document(db, id).await.ok().flatten().is_some()
}
