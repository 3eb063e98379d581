//! What grants (and shares) contribute to a database's `_security`: the part where the grant
//! and database reconcilers meet. The database reconciler merges the contributions to the
//! CouchDatabases it manages (their only writer); [`super::unmanaged`] writes them to the
//! databases no CouchDatabase manages.

use kube::{Resource, ResourceExt};

use super::servers::server_key;
use crate::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser, UserDatabaseRef, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::{condition_state, is_ready};
use crate::plan::security::GrantEntries;
use crate::plan::tenancy::{self, NameKind};

/// A grant's contribution, with the referenced CouchUsers that do not exist.
pub(crate) struct Resolved {
    pub entries: GrantEntries,
    pub missing: Vec<String>,
}

/// Whether a missing user of [`resolve_grant`] is a problem to report in an Event (no such
/// CouchUser, perhaps a typo; refused; on another server) rather than a CouchUser on its way (not
/// Ready yet, or not owning its username yet): a wait is not an Event, and in a bulk apply many
/// grants come before their users are Ready.
pub(crate) fn missing_is_a_problem(entry: &str) -> bool {
    !(entry.ends_with("(not Ready yet)") || entry.ends_with("(not Ready: it does not own the name yet)"))
}

/// Whether two lists of missing users differ for a grant's wake: a user that moved from one
/// wait to another (from not owning its name yet to not Ready yet, as its first pass claims the
/// name) does not count, since both say the same to a person and the grant is woken again when
/// it is admitted; a user that appears, goes, or becomes (or stops being) a problem does.
fn waits_differ(now: &[String], before: &[String]) -> bool {
    let key = |entry: &String| {
        if missing_is_a_problem(entry) {
            entry.clone()
        } else {
            format!("{} (on its way)", entry.split(" (not Ready").next().unwrap_or(entry))
        }
    };
    !now.iter().map(key).eq(before.iter().map(key))
}

/// Resolves a grant's users to CouchDB usernames, through the CouchUsers the watch knows.
/// Users on another server than the database's count as missing.
pub(crate) fn resolve_grant(grant: &CouchGrant, ctx: &Context, server: &super::ServerKey) -> Resolved {
    let ns = grant.namespace().unwrap_or_default();
    let mut names: Vec<String> = grant.spec.usernames.clone();
    let mut missing = Vec::new();
    let users = ctx.stores.users.state();
    for reference in &grant.spec.users {
        let user_ns = reference.namespace.clone().unwrap_or_else(|| ns.clone());
        let found = users.iter().find(|u| {
            u.namespace().as_deref() == Some(user_ns.as_str())
                && u.name_any() == reference.name
                && u.metadata.deletion_timestamp.is_none()
        });
        match found {
            Some(u) if &server_key(u.as_ref(), &u.spec.server_ref) == server => {
                // Admitted only as the owner of its username, and not while refused: a CouchUser
                // in Conflict over a name another namespace holds lets nobody in.
                match user_admitted(u) {
                    Ok(()) => names.push(u.couch_username().to_string()),
                    Err(why) => missing.push(format!("{user_ns}/{} ({why})", reference.name)),
                }
            }
            Some(_) => missing.push(format!("{user_ns}/{} (on another CouchServer)", reference.name)),
            None => missing.push(format!("{user_ns}/{}", reference.name)),
        }
    }
    names.sort();
    names.dedup();
    let mut roles = grant.spec.roles.clone();
    roles.sort();
    roles.dedup();
    Resolved { entries: GrantEntries { access: grant.spec.access, names, roles }, missing }
}

/// `Ok` when the CouchUser owns its username on its server and is not refused now.
pub(crate) fn user_admitted(user: &CouchUser) -> Result<(), String> {
    let status = user.status.as_ref();
    let recorded = status.and_then(|s| s.username.as_deref());
    let ready = status.and_then(|s| condition_state(&s.conditions, condition::READY));
    tenancy::admitted(recorded, user.couch_username(), ready.as_ref().map(|(s, r)| (s.as_str(), r.as_str())))
}

/// `Ok` when the share's replication user may enter a `_security`: the share wrote it as its
/// own after its checks passed (its status names it), and is not refused now.
pub(crate) fn share_admitted(share: &CouchShare) -> Result<(), String> {
    let status = share.status.as_ref();
    let recorded = status.and_then(|s| s.replication_user.as_deref());
    let ready = status.and_then(|s| condition_state(&s.conditions, condition::READY));
    let me = crate::plan::share::owner(share);
    let username = crate::plan::share::replication_username(&me.namespace, &me.name);
    tenancy::admitted(recorded, &username, ready.as_ref().map(|(s, r)| (s.as_str(), r.as_str())))
}

/// Whether the raw names and roles a grant declares are in its namespace's scope on `server`.
pub(crate) async fn grant_in_scope(ctx: &Context, grant: &CouchGrant, server: &CouchServer) -> Result<(), Error> {
    let scope = super::tenancy::name_scope(ctx, server, &grant.namespace().unwrap_or_default()).await?;
    tenancy::all_in_scope(&scope, NameKind::Username, &grant.spec.usernames, true)?;
    tenancy::all_in_scope(&scope, NameKind::Role, &grant.spec.roles, true)?;
    Ok(())
}

