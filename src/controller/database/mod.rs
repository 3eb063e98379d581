//! The CouchDatabase reconciler: resolve the server → observe the database → plan → apply the
//! steps in order → restore `spec.restoreFrom` once (`restore`) → status. Cleanup runs in the finalizer and never hangs on a server or a
//! Secret that is gone.

mod restore;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::Value;

use crate::api::{CouchDatabase, CouchDatabaseStatus};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::finalize::reconcile_with_finalizer;
use crate::controller::runtime::status::{NewCondition, apply_status};
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::servers::{Connected, resolve, resolve_for_cleanup, server_key};
use crate::couch::{CouchClient, CouchError, CreateDatabase};
use crate::plan::database::{
    DatabaseIntent, DatabaseOutcome, DatabaseStep, DeletionStep, OWNER_DOC_ID, ObservedDatabase, Owner, plan_database,
    plan_database_deletion,
};
use crate::plan::ownership::{self, Claim};
use crate::plan::security::desired_security;
use crate::plan::tenancy::TrustedAct;

/// Reconciles one CouchDatabase.
pub async fn reconcile(db: Arc<CouchDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(db, &ctx, |o| apply(o, &ctx), |o| cleanup(o, &ctx)).await
}

fn owner(db: &CouchDatabase) -> Owner {
    Owner {
        kind: "CouchDatabase".into(),
        namespace: db.namespace().unwrap_or_default(),
        name: db.name_any(),
        uid: db.uid().unwrap_or_default(),
    }
}

fn claim(db: &CouchDatabase) -> Claim {
    let created = db.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    Claim { owner: owner(db), created }
}

/// The earliest live CouchDatabase naming the same database on the same server, when that is
/// not `db`.
fn earlier_claimant(db: &CouchDatabase, ctx: &Context) -> Option<Owner> {
    let me = (server_key(db, &db.spec.server_ref), db.couch_name().to_string());
    let others = ctx
        .stores
        .databases
        .state()
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| (server_key(d.as_ref(), &d.spec.server_ref), d.couch_name().to_string()) == me)
        .map(|d| claim(&d))
        .collect::<Vec<_>>();
    ownership::earlier_claimant(&claim(db), others)
}

/// Whether a CouchDatabase with this UID still exists (as far as the watch knows).
fn owner_alive(ctx: &Context, uid: &str) -> bool {
    ctx.stores.databases.state().iter().any(|d| d.uid().as_deref() == Some(uid))
}

struct Observation {
    observed: ObservedDatabase,
    owner_rev: Option<String>,
    /// The database's info (sizes, counts), when it exists.
    info: Option<crate::couch::DatabaseInfo>,
    /// Whether the owner record was read (and `_security`, or the audit's word for it), not
    /// taken from the ledger's note.
    full: bool,
}

