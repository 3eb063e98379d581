//! What can go wrong backing up or restoring, and the condition reason each failure shows as.

use crate::couch::CouchError;

/// A failed backup, restore or check. Messages never carry a secret key or credentials.
#[derive(thiserror::Error, Debug)]
pub enum BackupError {
    /// The object store refused or failed: `denied` for bad credentials or missing
    /// permissions, `transient` when trying again later may work (unreachable, 5xx).
    #[error("object store: {reason}")]
    Store { reason: String, denied: bool, transient: bool },
    /// CouchDB refused or failed.
    #[error(transparent)]
    Couch(#[from] CouchError),
    /// An object of the backup is not what the manifest says (size or sha256), or is missing.
    #[error("backup object {object} is corrupt: {detail}")]
    Corrupt { object: String, detail: String },
    /// A restore's target database already holds documents.
    #[error("database {database} is not empty ({documents} documents): a restore needs an empty database")]
    NotEmpty { database: String, documents: u64 },
    /// A file that is not a backup couchshare can restore (bad JSON, attachment stubs, ...).
    #[error("backup format: {0}")]
    Format(String),
}

impl BackupError {
    /// The condition reason: `StoreUnavailable`, `StoreAccessDenied`, `BackupCorrupt`,
    /// `DatabaseNotEmpty`, `BackupFormat` or `CouchDBError`.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Store { denied: true, .. } => "StoreAccessDenied",
            BackupError::Store { .. } => "StoreUnavailable",
            BackupError::Couch(_) => "CouchDBError",
            BackupError::Corrupt { .. } => "BackupCorrupt",
            BackupError::NotEmpty { .. } => "DatabaseNotEmpty",
            BackupError::Format(_) => "BackupFormat",
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            BackupError::Store { transient, .. } => *transient,
            BackupError::Couch(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// S3 error codes that mean the credentials or the permissions are wrong.
const DENIED_CODES: [&str; 5] =
    ["AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"];

/// The HTTP status an object_store message names (`... status code: 403 Forbidden ...`).
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// Longest store message kept (S3 error bodies are XML documents).
const MESSAGE_CHARS: usize = 600;

/// A message on one line, whitespace runs collapsed, cut to [`MESSAGE_CHARS`].
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &joined[..at]),
        None => joined,
    }
}

/// A file error that says the store may not be written or read.
fn io_denied(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(kind, K::PermissionDenied | K::ReadOnlyFilesystem)
}

/// A file error that may pass by itself (a full disk, an interrupted call, a stale NFS mount).
fn io_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::StorageFull | K::QuotaExceeded | K::Interrupted | K::TimedOut | K::StaleNetworkFileHandle | K::ResourceBusy
    )
}

impl BackupError {
    /// A directory of a volume target could not be created.
    pub(crate) fn io(what: String, e: &std::io::Error) -> Self {
        BackupError::Store {
            reason: format!("{what}: {e}"),
            denied: io_denied(e.kind()),
            transient: io_transient(e.kind()),
        }
    }
}

impl From<object_store::Error> for BackupError {
    fn from(e: object_store::Error) -> Self {
        use object_store::Error as E;
        // The whole chain: object_store wraps the HTTP status and S3's error body in sources.
        let mut text = e.to_string();
        let mut message = text.clone();
        let mut innermost = None;
        let mut io_kind = None;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                io_kind = io_kind.or(Some(io.kind()));
            }
            let said = s.to_string();
            text.push_str(": ");
            text.push_str(&said);
            innermost = Some(said);
            source = s.source();
        }
        // The root cause (e.g. "Connection refused") when the message does not already say it.
        if let Some(root) = innermost.filter(|r| !message.contains(r.as_str())) {
            message = format!("{message} ({root})");
        }
        let status = status_in(&text);
        let (denied, transient) = match &e {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => (true, false),
            // A mounted directory: a local file error.
            E::Generic { .. } if io_kind.is_some_and(io_denied) => (true, false),
            E::Generic { store: "LocalFileSystem", .. } => (false, io_kind.is_some_and(io_transient)),
            E::Generic { .. } | E::JoinError { .. } => {
                let denied = matches!(status, Some(401 | 403)) || DENIED_CODES.iter().any(|c| text.contains(c));
                // No status: the request got no answer (refused, reset, timed out).
                let transient = !denied && status.is_none_or(|s| s >= 500 || s == 429 || s == 408);
                (denied, transient)
            }
            _ => (false, false),
        };
        BackupError::Store { reason: one_line(&message), denied, transient }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: message.to_owned().into() }
    }

    #[test]
    fn store_failures_map_to_their_reasons() {
        let refused = BackupError::from(generic("Error performing PUT http://h/b/k - client error (Connect)"));
        assert_eq!(refused.reason(), "StoreUnavailable");
        assert!(refused.is_transient());
        let denied = BackupError::from(generic(
            "Server returned non-2xx status code: 403 Forbidden: <Code>SignatureDoesNotMatch</Code>",
        ));
        assert_eq!(denied.reason(), "StoreAccessDenied");
        assert!(!denied.is_transient());
        let failing = BackupError::from(generic("Server returned non-2xx status code: 503 Service Unavailable"));
        assert!(failing.is_transient());
        let local = |kind| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::new(kind, "file")),
        };
        assert_eq!(BackupError::from(local(std::io::ErrorKind::PermissionDenied)).reason(), "StoreAccessDenied");
        assert!(BackupError::from(local(std::io::ErrorKind::StorageFull)).is_transient());
        assert!(!BackupError::from(local(std::io::ErrorKind::InvalidData)).is_transient());
        let bad = BackupError::from(generic("Server returned non-2xx status code: 400 Bad Request"));
        assert!(!bad.is_transient());
        assert_eq!(bad.reason(), "StoreUnavailable");
        let long = BackupError::from(generic(&format!("a\n  b {}", "x".repeat(2000))));
        let BackupError::Store { reason, .. } = long else { panic!("a store error") };
        assert!(reason.starts_with("Generic S3 error: a b x") && reason.chars().count() <= MESSAGE_CHARS + 1);
    }

    #[test]
    fn other_failures_have_their_own_reasons() {
        let corrupt = BackupError::Corrupt { object: "data.jsonl".into(), detail: "sha256".into() };
        assert_eq!(corrupt.reason(), "BackupCorrupt");
        assert_eq!(BackupError::NotEmpty { database: "d".into(), documents: 1 }.reason(), "DatabaseNotEmpty");
        assert_eq!(BackupError::Format("x".into()).reason(), "BackupFormat");
        assert_eq!(BackupError::Couch(CouchError::InvalidConfig("x".into())).reason(), "CouchDBError");
    }
}
