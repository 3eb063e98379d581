//! `CouchBackup`: one backup of one CouchDatabase to an S3-compatible bucket or to the
//! operator's backup volume, and where a backup is kept (shared with
//! `CouchDatabase.spec.restoreFrom`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;

/// One backup of one CouchDatabase, taken once. Its spec is immutable: a backup is the record
/// of one run; take another by creating another object.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "couchshare.io",
    version = "v1alpha1",
    kind = "CouchBackup",
    namespaced,
    shortname = "cbackup",
    category = "couchshare",
    status = "CouchBackupStatus",
    doc = "One backup of one CouchDatabase: every leaf revision, attachments and _security, to a bucket or a volume.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database"}"#,
    printcolumn = r#"{"name":"Docs","type":"integer","jsonPath":".status.documents"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","priority":1,"jsonPath":".status.bytes"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a CouchBackup's spec is immutable; create another CouchBackup"},
    {"rule": "has(self.database) != has(self.selector)", "message": "set exactly one of database and selector"},
    {"rule": "!has(self.incrementalFrom) || has(self.database)", "message": "incrementalFrom goes with database"}
]))]
pub struct CouchBackupSpec {
    /// The CouchDatabase to back up, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub database: Option<String>,
    /// Instead of `database`: every CouchDatabase of this namespace whose labels match, as
    /// they are at this backup's first pass. This backup creates one CouchBackup of each
    /// (named `<this>-<database>`, labelled `couchshare.io/backup-group: <this>`, owned by
    /// this one), restorable one by one, and its status adds theirs up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::label_selector")]
    pub selector: Option<LabelSelector>,
    /// Where the backup is written.
    pub destination: BackupDestination,
    /// Make this an incremental backup: only what changed since this completed CouchBackup
    /// of the same database and destination (deletions included). A restore of it restores
    /// the chain, from the full backup up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub incremental_from: Option<String>,
}

/// Where backups are kept: exactly one of `s3` and `volume`. A backup's objects go in the
/// folder `<prefix><namespace>/<backup name>/` of a bucket, or `<namespace>/<prefix>/<backup
/// name>/` of the backup volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.s3) != has(self.volume)", "message": "set exactly one of s3 and volume"}
]))]
pub struct BackupDestination {
    /// An S3-compatible bucket (AWS S3, SeaweedFS, Ceph RGW, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// The operator's backup volume, mounted at its `--backup-dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
}

/// An S3-compatible bucket and the Secret with its credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The bucket, which must exist.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// The endpoint URL (`https://...`, or `http://...` for a server on a private network);
    /// AWS S3 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.startsWith('https://') || self.startsWith('http://')", "message": "must be an http:// or https:// URL"}
    ]))]
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when omitted.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Address the bucket in the path (`endpoint/bucket/key`), as most S3-compatible servers
    /// need, instead of as a virtual host (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: bool,
    /// A folder in the bucket for every backup of this destination; `couchshare/` when omitted.
    #[serde(default = "default_prefix")]
    #[schemars(length(max = 200), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('/') && !self.contains('..') && !self.contains('//')", "message": "must be a relative path without .. or empty segments"}
    ]))]
    pub prefix: String,
    /// The Secret, in this namespace, with the access key.
    pub credentials_secret_ref: S3CredentialsRef,
}

/// The Secret holding an S3 access key; read only from the resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1))]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1))]
    pub secret_access_key_key: String,
}

/// A folder below the operator's `--backup-dir` (a volume mounted in the operator's pod).
/// Each namespace's backups are in a folder of their own there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// A folder below `<backup-dir>/<namespace>/` for every backup of this destination; none
    /// when omitted. (The namespace comes first: no prefix reaches another namespace's folder.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('/') && !self.contains('..') && !self.contains('//')", "message": "must be a relative path without .. or empty segments"}
    ]))]
    pub prefix: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_prefix() -> String {
    "couchshare/".into()
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}

fn default_secret_access_key_key() -> String {
    "secretAccessKey".into()
}

/// Where a CouchBackup's run is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BackupPhase {
    /// Being written (or about to be written again, after an interrupted run).
    Running,
    /// Written, with its manifest: restorable.
    Completed,
}

/// One object of a backup in its store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupObject {
    /// Its name, relative to the backup's folder.
    pub name: String,
    /// The sha256 of its bytes, in hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: i64,
}

/// Observed state of a CouchBackup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchBackupStatus {
    /// Standard conditions; `Ready` is always present, and `True` once the backup is complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Running` or `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// The database's name on CouchDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couch_name: Option<String>,
    /// Where the backup is: `s3://bucket/folder/` or `volume:folder/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the run that completed started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// For an incremental backup: the sequence it starts after (its base's `updateSeq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<String>,
    /// The source's update sequence the backup reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_seq: Option<String>,
    /// Document revisions written (every leaf: conflicts and tombstones count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Bytes written, every object but the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// The objects written, with their sha256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<BackupObject>,
    /// With `selector`: the CouchBackups this one created, one per database, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
}

/// What fills a new CouchDatabase: a CouchBackup, the backups of a CouchScheduledBackup at a
/// point in time, or a file `couchbackup` wrote. Exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.backup) ? 1 : 0) + (has(self.scheduledBackup) ? 1 : 0) + (has(self.couchbackupFile) ? 1 : 0) == 1",
     "message": "set exactly one of backup, scheduledBackup and couchbackupFile"},
    {"rule": "!has(self.pointInTime) || has(self.scheduledBackup)", "message": "pointInTime goes with scheduledBackup"}
]))]
pub struct RestoreFrom {
    /// A completed CouchBackup in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup: Option<String>,
    /// A CouchScheduledBackup in this namespace: its newest completed backup, or the newest at
    /// or before `pointInTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub scheduled_backup: Option<String>,
    /// With `scheduledBackup`: the newest backup completed at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub point_in_time: Option<String>,
    /// A file written by `couchbackup` (from `@cloudant/couchbackup`), with `--attachments`
    /// when the database had attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couchbackup_file: Option<CouchbackupFile>,
}

/// A `couchbackup` file in a bucket or on the backup volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchbackupFile {
    /// Where the file is.
    pub source: BackupDestination,
    /// Its path below the destination's folder for this namespace (`<prefix><namespace>/` in a
    /// bucket, `<namespace>/<prefix>/` on the backup volume).
    #[schemars(length(min = 1, max = 500), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('/') && !self.contains('..')", "message": "must be a relative path without .."}
    ]))]
    pub key: String,
}

/// Whether a restore is done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// What was restored: `backup/<name>` or `couchbackupFile/<key>`.
    pub source: String,
    /// Document revisions written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// When the restore completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}
