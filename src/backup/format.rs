//! The data file's lines (docs/backup-format.md): a couchbackup-style header, then JSON arrays
//! of leaf revisions with attachments inline as `{"contentType","data","digest","revpos"}`;
//! and the reading of files couchbackup wrote (header, resume marker, empty lines,
//! `content_type`, stubs refused).

use serde_json::{Map, Value, json};

/// couchbackup's resume marker: appended, on a line of its own or after a broken line.
pub(crate) const RESUME_MARKER: &str = r#"{"marker":"@cloudant/couchbackup:resume"}"#;

/// Line 1 of couchshare's data file, which couchrestore reads as a `full` backup's header.
pub(crate) fn header_line() -> String {
    json!({"name": "couchshare", "version": env!("CARGO_PKG_VERSION"), "mode": "full", "attachments": false})
        .to_string()
}

/// A leaf revision as `_bulk_get?revs=true&attachments=true` answered it, made a line's
/// element: each attachment becomes `{"contentType","data","digest","revpos"}`. An attachment
/// without inline data cannot be backed up.
pub(crate) fn leaf_for_file(mut doc: Value) -> Result<Value, String> {
    let id = doc_id(&doc);
    if let Some(Value::Object(atts)) = doc.get_mut("_attachments") {
        for (name, att) in atts.iter_mut() {
            let data = att
                .get("data")
                .cloned()
                .ok_or_else(|| format!("document {id}: attachment {name} came without its data"))?;
            let mut out = Map::new();
            out.insert("contentType".into(), content_type(att).unwrap_or(Value::from("application/octet-stream")));
            out.insert("data".into(), data);
            if let Some(digest) = att.get("digest") {
                out.insert("digest".into(), digest.clone());
            }
            if let Some(revpos) = att.get("revpos") {
                out.insert("revpos".into(), revpos.clone());
            }
            *att = Value::Object(out);
        }
    }
    Ok(doc)
}

/// A document of a data file (ours or couchbackup's) as `_bulk_docs` with `new_edits: false`
/// takes it: `_rev` required, attachments `{"content_type","data","revpos"}` (the digest is
/// CouchDB's to compute). A stub (no `data`) is refused: its bytes are not in the file.
pub(crate) fn doc_for_couch(mut doc: Value) -> Result<Value, String> {
    let id = doc_id(&doc);
    if !doc.is_object() {
        return Err(format!("an array element is not a document: {}", short(&doc)));
    }
    if doc.get("_rev").and_then(Value::as_str).is_none() {
        return Err(format!("document {id} has no _rev"));
    }
    if let Some(Value::Object(atts)) = doc.get_mut("_attachments") {
        for (name, att) in atts.iter_mut() {
            let Some(data) = att.get("data").filter(|d| d.is_string()).cloned() else {
                return Err(format!(
                    "document {id}: attachment {name} is a stub without its bytes (a couchbackup made \
                     without --attachments of a database with attachments cannot be restored)"
                ));
            };
            let mut out = Map::new();
            out.insert("content_type".into(), content_type(att).unwrap_or(Value::from("application/octet-stream")));
            out.insert("data".into(), data);
            if let Some(revpos) = att.get("revpos") {
                out.insert("revpos".into(), revpos.clone());
            }
            *att = Value::Object(out);
        }
    }
    Ok(doc)
}

/// `contentType` (couchbackup's spelling), else `content_type` (CouchDB's).
fn content_type(att: &Value) -> Option<Value> {
    att.get("contentType").or_else(|| att.get("content_type")).filter(|t| t.is_string()).cloned()
}

fn doc_id(doc: &Value) -> String {
    doc.get("_id").and_then(Value::as_str).map_or_else(|| "(without _id)".to_owned(), |id| format!("{id:?}"))
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// One line of a data file, read.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A header (line 1 only), an empty line, a resume marker, or a broken line the marker ends.
    Skip,
    /// The documents of a batch.
    Docs(Vec<Value>),
}

/// Reads line `number` (from 1). Line 1 may be a header (`name`, `version`, `mode`).
pub(crate) fn parse_line(line: &[u8], number: u64) -> Result<Line, String> {
    let text = std::str::from_utf8(line).map_err(|_| format!("line {number} is not UTF-8"))?.trim();
    if text.is_empty() {
        return Ok(Line::Skip);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(docs)) => Ok(Line::Docs(docs)),
        Ok(Value::Object(o)) if o.contains_key("marker") => Ok(Line::Skip),
        Ok(Value::Object(o)) if number == 1 && ["name", "version", "mode"].iter().all(|k| o.contains_key(*k)) => {
            Ok(Line::Skip)
        }
        Ok(other) => Err(format!("line {number} is neither an array of documents nor a header: {}", short(&other))),
        // A line cut short by a crash, after which a resumed couchbackup appended its marker.
        Err(_) if text.ends_with(RESUME_MARKER) => Ok(Line::Skip),
        Err(e) => Err(format!("line {number} is not JSON: {e}")),
    }
}

/// Cuts a stream of bytes into lines (`\n`), whatever the chunks' boundaries.
#[derive(Default)]
pub(crate) struct Lines {
    pending: Vec<u8>,
    number: u64,
}

impl Lines {
    /// Adds a chunk; calls `line(bytes, number)` for each line it completes.
    pub(crate) fn push<F>(&mut self, mut chunk: &[u8], mut line: F) -> Result<(), String>
    where
        F: FnMut(&[u8], u64) -> Result<(), String>,
    {
        while let Some(at) = chunk.iter().position(|b| *b == b'\n') {
            self.number += 1;
            if self.pending.is_empty() {
                line(&chunk[..at], self.number)?;
            } else {
                self.pending.extend_from_slice(&chunk[..at]);
                let whole = std::mem::take(&mut self.pending);
                line(&whole, self.number)?;
            }
            chunk = &chunk[at + 1..];
        }
        self.pending.extend_from_slice(chunk);
        Ok(())
    }

    /// The last line, when the file does not end in `\n`.
    pub(crate) fn finish<F>(mut self, mut line: F) -> Result<(), String>
    where
        F: FnMut(&[u8], u64) -> Result<(), String>,
    {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.number += 1;
        let rest = std::mem::take(&mut self.pending);
        line(&rest, self.number)
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
