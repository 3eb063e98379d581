//! From a CouchShare's source and target to concrete databases: local CouchDatabases and
//! per-user databases on the managed server, remote databases with their credentials.

use kube::ResourceExt;

use super::places::{Place, fan_in, user_place};
use crate::api::{CouchDatabase, CouchShare, CouchUser, ObjectRef, RemoteDatabase, ServerRef, UserDatabaseRef};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::{Connected, secret_value, server_key, stored_when_or_read};
use crate::controller::shared::tenancy::{database_reference, user_database_reference};
use crate::couch::CouchClient;
use crate::plan::share::{End, EndpointAuth};
use crate::plan::tenancy::{EndpointRole, share_needs};

/// A resolved source: one place, or the per-user databases of the selected users (fan-in),
/// with each user's CouchDB name.
pub(crate) enum Sources {
    One(Place),
    /// The users whose database exists, and those still waiting for theirs.
    FanIn {
        ready: Vec<(String, Place)>,
        waiting: Vec<String>,
    },
}

/// Why a share cannot be resolved yet (not an error of the spec): something it needs is not Ready.
pub(crate) fn not_ready(what: String) -> Error {
    Error::Waiting { what }
}

/// Whether resolving an endpoint also checks the referenced object's consent (it does when the
/// share is to run; revocation and withdrawal resolve what they must stop regardless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consent {
    /// Refuse an endpoint in another namespace that has not consented.
    Check,
    /// Resolve it whatever its consent.
    Ignore,
}

async fn local_database(
    ctx: &Context,
    share: &CouchShare,
    reference: &ObjectRef,
    role: EndpointRole,
    consent: Consent,
) -> Result<Place, Error> {
    let share_ns = share.namespace().unwrap_or_default();
    let ns = reference.namespace.clone().unwrap_or_else(|| share_ns.clone());
    let has_name = |d: &CouchDatabase| d.status.as_ref().is_some_and(|s| s.couch_name.is_some());
    let db = stored_when_or_read(ctx, &ctx.stores.databases, &ns, &reference.name, has_name)
        .await?
        .ok_or_else(|| not_ready(format!("CouchDatabase {ns}/{}", reference.name)))?;
    if consent == Consent::Check {
        database_reference(&db, &share_ns, &share_needs(role, share.spec.mode))?;
    }
    let database = db
        .status
        .as_ref()
        .and_then(|s| s.couch_name.clone())
        .filter(|_| db.metadata.deletion_timestamp.is_none())
        .ok_or_else(|| not_ready(format!("CouchDatabase {ns}/{} (not created yet)", reference.name)))?;
    Ok(Place::Local { database, managed: true, server: server_key(db.as_ref(), &db.spec.server_ref) })
}

async fn user_database(
    ctx: &Context,
    share: &CouchShare,
    reference: &UserDatabaseRef,
    role: EndpointRole,
    consent: Consent,
) -> Result<Place, Error> {
    let share_ns = share.namespace().unwrap_or_default();
    let ns = reference.namespace.clone().unwrap_or_else(|| share_ns.clone());
    let has_database = |u: &CouchUser| u.status.as_ref().is_some_and(|s| s.per_user_database.is_some());
    let user = stored_when_or_read(ctx, &ctx.stores.users, &ns, &reference.user, has_database)
        .await?
        .ok_or_else(|| not_ready(format!("CouchUser {ns}/{}", reference.user)))?;
    if consent == Consent::Check {
        user_database_reference(&user, &share_ns, &share_needs(role, share.spec.mode))?;
    }
    if !user.spec.per_user_database {
        return Err(Error::InvalidSpec(format!("CouchUser {ns}/{} has no perUserDatabase: true", reference.user)));
    }
    user_place(&user).ok_or_else(|| not_ready(format!("per-user database of CouchUser {ns}/{}", reference.user)))
}

async fn remote(ctx: &Context, share_ns: &str, remote: &RemoteDatabase) -> Result<Place, Error> {
    let secret = &remote.credentials_secret_ref;
    let username = secret_value(ctx, share_ns, &secret.name, &secret.username_key).await?;
    let password = secret_value(ctx, share_ns, &secret.name, &secret.password_key).await?;
    Ok(Place::Remote {
        base_url: remote.url.trim_end_matches('/').to_string(),
        database: remote.database.clone(),
        auth: EndpointAuth { username, password },
    })
}