/// Whether `grant` targets the CouchDatabase `db`.
pub(crate) fn targets(grant: &CouchGrant, db: &CouchDatabase) -> bool {
    let Some(name) = &grant.spec.database.name else { return false };
    let grant_ns = grant.namespace().unwrap_or_default();
    let ns = grant.spec.database.namespace.as_deref().unwrap_or(&grant_ns);
    db.name_any() == *name && db.namespace().as_deref() == Some(ns)
}

/// The contributions of every live grant and share on a CouchDatabase, through the one filter
/// `kubectl couchshare access` explains ([`crate::plan::access::contributions`]): consent,
/// `allowedNamespaces`, name scope, admitted users and replication users. The labels of each
/// namespace they come from are read here, where a policy needs them.
pub(crate) async fn grants_for_database(
    ctx: &Context,
    db: &CouchDatabase,
    server: &CouchServer,
) -> Result<Vec<GrantEntries>, Error> {
    let grants = ctx.stores.grants.state();
    let shares = ctx.stores.shares.state();
    let users = ctx.stores.users.state();
    let from: std::collections::BTreeSet<String> = grants
        .iter()
        .filter(|g| targets(g, db))
        .map(|g| g.namespace().unwrap_or_default())
        .chain(
            shares
                .iter()
                .filter(|s| crate::plan::share::touches_database(s, db))
                .map(|s| s.namespace().unwrap_or_default()),
        )
        .collect();
    let mut labels = std::collections::BTreeMap::new();
    for ns in from {
        if let Some(l) = super::tenancy::labels_for(
            ctx,
            server,
            &[&server.spec.allowed_namespaces, &server.spec.trusted_namespaces],
            &ns,
        )
        .await?
        {
            labels.insert(ns, l);
        }
    }
    let world = crate::plan::access::World {
        server,
        database: db,
        grants: &grants,
        users: &users,
        shares: &shares,
        namespace_labels: &labels,
    };
    Ok(crate::plan::access::contributions(&world).entries)
}

/// Requeues the grants on `db` after a pass of its reconciler whose next pass would say
/// something else than their status does: what the grant would find (its users, and its
/// entries in the `_security` the reconciler just left) is computed here from the stores and
/// the ledger, without I/O, and a grant whose status already says it is not woken.
pub(crate) fn requeue_for_database(ctx: &Context, db: &CouchDatabase, server: &super::ServerKey) {
    let Some(trigger) = &ctx.grant_trigger else { return };
    let security =
        db.status.as_ref().and_then(|s| s.couch_name.as_deref()).and_then(|n| ctx.ledger.recorded(server, n));
    for grant in ctx.stores.grants.state() {
        if targets(&grant, db) && grant_would_change(ctx, &grant, server, security.as_ref()) {
            let _ = trigger.send(kube::runtime::reflector::ObjectRef::from_obj(grant.as_ref()));
        }
    }
}

/// Whether a grant's next pass would change its status (as its last pass left it: see
/// [`super::grant_passes::GrantPasses`]): it has not been looked at for its generation, its missing users differ, or whether its entries are in `security` (the
/// database's, as its reconciler left it; unknown counts as a change) differs from its Ready.
fn grant_would_change(
    ctx: &Context,
    grant: &CouchGrant,
    server: &super::ServerKey,
    security: Option<&crate::couch::Security>,
) -> bool {
    let Some(last) = ctx.grant_passes.last(grant) else { return true };
    if last.generation != grant.metadata.generation {
        return true;
    }
    let resolved = resolve_grant(grant, ctx, server);
    if waits_differ(&resolved.missing, &last.missing) {
        return true;
    }
    let Some(security) = security else { return true };
    let applied = resolved.missing.is_empty() && crate::plan::grant::grants_present(security, &resolved.entries);
    applied != last.ready
}