/// Reads the database: its info, its owner record and its `_security`. With `trust`, a pass
/// that read everything less than half a resync ago, and that no trigger made stale since, is
/// taken at its word for the owner record and `_security` (see `ledger`): only the info is read.
/// Later than that (the resync's pass), the owner record is read again, and `_security` too
/// unless the audit found it as recorded within the last resync and the owner record is as
/// the note says.
async fn observe(
    couch: &CouchClient,
    server: &super::ServerKey,
    name: &str,
    url: &str,
    ctx: &Context,
    trust: bool,
) -> Result<Observation, Error> {
    // The info answers "does it exist" and fills the status in one request.
    let info = match couch.database_info(name).await {
        Ok(info) => info,
        Err(e) if e.is_not_found() => {
            ctx.ledger.stale(server, name);
            let observed = ObservedDatabase::default();
            return Ok(Observation { observed, owner_rev: None, info: None, full: true });
        }
        Err(e) => return Err(Error::couch("reading the database", url, e)),
    };
    let exists = true;
    // What the last pass that read everything left, if no trigger made it stale since.
    let known = ctx.ledger.seen(server, name, Duration::MAX).filter(|_| trust);
    if let Some((seen, security)) = known.clone().filter(|(seen, _)| seen.age() < ctx.options.resync / 2) {
        let owner_alive = owner_alive(ctx, &seen.owner.uid);
        return Ok(Observation {
            observed: ObservedDatabase { exists, owner: Some(seen.owner), owner_alive, security: Some(security) },
            owner_rev: seen.rev,
            info: Some(info),
            full: false,
        });
    }
    let record =
        couch.get_document(name, OWNER_DOC_ID).await.map_err(|e| Error::couch("reading the owner record", url, e))?;
    let owner_rev = record.as_ref().and_then(|r| r.get("_rev")).and_then(Value::as_str).map(str::to_owned);
    let mut owner: Option<Owner> =
        record.and_then(|r| r.get("owner").cloned()).and_then(|o| serde_json::from_value(o).ok());
    let mut owner_alive = owner.as_ref().is_some_and(|o| owner_alive(ctx, &o.uid));
    // A CouchUser's per-user database carries no owner record; it is that user's all the same.
    if owner.is_none()
        && let Some(user) = crate::controller::shared::tenancy::per_user_database_owner(ctx, server, name)
    {
        owner = Some(Owner {
            kind: "CouchUser".into(),
            namespace: user.namespace().unwrap_or_default(),
            name: user.name_any(),
            uid: user.uid().unwrap_or_default(),
        });
        owner_alive = true;
    }
    // The resync's pass reads the owner record again, but not a `_security` the audit found as
    // recorded within the last resync (it makes the note stale on a difference, after which the
    // next pass reads it here), while the owner record is as the note says: a record gone or
    // rewritten means a database changed out of band, whose `_security` is read too.
    let audited = known
        .filter(|(seen, _)| seen.audited_within(ctx.options.resync))
        .filter(|(seen, _)| seen.rev == owner_rev && owner.as_ref() == Some(&seen.owner))
        .map(|(_, security)| security);
    let security = match audited {
        Some(security) => security,
        None => couch.security(name).await.map_err(|e| Error::couch("reading _security", url, e))?,
    };
    Ok(Observation {
        observed: ObservedDatabase { exists, owner, owner_alive, security: Some(security) },
        owner_rev,
        info: Some(info),
        full: true,
    })
}

async fn apply(db: Arc<CouchDatabase>, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let api: Api<CouchDatabase> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pass = Pass::begin(db.as_ref());
    let was_ready = pass.was(crate::api::condition::READY).is_some_and(|(status, _)| status == "True");
    let key = server_key(db.as_ref(), &db.spec.server_ref);
    let before = ctx.ledger.recorded(&key, db.couch_name());
    let result = ensure(&db, ctx, &api, &mut pass.status).await;
    let restored =
        |s: Option<&CouchDatabaseStatus>| s.and_then(|s| s.restore.as_ref()).and_then(|r| r.completed_at.clone());
    if let Some(restore) =
        pass.status.restore.as_ref().filter(|_| restored(Some(&pass.status)) != restored(pass.current()))
    {
        let message = format!(
            "restored {} document revisions from {} into {}",
            restore.documents.unwrap_or_default(),
            restore.source,
            db.couch_name()
        );
        pass.events.push(Note::normal("Restored", message));
    }
    let arrived = !was_ready
        || matches!(&result, Ok((DatabaseOutcome::Created | DatabaseOutcome::Recreated | DatabaseOutcome::Adopted, _)));
    let pass_status = pass.status.clone();
    let action = pass.finish(ctx, db.as_ref(), result.map(|(outcome, name)| outcome_of(outcome, &name, ctx))).await?;
    // What waits on this database, from the status just written (the store may lag it).
    let mut now = db.as_ref().clone();
    now.status = Some(pass_status);
    crate::controller::shared::access::requeue_for_database(ctx, &now, &key);
    let after = ctx.ledger.recorded(&key, db.couch_name());
    crate::controller::shared::access::requeue_shares_for_database(ctx, &now, arrived, before.as_ref(), after.as_ref());
    Ok(action)
}

/// The tail's outcome: one message whatever this pass did (the Events say that), since a status
/// that changed with each pass's outcome would be written twice for every change.
fn outcome_of(outcome: DatabaseOutcome, name: &str, ctx: &Context) -> Outcome {
    let ready = Outcome::new(
        NewCondition::ready("Ready", "database matches the declared state"),
        Action::requeue(ctx.resync()),
    );
    let did = match outcome {
        DatabaseOutcome::Created => Note::normal("Created", format!("created database {name}")),
        DatabaseOutcome::Adopted => Note::normal("Adopted", format!("adopted existing database {name}")),
        DatabaseOutcome::Recreated => {
            Note::normal("DriftRepaired", format!("database {name} was deleted out of band; recreated"))
        }
        DatabaseOutcome::SecurityRestored => {
            Note::normal("SecurityApplied", format!("_security of {name} set to the declared state"))
        }
        DatabaseOutcome::Unchanged => {
            return ready.on_transition(Note::normal("Ready", format!("database {name} matches the declared state")));
        }
    };
    ready.with_event(did)
}

