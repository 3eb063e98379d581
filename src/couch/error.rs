//! The errors of the CouchDB client: CouchDB's `{"error","reason"}` answers mapped by status,
//! transport and decoding failures, and which of them are worth retrying.

use reqwest::StatusCode;
use serde::Deserialize;

/// What went wrong talking to CouchDB. Messages name the method and path (never a URL with
/// credentials, never a request body).
#[derive(Debug, thiserror::Error)]
pub enum CouchError {
    /// 404: the database, document or config key does not exist.
    #[error("{method} {path}: not found ({reason})")]
    NotFound { method: String, path: String, reason: String },
    /// 409: a document update conflict (stale or missing `_rev`).
    #[error("{method} {path}: conflict ({reason})")]
    Conflict { method: String, path: String, reason: String },
    /// 401: no or wrong credentials (pouchdb-server also answers 401 where CouchDB says 403).
    #[error("{method} {path}: unauthorized ({reason})")]
    Unauthorized { method: String, path: String, reason: String },
    /// 403: authenticated but not allowed, or refused by a validation function.
    #[error("{method} {path}: forbidden ({reason})")]
    Forbidden { method: String, path: String, reason: String },
    /// 412: a precondition failed, e.g. `file_exists` when creating a database.
    #[error("{method} {path}: precondition failed: {error} ({reason})")]
    PreconditionFailed { method: String, path: String, error: String, reason: String },
    /// 400: CouchDB refused the request as malformed.
    #[error("{method} {path}: bad request: {error} ({reason})")]
    BadRequest { method: String, path: String, error: String, reason: String },
    /// This server does not offer the endpoint or feature (e.g. `_purge` on pouchdb-server).
    #[error("not supported by this CouchDB server: {what}")]
    NotSupported { what: String },
    /// 5xx: the server failed.
    #[error("{method} {path}: server error {status}: {error} ({reason})")]
    Server { method: String, path: String, status: u16, error: String, reason: String },
    /// Any other unexpected status (e.g. 413, 415, 429).
    #[error("{method} {path}: unexpected status {status}: {error} ({reason})")]
    Status { method: String, path: String, status: u16, error: String, reason: String },
    /// The request never got an answer: connection refused, TLS failure, timeout.
    #[error("{method} {url}: {kind}")]
    Transport {
        method: String,
        /// The URL without userinfo.
        url: String,
        kind: TransportKind,
        #[source]
        source: reqwest::Error,
    },
    /// CouchDB answered, but not with what was expected.
    #[error("{method} {path}: cannot decode the answer")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A request body could not be serialized.
    #[error("{method} {path}: cannot encode the request body")]
    Encode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The client's own configuration is unusable (bad URL, bad CA certificate).
    #[error("invalid CouchDB client configuration: {0}")]
    InvalidConfig(String),
}

/// How a request failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Other => "request failed",
        })
    }
}

impl CouchError {
    /// Whether retrying the same request later may succeed: transport failures, 429, and 5xx
    /// except 501 (not implemented stays not implemented).
    pub fn is_transient(&self) -> bool {
        match self {
            CouchError::Transport { .. } => true,
            CouchError::Server { status, .. } => *status != 501,
            CouchError::Status { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CouchError::NotFound { .. })
    }

    /// 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CouchError::Conflict { .. })
    }

    /// 401 or 403: the difference is often the server's (pouchdb-server says 401 where
    /// CouchDB says 403), so callers that only care about "refused" use this.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, CouchError::Unauthorized { .. } | CouchError::Forbidden { .. })
    }

    /// A request that timed out without an answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CouchError::Transport { kind: TransportKind::Timeout, .. })
    }

    /// The HTTP status CouchDB answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            CouchError::NotFound { .. } => 404,
            CouchError::Conflict { .. } => 409,
            CouchError::Unauthorized { .. } => 401,
            CouchError::Forbidden { .. } => 403,
            CouchError::PreconditionFailed { .. } => 412,
            CouchError::BadRequest { .. } => 400,
            CouchError::Server { status, .. } | CouchError::Status { status, .. } => *status,
            _ => return None,
        })
    }

    pub(crate) fn not_supported(what: impl Into<String>) -> Self {
        CouchError::NotSupported { what: what.into() }
    }

    pub(crate) fn transport(method: &str, url: &url::Url, source: reqwest::Error) -> Self {
        let kind = if source.is_timeout() {
            TransportKind::Timeout
        } else if source.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        CouchError::Transport {
            method: method.to_owned(),
            url: redact_url(url),
            kind,
            // reqwest puts the full URL in its message; ours is already in the error, redacted.
            source: source.without_url(),
        }
    }

    pub(crate) fn encode(method: &str, path: &str, source: serde_json::Error) -> Self {
        CouchError::Encode { method: method.to_owned(), path: path.to_owned(), source }
    }

    pub(crate) fn decode(method: &str, path: &str, source: serde_json::Error) -> Self {
        CouchError::Decode { method: method.to_owned(), path: path.to_owned(), source }
    }

    /// Maps a non-success answer to an error, from its status and CouchDB's
    /// `{"error": ..., "reason": ...}` body (which may be missing or not JSON).
    pub fn from_response(method: &str, path: &str, status: StatusCode, body: &[u8]) -> Self {
        #[derive(Deserialize, Default)]
        struct Body {
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            reason: Option<String>,
        }
        let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
        let canonical = status.canonical_reason().unwrap_or("unknown").to_owned();
        let error = parsed.error.unwrap_or_else(|| canonical.clone());
        let reason = parsed.reason.unwrap_or_else(|| error.clone());
        let method = method.to_owned();
        let path = path.to_owned();
        match status.as_u16() {
            404 => CouchError::NotFound { method, path, reason },
            409 => CouchError::Conflict { method, path, reason },
            401 => CouchError::Unauthorized { method, path, reason },
            403 => CouchError::Forbidden { method, path, reason },
            412 => CouchError::PreconditionFailed { method, path, error, reason },
            400 => CouchError::BadRequest { method, path, error, reason },
            s @ 500..=599 => CouchError::Server { method, path, status: s, error, reason },
            s => CouchError::Status { method, path, status: s, error, reason },
        }
    }
}