/// Requeues the shares on `db` that are not Ready yet and whose next pass this pass of its
/// reconciler may move on. A share between two CouchDatabases is woken once what it waits for
/// from them has all come ([`crate::plan::share::databases_ready_for`], from the stores and the
/// ledger, without I/O): each created, then each holding its replication user's entry; and only
/// while its status still says it waits, or when this pass brought it something (the database
/// itself, `arrived`: created, adopted, or Ready now; or its entry, in `after` and not in
/// `before`). A share with another kind of end is woken, as before, by each of those. A write of
/// another user's entry wakes no share, nor does the first of its two databases.
pub(crate) fn requeue_shares_for_database(
    ctx: &Context,
    db: &CouchDatabase,
    arrived: bool,
    before: Option<&crate::couch::Security>,
    after: Option<&crate::couch::Security>,
) {
    let Some(trigger) = &ctx.share_trigger else { return };
    let present = |security: Option<&crate::couch::Security>, share: &CouchShare| {
        security.is_some_and(|s| crate::plan::grant::grants_present(s, &crate::plan::share::contribution(share)))
    };
    let databases = ctx.stores.databases.state();
    for share in ctx.stores.shares.state() {
        let ready = is_ready(share.status.as_ref().map(|s| s.conditions.as_slice()));
        if ready || !crate::plan::share::touches_database(&share, db) {
            continue;
        }
        let brought = arrived || (present(after, &share) && !present(before, &share));
        let wake = match crate::plan::share::database_ends(&share) {
            None => brought,
            Some(ends) => {
                let recorded: Vec<Option<crate::couch::Security>> =
                    ends.iter().map(|(ns, name)| recorded_security(ctx, db, after, &databases, ns, name)).collect();
                let recorded: Vec<Option<&crate::couch::Security>> = recorded.iter().map(Option::as_ref).collect();
                let entry = share_entry(&share);
                crate::plan::share::databases_ready_for(entry.as_ref(), &recorded) && (brought || still_waits(&share))
            }
        };
        if wake {
            let _ = trigger.send(kube::runtime::reflector::ObjectRef::from_obj(share.as_ref()));
        }
    }
}

/// The `_security` the reconciler of CouchDatabase `ns/name` last left it with: `after` for
/// `db` (the pass that just ended), the ledger for the others (`None`: not created, or its
/// reconciler has not run in this process, or runs now).
fn recorded_security(
    ctx: &Context,
    db: &CouchDatabase,
    after: Option<&crate::couch::Security>,
    databases: &[std::sync::Arc<CouchDatabase>],
    ns: &str,
    name: &str,
) -> Option<crate::couch::Security> {
    if db.namespace().as_deref() == Some(ns) && db.name_any() == name {
        return after.cloned();
    }
    let other = databases.iter().find(|d| d.namespace().as_deref() == Some(ns) && d.name_any() == name)?;
    ctx.ledger.recorded(&server_key(other.as_ref(), &other.spec.server_ref), other.couch_name())
}

/// The entry a share waits to find in its databases: its replication user's, once its status
/// names that user (scoped credentials); before that, and with admin credentials, none.
fn share_entry(share: &CouchShare) -> Option<GrantEntries> {
    let named = share.status.as_ref().is_some_and(|s| s.replication_user.is_some());
    (named && crate::plan::share::wants_access(share)).then(|| crate::plan::share::contribution(share))
}

/// Whether a share's status says it waits (or it has not been looked at for its generation):
/// a pass may end that wait, while a share pending on CouchDB's replicator is the scheduler
/// watch's and the replicator feed's to wake.
fn still_waits(share: &CouchShare) -> bool {
    let Some(status) = share.status.as_ref() else { return true };
    status.observed_generation != share.metadata.generation
        || condition_state(&status.conditions, condition::READY).is_none_or(|(_, reason)| reason == "Waiting")
}

/// The CouchDatabases whose `_security` a grant feeds.
pub(crate) fn database_refs(grant: &CouchGrant) -> Option<kube::runtime::reflector::ObjectRef<CouchDatabase>> {
    let name = grant.spec.database.name.as_ref()?;
    let ns = grant.spec.database.namespace.clone().or_else(|| grant.meta().namespace.clone())?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(&ns))
}

/// The namespace of the CouchUser a `userDatabase` reference names.
pub(crate) fn user_ns(grant_ns: &str, reference: &UserDatabaseRef) -> String {
    reference.namespace.clone().unwrap_or_else(|| grant_ns.to_string())
}

#[cfg(test)]
mod missing_tests {
    use super::{missing_is_a_problem, waits_differ};

    #[test]
    fn a_user_on_its_way_is_a_wait_and_the_rest_are_problems() {
        assert!(!missing_is_a_problem("ns/alice (not Ready yet)"));
        assert!(!missing_is_a_problem("ns/alice (not Ready: it does not own the name yet)"));
        assert!(missing_is_a_problem("ns/ghost"), "no such CouchUser: perhaps a typo");
        assert!(missing_is_a_problem("ns/carol (not Ready: Conflict)"));
        assert!(missing_is_a_problem("ns/dave (on another CouchServer)"));
    }

    #[test]
    fn a_user_moving_between_two_waits_does_not_wake_its_grant() {
        let v = |s: &[&str]| s.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let claiming = v(&["ns/ana (not Ready: it does not own the name yet)"]);
        let waiting = v(&["ns/ana (not Ready yet)"]);
        assert!(!waits_differ(&waiting, &claiming), "one wait for another");
        assert!(waits_differ(&v(&[]), &waiting), "admitted");
        assert!(waits_differ(&waiting, &v(&["ns/ana"])), "no such CouchUser, then on its way");
        assert!(waits_differ(&v(&["ns/ana (not Ready: Conflict)"]), &waiting), "refused");
        assert!(waits_differ(&v(&["ns/bob (not Ready yet)"]), &waiting), "another user");
        assert!(!waits_differ(&v(&["ns/ana"]), &v(&["ns/ana"])));
    }
}
