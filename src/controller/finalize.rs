//! The step every reconciler with cleanup starts with: run apply or cleanup inside
//! kube-runtime's `finalizer()`, in a span naming the object, with the finalizer's own errors
//! mapped onto ours.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::Api;
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
    let ns = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = %K::kind(&()), namespace = %ns, name = %obj.name_any());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
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
