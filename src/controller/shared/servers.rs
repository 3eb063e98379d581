//! From a CouchServer (or a reference to one) to a connected CouchDB client: the admin
//! Secret, the CA, the `allowedNamespaces` check, and a cache of clients.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::{CouchServer, ServerRef};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::keys::ServerKey;
use crate::couch::{CouchClient, CouchConfig, Credentials, RetryPolicy};

pub use crate::controller::runtime::clients::Connected;

/// Reads one key of a Secret as UTF-8.
pub async fn secret_value(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<String, Error> {
    let [value] = secret_values(ctx, namespace, name, [key]).await?;
    Ok(value)
}

/// Reads several keys of one Secret as UTF-8, with one request.
pub async fn secret_values<const N: usize>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    keys: [&str; N],
) -> Result<[String; N], Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::SecretNotFound { namespace: namespace.into(), name: name.into() })?;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, key) in out.iter_mut().zip(keys) {
        let missing = || Error::SecretKeyMissing { namespace: namespace.into(), name: name.into(), key: key.into() };
        *slot = match secret.data.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => String::from_utf8(bytes.0.clone()).map_err(|_| missing())?,
            None => secret.string_data.as_ref().and_then(|d| d.get(key)).cloned().ok_or_else(missing)?,
        };
    }
    Ok(out)
}

/// The resourceVersion of a Secret as the metadata watch last saw it.
fn secret_version(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
    ctx.stores.secrets.get(&key).and_then(|s| s.metadata.resource_version.clone())
}

/// A client for `server`, built from its admin Secret and CA; reused while they are unchanged.
pub async fn connect(ctx: &Context, server: &CouchServer) -> Result<CouchClient, Error> {
    let ns = server.namespace().unwrap_or_default();
    let secret = &server.spec.admin_credentials.secret_ref;
    let ca_ref = server.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref());
    let key = ServerKey::of(server);
    // While the URL and the Secrets' versions are unchanged, the cached client is still right.
    let versions = secret_version(ctx, &ns, &secret.name).and_then(|admin| {
        let ca = match ca_ref {
            Some(ca) => secret_version(ctx, &ns, &ca.name)?,
            None => String::new(),
        };
        Some(format!("{}|{}|{admin}|{ca}", server.spec.url, server.uid().unwrap_or_default()))
    });
    if let Some(client) = versions.as_deref().and_then(|v| ctx.clients.by_versions(&key, v)) {
        return Ok(client);
    }
    let [username, password] =
        secret_values(ctx, &ns, &secret.name, [secret.username_key.as_str(), secret.password_key.as_str()]).await?;
    let ca = match ca_ref {
        Some(ca) => Some(secret_value(ctx, &ns, &ca.name, &ca.key).await?),
        None => None,
    };
    let mut hash = Sha256::new();
    for part in [server.spec.url.as_str(), &username, &password, ca.as_deref().unwrap_or_default()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let fingerprint: [u8; 32] = hash.finalize().into();
    if let Some(client) = ctx.clients.by_fingerprint(&key, &fingerprint, &versions) {
        return Ok(client);
    }
    let mut config = CouchConfig::new(server.spec.url.clone(), Some(Credentials::new(username, password)));
    config.ca_pem = ca.map(String::into_bytes);
    config.request_timeout = ctx.options.couch_timeout;
    // The controller backs off per object itself: retry briefly inside a call only.
    config.retry =
        RetryPolicy { max_retries: 2, max_total_delay: std::time::Duration::from_secs(2), ..RetryPolicy::default() };
    let client = CouchClient::new(config).map_err(Error::client_config)?.with_observer({
        let metrics = ctx.metrics.clone();
        std::sync::Arc::new(move |r| metrics.couch_request(r))
    });
    ctx.clients.insert(key, fingerprint, versions, client.clone());
    Ok(client)
}

/// Whether resources in namespace `from` may use `server` (its `allowedNamespaces`).
pub async fn namespace_allowed(ctx: &Context, server: &CouchServer, from: &str) -> Result<bool, Error> {
    super::tenancy::allowed(ctx, server, from).await
}

/// Resolves a reference from a resource in namespace `from`: the server exists, allows the
/// namespace, and its admin credentials work for building a client.
pub async fn resolve(ctx: &Context, from: &str, reference: &ServerRef) -> Result<Connected, Error> {
    let namespace = reference.namespace.clone().unwrap_or_else(|| from.to_string());
    let server = stored_or_read(ctx, &ctx.stores.servers, &namespace, &reference.name)
        .await?
        .ok_or_else(|| Error::ServerNotFound { namespace: namespace.clone(), name: reference.name.clone() })?;
    if !namespace_allowed(ctx, &server, from).await? {
        return Err(Error::NotAllowed { namespace, name: reference.name.clone(), from: from.into() });
    }
    let couch = connect(ctx, &server).await?;
    Ok(Connected { server, couch })
}

/// An object from a watch's store, or read from the API server when the store does not have it
/// (not listed yet, or created a moment ago).
pub(crate) async fn stored_or_read<K>(
    ctx: &Context,
    store: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    stored_when_or_read(ctx, store, namespace, name, |_| true).await
}

/// Like [`stored_or_read`], reading from the API server also when the stored copy lacks what
/// the caller waits for (`enough`): a status written a moment ago may not have reached the
/// store yet.
pub(crate) async fn stored_when_or_read<K>(
    ctx: &Context,
    store: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    name: &str,
    enough: impl Fn(&K) -> bool,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    if let Some(found) = store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
        && enough(&found)
    {
        return Ok(Some(found));
    }
    Ok(Api::<K>::namespaced(ctx.client.clone(), namespace).get_opt(name).await?.map(Arc::new))
}

/// The key of the server a reference points to.
pub fn server_key<K: Resource>(obj: &K, reference: &ServerRef) -> ServerKey {
    ServerKey::referenced(obj, reference)
}

/// Resolves a reference while cleaning up: a server, Secret or permission that is gone is not
/// an error (deletion must never hang on it) — it is said in a `CleanupSkipped` Event
/// (`what` says what is left undone) and `None` is returned.
pub async fn resolve_for_cleanup<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    from: &str,
    reference: &ServerRef,
    what: &str,
) -> Result<Option<Connected>, Error> {
    match resolve(ctx, from, reference).await {
        Ok(c) => Ok(Some(c)),
        Err(
            e @ (Error::ServerNotFound { .. }
            | Error::SecretNotFound { .. }
            | Error::SecretKeyMissing { .. }
            | Error::NotAllowed { .. }),
        ) => {
            ctx.event(obj, true, "CleanupSkipped", format!("{what}: {e}")).await;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
