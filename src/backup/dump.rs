//! [`back_up`]: one database into a target, streamed: `_changes` pages of ids, every leaf of
//! those ids through `_bulk_get` in groups, one bounded line per part of a page, uploaded as it goes.

use serde_json::{Value, json};

use super::error::BackupError;
use super::format::{header_line, leaf_for_file};
use super::in_flight::InFlight;
use super::target::{ObjectWriter, Target};
use super::{DATA_OBJECT, DATABASE_OBJECT, MANIFEST_FORMAT, MANIFEST_OBJECT, Manifest, ObjectEntry, SECURITY_OBJECT};
use crate::couch::{BulkGetResult, CouchClient, CouchError, encode_db};

/// Document ids per `_changes` page: a page is ids and revisions, small however large the
/// documents are, and fewer pages cost CouchDB less (the bench: pages of 500 cost it 1.6 times
/// couchbackup's CPU for the same database).
const PAGE: u64 = 10_000;
/// Document ids per `_bulk_get` (their bodies, not their attachments, are held at once).
const BULK_GET: usize = 500;
/// A line is closed once it holds this many bytes (couchrestore holds a whole line in memory).
const LINE_BYTES: usize = 4 * 1024 * 1024;
/// Attachment bytes read in one `_bulk_get` (more for a single document that has more).
const ATTACHMENT_BYTES: u64 = 16 * 1024 * 1024;

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// A sequence as text: a string as it is, a number as JSON.
fn seq_text(seq: &Value) -> String {
    match seq {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Backs up one database into `target`: streamed, bounded memory (never the whole database in
/// RAM). Writes the data file, `security.json`, `database.json` and, last, `manifest.json`; an
/// earlier manifest under the same prefix is removed first, so a backup that fails half-way
/// leaves no manifest behind.
pub async fn back_up(couch: &CouchClient, db: &str, target: &Target) -> Result<Manifest, BackupError> {
    back_up_since(couch, db, target, None).await
}

/// Like [`back_up`]; with `since`, an incremental backup: only the documents that changed after
/// that sequence (every leaf of each, tombstones included, so a deletion survives a restore).
pub async fn back_up_since(
    couch: &CouchClient,
    db: &str,
    target: &Target,
    since: Option<&str>,
) -> Result<Manifest, BackupError> {
    let started_at = now();
    let info = couch.database_info(db).await?;
    target.remove_if_present(MANIFEST_OBJECT).await?;
    let security =
        serde_json::to_value(couch.security(db).await?).map_err(|e| BackupError::Format(format!("_security: {e}")))?;

    let mut writer = target.writer(DATA_OBJECT).await?;
    let from = since.map(|s| Value::String(s.to_owned()));
    let (update_seq, documents) = match write_data(couch, db, from, &mut writer).await {
        Ok(done) => done,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let (sha256, bytes) = writer.finish().await?;
    let mut objects = vec![ObjectEntry { name: DATA_OBJECT.into(), sha256, bytes }];

    let (q, n) = info.cluster.map_or((None, None), |c| (Some(c.q), Some(c.n)));
    let partitioned = info.is_partitioned();
    let layout = json!({ "q": q, "n": n, "partitioned": partitioned });
    for (name, value) in [(SECURITY_OBJECT, &security), (DATABASE_OBJECT, &layout)] {
        let body = serde_json::to_vec_pretty(value).map_err(|e| BackupError::Format(format!("{name}: {e}")))?;
        let (sha256, bytes) = target.put_small(name, body).await?;
        objects.push(ObjectEntry { name: name.into(), sha256, bytes });
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        database: db.to_owned(),
        update_seq,
        since: since.map(str::to_owned),
        documents,
        bytes: objects.iter().map(|o| o.bytes).sum(),
        started_at,
        completed_at: now(),
        objects,
        security,
        q,
        n,
        partitioned,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Format(format!("manifest: {e}")))?;
    target.put_small(MANIFEST_OBJECT, body).await?;
    Ok(manifest)
}

/// The data file: the header, then the leaves of each `_changes` page. Returns the last
/// `last_seq` read and the number of leaves written.
async fn write_data(
    couch: &CouchClient,
    db: &str,
    mut since: Option<Value>,
    writer: &mut ObjectWriter,
) -> Result<(String, u64), BackupError> {
    writer.write(format!("{}\n", header_line()).as_bytes()).await?;
    let mut documents = 0u64;
    // `_bulk_get` reads without attachment bytes, a few in flight.
    let mut reads = InFlight::new();
    loop {
        let page = couch.changes_all_leaves(db, since.as_ref(), PAGE).await?;
        let done = page.results.is_empty() || page.pending == Some(0);
        // In the feed's order (a page names each id once), which is the order CouchDB wrote
        // the bodies in.
        let ids: Vec<String> = page.results.into_iter().map(|c| c.id).collect();
        for group in ids.chunks(BULK_GET) {
            let (client, name, group) = (couch.clone(), db.to_owned(), group.to_vec());
            let read = async move {
                let ids: Vec<&str> = group.iter().map(String::as_str).collect();
                client.bulk_get_leaves(&name, &ids, false).await
            };
            if let Some(answer) = reads.start(read).await {
                documents += write_leaves(couch, db, answer?, writer).await?;
            }
        }
        since = Some(page.last_seq);
        if done {
            break;
        }
    }
    while let Some(answer) = reads.next().await {
        documents += write_leaves(couch, db, answer?, writer).await?;
    }
    Ok((since.as_ref().map(seq_text).unwrap_or_default(), documents))
}

/// Every leaf of one `_bulk_get` answer as one or more lines; returns how many leaves. The
/// leaves were read without attachment bytes; the documents that have attachments are read
/// again with them, in groups of about [`ATTACHMENT_BYTES`], so that memory stays bounded by
/// the bodies of the reads in flight and one group's attachments (or one document's, when it
/// alone is larger).
async fn write_leaves(
    couch: &CouchClient,
    db: &str,
    answer: Vec<BulkGetResult>,
    writer: &mut ObjectWriter,
) -> Result<u64, BackupError> {
    let mut line = LineBuilder::default();
    let mut written = 0u64;
    let mut with_attachments: Vec<(String, u64)> = Vec::new();
    for result in answer {
        let id = result.id.clone();
        let leaves = leaves_of(db, result)?;
        match attachment_bytes(&leaves) {
            Some(bytes) => with_attachments.push((id, bytes)),
            None => written += add_leaves(leaves, &mut line, writer).await?,
        }
    }
    for group in size_groups(&with_attachments, ATTACHMENT_BYTES) {
        for result in couch.bulk_get_leaves(db, &group, true).await? {
            let leaves = leaves_of(db, result)?;
            written += add_leaves(leaves, &mut line, writer).await?;
        }
    }
    if let Some(rest) = line.finish() {
        writer.write(&rest).await?;
    }
    Ok(written)
}

/// The leaves of one id's `_bulk_get` answer. An id gone since the feed named it (purged)
/// has none; any other error fails the backup.
fn leaves_of(db: &str, result: BulkGetResult) -> Result<Vec<Value>, BackupError> {
    let mut leaves = Vec::new();
    for leaf in result.docs {
        match (leaf.ok, leaf.error) {
            (Some(doc), _) => leaves.push(doc),
            (None, Some(error)) if error.error == "not_found" => {}
            (None, Some(error)) => {
                return Err(BackupError::Couch(CouchError::Status {
                    method: "POST".into(),
                    path: format!("/{}/_bulk_get", encode_db(db)),
                    status: 200,
                    error: error.error,
                    reason: format!("{} (document {:?})", error.reason, result.id),
                }));
            }
            (None, None) => {}
        }
    }
    Ok(leaves)
}

/// Adds leaves to the line, writing each line that fills; returns how many.
async fn add_leaves(leaves: Vec<Value>, line: &mut LineBuilder, writer: &mut ObjectWriter) -> Result<u64, BackupError> {
    let mut added = 0;
    for doc in leaves {
        let doc = leaf_for_file(doc).map_err(BackupError::Format)?;
        let bytes = serde_json::to_vec(&doc).map_err(|e| BackupError::Format(e.to_string()))?;
        if let Some(full) = line.add(&bytes) {
            writer.write(&full).await?;
        }
        added += 1;
    }
    Ok(added)
}

/// The bytes of all attachments of some leaves (their stubs' `length`), `None` when they have none.
fn attachment_bytes(leaves: &[Value]) -> Option<u64> {
    let mut any = false;
    let mut bytes = 0u64;
    for att in leaves.iter().filter_map(|l| l.get("_attachments")?.as_object()).flat_map(|a| a.values()) {
        any = true;
        bytes += att.get("length").and_then(Value::as_u64).unwrap_or(0);
    }
    any.then_some(bytes)
}

/// Ids cut into groups of at most `max` bytes each (an id larger than that alone).
fn size_groups(items: &[(String, u64)], max: u64) -> Vec<Vec<&str>> {
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut size = 0u64;
    for (id, bytes) in items {
        if !current.is_empty() && size + bytes > max {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(id);
        size += bytes;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// A line of documents being built: `[doc,doc,...]\n`, closed once it reaches [`LINE_BYTES`].
#[derive(Default)]
struct LineBuilder {
    buf: Vec<u8>,
}

impl LineBuilder {
    /// Adds a serialized document; returns the line when it is full.
    fn add(&mut self, doc: &[u8]) -> Option<Vec<u8>> {
        self.buf.push(if self.buf.is_empty() { b'[' } else { b',' });
        self.buf.extend_from_slice(doc);
        if self.buf.len() >= LINE_BYTES { self.finish() } else { None }
    }

    /// The line so far, closed; `None` when it holds nothing.
    fn finish(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.buf);
        line.extend_from_slice(b"]\n");
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_arrays_closed_when_full() {
        let mut line = LineBuilder::default();
        assert_eq!(line.add(br#"{"_id":"a"}"#), None);
        assert_eq!(line.add(br#"{"_id":"b"}"#), None);
        assert_eq!(
            line.finish().as_deref(),
            Some(&br#"[{"_id":"a"},{"_id":"b"}]"#[..]).map(|l| [l, b"\n"].concat()).as_deref()
        );
        assert_eq!(line.finish(), None);
        let big = vec![b'1'; LINE_BYTES];
        let full = line.add(&big).expect("a full line");
        assert_eq!(full.len(), LINE_BYTES + 3);
        assert_eq!(line.finish(), None);
    }

    #[test]
    fn documents_with_attachments_are_grouped_by_size() {
        let leaves = [
            json!({"_id": "a", "_attachments": {"x": {"length": 10, "stub": true}, "y": {"length": 5}}}),
            json!({"_id": "a", "_attachments": {"x": {"length": 7, "stub": true}}}),
        ];
        assert_eq!(attachment_bytes(&leaves), Some(22));
        assert_eq!(attachment_bytes(&[json!({"_id": "b"}), json!({"_id": "b", "_attachments": {}})]), None);
        let items: Vec<(String, u64)> =
            [("a", 6), ("b", 4), ("c", 1), ("d", 30), ("e", 2)].iter().map(|(i, b)| (i.to_string(), *b)).collect();
        assert_eq!(size_groups(&items, 10), [vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
        assert!(size_groups(&[], 10).is_empty());
    }

    #[test]
    fn sequences_become_text() {
        assert_eq!(seq_text(&json!("3-g1AA")), "3-g1AA");
        assert_eq!(seq_text(&json!(42)), "42");
    }
}
