//! `spec.restoreFrom`: filling a CouchDatabase, once, from a CouchBackup (with the chain of
//! backups it is incremental from), a schedule's point in time, or a file `couchbackup` wrote.
//! Which backups: here; the restore itself, at the data path's depth (`crate::backup`): every
//! object checked against its manifest before anything is written, a database holding
//! documents refused, and a restore cut short recognised by its marker and written again from
//! the start (with `new_edits: false` a revision written twice is one revision).

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{BackupPhase, CouchBackup, CouchDatabase, RestoreFrom, RestoreStatus};
use crate::controller::runtime::context::{Context, now};
use crate::controller::runtime::error::Error;
use crate::controller::shared::backups::{backup_target, file_target, held};
use crate::couch::CouchClient;

/// What `restoreFrom` names, as status records it.
pub fn source_of(from: &RestoreFrom) -> String {
    match (&from.backup, &from.scheduled_backup, &from.couchbackup_file) {
        (Some(backup), _, _) => format!("backup/{backup}"),
        (None, Some(schedule), _) => match &from.point_in_time {
            Some(point) => format!("scheduledBackup/{schedule}@{point}"),
            None => format!("scheduledBackup/{schedule}"),
        },
        (None, None, Some(file)) => format!("couchbackupFile/{}", file.key),
        (None, None, None) => String::new(),
    }
}

/// The completed CouchBackup `name` of namespace `ns`.
fn completed_backup(ctx: &Context, ns: &str, name: &str) -> Result<std::sync::Arc<CouchBackup>, Error> {
    let Some(backup) = ctx.stores.backups.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Error::Waiting { what: format!("CouchBackup {ns}/{name}, which restoreFrom names") });
    };
    if backup.spec.selector.is_some() {
        let members = backup.status.as_ref().map(|s| s.backups.join(", ")).unwrap_or_default();
        return Err(Error::InvalidSpec(format!(
            "CouchBackup {name} backs up every database its selector matches: restore from one of its backups ({members})"
        )));
    }
    if backup.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Completed) {
        return Err(Error::Waiting { what: format!("CouchBackup {ns}/{name} to complete") });
    }
    Ok(backup)
}

/// The newest completed backup of CouchScheduledBackup `schedule` at or before `point`.
fn at_point(ctx: &Context, ns: &str, schedule: &str, point: Option<&str>) -> Result<String, Error> {
    let point =
        match point {
            Some(p) => Some(p.parse::<jiff::Timestamp>().map_err(|e| {
                Error::InvalidSpec(format!("restoreFrom.pointInTime {p:?} is not an RFC 3339 time: {e}"))
            })?),
            None => None,
        };
    let held: Vec<crate::plan::backup::Held> = ctx
        .stores
        .backups
        .state()
        .iter()
        .filter(|b| {
            b.namespace().as_deref() == Some(ns)
                && b.labels().get(crate::api::labels::SCHEDULED_BACKUP_LABEL).map(String::as_str) == Some(schedule)
        })
        .map(|b| held(b))
        .collect();
    crate::plan::backup::at_point(&held, point).ok_or_else(|| Error::Waiting {
        what: format!("a completed backup of CouchScheduledBackup {ns}/{schedule} at or before the point in time"),
    })
}

/// Restores CouchBackup `last` and the backups it is incremental from, full first, leaving
/// `_security` to the database reconciler (the declared one, not the backup's).
async fn restore_chain(
    ctx: &Context,
    ns: &str,
    last: &str,
    couch: &CouchClient,
    name: &str,
) -> Result<crate::backup::Restored, Error> {
    let bases: std::collections::BTreeMap<String, Option<String>> = ctx
        .stores
        .backups
        .state()
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(ns))
        .map(|b| (b.name_any(), b.spec.incremental_from.clone()))
        .collect();
    let chain = crate::plan::backup::chain(last, |n| bases.get(n).map(Option::as_deref))
        .map_err(|e| Error::Waiting { what: format!("the chain of CouchBackup {ns}/{last} ({e})") })?;
    let mut parts = Vec::new();
    for backup in chain {
        let backup = completed_backup(ctx, ns, backup)?;
        let (target, _) = backup_target(ctx, &backup).await?;
        let manifest = crate::backup::read_manifest(&target)
            .await
            .map_err(|e| Error::backup("reading a backup's manifest", e))?
            .ok_or_else(|| {
                Error::backup(
                    "reading a backup's manifest",
                    crate::backup::BackupError::Format(format!(
                        "CouchBackup {ns}/{} says Completed but its store has no manifest",
                        backup.name_any()
                    )),
                )
            })?;
        parts.push((target, manifest));
    }
    let parts: Vec<_> = parts.iter().map(|(t, m)| (t, m)).collect();
    crate::backup::restore_chain(couch, name, &parts, None).await.map_err(|e| Error::backup("restoring", e))
}

/// Whether `db` still has a restore to do: `restoreFrom` is set and not restored yet.
pub fn pending(db: &CouchDatabase) -> Option<&RestoreFrom> {
    let from = db.spec.restore_from.as_ref()?;
    let done = db.status.as_ref().and_then(|s| s.restore.as_ref()).is_some_and(|r| r.completed_at.is_some());
    (!done).then_some(from)
}

/// Restores `from` into the database `name`.
pub async fn restore(
    ctx: &Context,
    db: &CouchDatabase,
    from: &RestoreFrom,
    couch: &CouchClient,
    name: &str,
) -> Result<RestoreStatus, Error> {
    let ns = db.namespace().unwrap_or_default();
    let source = source_of(from);
    let restored = match (&from.backup, &from.scheduled_backup, &from.couchbackup_file) {
        (Some(backup), _, _) => restore_chain(ctx, &ns, backup, couch, name).await?,
        (None, Some(schedule), _) => {
            let backup = at_point(ctx, &ns, schedule, from.point_in_time.as_deref())?;
            restore_chain(ctx, &ns, &backup, couch, name).await?
        }
        (None, None, Some(file)) => {
            let target = file_target(ctx, &ns, &file.source).await?;
            crate::backup::restore_couchbackup_file(couch, name, &target, &file.key)
                .await
                .map_err(|e| Error::backup("restoring a couchbackup file", e))?
        }
        (None, None, None) => {
            return Err(Error::InvalidSpec(
                "restoreFrom: set exactly one of backup, scheduledBackup and couchbackupFile".into(),
            ));
        }
    };
    tracing::info!(database = %name, %source, documents = restored.documents, "restored");
    Ok(RestoreStatus {
        source,
        documents: i64::try_from(restored.documents).ok(),
        completed_at: Some(now().0.to_string()),
    })
}
