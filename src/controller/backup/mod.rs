//! The CouchBackup reconciler: resolve the database and its server → the store → back up
//! (streamed, manifest last) → status. A backup runs once: a `Completed` backup is never
//! written again; an interrupted one (`Running` in status, no manifest in the store) is written
//! again from the start by the next pass, since only the manifest makes a backup restorable.

mod group;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::api::{BackupObject, BackupPhase, CouchBackup, CouchBackupStatus, CouchDatabase};
use crate::backup::Manifest;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::{NewCondition, apply_status, is_ready};
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::backups::{backup_target, location};
use crate::controller::shared::servers::resolve;

/// Reconciles one CouchBackup. No finalizer: deleting a CouchBackup leaves its objects in the
/// store (they are the backup; a store's own lifecycle rules expire them).
pub async fn reconcile(backup: Arc<CouchBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    if backup.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut pass = Pass::begin(backup.as_ref());
    let result = ensure(&backup, &ctx, &mut pass.status).await;
    let result = result.map(|fresh| outcome_of(fresh, &pass.status));
    pass.finish(&ctx, backup.as_ref(), result).await
}

/// Ready once complete; an Event when this pass completed it.
fn outcome_of(fresh: bool, status: &CouchBackupStatus) -> Outcome {
    let at = match &status.location {
        Some(location) => format!("at {location}"),
        None => format!("in CouchBackups {}", status.backups.join(", ")),
    };
    let message = format!(
        "backup complete: {} document revisions, {} bytes, {at}",
        status.documents.unwrap_or_default(),
        status.bytes.unwrap_or_default(),
    );
    let ready = Outcome::new(NewCondition::ready("Completed", message.clone()), Action::await_change());
    if fresh { ready.with_event(Note::normal("Completed", message)) } else { ready }
}

/// The CouchDatabase a backup names, Ready, with its name on CouchDB.
fn source(ctx: &Context, ns: &str, name: &str) -> Result<(Arc<CouchDatabase>, String), Error> {
    let Some(db) = ctx.stores.databases.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Error::DatabaseNotFound { what: format!("CouchDatabase {ns}/{name}") });
    };
    let status = db.status.as_ref();
    match status.and_then(|s| s.couch_name.clone()) {
        Some(couch_name) if is_ready(status.map(|s| s.conditions.as_slice())) => Ok((db, couch_name)),
        _ => Err(Error::Waiting { what: format!("CouchDatabase {ns}/{name} to be Ready") }),
    }
}

/// For an incremental backup, the sequence its base reached: the base must be a completed
/// backup of the same database to the same destination (a restore replays them together).
fn base_sequence(ctx: &Context, backup: &CouchBackup, ns: &str) -> Result<Option<String>, Error> {
    let Some(name) = backup.spec.incremental_from.as_deref() else { return Ok(None) };
    let Some(base) = ctx.stores.backups.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Error::Waiting { what: format!("CouchBackup {ns}/{name}, the base of this incremental backup") });
    };
    if base.spec.database != backup.spec.database || base.spec.destination != backup.spec.destination {
        return Err(Error::InvalidSpec(format!(
            "incrementalFrom names CouchBackup {name}, a backup of another database or to another destination"
        )));
    }
    match base.status.as_ref().filter(|s| s.phase == Some(BackupPhase::Completed)).and_then(|s| s.update_seq.clone()) {
        Some(seq) => Ok(Some(seq)),
        None => Err(Error::Waiting {
            what: format!("CouchBackup {ns}/{name}, the base of this incremental backup, to complete"),
        }),
    }
}

/// Runs the backup unless it is complete; `Ok(true)` when this pass completed it.
async fn ensure(backup: &CouchBackup, ctx: &Context, status: &mut CouchBackupStatus) -> Result<bool, Error> {
    if status.phase == Some(BackupPhase::Completed) {
        return Ok(false);
    }
    if let Some(selector) = &backup.spec.selector {
        return group::ensure(backup, selector, ctx, status).await;
    }
    let ns = backup.namespace().unwrap_or_default();
    let Some(database) = backup.spec.database.as_deref() else {
        return Err(Error::InvalidSpec("set exactly one of database and selector".into()));
    };
    let (db, couch_name) = source(ctx, &ns, database)?;
    let connected = resolve(ctx, &ns, &db.spec.server_ref).await?;
    let since = base_sequence(ctx, backup, &ns)?;
    let (target, folder) = backup_target(ctx, backup).await?;
    // Say it runs before writing anything: a run cut short shows as Running, not as nothing.
    let api: Api<CouchBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let mut running = status.clone();
    running.phase = Some(BackupPhase::Running);
    running.couch_name = Some(couch_name.clone());
    running.location = Some(location(&backup.spec.destination, &folder));
    apply_status(&api, backup, Some(status), &running).await?;
    *status = running;
    tracing::info!(backup = %backup.name_any(), database = %couch_name, location = ?status.location, "backing up");
    let manifest = crate::backup::back_up_since(&connected.couch, &couch_name, &target, since.as_deref())
        .await
        .map_err(|e| Error::backup("backing up", e))?;
    record(status, &manifest);
    Ok(true)
}

/// A completed backup's status, from its manifest.
fn record(status: &mut CouchBackupStatus, manifest: &Manifest) {
    status.phase = Some(BackupPhase::Completed);
    status.started_at = Some(manifest.started_at.clone());
    status.completed_at = Some(manifest.completed_at.clone());
    status.update_seq = Some(manifest.update_seq.clone());
    status.since_seq = manifest.since.clone();
    status.documents = i64::try_from(manifest.documents).ok();
    status.bytes = i64::try_from(manifest.bytes).ok();
    status.objects = manifest
        .objects
        .iter()
        .map(|o| BackupObject {
            name: o.name.clone(),
            sha256: o.sha256.clone(),
            bytes: i64::try_from(o.bytes).unwrap_or(i64::MAX),
        })
        .collect();
}
