//! The CouchScheduledBackup reconciler: parse the schedule → when an occurrence is due and no
//! backup of the schedule is running, create its CouchBackup (full, or incremental from the
//! newest completed one: `plan::backup::next_base`) → expire what retention deletes (its objects
//! in the store, then the CouchBackup) → status, and a requeue at the next occurrence: a
//! schedule is the one wait here that a clock, not an event, ends.

use std::sync::Arc;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::{Timestamp, Zoned, tz::TimeZone};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::api::labels::{MANAGED_BY, MANAGED_BY_LABEL, SCHEDULED_BACKUP_LABEL};
use crate::api::{BackupMode, CouchBackup, CouchBackupSpec, CouchScheduledBackup, CouchScheduledBackupStatus};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::backups::{backup_target, held};
use crate::plan::backup::{Held, expired, next_base, parse_age};

/// Reconciles one CouchScheduledBackup.
pub async fn reconcile(schedule: Arc<CouchScheduledBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut pass = Pass::begin(schedule.as_ref());
    let result = ensure(&schedule, &ctx, &mut pass.status, &mut pass.events).await;
    let result = result.map(|wait| {
        let next = pass.status.next_schedule_time.clone().unwrap_or_default();
        let message = if schedule.spec.suspend {
            "suspended: no new backups; retention still applies".to_string()
        } else {
            format!("next backup at {next}")
        };
        Outcome::new(NewCondition::ready("Scheduled", message), Action::requeue(wait.min(ctx.resync())))
    });
    pass.finish(&ctx, schedule.as_ref(), result).await
}

/// The schedule, parsed as the schema admits it: five fields or a nickname, in UTC.
pub fn parse(schedule: &str) -> Result<Cron, Error> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| Error::InvalidSpec(format!("schedule {schedule:?} is not a cron expression: {e}")))
}

fn utc(t: Timestamp) -> Zoned {
    t.to_zoned(TimeZone::UTC)
}

/// The next occurrence strictly after `t`.
fn after(cron: &Cron, t: Timestamp) -> Result<Timestamp, Error> {
    cron.find_next_occurrence(&utc(t), false)
        .map(|z| z.timestamp())
        .map_err(|e| Error::InvalidSpec(format!("schedule has no next occurrence: {e}")))
}

/// The schedule's backups, oldest first.
fn owned(ctx: &Context, schedule: &CouchScheduledBackup) -> Vec<Arc<CouchBackup>> {
    let (ns, name) = (schedule.namespace(), schedule.name_any());
    let mut backups: Vec<Arc<CouchBackup>> = ctx
        .stores
        .backups
        .state()
        .into_iter()
        .filter(|b| b.namespace() == ns && b.labels().get(SCHEDULED_BACKUP_LABEL) == Some(&name))
        .collect();
    backups.sort_by_key(|b| (b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()));
    backups
}

/// Runs what is due; returns how long until the next occurrence.
async fn ensure(
    schedule: &CouchScheduledBackup,
    ctx: &Context,
    status: &mut CouchScheduledBackupStatus,
    events: &mut Vec<Note>,
) -> Result<std::time::Duration, Error> {
    let cron = parse(&schedule.spec.schedule)?;
    let ns = schedule.namespace().unwrap_or_default();
    let api: Api<CouchBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let backups = owned(ctx, schedule);
    let mut held: Vec<Held> = backups.iter().map(|b| held(b)).collect();
    let created = schedule.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let last = status.last_schedule_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(created);
    let due = after(&cron, last)?;
    let running = held.iter().any(|h| h.completed_at.is_none());
    if due <= now && !schedule.spec.suspend && !running {
        // One backup for the newest occurrence passed: missed ones are not made up in a burst.
        let occurrence = cron.find_previous_occurrence(&utc(now), true).map(|z| z.timestamp()).unwrap_or(due);
        let base = match schedule.spec.mode {
            BackupMode::Full => None,
            BackupMode::Incremental => next_base(&held, usize::try_from(schedule.spec.full_every).unwrap_or(1)),
        };
        let name = format!("{}-{}", schedule.name_any(), occurrence.strftime("%Y%m%d%H%M"));
        let backup = CouchBackup {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(
                    [
                        (SCHEDULED_BACKUP_LABEL.to_string(), schedule.name_any()),
                        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                    ]
                    .into(),
                ),
                owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            spec: CouchBackupSpec {
                database: Some(schedule.spec.database.clone()),
                selector: None,
                destination: schedule.spec.destination.clone(),
                incremental_from: base.clone(),
            },
            status: None,
        };
        match api.create(&PostParams::default(), &backup).await {
            Ok(_) => {
                let kind = base.as_deref().map_or("full".to_string(), |b| format!("incremental from {b}"));
                events.push(Note::normal("BackupCreated", format!("created CouchBackup {name} ({kind})")));
                held.push(Held { name, completed_at: None, base });
            }
            // Created by a pass whose status write was lost: the same occurrence, the same name.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        status.last_schedule_time = Some(occurrence.to_string());
    }

    let count = usize::try_from(schedule.spec.retention.count).unwrap_or(1);
    let max_age = schedule.spec.retention.max_age.as_deref().and_then(parse_age);
    for name in expired(&held, count, max_age, now) {
        let Some(backup) = backups.iter().find(|b| b.name_any() == name) else { continue };
        remove(ctx, backup).await?;
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        held.retain(|h| h.name != name);
        events.push(Note::normal("BackupExpired", format!("deleted CouchBackup {name} and its objects (retention)")));
    }

    let newest = held.iter().filter(|h| h.completed_at.is_some()).max_by_key(|h| h.completed_at);
    status.last_successful_backup = newest.map(|h| h.name.clone());
    status.last_successful_time = newest.and_then(|h| h.completed_at).map(|t| t.to_string());
    status.backups = held.iter().map(|h| h.name.clone()).collect();
    let anchor = status.last_schedule_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(created);
    let next = after(&cron, anchor.max(now))?;
    status.next_schedule_time = Some(next.to_string());
    status.interval_seconds = after(&cron, next).ok().map(|n| n.duration_since(next).as_secs());
    let wait = next.duration_since(now).max(jiff::SignedDuration::from_secs(1));
    Ok(std::time::Duration::try_from(wait).unwrap_or(std::time::Duration::from_secs(1)))
}

/// Deletes an expired backup's objects from its store: the manifest first (a backup is complete
/// only with it: one cut short here is no longer taken for whole), then every object its status
/// lists.
async fn remove(ctx: &Context, backup: &CouchBackup) -> Result<(), Error> {
    let (target, _) = backup_target(ctx, backup).await?;
    let gone = |e| Error::backup("deleting an expired backup", e);
    target.delete(crate::backup::MANIFEST_OBJECT).await.map_err(gone)?;
    for object in backup.status.as_ref().map(|s| s.objects.as_slice()).unwrap_or_default() {
        target.delete(&object.name).await.map_err(gone)?;
    }
    Ok(())
}
