//! The tenancy rules (`plan::tenancy`) against live objects: a namespace's labels when a
//! server's selector needs them, the consent recorded on a referenced CouchDatabase or
//! CouchUser, and which resource manages a CouchDB name on a server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;

use crate::api::{AllowedNamespaces, ConsentScope, CouchDatabase, CouchServer, CouchUser, SecuritySpec};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::plan::tenancy::{self, NameKind, NameScope, Refused, TrustedAct};

/// Namespace `from`'s labels, read only when one of `policies` needs them to decide.
pub(crate) async fn labels_for(
    ctx: &Context,
    server: &CouchServer,
    policies: &[&AllowedNamespaces],
    from: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let own = server.namespace().unwrap_or_default();
    if !policies.iter().any(|p| tenancy::needs_labels(p, &own, from)) {
        return Ok(None);
    }
    Ok(Api::<Namespace>::all(ctx.client.clone()).get_opt(from).await?.map(|ns| ns.labels().clone()))
}

/// Whether resources in namespace `from` may use `server` at all (`allowedNamespaces`).
pub(crate) async fn allowed(ctx: &Context, server: &CouchServer, from: &str) -> Result<bool, Error> {
    let policy = &server.spec.allowed_namespaces;
    let labels = labels_for(ctx, server, &[policy], from).await?;
    Ok(tenancy::in_namespaces(policy, &server.namespace().unwrap_or_default(), from, labels.as_ref()))
}

/// Whether namespace `from` may reach what couchshare does not manage on `server`: allowed and
/// trusted (one read of its labels for both).
pub(crate) async fn trusted(ctx: &Context, server: &CouchServer, from: &str) -> Result<bool, Error> {
    let (allowed, trusted) = (&server.spec.allowed_namespaces, &server.spec.trusted_namespaces);
    let labels = labels_for(ctx, server, &[allowed, trusted], from).await?;
    let own = server.namespace().unwrap_or_default();
    Ok(tenancy::in_namespaces(allowed, &own, from, labels.as_ref())
        && tenancy::in_namespaces(trusted, &own, from, labels.as_ref()))
}

/// `Ok` when namespace `from` may do `act` on `server`, else the refusal.
pub(crate) async fn require_trust(
    ctx: &Context,
    server: &CouchServer,
    from: &str,
    act: TrustedAct,
) -> Result<Result<(), Refused>, Error> {
    let is = trusted(ctx, server, from).await?;
    let name = format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any());
    Ok(tenancy::trusted(act, from, &name, is))
}

/// The server-wide names namespace `from` may declare on `server`: any, from the server's own
/// namespace and the namespaces it trusts; else only those with the namespace's prefix.
pub(crate) async fn name_scope(ctx: &Context, server: &CouchServer, from: &str) -> Result<NameScope, Error> {
    let own = server.namespace().unwrap_or_default();
    let is_trusted = from == own || trusted(ctx, server, from).await?;
    Ok(tenancy::name_scope(from, &own, &server.name_any(), is_trusted))
}

/// Every name and role of a `_security` spec in `scope`.
pub(crate) fn security_in_scope(scope: &NameScope, security: &SecuritySpec) -> Result<(), Refused> {
    for part in [&security.admins, &security.members] {
        tenancy::all_in_scope(scope, NameKind::Username, &part.names, true)?;
        tenancy::all_in_scope(scope, NameKind::Role, &part.roles, true)?;
    }
    Ok(())
}

/// The per-user database prefix a server declares (`couch_peruser/database_prefix` in its
/// spec), else CouchDB's default. The user reconciler asks CouchDB itself for the prefix it
/// uses; this one needs no request, and a CouchUser still refuses a per-user database that a
/// CouchDatabase claims under a prefix configured by hand.
pub(crate) fn declared_userdb_prefix(server: &CouchServer) -> String {
    server
        .spec
        .config
        .as_ref()
        .and_then(|c| c.per_user_databases.as_ref())
        .and_then(|p| p.database_prefix.clone())
        .unwrap_or_else(|| crate::plan::user::DEFAULT_USERDB_PREFIX.to_string())
}

/// The server's `couch_peruser/database_prefix`, else `userdb-`.
pub(crate) async fn userdb_prefix(couch: &crate::couch::CouchClient) -> String {
    let node = match couch.membership().await {
        Ok(m) => m.cluster_nodes.first().or(m.all_nodes.first()).cloned(),
        Err(_) => None,
    };
    match node {
        Some(node) => couch.config_get(&node, "couch_peruser", "database_prefix").await.ok().flatten(),
        None => None,
    }
    .filter(|p| crate::api::validation::is_valid_database_name(&format!("{p}0")))
    .unwrap_or_else(|| crate::plan::user::DEFAULT_USERDB_PREFIX.to_string())
}

/// A reference from namespace `from` to the CouchDatabase `db`, for `needs`.
pub(crate) fn database_reference(db: &CouchDatabase, from: &str, needs: &[ConsentScope]) -> Result<(), Refused> {
    let ns = db.namespace().unwrap_or_default();
    let what = format!("CouchDatabase {ns}/{}", db.name_any());
    tenancy::reference(&what, &ns, &db.spec.shared_with, from, needs)
}

/// A reference from namespace `from` to the per-user database of `user`, for `needs`.
pub(crate) fn user_database_reference(user: &CouchUser, from: &str, needs: &[ConsentScope]) -> Result<(), Refused> {
    let ns = user.namespace().unwrap_or_default();
    let what = format!("CouchUser {ns}/{} (its per-user database)", user.name_any());
    tenancy::reference(&what, &ns, &user.spec.shared_with, from, needs)
}

/// The live resource that manages the CouchDB database `name` on `server`, as the watches know:
/// a CouchDatabase naming it, or a CouchUser whose per-user database it is.
pub(crate) fn database_manager(ctx: &Context, server: &super::ServerKey, name: &str) -> Option<String> {
    let key = (server.namespace.clone(), server.name.clone());
    crate::plan::access::manager(&ctx.stores.databases.state(), &ctx.stores.users.state(), &key, name)
}

/// The live CouchUser whose per-user database `name` on `server` is.
pub(crate) fn per_user_database_owner(
    ctx: &Context,
    server: &super::ServerKey,
    name: &str,
) -> Option<std::sync::Arc<CouchUser>> {
    let key = (server.namespace.clone(), server.name.clone());
    crate::plan::access::per_user_owner(&ctx.stores.users.state(), &key, name).cloned()
}