/// A URL as text with any `user:password@` removed, for messages and logs.
pub fn redact_url(url: &url::Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() || url.password().is_some() {
        // Both only fail for URLs that cannot have userinfo, which then have none to strip.
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    url.to_string()
}

/// Like [`redact_url`] for text that may not parse as a URL: drops everything between
/// `://` and the last `@` of the authority.
pub fn redact_url_str(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) => redact_url(&url),
        Err(_) => match text.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}{tail}")
            }
            None => text.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(status: u16, body: &str) -> CouchError {
        CouchError::from_response("PUT", "/db", StatusCode::from_u16(status).expect("valid status"), body.as_bytes())
    }

    #[test]
    fn statuses_map_to_variants_with_couchdb_error_and_reason() {
        let e = map(412, r#"{"error":"file_exists","reason":"The database could not be created."}"#);
        match &e {
            CouchError::PreconditionFailed { error, reason, .. } => {
                assert_eq!(error, "file_exists");
                assert_eq!(reason, "The database could not be created.");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(map(404, r#"{"error":"not_found","reason":"missing"}"#).is_not_found());
        assert!(map(409, r#"{"error":"conflict","reason":"x"}"#).is_conflict());
        assert!(matches!(map(401, "{}"), CouchError::Unauthorized { .. }));
        assert!(matches!(map(403, "{}"), CouchError::Forbidden { .. }));
        assert!(matches!(map(400, "{}"), CouchError::BadRequest { .. }));
        assert!(matches!(map(503, "{}"), CouchError::Server { status: 503, .. }));
        assert!(matches!(map(429, "{}"), CouchError::Status { status: 429, .. }));
    }

    #[test]
    fn a_body_that_is_not_json_falls_back_to_the_status_text() {
        match map(500, "<html>oops</html>") {
            CouchError::Server { error, reason, .. } => {
                assert_eq!(error, "Internal Server Error");
                assert_eq!(reason, "Internal Server Error");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            map(400, ""),
            CouchError::BadRequest { ref error, .. } if error == "Bad Request"
        ));
    }

    #[test]
    fn transient_means_5xx_but_501_and_429() {
        assert!(map(500, "{}").is_transient());
        assert!(map(503, "{}").is_transient());
        assert!(!map(501, "{}").is_transient());
        assert!(map(429, "{}").is_transient());
        for s in [400, 401, 403, 404, 409, 412, 413] {
            assert!(!map(s, "{}").is_transient(), "{s}");
        }
        assert!(!CouchError::not_supported("x").is_transient());
    }

    #[test]
    fn display_names_method_path_and_reason() {
        let e = map(409, r#"{"error":"conflict","reason":"Document update conflict"}"#);
        assert_eq!(e.to_string(), "PUT /db: conflict (Document update conflict)");
        assert_eq!(e.status(), Some(409));
    }

    #[test]
    fn urls_lose_their_userinfo() {
        let url = url::Url::parse("https://admin:s3cret@couch.example:5984/db?x=1").expect("valid url");
        assert_eq!(redact_url(&url), "https://couch.example:5984/db?x=1");
        assert_eq!(redact_url_str("http://u:p%40ss@h:1/a"), "http://h:1/a");
        assert_eq!(redact_url_str("http://u:p@ss@h/a"), "http://h/a");
        assert_eq!(redact_url_str("not a url"), "not a url");
        assert_eq!(redact_url_str("x://u:p@[::1/a"), "x://[::1/a");
    }
}
