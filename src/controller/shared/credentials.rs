//! A CouchUser's credentials Secret: its name, the password it holds (declared, kept, or
//! generated for a rotation generation), and the operator's part of it, server-side applied
//! under the operator's field manager so keys written by others stay.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::Value;

use super::servers::secret_value;
use crate::api::CouchUser;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::FIELD_MANAGER;
use crate::plan::secret_template;
use crate::plan::user::credentials_data;

pub use crate::api::labels::{OWNER_UID_ANNOTATION, ROTATION_ANNOTATION};
/// Length of generated passwords.
pub const GENERATED_PASSWORD_LEN: usize = 40;

/// Name of the credentials Secret: `spec.credentialsSecret.name` or `<name>-couchdb`.
pub fn credentials_secret_name(user: &CouchUser) -> String {
    user.spec.credentials_secret.name.clone().unwrap_or_else(|| format!("{}-couchdb", user.name_any()))
}

/// The password the user must have, and whether it was generated just now.
pub(crate) struct Password {
    pub value: String,
    pub fresh: bool,
}

pub(crate) async fn desired_password(
    user: &CouchUser,
    ctx: &Context,
    existing: Option<&Secret>,
) -> Result<Password, Error> {
    let ns = user.namespace().unwrap_or_default();
    // The template is checked here, before any password is read or generated: a template a
    // spec change must fix leaves the Secret and CouchDB untouched (Ready=False, InvalidSpec).
    check_template(user)?;
    if let Some(source) = &user.spec.password {
        let value = secret_value(ctx, &ns, &source.secret_ref.name, &source.secret_ref.key).await?;
        if value.is_empty() {
            return Err(Error::SecretKeyMissing {
                namespace: ns,
                name: source.secret_ref.name.clone(),
                key: source.secret_ref.key.clone(),
            });
        }
        return Ok(Password { value, fresh: false });
    }
    let generation = rotation_generation(user).to_string();
    let reusable = existing.filter(|s| s.annotations().get(ROTATION_ANNOTATION) == Some(&generation)).and_then(|s| {
        s.data.as_ref()?.get("password").and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|p| !p.is_empty())
    });
    match reusable {
        Some(value) => Ok(Password { value, fresh: false }),
        None => {
            let value: String =
                rand::rng().sample_iter(Alphanumeric).take(GENERATED_PASSWORD_LEN).map(char::from).collect();
            Ok(Password { value, fresh: true })
        }
    }
}

/// Refuses a `credentialsSecret.template` that cannot render (an unknown placeholder, a
/// syntax error), naming the key and the fault.
pub(crate) fn check_template(user: &CouchUser) -> Result<(), Error> {
    secret_template::check(&user.spec.credentials_secret.template, "http://server.invalid:5984")
        .map_err(|e| Error::InvalidSpec(e.to_string()))
}

pub(crate) fn rotation_generation(user: &CouchUser) -> i64 {
    user.spec.rotation.as_ref().map(|r| r.generation).unwrap_or(0)
}

/// The Secret as the operator wants it: only the keys, labels and annotations it writes.
pub(crate) fn desired_secret(
    user: &CouchUser,
    server_url: &str,
    username: &str,
    password: &str,
    userdb: Option<&str>,
) -> Secret {
    let mut databases = user.spec.credentials_secret.databases.clone();
    if let Some(db) = userdb {
        databases.push(db.to_string());
    }
    let mut keys = credentials_data(server_url, username, password, &databases);
    // Checked by `check_template` before this: a key that still fails (a server URL that
    // cannot hold credentials) is left out and logged by key, never by value.
    let creds = secret_template::Credentials { server_url, username, password };
    match secret_template::render(&user.spec.credentials_secret.template, &creds) {
        Ok(rendered) => keys.extend(rendered),
        Err(e) => {
            tracing::warn!(user = %user.name_any(), key = %e.key, "a credentialsSecret.template key was not written")
        }
    }
    let data: BTreeMap<String, ByteString> = keys.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect();
    let mut labels = user.spec.credentials_secret.labels.clone();
    labels.insert(crate::api::labels::MANAGED_BY_LABEL.into(), crate::api::labels::MANAGED_BY.into());
    let mut annotations = user.spec.credentials_secret.annotations.clone();
    annotations.insert(crate::api::labels::OWNER_ANNOTATION.into(), format!("CouchUser/{}", user.name_any()));
    annotations.insert(OWNER_UID_ANNOTATION.into(), user.uid().unwrap_or_default());
    if user.spec.password.is_none() {
        annotations.insert(ROTATION_ANNOTATION.into(), rotation_generation(user).to_string());
    }
    let mut secret = Secret { data: Some(data), type_: Some("Opaque".into()), ..Default::default() };
    secret.metadata.name = Some(credentials_secret_name(user));
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(annotations);
    secret
}

/// Whether `existing` already carries everything `desired` does (extra keys, labels and
/// annotations of others are not ours to judge).
pub(crate) fn secret_up_to_date(existing: Option<&Secret>, desired: &Secret) -> bool {
    let Some(existing) = existing else { return false };
    let contains = |have: Option<&BTreeMap<String, String>>, want: Option<&BTreeMap<String, String>>| {
        want.into_iter().flatten().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    let data_ok = desired.data.iter().flatten().all(|(k, v)| existing.data.as_ref().and_then(|d| d.get(k)) == Some(v));
    data_ok
        && contains(existing.metadata.labels.as_ref(), desired.metadata.labels.as_ref())
        && contains(existing.metadata.annotations.as_ref(), desired.metadata.annotations.as_ref())
}

/// Server-side applies the operator's part of the Secret under its field manager: keys,
/// labels and annotations written by others are never removed.
pub(crate) async fn apply_secret(ctx: &Context, ns: &str, secret: &Secret) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut body = serde_json::to_value(secret).map_err(|e| Error::Internal(format!("encoding the Secret: {e}")))?;
    body["apiVersion"] = Value::String("v1".into());
    body["kind"] = Value::String("Secret".into());
    let name = secret.metadata.name.clone().unwrap_or_default();
    let written = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    ctx.own_writes.note(ns, &name, written.metadata.resource_version.as_deref());
    Ok(())
}

/// `Ok` when `secret` carries this object's mark (`uid`), so the operator may write it; a Secret
/// it did not create — an app's, the server's admin Secret, another CouchUser's — is never
/// overwritten.
pub(crate) fn secret_is_ours(secret: &Secret, uid: Option<&str>, ns: &str, name: &str) -> Result<(), Error> {
    match secret.annotations().get(OWNER_UID_ANNOTATION) {
        Some(owner) if Some(owner.as_str()) == uid => Ok(()),
        Some(_) => Err(Error::SecretConflict(format!(
            "Secret {ns}/{name} is written by another couchshare object; choose another name"
        ))),
        None => Err(Error::SecretConflict(format!(
            "Secret {ns}/{name} exists and was not created by couchshare for this object; it is left untouched (choose another name, or delete it)"
        ))),
    }
}
