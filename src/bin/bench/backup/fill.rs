//! The database the backup bench backs up: `n` documents written through `_bulk_docs` in
//! batches. Most are small JSON bodies (a few hundred bytes); 1 % (`--backup-attachment-percent`)
//! carry an inline attachment (3 KiB by default, `--backup-attachment-kib`; base64, a type
//! CouchDB does not compress); 1 % are in conflict: after
//! their first revision `1-r` is written, two more leaves `2-a` and `2-b`, both children of
//! `1-r`, are written with `new_edits: false` (so `1-r` is no leaf any more, and the document
//! has two).
//!
//! Everything is derived from the document's number (sha256 of it), so a run's database is
//! the same for the same `n`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use couchshare::couch::CouchClient;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Documents per `_bulk_docs` request, at most.
const BATCH: usize = 1000;
/// About this many bytes of JSON per `_bulk_docs` request, at most (large attachments).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Batches in flight at once.
const IN_FLIGHT: usize = 4;

/// What the database holds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub docs: usize,
    /// Documents with an attachment, per hundred (at most 99: the last of each hundred is the
    /// conflicted one).
    pub attachment_percent: usize,
    pub attachment_bytes: usize,
}

impl Shape {
    /// Whether document `i` has an attachment (the first `attachment_percent` of each hundred).
    fn has_attachment(&self, i: usize) -> bool {
        i % 100 < self.attachment_percent.min(99)
    }

    /// Documents per batch: [`BATCH`], fewer when attachments are large.
    fn batch(&self) -> usize {
        let per_doc = 400 + self.attachment_percent.min(99) * self.attachment_bytes * 4 / 3 / 100;
        (BATCH_BYTES / per_doc.max(1)).clamp(1, BATCH)
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filled {
    pub docs: u64,
    pub attachments: u64,
    pub conflicts: u64,
    /// Leaf revisions: one per document, two per conflicted one.
    pub leaves: u64,
    pub elapsed: Duration,
}

/// The id of document `i`.
pub fn doc_id(i: usize) -> String {
    format!("doc-{i:07}")
}

/// Whether document `i` is in conflict (never has an attachment).
pub fn in_conflict(i: usize) -> bool {
    i % 100 == 99
}

/// `len` bytes derived from `seed`.
fn bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u32;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(format!("{seed}/{block}")));
        block += 1;
    }
    out.truncate(len);
    out
}

/// A 32-hex-digit revision id derived from `seed`.
fn rev_hash(seed: &str) -> String {
    hex::encode(&Sha256::digest(seed)[..16])
}

/// Document `i`'s first revision: about 400 bytes of JSON.
fn doc(shape: &Shape, i: usize) -> Value {
    let text = hex::encode(bytes(&format!("text-{i}"), 96));
    let mut doc = json!({
        "_id": doc_id(i),
        "type": "bench",
        "n": i,
        "name": format!("user {i}"),
        "email": format!("user{i}@example.com"),
        "created": "2026-12-06T18:00:00Z",
        "tags": ["backup", "bench", if i.is_multiple_of(2) { "even" } else { "odd" }],
        "score": (i * 7919) % 1000,
        "text": text,
    });
    if shape.has_attachment(i) {
        let data = base64::engine::general_purpose::STANDARD.encode(bytes(&format!("att-{i}"), shape.attachment_bytes));
        doc["_attachments"] = json!({"blob.bin": {"content_type": "application/octet-stream", "data": data}});
    }
    doc
}

/// The two conflicting leaves of document `i`, children of its first revision `first`.
fn conflict_leaves(shape: &Shape, i: usize, first: &str) -> anyhow::Result<[Value; 2]> {
    let Some((_, parent)) = first.split_once('-') else { bail!("revision {first:?} of {} has no '-'", doc_id(i)) };
    let leaf = |side: &str| {
        let hash = rev_hash(&format!("{i}-{side}"));
        let mut d = doc(shape, i);
        d["side"] = json!(side);
        d["_rev"] = json!(format!("2-{hash}"));
        d["_revisions"] = json!({"start": 2, "ids": [hash, parent]});
        d
    };
    Ok([leaf("a"), leaf("b")])
}

/// One batch: documents `from..to`, then the conflicting leaves of those that have some.
async fn batch(couch: &CouchClient, db: &str, shape: &Shape, from: usize, to: usize) -> anyhow::Result<Filled> {
    let docs: Vec<Value> = (from..to).map(|i| doc(shape, i)).collect();
    let results = couch.bulk_docs(db, &docs).await.with_context(|| format!("_bulk_docs of documents {from}..{to}"))?;
    let mut leaves = Vec::new();
    let mut filled = Filled { docs: (to - from) as u64, ..Filled::default() };
    for (i, result) in (from..to).zip(&results) {
        if let Some(error) = &result.error {
            bail!("{}: {error} {}", doc_id(i), result.reason.as_deref().unwrap_or_default());
        }
        if shape.has_attachment(i) {
            filled.attachments += 1;
        }
        if in_conflict(i) {
            let rev = result.rev.as_deref().with_context(|| format!("{}: no rev in the answer", doc_id(i)))?;
            leaves.extend(conflict_leaves(shape, i, rev)?);
            filled.conflicts += 1;
        }
    }
    if results.len() != docs.len() {
        bail!("_bulk_docs answered {} results for {} documents", results.len(), docs.len());
    }
    if !leaves.is_empty() {
        let refused = couch.bulk_docs_replicated(db, &leaves).await?;
        if let Some(first) = refused.first() {
            bail!("conflicting leaves refused: {first}");
        }
    }
    filled.leaves = filled.docs + filled.conflicts;
    Ok(filled)
}

/// Writes `shape.docs` documents into `db` (which exists and is empty).
pub async fn fill(couch: &CouchClient, db: &str, shape: &Shape) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let (n, size) = (shape.docs, shape.batch());
    let mut total = Filled::default();
    let mut batches = stream::iter((0..n).step_by(size))
        .map(|from| batch(couch, db, shape, from, (from + size).min(n)))
        .buffer_unordered(IN_FLIGHT);
    let mut last_report = Instant::now();
    while let Some(done) = batches.next().await {
        let done = done?;
        total.docs += done.docs;
        total.attachments += done.attachments;
        total.conflicts += done.conflicts;
        total.leaves += done.leaves;
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!("bench: filled {} of {n} documents ({:.0} s)", total.docs, started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_a_few_hundred_bytes_and_conflicts_share_the_first_revision() {
        let shape = Shape { docs: 1000, attachment_percent: 1, attachment_bytes: 3 * 1024 };
        let plain = serde_json::to_vec(&doc(&shape, 1)).expect("serializes").len();
        assert!((300..600).contains(&plain), "{plain} bytes");
        let with_attachment = serde_json::to_vec(&doc(&shape, 0)).expect("serializes").len();
        assert!(with_attachment > 4000, "{with_attachment} bytes");
        let [a, b] = conflict_leaves(&shape, 99, "1-abc").expect("leaves");
        assert_eq!(a["_revisions"]["ids"][1], "abc");
        assert_eq!(b["_revisions"]["ids"][1], "abc");
        assert_ne!(a["_rev"], b["_rev"]);
        assert!(shape.has_attachment(0) && !shape.has_attachment(1) && !shape.has_attachment(99));
        assert!(in_conflict(99) && !in_conflict(0));
        assert_eq!(shape.batch(), BATCH);
        let large = Shape { docs: 1000, attachment_percent: 200, attachment_bytes: 1024 * 1024 };
        assert!(large.has_attachment(98) && !large.has_attachment(99));
        assert_eq!(large.batch(), 12);
    }
}
