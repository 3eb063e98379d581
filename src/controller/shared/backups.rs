//! From a backup destination in a spec to the object store it names: the bucket's Secret (read
//! only from the resource's own namespace) or the operator's backup volume, and the folder of
//! one backup in it. Used by the backup kind and by a database's `restoreFrom`.

use crate::api::{BackupDestination, CouchBackup};
use crate::backup::{S3Settings, Target};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;

use super::servers::secret_values;

/// The folder of the destination for namespace `ns`. In a bucket, `<prefix><ns>/`: who reads a
/// bucket is the bucket's keys' business, and each namespace brings its own. On the backup
/// volume, which every namespace shares and only the operator guards, `<ns>/<prefix>`: the
/// namespace comes first, so no prefix of one namespace can name another's folder (with the
/// prefix first, namespace `b` with prefix `team-a` would have read the backup `b` of `team-a`).
fn namespace_folder(destination: &BackupDestination, ns: &str) -> String {
    let clean = |p: &str| p.trim_matches('/').to_string();
    match (&destination.s3, &destination.volume) {
        (Some(s3), _) if !clean(&s3.prefix).is_empty() => format!("{}/{ns}/", clean(&s3.prefix)),
        (None, Some(volume)) => match volume.prefix.as_deref().map(clean).filter(|p| !p.is_empty()) {
            Some(prefix) => format!("{ns}/{prefix}/"),
            None => format!("{ns}/"),
        },
        _ => format!("{ns}/"),
    }
}

/// The folder of backup `name` of namespace `ns`: its namespace's folder, then `<name>/`.
pub fn backup_folder(destination: &BackupDestination, ns: &str, name: &str) -> String {
    format!("{}{name}/", namespace_folder(destination, ns))
}

/// Where a backup is, for its status: `s3://bucket/folder` or `volume:folder`.
pub fn location(destination: &BackupDestination, folder: &str) -> String {
    match &destination.s3 {
        Some(s3) => format!("s3://{}/{folder}", s3.bucket),
        None => format!("volume:{folder}"),
    }
}

/// The store of `destination` as resource of namespace `ns` sees it, rooted at `folder`.
pub async fn target(ctx: &Context, ns: &str, destination: &BackupDestination, folder: &str) -> Result<Target, Error> {
    match (&destination.s3, &destination.volume) {
        (Some(s3), None) => {
            let secret = &s3.credentials_secret_ref;
            let [access_key_id, secret_access_key] = secret_values(
                ctx,
                ns,
                &secret.name,
                [secret.access_key_id_key.as_str(), secret.secret_access_key_key.as_str()],
            )
            .await?;
            let settings = S3Settings {
                bucket: s3.bucket.clone(),
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                access_key_id,
                secret_access_key,
                path_style: s3.path_style,
                allow_http: s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
                insecure_skip_verify: false,
            };
            Ok(Target::s3(&settings, folder)?)
        }
        (None, Some(_)) => {
            let Some(root) = ctx.options.backup_dir.as_deref() else {
                return Err(Error::InvalidSpec(
                    "destination.volume needs a backup volume, and this operator runs without --backup-dir".into(),
                ));
            };
            Ok(Target::volume(root, folder)?)
        }
        _ => Err(Error::InvalidSpec("set exactly one of destination.s3 and destination.volume".into())),
    }
}

/// A CouchBackup as `plan::backup` sees it: its name, when it completed, its base.
pub fn held(backup: &CouchBackup) -> crate::plan::backup::Held {
    use kube::ResourceExt;
    let completed = backup.status.as_ref().filter(|s| s.phase == Some(crate::api::BackupPhase::Completed));
    crate::plan::backup::Held {
        name: backup.name_any(),
        completed_at: completed.and_then(|s| s.completed_at.as_deref()).and_then(|t| t.parse().ok()),
        base: backup.spec.incremental_from.clone(),
    }
}

/// The store and folder of a CouchBackup.
pub async fn backup_target(ctx: &Context, backup: &CouchBackup) -> Result<(Target, String), Error> {
    use kube::ResourceExt;
    let ns = backup.namespace().unwrap_or_default();
    let folder = backup_folder(&backup.spec.destination, &ns, &backup.name_any());
    let target = target(ctx, &ns, &backup.spec.destination, &folder).await?;
    Ok((target, folder))
}

/// The folder a `couchbackup` file's key is relative to: its namespace's folder.
pub fn file_folder(source: &BackupDestination, ns: &str) -> String {
    namespace_folder(source, ns)
}

/// The store of a `couchbackup` file's source, rooted at the namespace's folder.
pub async fn file_target(ctx: &Context, ns: &str, source: &BackupDestination) -> Result<Target, Error> {
    target(ctx, ns, source, &file_folder(source, ns)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{S3CredentialsRef, S3Destination, VolumeDestination};

    fn s3(prefix: &str) -> BackupDestination {
        BackupDestination {
            s3: Some(S3Destination {
                bucket: "b".into(),
                endpoint: None,
                region: "us-east-1".into(),
                path_style: true,
                prefix: prefix.into(),
                credentials_secret_ref: S3CredentialsRef {
                    name: "s".into(),
                    access_key_id_key: "a".into(),
                    secret_access_key_key: "k".into(),
                },
            }),
            volume: None,
        }
    }

    #[test]
    fn every_namespace_writes_below_its_own_name() {
        assert_eq!(backup_folder(&s3("couchshare/"), "team-a", "nightly"), "couchshare/team-a/nightly/");
        assert_eq!(backup_folder(&s3(""), "team-a", "nightly"), "team-a/nightly/");
        let volume = BackupDestination { s3: None, volume: Some(VolumeDestination::default()) };
        assert_eq!(backup_folder(&volume, "team-b", "x"), "team-b/x/");
        let prefixed =
            |p: &str| BackupDestination { s3: None, volume: Some(VolumeDestination { prefix: Some(p.into()) }) };
        assert_eq!(backup_folder(&prefixed("nightly/"), "team-b", "x"), "team-b/nightly/x/");
        // On the shared volume no prefix reaches another namespace's folder: `b` naming the
        // prefix `team-a` stays below `b/`, never at `team-a/b/` (team-a's backup `b`).
        assert_eq!(file_folder(&prefixed("team-a"), "b"), "b/team-a/");
        assert!(!file_folder(&prefixed("team-a"), "b").starts_with("team-a/"));
        assert_eq!(location(&s3("p"), "p/team-a/x/"), "s3://b/p/team-a/x/");
        assert_eq!(location(&volume, "team-b/x/"), "volume:team-b/x/");
    }
}
