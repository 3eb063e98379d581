//! Reading a backup back: its manifest, the check of every object against it, and the restore
//! of a data file (ours, or one couchbackup wrote) into an empty database.

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::BackupError;
use super::format::{Line, Lines, doc_for_couch, parse_line};
use super::in_flight::InFlight;
use super::marker::{mark, may_restore, unmark};
use super::target::Target;
use super::{DATA_OBJECT, MANIFEST_FORMAT, MANIFEST_OBJECT, Manifest, Restored};
use crate::couch::{CouchClient, CouchError, Security, encode_db};

/// Documents per `_bulk_docs` request.
const BATCH_DOCS: usize = 500;
/// A batch is sent once its documents add up to about this many bytes of JSON (with four
/// batches in flight; 8 MiB took a restore of 1 MiB attachments to 144 MiB peak RSS).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Reads the manifest; `Ok(None)` when there is none (an incomplete or absent backup).
pub async fn read_manifest(target: &Target) -> Result<Option<Manifest>, BackupError> {
    let Some(bytes) = target.get_small(MANIFEST_OBJECT).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| BackupError::Corrupt { object: MANIFEST_OBJECT.into(), detail: format!("not a manifest: {e}") })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(BackupError::Format(format!(
            "manifest format {} is not one this version reads ({MANIFEST_FORMAT})",
            manifest.format
        )));
    }
    Ok(Some(manifest))
}

/// Re-reads every object the manifest lists and checks its size and sha256.
pub async fn verify(target: &Target, manifest: &Manifest) -> Result<(), BackupError> {
    if !manifest.objects.iter().any(|o| o.name == DATA_OBJECT) {
        return Err(BackupError::Corrupt { object: MANIFEST_OBJECT.into(), detail: format!("lists no {DATA_OBJECT}") });
    }
    for entry in &manifest.objects {
        let corrupt = |detail: String| BackupError::Corrupt { object: entry.name.clone(), detail };
        let Some((sha256, bytes)) = target.read_each(&entry.name, |_| Ok(())).await? else {
            return Err(corrupt("missing".into()));
        };
        if bytes != entry.bytes {
            return Err(corrupt(format!("{bytes} bytes, the manifest says {}", entry.bytes)));
        }
        if sha256 != entry.sha256 {
            return Err(corrupt(format!("sha256 {sha256}, the manifest says {}", entry.sha256)));
        }
    }
    Ok(())
}

/// Restores a backup into `db`, which must exist and be empty (or hold only what an
/// interrupted restore of the same backup wrote, see [`RESTORE_MARKER`](super::RESTORE_MARKER)),
/// its `_security` included: [`restore_chain`] of one backup.
pub async fn restore(
    couch: &CouchClient,
    db: &str,
    target: &Target,
    manifest: &Manifest,
) -> Result<Restored, BackupError> {
    restore_chain(couch, db, &[(target, manifest)], Some(&manifest.security)).await
}

/// Restores backups in order — a full backup, then the incremental ones on it — into `db`,
/// which must exist and be empty (or hold an interrupted restore of the same chain: the marker
/// names the full backup's data). Every object of every backup is checked first ([`verify`]):
/// nothing is written when one is corrupt. Then each data file through `_bulk_docs` with
/// `new_edits: false`, then `security` when given (the operator passes none: the database's
/// declared `_security` is its own to write).
pub async fn restore_chain(
    couch: &CouchClient,
    db: &str,
    chain: &[(&Target, &Manifest)],
    security: Option<&Value>,
) -> Result<Restored, BackupError> {
    let mut data = Vec::new();
    for (_, manifest) in chain {
        let Some(entry) = manifest.objects.iter().find(|o| o.name == DATA_OBJECT) else {
            return Err(BackupError::Corrupt {
                object: MANIFEST_OBJECT.into(),
                detail: format!("lists no {DATA_OBJECT}"),
            });
        };
        data.push(entry.sha256.clone());
    }
    let Some(first) = data.first() else { return Err(BackupError::Format("no backup to restore".into())) };
    may_restore(couch, db, Some(first)).await?;
    for (target, manifest) in chain {
        verify(target, manifest).await?;
    }
    mark(couch, db, first).await?;
    let mut documents = 0;
    for ((target, _), expected) in chain.iter().zip(&data) {
        let (written, sha256) = replay(couch, db, target, DATA_OBJECT, true).await?;
        // Changed since verify() read it: too late to write nothing, not too late to say so.
        if sha256 != *expected {
            return Err(BackupError::Corrupt {
                object: format!("{}{DATA_OBJECT}", target.prefix()),
                detail: format!("changed during the restore: sha256 {sha256}, the manifest says {expected}"),
            });
        }
        documents += written;
    }
    if let Some(security) = security.filter(|s| s.as_object().is_some_and(|o| !o.is_empty())) {
        let security: Security = serde_json::from_value(security.clone()).map_err(|e| BackupError::Corrupt {
            object: MANIFEST_OBJECT.into(),
            detail: format!("its _security is not one: {e}"),
        })?;
        couch.put_security(db, &security).await?;
    }
    unmark(couch, db).await?;
    Ok(Restored { documents })
}

