//! Percent-encoding of database names and document ids as URL path segments.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters: a database name `team/_replicator` must
/// reach CouchDB as one segment, `team%2F_replicator`, and `+` or `$` must not be reinterpreted.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A database name as one path segment (`a/b` → `a%2Fb`).
pub fn encode_db(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// A document id as a path: `_design/` and `_local/` keep their literal slash, which every
/// CouchDB version routes; the rest is one encoded segment.
pub fn encode_doc_id(id: &str) -> String {
    for prefix in ["_design/", "_local/"] {
        if let Some(rest) = id.strip_prefix(prefix) {
            return format!("{prefix}{}", utf8_percent_encode(rest, SEGMENT));
        }
    }
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// `/{db}/{doc}` with both encoded.
pub fn doc_path(db: &str, id: &str) -> String {
    format!("/{}/{}", encode_db(db), encode_doc_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_become_one_segment() {
        assert_eq!(encode_db("a/b"), "a%2Fb");
        assert_eq!(encode_db("team/_replicator"), "team%2F_replicator");
        assert_eq!(encode_db("_users"), "_users");
        assert_eq!(encode_db("a$b(c)+d-e"), "a%24b%28c%29%2Bd-e");
        assert_eq!(encode_db("userdb-616c696365"), "userdb-616c696365");
    }

    #[test]
    fn document_ids_keep_design_and_local_prefixes() {
        assert_eq!(encode_doc_id("org.couchdb.user:alice"), "org.couchdb.user%3Aalice");
        assert_eq!(encode_doc_id("_design/app"), "_design/app");
        assert_eq!(encode_doc_id("_local/a/b"), "_local/a%2Fb");
        assert_eq!(encode_doc_id("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(encode_doc_id("é"), "%C3%A9");
        assert_eq!(doc_path("a/_replicator", "x/y"), "/a%2F_replicator/x%2Fy");
    }
}
