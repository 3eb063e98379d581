//! `kubectl couchshare access DATABASE`: the effective members and admins of a CouchDatabase
//! with the cause of each, computed by `couchshare::plan::access` from what the API server
//! lists — the tenancy rules and `desired_security` the operator's reconcilers use.

use std::collections::BTreeMap;
use std::sync::Arc;

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use couchshare::plan::access::{Entry, Refusal, Tenants, UnmanagedWorld, World, explain, explain_unmanaged};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::output::{print, table};
use crate::{Failure, Format, Scope};

/// Every object of a kind the caller may list: across namespaces if allowed, else in `ns`.
async fn list<K>(client: &kube::Client, ns: &str) -> Result<Vec<Arc<K>>, Failure>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::all(client.clone()).list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.into_iter().map(Arc::new).collect()),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            eprintln!("note: may not list {} in every namespace; only namespace {ns} is considered", K::plural(&()));
            let items = Api::<K>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items;
            Ok(items.into_iter().map(Arc::new).collect())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(scope: &Scope, database: &str) -> Result<(), Failure> {
    let client = &scope.client;
    let home = scope.namespace.clone().unwrap_or_default();
    let databases: Vec<CouchDatabase> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items,
        None => Api::all(client.clone()).list(&ListParams::default()).await?.items,
    };
    let matching: Vec<&CouchDatabase> =
        databases.iter().filter(|d| d.name_any() == database || d.couch_name() == database).collect();
    let db = match matching.as_slice() {
        [one] => *one,
        [] => return unmanaged(scope, database).await,
        many => {
            let names: Vec<String> =
                many.iter().map(|d| format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())).collect();
            return Err(Failure::NotFound(format!(
                "{database:?} names several CouchDatabases ({}); choose one with -n",
                names.join(", ")
            )));
        }
    };
    let db_ns = db.namespace().unwrap_or(home);
    let server_ns = db.spec.server_ref.namespace.clone().unwrap_or_else(|| db_ns.clone());
    let server = Api::<CouchServer>::namespaced(client.clone(), &server_ns)
        .get_opt(&db.spec.server_ref.name)
        .await?
        .ok_or_else(|| {
            Failure::NotFound(format!(
                "CouchServer {server_ns}/{} of {db_ns}/{} does not exist",
                db.spec.server_ref.name,
                db.name_any()
            ))
        })?;
    let grants: Vec<Arc<CouchGrant>> = list(client, &db_ns).await?;
    let users: Vec<Arc<CouchUser>> = list(client, &db_ns).await?;
    let shares: Vec<Arc<CouchShare>> = list(client, &db_ns).await?;
    let labels = namespace_labels(client).await;
    let world = World {
        server: &server,
        database: db,
        grants: &grants,
        users: &users,
        shares: &shares,
        namespace_labels: &labels,
    };
    let explained = explain(&world);
    let wide = scope.format == Some(Format::Wide);
    print(scope.format, &explained, || {
        let mut out = format!(
            "CouchDatabase {} (CouchDB: {}, server {})\n\n",
            explained.database, explained.couch_name, explained.server
        );
        out += &entries_table(&explained.entries, wide);
        out += &refused_table(&explained.refused);
        out
    })
}

/// The labels of every namespace the caller may list (none when it may not).
async fn namespace_labels(client: &kube::Client) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    if let Ok(namespaces) = Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await {
        for n in namespaces.items {
            labels.insert(n.name_any(), n.metadata.labels.unwrap_or_default());
        }
    }
    labels
}

/// `access NAME` where no CouchDatabase is NAME: a per-user database (a CouchUser's status
/// names it) or a database a `couchName` grant names. Only couchshare's own entries are
/// explained: CouchDB's `couch_peruser` entry for the owner and hand-written ones are not
/// couchshare's, and it leaves them alone.
async fn unmanaged(scope: &Scope, couch_name: &str) -> Result<(), Failure> {
    let client = &scope.client;
    let home = scope.namespace.clone().unwrap_or_default();
    let grants: Vec<Arc<CouchGrant>> = list(client, &home).await?;
    let users: Vec<Arc<CouchUser>> = list(client, &home).await?;
    let shares: Vec<Arc<CouchShare>> = list(client, &home).await?;
    let databases: Vec<Arc<CouchDatabase>> = list(client, &home).await?;
    // The server: the owner's, else the one a couchName grant names.
    let owner =
        users.iter().find(|u| u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(couch_name));
    let server_ref = owner
        .map(|u| {
            let ns = u.namespace().unwrap_or_default();
            (u.spec.server_ref.namespace.clone().unwrap_or(ns), u.spec.server_ref.name.clone())
        })
        .or_else(|| {
            grants.iter().find_map(|g| {
                let target = &g.spec.database;
                let r = target.server_ref.as_ref().filter(|_| target.couch_name.as_deref() == Some(couch_name))?;
                Some((r.namespace.clone().unwrap_or_else(|| g.namespace().unwrap_or_default()), r.name.clone()))
            })
        });
    let Some((server_ns, server_name)) = server_ref else {
        let where_ =
            scope.namespace.as_ref().map(|n| format!("namespace {n}")).unwrap_or_else(|| "any namespace".into());
        return Err(Failure::NotFound(format!(
            "no CouchDatabase {couch_name:?} in {where_}, no CouchUser whose per-user database it is, and no couchName grant naming it"
        )));
    };
    let server = Api::<CouchServer>::namespaced(client.clone(), &server_ns)
        .get_opt(&server_name)
        .await?
        .ok_or_else(|| Failure::NotFound(format!("CouchServer {server_ns}/{server_name} does not exist")))?;
    let labels = namespace_labels(client).await;
    let tenants =
        Tenants { server: &server, grants: &grants, users: &users, shares: &shares, namespace_labels: &labels };
    let world = UnmanagedWorld::new(tenants, couch_name, &databases);
    let explained = explain_unmanaged(&world);
    let wide = scope.format == Some(Format::Wide);
    print(scope.format, &explained, || {
        let whose = explained
            .owner
            .as_ref()
            .map(|o| format!("per-user database of CouchUser {o}"))
            .unwrap_or_else(|| "not managed by a CouchDatabase".into());
        let mut out = format!(
            "{} on server {} ({whose})\ncouchshare keeps only the entries below; any other entry of its _security is not couchshare's{}\n\n",
            explained.couch_name,
            explained.server,
            if explained.owner.is_some() {
                " (CouchDB's couch_peruser makes the owner a member and an admin)"
            } else {
                ""
            }
        );
        out += &entries_table(&explained.entries, wide);
        out += &refused_table(&explained.refused);
        out
    })
}

fn entries_table(entries: &[Entry], wide: bool) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let cause = if wide || e.causes.len() < 2 {
                e.causes.join(" | ")
            } else {
                format!("{} (+{} more)", e.causes[0], e.causes.len() - 1)
            };
            vec![e.section.to_string(), e.kind.to_string(), e.value.clone(), cause]
        })
        .collect();
    table(&["SECTION", "KIND", "VALUE", "CAUSE"], &rows)
}

fn refused_table(refused: &[Refusal]) -> String {
    if refused.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = refused.iter().map(|r| vec![r.source.clone(), r.why.clone()]).collect();
    format!("\n\nRefused:\n{}", table(&["SOURCE", "WHY"], &rows))
}