/// Resolve → observe → plan → apply. Fills the observed fields of `status`.
async fn ensure(
    db: &CouchDatabase,
    ctx: &Context,
    api: &Api<CouchDatabase>,
    status: &mut CouchDatabaseStatus,
) -> Result<(DatabaseOutcome, String), Error> {
    let ns = db.namespace().unwrap_or_default();
    let name = db.couch_name().to_string();
    if !crate::api::validation::is_valid_database_name(&name) {
        return Err(Error::InvalidSpec(format!("{name:?} is not a valid CouchDB database name")));
    }
    let Connected { server, couch } = resolve(ctx, &ns, &db.spec.server_ref).await?;
    // Database names and the names in `_security` are server-wide: a per-user database's name
    // is its user's, and a namespace the server does not trust declares only its own names.
    crate::plan::tenancy::database_not_reserved(
        &name,
        &crate::controller::shared::tenancy::declared_userdb_prefix(&server),
    )?;
    let scope = crate::controller::shared::tenancy::name_scope(ctx, &server, &ns).await?;
    crate::plan::tenancy::in_scope(&scope, crate::plan::tenancy::NameKind::Database, &name, false)?;
    crate::controller::shared::tenancy::security_in_scope(&scope, &db.spec.security)?;
    let url = server.spec.url.clone();
    let server_id = server_key(db, &db.spec.server_ref);
    let observation = observe(&couch, &server_id, &name, &url, ctx, restore::pending(db).is_none()).await?;
    // Adopting needs a namespace the server trusts; asked only when adopting could happen: an
    // existing database this resource does not own yet.
    let observed = &observation.observed;
    let previously_owned = status.couch_name.as_deref() == Some(name.as_str());
    let not_ours = observed.owner.as_ref().map_or(!previously_owned, |o| o.uid != owner(db).uid);
    let adopt_refused = if db.spec.adopt && observed.exists && not_ours {
        crate::controller::shared::tenancy::require_trust(ctx, &server, &ns, TrustedAct::AdoptDatabase(name.clone()))
            .await?
            .err()
    } else {
        None
    };
    let grants = crate::controller::shared::access::grants_for_database(ctx, db, &server).await?;
    let shards = db.spec.shards.as_ref();
    let intent = DatabaseIntent {
        me: owner(db),
        name: name.clone(),
        create: CreateDatabase {
            q: shards.and_then(|s| s.count).and_then(|q| u32::try_from(q).ok()),
            n: shards.and_then(|s| s.copies).and_then(|n| u32::try_from(n).ok()),
            partitioned: db.spec.partitioned,
        },
        adopt: db.spec.adopt,
        adopt_refused,
        previously_owned,
        earlier_claimant: if previously_owned { None } else { earlier_claimant(db, ctx) },
        security: desired_security(&db.spec.security, &grants, db.spec.public),
    };
    ctx.ledger.forget(&server_id, &name);
    let plan = plan_database(&intent, &observation.observed)?;
    let creates = plan.steps.iter().any(|s| matches!(s, DatabaseStep::Create(_)));
    if creates && !previously_owned {
        // Claim the name in status before creating, so a crash between the create and the owner
        // record leaves a database this resource recognises as its own.
        let mut claim = status.clone();
        claim.couch_name = Some(name.clone());
        claim.server = Some(url.clone());
        apply_status(api, db, Some(status), &claim).await?;
        *status = claim;
    }
    let mut owner_rev = observation.owner_rev.clone();
    let mut recorded_owner = false;
    for step in &plan.steps {
        match step {
            DatabaseStep::Create(options) => {
                ctx.note_created(&server_id, &name);
                match couch.create_database(&name, options).await {
                    Ok(()) => {}
                    // It exists already: a create the client retried after a timeout, whose
                    // first attempt CouchDB had carried out (seen in the bench at n=1,000).
                    // The name is claimed in status, so the next pass reclaims it; soon, with
                    // backoff, not at the resync.
                    Err(CouchError::PreconditionFailed { .. }) => {
                        return Err(Error::Settling {
                            what: format!("database {name}, which CouchDB says exists already, to be looked at again"),
                        });
                    }
                    Err(e) => return Err(Error::couch("creating the database", &url, e)),
                }
                owner_rev = None;
                tracing::info!(database = %name, "created database");
            }
            DatabaseStep::RecordOwner(owner) => {
                let mut record = serde_json::json!({ "owner": owner });
                if let Some(rev) = &owner_rev {
                    record["_rev"] = Value::String(rev.clone());
                }
                let rev = couch
                    .put_document(&name, OWNER_DOC_ID, &record)
                    .await
                    .map_err(|e| Error::couch("recording the owner", &url, e))?;
                owner_rev = Some(rev);
                recorded_owner = true;
            }
            DatabaseStep::PutSecurity(security) => {
                couch.put_security(&name, security).await.map_err(|e| Error::couch("writing _security", &url, e))?;
                tracing::info!(database = %name, "wrote _security");
            }
        }
    }
    ctx.ledger.record(&server_id, &name, intent.security.clone());
    // What the next pass may trust: the owner record this pass read, or wrote, as ours.
    if observation.full || recorded_owner {
        ctx.ledger.saw(&server_id, &name, owner(db), owner_rev);
    }
    // A restore writes documents and leaves `_security` as the steps above declared it (the
    // spec and today's grants and shares), not as the backup had it: a restore must not bring
    // back access revoked since.
    let restored = match restore::pending(db) {
        Some(from) => {
            status.restore = Some(restore::restore(ctx, db, from, &couch, &name).await?);
            true
        }
        None => false,
    };
    // Documents written above are `_local` (not counted): the info read first is still right,
    // unless the database was just created.
    let info = match (observation.info, creates || restored) {
        (Some(info), false) => info,
        _ => couch.database_info(&name).await.map_err(|e| Error::couch("reading database info", &url, e))?,
    };
    status.couch_name = Some(name.clone());
    status.server = Some(url);
    status.doc_count = i64::try_from(info.doc_count).ok();
    status.active_size = info.active_size().and_then(|s| i64::try_from(s).ok());
    status.partitioned = Some(info.is_partitioned());
    Ok((plan.outcome, name))
}

