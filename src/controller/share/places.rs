//! Where the ends of a share are: a [`Place`] (a database on the managed server, or on another
//! CouchDB), and the per-user databases a fan-in selects.

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{CouchShare, CouchUser};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::shared::servers::server_key;
use crate::plan::share::EndpointAuth;

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
