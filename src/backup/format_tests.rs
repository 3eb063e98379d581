use serde_json::{Value, json};

use super::*;

#[test]
fn the_header_is_what_couchrestore_takes_for_a_full_backup() {
    let header: Value = serde_json::from_str(&header_line()).expect("JSON");
    assert_eq!(header["name"], "couchshare");
    assert_eq!(header["mode"], "full");
    assert_eq!(header["attachments"], false);
    assert_eq!(header["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(parse_line(header_line().as_bytes(), 1), Ok(Line::Skip));
}

#[test]
fn attachments_are_rewritten_with_camel_case_content_type() {
    let leaf = json!({"_id": "a", "_rev": "1-x", "_revisions": {"start": 1, "ids": ["x"]},
        "_attachments": {"t.txt": {"content_type": "text/plain", "revpos": 1, "digest": "md5-abc",
            "data": "aGk=", "length": 2, "encoding": "gzip"}}});
    let out = leaf_for_file(leaf).expect("rewritten");
    assert_eq!(
        out["_attachments"]["t.txt"],
        json!({"contentType": "text/plain", "data": "aGk=", "digest": "md5-abc", "revpos": 1})
    );
    assert_eq!(out["_revisions"]["ids"], json!(["x"]));
    let stub = json!({"_id": "s", "_rev": "1-x", "_attachments": {"a": {"content_type": "x", "stub": true}}});
    assert!(leaf_for_file(stub).is_err());
}

#[test]
fn file_documents_go_back_to_couchdb_spelling_and_stubs_are_refused() {
    let camel = json!({"_id": "a", "_rev": "1-x",
        "_attachments": {"b.bin": {"contentType": "image/png", "data": "AAE=", "digest": "md5-z", "revpos": 1}}});
    let out = doc_for_couch(camel).expect("restorable");
    assert_eq!(out["_attachments"]["b.bin"], json!({"content_type": "image/png", "data": "AAE=", "revpos": 1}));
    let snake =
        json!({"_id": "a", "_rev": "1-x", "_attachments": {"t": {"content_type": "text/plain", "data": "aGk="}}});
    assert_eq!(doc_for_couch(snake).expect("restorable")["_attachments"]["t"]["content_type"], "text/plain");
    let stub = json!({"_id": "a", "_rev": "1-x",
        "_attachments": {"t": {"contentType": "text/plain", "digest": "md5-q", "length": 2, "revpos": 1, "stub": true}}});
    let refused = doc_for_couch(stub).expect_err("a stub");
    assert!(refused.contains("stub") && refused.contains("--attachments"), "{refused}");
    assert!(doc_for_couch(json!({"_id": "norev"})).is_err());
    assert!(doc_for_couch(json!(3)).is_err());
}

#[test]
fn couchbackup_lines_header_marker_empty_and_broken() {
    let header = br#"{"name":"@cloudant/couchbackup","version":"2.11.12","mode":"full","attachments":true}"#;
    assert_eq!(parse_line(header, 1), Ok(Line::Skip));
    // Only line 1 is a header.
    assert!(parse_line(header, 2).is_err());
    assert_eq!(parse_line(RESUME_MARKER.as_bytes(), 7), Ok(Line::Skip));
    assert_eq!(parse_line(b"", 3), Ok(Line::Skip));
    assert_eq!(parse_line(b"  \r", 3), Ok(Line::Skip));
    assert_eq!(parse_line(b"[]", 2), Ok(Line::Docs(Vec::new())));
    let broken = format!(r#"[{{"_id":"a","_re{RESUME_MARKER}"#);
    assert_eq!(parse_line(broken.as_bytes(), 4), Ok(Line::Skip));
    assert!(parse_line(br#"[{"_id":"a""#, 4).is_err());
    assert!(parse_line(br#"{"other":1}"#, 1).is_err());
    assert_eq!(parse_line(br#"[{"_id":"a","_rev":"1-x"}]"#, 1), Ok(Line::Docs(vec![json!({"_id":"a","_rev":"1-x"})])));
}

#[test]
fn lines_are_cut_across_chunks_and_the_last_may_lack_its_newline() {
    let mut lines = Lines::default();
    let mut seen = Vec::new();
    let mut keep = |l: &[u8], n: u64| {
        seen.push((String::from_utf8_lossy(l).into_owned(), n));
        Ok(())
    };
    for chunk in [&b"ab"[..], b"c\nd", b"", b"e\n\nf", b"g"] {
        lines.push(chunk, &mut keep).expect("ok");
    }
    lines.finish(&mut keep).expect("ok");
    let expected = [("abc", 1), ("de", 2), ("", 3), ("fg", 4)].map(|(l, n)| (l.to_owned(), n));
    assert_eq!(seen, expected);
}
