//! Backup and restore of one database's data (issue 28): every leaf revision, attachments
//! inline, streamed into an object store (S3 or a mounted directory) with bounded memory, in
//! a data file `couchrestore` reads (docs/backup-format.md), beside `security.json`,
//! `database.json` and, written last, `manifest.json`: a backup is complete iff its manifest
//! exists. Restore checks every object's size and sha256 first, then writes the revisions as
//! they were (`_bulk_docs` with `new_edits: false`) and the `_security` object.
//!
//! Knows nothing of Kubernetes: the controller calls [`back_up`], [`read_manifest`],
//! [`verify`], [`restore`] and [`restore_couchbackup_file`].

mod dump;
mod error;
mod format;
mod in_flight;
mod load;
mod marker;
mod target;

use serde::{Deserialize, Serialize};

pub use dump::{back_up, back_up_since};
pub use error::BackupError;
pub use load::{read_manifest, restore, restore_chain, restore_couchbackup_file, verify};
pub use marker::RESTORE_MARKER;
pub use target::{S3Settings, Target};

/// The data file, relative to a backup's prefix.
pub const DATA_OBJECT: &str = "data.jsonl";
/// The database's `_security` object, as it was.
pub const SECURITY_OBJECT: &str = "security.json";
/// `q`, `n` and `partitioned` of the database.
pub const DATABASE_OBJECT: &str = "database.json";
/// Written last; lists every other object with its size and sha256.
pub const MANIFEST_OBJECT: &str = "manifest.json";
/// [`Manifest::format`] of what this version writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// What a complete backup holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The database backed up.
    pub database: String,
    /// The `last_seq` of the last `_changes` page read (opaque; a number as text on servers
    /// with integer sequences).
    pub update_seq: String,
    /// For an incremental backup, the sequence it starts after: it holds every document that
    /// changed since (all leaves of each, tombstones included), and a restore replays it over
    /// its base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Leaf revisions written (conflicts and tombstones included).
    pub documents: u64,
    /// Bytes of all objects but the manifest.
    pub bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub completed_at: String,
    /// Every object but the manifest.
    pub objects: Vec<ObjectEntry>,
    /// The `_security` object, as it was.
    pub security: serde_json::Value,
    pub q: Option<u32>,
    pub n: Option<u32>,
    pub partitioned: bool,
}

/// One object of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Relative to the backup's prefix.
    pub name: String,
    /// Hex.
    pub sha256: String,
    pub bytes: u64,
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Leaf revisions written.
    pub documents: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_manifest_round_trips_through_json() {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            database: "db".into(),
            update_seq: "12-g1AAAA".into(),
            since: None,
            documents: 7,
            bytes: 1234,
            started_at: "2026-12-06T18:00:00Z".into(),
            completed_at: "2026-12-06T18:00:01Z".into(),
            objects: vec![ObjectEntry { name: DATA_OBJECT.into(), sha256: "ab".repeat(32), bytes: 1000 }],
            security: json!({"members": {"names": ["a"], "roles": []}}),
            q: Some(2),
            n: Some(1),
            partitioned: false,
        };
        let text = serde_json::to_string(&manifest).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["objects"][0]["name"], DATA_OBJECT);
        assert_eq!(value["q"], 2);
        assert_eq!(serde_json::from_str::<Manifest>(&text).expect("parses"), manifest);
    }
}
