//! `spec.restoreFrom`: filling a CouchDatabase, once, from a CouchBackup or from a file
//! `couchbackup` wrote. Every object is checked against the manifest's sha256 before anything
//! is written; a database that holds documents is refused. A restore cut short (the operator
//! killed) is recorded as started in status, and the next pass writes it again from the start:
//! with `new_edits: false` a revision written twice is one revision.

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{BackupPhase, CouchBackup, CouchDatabase, RestoreFrom, RestoreStatus};
use crate::controller::runtime::context::{Context, now};
use crate::controller::runtime::error::Error;
use crate::controller::shared::backups::{backup_target, file_target};
use crate::couch::CouchClient;

/// What `restoreFrom` names, as status records it.
pub fn source_of(from: &RestoreFrom) -> String {
    match (&from.backup, &from.couchbackup_file) {
        (Some(backup), _) => format!("backup/{backup}"),
        (None, Some(file)) => format!("couchbackupFile/{}", file.key),
        (None, None) => String::new(),
    }
}

/// The completed CouchBackup `name` of namespace `ns`.
fn completed_backup(ctx: &Context, ns: &str, name: &str) -> Result<std::sync::Arc<CouchBackup>, Error> {
    let Some(backup) = ctx.stores.backups.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Error::Waiting { what: format!("CouchBackup {ns}/{name}, which restoreFrom names") });
    };
    if backup.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Completed) {
        return Err(Error::Waiting { what: format!("CouchBackup {ns}/{name} to complete") });
    }
    Ok(backup)
}

/// Whether `db` still has a restore to do: `restoreFrom` is set and its restore has not
/// completed. (A restore started and cut short is done again.)
pub fn pending(db: &CouchDatabase) -> Option<&RestoreFrom> {
    let from = db.spec.restore_from.as_ref()?;
    let done = db.status.as_ref().and_then(|s| s.restore.as_ref()).is_some_and(|r| r.completed_at.is_some());
    (!done).then_some(from)
}

/// Restores `from` into the database `name`; `resume`: a restore of the same source was
/// started before and cut short, so documents already there are that restore's own.
pub async fn restore(
    ctx: &Context,
    db: &CouchDatabase,
    from: &RestoreFrom,
    couch: &CouchClient,
    name: &str,
    resume: bool,
) -> Result<RestoreStatus, Error> {
    let ns = db.namespace().unwrap_or_default();
    let source = source_of(from);
    let restored = match (&from.backup, &from.couchbackup_file) {
        (Some(backup), _) => {
            let backup = completed_backup(ctx, &ns, backup)?;
            let (target, _) = backup_target(ctx, &backup).await?;
            let manifest = crate::backup::read_manifest(&target)
                .await
                .map_err(|e| Error::backup("reading the backup's manifest", e))?
                .ok_or_else(|| {
                    Error::backup(
                        "reading the backup's manifest",
                        crate::backup::BackupError::Format(format!(
                            "CouchBackup {ns}/{} says Completed but its store has no manifest",
                            backup.name_any()
                        )),
                    )
                })?;
            crate::backup::restore(couch, name, &target, &manifest, resume)
                .await
                .map_err(|e| Error::backup("restoring", e))?
        }
        (None, Some(file)) => {
            let target = file_target(ctx, &ns, &file.source).await?;
            crate::backup::restore_couchbackup_file(couch, name, &target, &file.key, resume)
                .await
                .map_err(|e| Error::backup("restoring a couchbackup file", e))?
        }
        (None, None) => {
            return Err(Error::InvalidSpec("restoreFrom: set exactly one of backup and couchbackupFile".into()));
        }
    };
    tracing::info!(database = %name, %source, documents = restored.documents, "restored");
    Ok(RestoreStatus {
        source,
        documents: i64::try_from(restored.documents).ok(),
        completed_at: Some(now().0.to_string()),
    })
}
