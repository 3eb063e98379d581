//! What the other reconcilers need to know about shares that takes the cluster's view: whether a
//! share may use a CouchDatabase (consent), and which per-user databases it touches, with what
//! both sides need for it: a [`Place`] (where one end of a replication is) and the users a
//! fan-in selects. What the
//! share resource alone says (its identity, the databases it names, the entry its replication
//! user needs) is in `plan::share::refs`. The database and grant reconcilers meet the share
//! reconciler here and there, never in its module.

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::servers::server_key;
use crate::api::{CouchShare, CouchUser};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::plan::share::EndpointAuth;
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

/// Where one end of a replication is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// A database on the managed server: `managed` is true for a CouchDatabase (whose
    /// reconciler writes `_security`), false for a per-user database (written entry by entry).
    Local { database: String, managed: bool, server: crate::controller::ServerKey },
    /// A database on another CouchDB.
    Remote { base_url: String, database: String, auth: EndpointAuth },
}

impl Place {
    /// Whether both are the same database: a share from a database into itself replicates it
    /// onto itself, and is refused.
    pub fn same_database(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::Local { database: a, server: s, .. }, Place::Local { database: b, server: t, .. }) => {
                a == b && s == t
            }
            (Place::Remote { base_url: u, database: a, .. }, Place::Remote { base_url: v, database: b, .. }) => {
                a == b && u.trim_end_matches('/') == v.trim_end_matches('/')
            }
            _ => false,
        }
    }

    /// The database name.
    pub fn database(&self) -> &str {
        match self {
            Place::Local { database, .. } | Place::Remote { database, .. } => database,
        }
    }
}

impl Place {
    /// The place as the share plan sees it.
    pub fn end(&self) -> crate::plan::share::End {
        match self {
            Place::Local { database, .. } => crate::plan::share::End::Local { database: database.clone() },
            Place::Remote { base_url, database, auth } => crate::plan::share::End::Remote {
                base_url: base_url.clone(),
                database: database.clone(),
                auth: auth.clone(),
            },
        }
    }
}

/// The per-user database of `user`, once it exists.
pub(crate) fn user_place(user: &CouchUser) -> Option<Place> {
    let database = user.status.as_ref()?.per_user_database.clone()?;
    Some(Place::Local { database, managed: false, server: server_key(user, &user.spec.server_ref) })
}

/// Each selected user's CouchDB name and per-user database.
pub(crate) type FanInPlaces = Vec<(String, Place)>;

/// The per-user databases of the CouchUsers a fan-in selects (those whose database exists).
pub(crate) fn fan_in_users(ctx: &Context, share: &CouchShare) -> Result<Vec<(String, Place)>, Error> {
    Ok(fan_in(ctx, share)?.0)
}

/// A fan-in's users: those whose per-user database exists, and the names of those that declare
/// one that does not exist yet (the share waits for them: nothing else would requeue it).
pub(crate) fn fan_in(ctx: &Context, share: &CouchShare) -> Result<(FanInPlaces, Vec<String>), Error> {
    let Some(fan_in) = &share.spec.source.user_databases else { return Ok((vec![], vec![])) };
    let selector = Selector::try_from(fan_in.selector.clone())
        .map_err(|e| Error::InvalidSpec(format!("source.userDatabases.selector: {e}")))?;
    let ns = share.namespace();
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for u in ctx.stores.users.state() {
        if u.namespace() != ns || u.metadata.deletion_timestamp.is_some() || !selector.matches(u.labels()) {
            continue;
        }
        match user_place(&u) {
            Some(p) => ready.push((u.couch_username().to_string(), p)),
            None if u.spec.per_user_database => waiting.push(u.name_any()),
            None => {}
        }
    }
    ready.sort_by(|a, b| a.0.cmp(&b.0));
    waiting.sort();
    Ok((ready, waiting))
}