async fn cleanup(db: Arc<CouchDatabase>, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let name = db.couch_name().to_string();
    let previously_owned = db.status.as_ref().and_then(|s| s.couch_name.as_deref()) == Some(name.as_str());
    if db.spec.deletion_policy == crate::api::DeletionPolicy::Retain {
        if previously_owned {
            ctx.event(db.as_ref(), false, "Retained", format!("database {name} kept (deletionPolicy: Retain)")).await;
        }
        return Ok(Action::await_change());
    }
    let Some(connected) =
        resolve_for_cleanup(ctx, db.as_ref(), &ns, &db.spec.server_ref, &format!("database {name} not deleted"))
            .await?
    else {
        return Ok(Action::await_change());
    };
    let url = connected.server.spec.url.clone();
    ctx.ledger.forget(&server_key(db.as_ref(), &db.spec.server_ref), &name);
    let result = async {
        let server_id = server_key(db.as_ref(), &db.spec.server_ref);
        let observation = observe(&connected.couch, &server_id, &name, &url, ctx, false).await?;
        let step = plan_database_deletion(
            db.spec.deletion_policy,
            &owner(&db),
            observation.observed.exists,
            observation.observed.owner.as_ref(),
            previously_owned,
        );
        if step == DeletionStep::Delete {
            connected.couch.delete_database(&name).await.map_err(|e| Error::couch("deleting the database", &url, e))?;
        }
        Ok::<_, Error>(step)
    }
    .await;
    match result {
        Ok(DeletionStep::Delete) => ctx.event(db.as_ref(), false, "Deleted", format!("database {name} deleted")).await,
        Ok(DeletionStep::NotOurs) => {
            ctx.event(
                db.as_ref(),
                false,
                "Retained",
                format!("database {name} was not created by this resource; left in place"),
            )
            .await
        }
        Ok(_) => {}
        Err(e) if e.is_transient() && crate::controller::runtime::finalize::within_grace(db.as_ref(), ctx) => {
            return Err(e);
        }
        Err(e) => {
            ctx.event(db.as_ref(), true, "CleanupSkipped", format!("database {name} not deleted: {e}")).await;
        }
    }
    Ok(Action::await_change())
}
