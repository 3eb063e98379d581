//! A group backup (`spec.selector`): at its first pass it picks the CouchDatabases of its
//! namespace that match, records their backups' names in its status (so the set stays what it
//! was, whatever is labelled later) and creates one CouchBackup of each, owned by it; then its
//! status adds theirs up, and it completes when every one has.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::api::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::api::{BackupPhase, CouchBackup, CouchBackupSpec, CouchBackupStatus};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::status::{apply_status, condition_state};
use crate::plan::backup::member_name;

/// Creates the members at the first pass, then follows them; `Ok(true)` when this pass saw the
/// last one complete.
pub(super) async fn ensure(
    group: &CouchBackup,
    selector: &LabelSelector,
    ctx: &Context,
    status: &mut CouchBackupStatus,
) -> Result<bool, Error> {
    let ns = group.namespace().unwrap_or_default();
    let api: Api<CouchBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let group_name = group.name_any();
    // Every database of the namespace by the name its member has in this group.
    let databases: BTreeMap<String, std::sync::Arc<crate::api::CouchDatabase>> = ctx
        .stores
        .databases
        .state()
        .into_iter()
        .filter(|db| db.namespace().as_deref() == Some(ns.as_str()))
        .map(|db| (member_name(&group_name, &db.name_any()), db))
        .collect();
    if status.backups.is_empty() {
        let selector =
            Selector::try_from(selector.clone()).map_err(|e| Error::InvalidSpec(format!("selector: {e}")))?;
        let members: Vec<String> =
            databases.iter().filter(|(_, db)| selector.matches(db.labels())).map(|(name, _)| name.clone()).collect();
        if members.is_empty() {
            return Err(Error::Waiting { what: format!("a CouchDatabase of {ns} that the selector matches") });
        }
        // The set is recorded before anything is created: every later pass creates what is
        // missing of it (a pass cut short, a member deleted before it completed).
        let mut running = status.clone();
        running.phase = Some(BackupPhase::Running);
        running.backups = members;
        apply_status(&api, group, Some(status), &running).await?;
        *status = running;
    }

    let mut waiting = Vec::new();
    let mut done = Vec::new();
    for name in &status.backups {
        let member = ctx.stores.backups.get(&ObjectRef::new(name).within(&ns));
        match member.as_ref().map(|m| m.status.as_ref()) {
            Some(Some(s)) if s.phase == Some(BackupPhase::Completed) => done.push(s.clone()),
            Some(Some(s)) => waiting.push(match condition_state(&s.conditions, crate::api::condition::READY) {
                Some((_, reason)) => format!("{name} ({reason})"),
                None => name.clone(),
            }),
            Some(None) => waiting.push(name.clone()),
            None => match databases.get(name) {
                Some(db) => {
                    create_member(&api, group, name, &db.name_any()).await?;
                    waiting.push(name.clone());
                }
                None => waiting.push(format!("{name} (its CouchDatabase is gone)")),
            },
        }
    }
    if !waiting.is_empty() {
        return Err(Error::Waiting {
            what: format!(
                "CouchBackups {} to complete ({} of {} done)",
                waiting.join(", "),
                done.len(),
                status.backups.len()
            ),
        });
    }
    status.phase = Some(BackupPhase::Completed);
    status.started_at = done.iter().filter_map(|s| s.started_at.clone()).min();
    status.completed_at = done.iter().filter_map(|s| s.completed_at.clone()).max();
    status.documents = Some(done.iter().filter_map(|s| s.documents).sum());
    status.bytes = Some(done.iter().filter_map(|s| s.bytes).sum());
    Ok(true)
}

/// Creates the group's backup of `database` unless it exists; one that exists and is not the
/// group's is refused, not taken over.
async fn create_member(api: &Api<CouchBackup>, group: &CouchBackup, name: &str, database: &str) -> Result<(), Error> {
    let member = CouchBackup {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into()),
            owner_references: group.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: CouchBackupSpec {
            database: Some(database.to_owned()),
            selector: None,
            destination: group.spec.destination.clone(),
            incremental_from: None,
        },
        status: None,
    };
    match api.create(&PostParams::default(), &member).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(name).await?;
            let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == group.meta().uid.as_ref());
            if ours {
                Ok(())
            } else {
                Err(Error::InvalidSpec(format!(
                    "CouchBackup {name} exists and is not this group's: it cannot be the backup of CouchDatabase {database}"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}