/// Restores a file `couchbackup` wrote (no manifest), object `key` under the target's prefix,
/// into `db`, which must exist and be empty. A first pass reads the whole file: a line that is
/// not JSON, a document without `_rev` or an attachment stub (a backup made without
/// `--attachments`) is refused before anything is written. `_security` is not in such a file.
pub async fn restore_couchbackup_file(
    couch: &CouchClient,
    db: &str,
    target: &Target,
    key: &str,
) -> Result<Restored, BackupError> {
    may_restore(couch, db, None).await?;
    let (_, sha256) = replay(couch, db, target, key, false).await?;
    may_restore(couch, db, Some(&sha256)).await?;
    mark(couch, db, &sha256).await?;
    let (documents, _) = replay(couch, db, target, key, true).await?;
    unmark(couch, db).await?;
    Ok(Restored { documents })
}

/// Reads data file `name` line by line; with `write`, sends its documents to `db` in batches.
/// Returns the number of documents and the sha256 (hex) of what it read.
async fn replay(
    couch: &CouchClient,
    db: &str,
    target: &Target,
    name: &str,
    write: bool,
) -> Result<(u64, String), BackupError> {
    let Some(mut stream) = target.stream(name).await? else {
        return Err(BackupError::Format(format!("no object {name} under {}", target.prefix())));
    };
    let format = |e: String| BackupError::Format(format!("{name}: {e}"));
    let mut lines = Lines::default();
    let mut batch = Batch::default();
    // `_bulk_docs` writes, a few in flight: each batch holds other documents (or other leaves
    // of one), and `new_edits: false` merges leaves whatever the order.
    let mut writes = InFlight::new();
    let mut count = 0u64;
    let mut sha = Sha256::new();
    let mut done = false;
    while !done {
        // Documents of the lines a piece completes; a line is bounded, so is this.
        let mut ready: Vec<(Value, usize)> = Vec::new();
        let mut take = |line: &[u8], number: u64| -> Result<(), String> {
            if let Line::Docs(docs) = parse_line(line, number)? {
                let each = line.len() / docs.len().max(1);
                ready.extend(docs.into_iter().map(|d| (d, each)));
            }
            Ok(())
        };
        match stream.next().await {
            Some(piece) => {
                let piece = piece?;
                sha.update(piece.as_ref());
                lines.push(piece.as_ref(), &mut take).map_err(format)?;
            }
            None => {
                std::mem::take(&mut lines).finish(&mut take).map_err(format)?;
                done = true;
            }
        }
        for (doc, size) in ready {
            let doc = doc_for_couch(doc).map_err(format)?;
            count += 1;
            if write
                && batch.add(doc, size)
                && let Some(answer) = writes.start(bulk_docs(couch, db, batch.take())).await
            {
                refusals(db, answer?)?;
            }
        }
    }
    if write
        && !batch.docs.is_empty()
        && let Some(answer) = writes.start(bulk_docs(couch, db, batch.take())).await
    {
        refusals(db, answer?)?;
    }
    while let Some(answer) = writes.next().await {
        refusals(db, answer?)?;
    }
    Ok((count, hex::encode(sha.finalize())))
}

/// Documents waiting for one `_bulk_docs`.
#[derive(Default)]
struct Batch {
    docs: Vec<Value>,
    bytes: usize,
}

impl Batch {
    /// Adds a document of about `size` bytes; true when the batch should be sent.
    fn add(&mut self, doc: Value, size: usize) -> bool {
        self.docs.push(doc);
        self.bytes += size;
        self.docs.len() >= BATCH_DOCS || self.bytes >= BATCH_BYTES
    }

    /// The documents, leaving the batch empty.
    fn take(&mut self) -> Vec<Value> {
        self.bytes = 0;
        std::mem::take(&mut self.docs)
    }
}

/// One `_bulk_docs` with `new_edits: false`, as a task of its own.
fn bulk_docs(
    couch: &CouchClient,
    db: &str,
    docs: Vec<Value>,
) -> impl std::future::Future<Output = Result<Vec<Value>, CouchError>> + Send + 'static {
    let (couch, db) = (couch.clone(), db.to_owned());
    async move { couch.bulk_docs_replicated(&db, &docs).await }
}

/// A document CouchDB refused in a `_bulk_docs` answer fails the restore.
fn refusals(db: &str, refused: Vec<Value>) -> Result<(), BackupError> {
    let Some(first) = refused.iter().find(|r| r.get("error").is_some()) else {
        return Ok(());
    };
    let text = |k: &str| first.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    Err(BackupError::Couch(CouchError::Status {
        method: "POST".into(),
        path: format!("/{}/_bulk_docs", encode_db(db)),
        status: 201,
        error: text("error"),
        reason: format!("{} (document {:?}, {} refused in the batch)", text("reason"), text("id"), refused.len()),
    }))
}
