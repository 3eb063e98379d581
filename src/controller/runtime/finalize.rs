//! The step every reconciler with cleanup starts with: run apply or cleanup inside
//! kube-runtime's `finalizer()`, in a span naming the object, with the finalizer's own errors
//! mapped onto ours; and how long a cleanup keeps trying.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::context::Context;
use super::error::Error;

/// The finalizer that undoes what the operator created, on every kind that has one.
pub const FINALIZER: &str = "couchshare.io/cleanup";

/// Runs `apply` (or, once the object is being deleted, `cleanup`) under [`FINALIZER`].
pub(crate) async fn reconcile_with_finalizer<K, A, AF, C, CF>(
    obj: Arc<K>,
    ctx: &Context,
    apply: A,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
    A: FnOnce(Arc<K>) -> AF,
    AF: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: Future<Output = Result<Action, Error>>,
{
    ctx.stores_ready().await;
    let ns = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = %K::kind(&()), namespace = %ns, name = %obj.name_any());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    // The finalizer is added here and the same pass goes on to apply: kube-runtime's own
    // `finalizer()` would stop after adding it and wait for the watch to bring the patched
    // object back, a second reconcile for every new object.
    let obj = if obj.meta().deletion_timestamp.is_none() && !obj.finalizers().iter().any(|f| f == FINALIZER) {
        Arc::new(add_finalizer(&api, obj.as_ref()).instrument(span.clone()).await?)
    } else {
        obj
    };
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(obj).await,
            Event::Cleanup(obj) => cleanup(obj).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Adds [`FINALIZER`] with a JSON patch that fails if the finalizers changed meanwhile (the
/// same patch as kube-runtime's: Kubernetes does not deduplicate finalizers).
async fn add_finalizer<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let ops = if obj.finalizers().is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patch = serde_json::from_value(ops).map_err(|e| Error::Finalizer(e.to_string()))?;
    Ok(api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await?)
}

/// Whether a cleanup that cannot reach CouchDB should keep trying: until `deletion_grace` after
/// the deletion mark, then it gives up with a `CleanupSkipped` Event.
pub(crate) fn within_grace<K: Resource>(obj: &K, ctx: &Context) -> bool {
    let Some(deleted) = obj.meta().deletion_timestamp.as_ref() else {
        return true;
    };
    let age = jiff::Timestamp::now().duration_since(deleted.0);
    age.as_secs_f64() < ctx.options.deletion_grace.as_secs_f64()
}
