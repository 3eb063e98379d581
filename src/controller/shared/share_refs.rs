//! What the other reconcilers need to know about shares that takes the cluster's view: whether a
//! share may use a CouchDatabase (consent), and which per-user databases it touches. What the
//! share resource alone says (its identity, the databases it names, the entry its replication
//! user needs) is in `plan::share::refs`. The database and grant reconcilers meet the share
//! reconciler here and there, never in its module.

use kube::ResourceExt;

use crate::api::CouchShare;
use crate::controller::runtime::context::Context;
use crate::controller::share::endpoints::{Place, fan_in_users};
use crate::plan::tenancy::{EndpointRole, share_needs};

/// Whether `share` may use the CouchDatabase `db` in every role it gives it (its own namespace,
/// or the database's consent), so whether the database keeps its replication user's access.
pub(crate) fn database_permitted(share: &CouchShare, db: &crate::api::CouchDatabase) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let names = |r: &Option<crate::api::ObjectRef>| {
        r.as_ref().is_some_and(|r| {
            r.name == db.name_any() && r.namespace.as_deref().unwrap_or(&ns) == db.namespace().unwrap_or_default()
        })
    };
    [(&share.spec.source.database, EndpointRole::Source), (&share.spec.target.database, EndpointRole::Target)]
        .into_iter()
        .filter(|(r, _)| names(r))
        .all(|(_, role)| super::tenancy::database_reference(db, &ns, &share_needs(role, share.spec.mode)).is_ok())
}

/// Whether this share touches the per-user database `couch_name` on `server` (and may: a user
/// in another namespace must consent).
pub(crate) fn touches_user_database(
    share: &CouchShare,
    ctx: &Context,
    server: &super::ServerKey,
    couch_name: &str,
) -> bool {
    let ns = share.namespace().unwrap_or_default();
    let users = ctx.stores.users.state();
    let user_db = |user_ns: &str, name: &str, role: EndpointRole| {
        users.iter().any(|u| {
            u.namespace().as_deref() == Some(user_ns)
                && u.name_any() == name
                && &super::servers::server_key(u.as_ref(), &u.spec.server_ref) == server
                && u.status.as_ref().and_then(|s| s.per_user_database.as_deref()) == Some(couch_name)
                && super::tenancy::user_database_reference(u, &ns, &share_needs(role, share.spec.mode)).is_ok()
        })
    };
    let refs = [
        (&share.spec.source.user_database, EndpointRole::Source),
        (&share.spec.target.user_database, EndpointRole::Target),
    ];
    if refs
        .iter()
        .any(|(r, role)| r.as_ref().is_some_and(|r| user_db(r.namespace.as_deref().unwrap_or(&ns), &r.user, *role)))
    {
        return true;
    }
    fan_in_users(ctx, share).is_ok_and(|list| {
        list.iter().any(
            |(_, p)| matches!(p, Place::Local { database, server: s, .. } if database == couch_name && s == server),
        )
    })
}