/// Resolves the source.
pub(crate) async fn sources(ctx: &Context, share: &CouchShare, consent: Consent) -> Result<Sources, Error> {
    let ns = share.namespace().unwrap_or_default();
    let source = &share.spec.source;
    if let Some(r) = &source.database {
        return Ok(Sources::One(local_database(ctx, share, r, EndpointRole::Source, consent).await?));
    }
    if let Some(r) = &source.user_database {
        return Ok(Sources::One(user_database(ctx, share, r, EndpointRole::Source, consent).await?));
    }
    if let Some(r) = &source.remote {
        return Ok(Sources::One(remote(ctx, &ns, r).await?));
    }
    if source.user_databases.is_some() {
        let (ready, waiting) = fan_in(ctx, share)?;
        return Ok(Sources::FanIn { ready, waiting });
    }
    // Every per-user database on the server: found by the on-change engine, not here.
    if source.per_user_databases.is_some() {
        return Ok(Sources::FanIn { ready: vec![], waiting: vec![] });
    }
    Err(Error::InvalidSpec(
        "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote".into(),
    ))
}

/// Resolves the target.
pub(crate) async fn target(ctx: &Context, share: &CouchShare, consent: Consent) -> Result<Place, Error> {
    let ns = share.namespace().unwrap_or_default();
    let target = &share.spec.target;
    if let Some(r) = &target.database {
        return local_database(ctx, share, r, EndpointRole::Target, consent).await;
    }
    if let Some(r) = &target.user_database {
        return user_database(ctx, share, r, EndpointRole::Target, consent).await;
    }
    if let Some(r) = &target.remote {
        return remote(ctx, &ns, r).await;
    }
    Err(Error::InvalidSpec("target needs exactly one of database, userDatabase or remote".into()))
}

/// The server whose `_replicator` runs the share: `serverRef`, or the one server of its local
/// endpoints (which must all be on one server).
pub(crate) fn managing_server(share: &CouchShare, places: &[&Place]) -> Result<ServerRef, Error> {
    let locals: Vec<&crate::controller::ServerKey> = places
        .iter()
        .filter_map(|p| match p {
            Place::Local { server, .. } => Some(server),
            Place::Remote { .. } => None,
        })
        .collect();
    if let Some(first) = locals.first()
        && locals.iter().any(|s| s != first)
    {
        return Err(Error::InvalidSpec(
            "local endpoints are on different CouchServers; make one of them a remote endpoint".into(),
        ));
    }
    if let Some(reference) = &share.spec.server_ref {
        let key = server_key(share, reference);
        if let Some(first) = locals.first()
            && **first != key
        {
            return Err(Error::InvalidSpec("serverRef differs from the server of the local endpoints".into()));
        }
        return Ok(key.to_ref());
    }
    locals
        .first()
        .map(|key| key.to_ref())
        .ok_or_else(|| Error::InvalidSpec("serverRef is required when both source and target are remote".into()))
}

/// A client for a remote endpoint with its credentials, reused while URL and credentials stay
/// the same. When none can be built (a URL no HTTP client takes), the share fails with
/// `RemoteUnusable`: nothing meant for the remote ever goes to another server.
pub(crate) fn remote_client(ctx: &Context, base_url: &str, auth: &EndpointAuth) -> Result<CouchClient, Error> {
    use sha2::{Digest, Sha256};
    let key = format!("remote|{base_url}|{}", auth.username);
    let fingerprint: [u8; 32] = Sha256::digest(format!("{base_url}\n{}\n{}", auth.username, auth.password)).into();
    ctx.clients.remote(&key, fingerprint, || {
        let mut config = crate::couch::CouchConfig::new(
            base_url.to_string(),
            Some(crate::couch::Credentials::new(auth.username.clone(), auth.password.clone())),
        );
        config.retry = crate::couch::RetryPolicy::none();
        CouchClient::new(config).map_err(|e| Error::RemoteUnusable(e.to_string()))
    })
}

/// A client for the server a place is on: the managed server's admin, or the remote's own.
pub(crate) fn place_client(ctx: &Context, connected: &Connected, end: &End) -> Result<CouchClient, Error> {
    match end {
        End::Local { .. } => Ok(connected.couch.clone()),
        End::Remote { base_url, auth, .. } => remote_client(ctx, base_url, auth),
    }
}
