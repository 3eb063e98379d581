//! The controller's errors: each has a `reason()` used for the Ready condition, the Event and
//! the metric label, and says whether waiting (for a change) or retrying (with backoff) helps.

use crate::couch::CouchError;
use crate::plan::database::Refusal;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// A referenced Secret lacks a key (or it is not UTF-8).
    #[error("Secret {namespace}/{name} has no usable key {key:?}")]
    SecretKeyMissing {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The referenced CouchServer does not exist.
    #[error("CouchServer {namespace}/{name} not found")]
    ServerNotFound {
        /// Namespace of the CouchServer.
        namespace: String,
        /// Name of the CouchServer.
        name: String,
    },
    /// The referenced CouchServer does not allow this namespace.
    #[error(
        "CouchServer {namespace}/{name} does not allow references from namespace {from} (see its spec.allowedNamespaces)"
    )]
    NotAllowed {
        /// Namespace of the CouchServer.
        namespace: String,
        /// Name of the CouchServer.
        name: String,
        /// The referring namespace.
        from: String,
    },
    /// A referenced database does not exist.
    #[error("{what} not found")]
    DatabaseNotFound {
        /// What was looked for.
        what: String,
    },
    /// Something the resource needs is not ready yet (a database not created, a grant not
    /// merged, the server's system databases): it waits for that thing's own trigger (a watch,
    /// a reconciler's requeue, a CouchDB feed), with the resync as the only timer.
    #[error("waiting for {what}")]
    Waiting {
        /// What it waits for.
        what: String,
    },
    /// A step CouchDB has not finished and that nothing announces (a stopped job still listed
    /// by a node's scheduler, a purged copy that came back): retried with backoff.
    #[error("waiting for {what}")]
    Settling {
        /// What has not settled.
        what: String,
    },
    /// A Mango selector is not well formed.
    #[error("{0}")]
    InvalidSelector(String),
    /// A share's remote endpoint cannot be used (no client can be built for its URL): nothing
    /// meant for it is sent anywhere else.
    #[error("remote endpoint {0}")]
    RemoteUnusable(String),
    /// CouchDB's replicator refused a replication document for a reason other than its selector
    /// (its `before_doc_update` check: an endpoint it cannot parse, another user's document).
    #[error("CouchDB refused the replication document: {0}")]
    ReplicationRefused(String),
    /// The spec cannot be acted on (what admission could not check). Only for what a change of
    /// the resource's spec fixes: the reconciler waits for one.
    #[error("{0}")]
    InvalidSpec(String),
    /// A Secret the operator would write exists and is not its own for this object.
    #[error("{0}")]
    SecretConflict(String),
    /// The TLS settings could not be used (a CA certificate that does not parse).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A CouchDB client could not be built for reasons that are not the spec's (the HTTP stack,
    /// the TLS provider).
    #[error("CouchDB client: {0}")]
    ClientConfig(String),
    /// The operator could not start (a port that cannot be bound).
    #[error("startup: {0}")]
    Startup(String),
    /// The operator failed on its own data (a value it could not encode): a bug, never the
    /// spec's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// CouchDB could not be reached.
    #[error("CouchDB at {url} is unreachable: {source}")]
    Unreachable {
        /// The server URL (never with credentials).
        url: String,
        /// What failed.
        #[source]
        source: Box<CouchError>,
    },
    /// CouchDB refused the admin credentials.
    #[error("CouchDB refused the admin credentials: {0}")]
    Unauthorized(#[source] Box<CouchError>),
    /// A CouchDB call failed.
    #[error("{step}: {source}")]
    Couch {
        /// What the operator was doing.
        step: &'static str,
        /// What CouchDB answered.
        #[source]
        source: Box<CouchError>,
    },
    /// Some configuration keys could not be applied.
    #[error("configuration not applied: {0}")]
    ConfigFailed(String),
    /// The database may not be touched.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A reference or act that this namespace may not make (no consent, not trusted, an
    /// object managed by another resource). Nothing is written for it.
    #[error(transparent)]
    NotPermitted(#[from] crate::plan::tenancy::Refused),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Leadership(String),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// A backup or a restore failed: its object store, its data, or CouchDB while it ran.
    #[error("{step}: {source}")]
    Backup {
        /// What the operator was doing.
        step: &'static str,
        /// What failed.
        #[source]
        source: Box<crate::backup::BackupError>,
    },
}

impl From<crate::backup::BackupError> for Error {
    fn from(source: crate::backup::BackupError) -> Self {
        Error::Backup { step: "backup", source: Box::new(source) }
    }
}

impl Error {
    /// A short `PascalCase` reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::ServerNotFound { .. } => "ServerNotFound",
            Error::NotAllowed { .. } => "NotAllowed",
            Error::DatabaseNotFound { .. } => "DatabaseNotFound",
            Error::Waiting { .. } | Error::Settling { .. } => "Waiting",
            Error::InvalidSelector(_) => "InvalidSelector",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretConflict(_) => "SecretConflict",
            Error::RemoteUnusable(_) => "RemoteUnusable",
            Error::ReplicationRefused(_) => "ReplicationRefused",
            Error::Tls(_) => "InvalidTLS",
            Error::ClientConfig(_) => "ClientConfigFailed",
            Error::Startup(_) => "StartupFailed",
            Error::Internal(_) => "InternalError",
            Error::Unreachable { .. } => "Unreachable",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Couch { .. } => "CouchDBError",
            Error::ConfigFailed(_) => "ConfigFailed",
            Error::Refused(refusal) => refusal.reason(),
            Error::NotPermitted(refused) => refused.reason(),
            Error::Kube(_) => "KubernetesError",
            Error::Finalizer(_) => "FinalizerError",
            Error::Leadership(_) => "LeadershipError",
            Error::Backup { source, .. } => source.reason(),
        }
    }

    /// Whether retrying soon can help (backoff), as opposed to waiting for a change of the
    /// resource or of something it references (watches requeue it; the resync is the net).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Kube(_)
            | Error::Finalizer(_)
            | Error::ConfigFailed(_)
            | Error::Waiting { .. }
            | Error::Settling { .. } => true,
            // A document update conflict (409) means what was read is already stale (on a
            // cluster, a quorum read can miss a write a moment old): the next reconcile reads
            // again, so retry soon rather than at the resync.
            Error::Couch { source, .. } => source.is_transient() || source.is_conflict(),
            Error::Backup { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// Whether only a change of the resource helps (`Action::await_change()`): what the spec
    /// says is wrong. Neither transient nor this: retried at the resync.
    /// Whether the object was refused (its reason is one of
    /// [`crate::plan::tenancy::REFUSAL_REASONS`]): it owns nothing on the server while it is.
    pub fn refuses(&self) -> bool {
        crate::plan::tenancy::REFUSAL_REASONS.contains(&self.reason())
    }

    pub fn waits_for_change(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::InvalidSelector(_) | Error::Tls(_) | Error::SecretConflict(_))
    }

    /// Maps a failure to build a CouchDB client: a bad URL is the spec's, a bad CA
    /// certificate the TLS settings', anything else the client's own.
    pub fn client_config(source: CouchError) -> Self {
        let CouchError::InvalidConfig(message) = &source else {
            return Error::ClientConfig(source.to_string());
        };
        if message.starts_with("CouchDB URL") {
            Error::InvalidSpec(source.to_string())
        } else if message.contains("CA") {
            Error::Tls(message.clone())
        } else {
            Error::ClientConfig(message.clone())
        }
    }

    /// Maps a failure of a backup or a restore during `step`.
    pub fn backup(step: &'static str, source: crate::backup::BackupError) -> Self {
        Error::Backup { step, source: Box::new(source) }
    }

    /// Whether the error policy waits for a trigger (no timer but the resync) rather than
    /// backing off: the object waits for something that announces itself.
    pub fn waits_for_trigger(&self) -> bool {
        matches!(self, Error::Waiting { .. })
    }

    /// Maps a CouchDB error from `step`, telling an unreachable server apart, and a server whose
    /// system database is missing (a cluster not finished yet: the CouchServer creates it, and
    /// wakes the objects on the server when it has) from a failure.
    pub fn couch(step: &'static str, url: &str, source: CouchError) -> Self {
        if let Some(db) = missing_system_database(&source) {
            return Error::Waiting {
                what: format!(
                    "the server's {db} database, which the CouchServer creates when it finishes the cluster ({step}: {source})"
                ),
            };
        }
        if matches!(source, CouchError::Transport { .. }) {
            Error::Unreachable { url: url.to_string(), source: Box::new(source) }
        } else if matches!(source, CouchError::Unauthorized { .. }) {
            Error::Unauthorized(Box::new(source))
        } else {
            Error::Couch { step, source: Box::new(source) }
        }
    }
}

/// The system database a 404 says is missing (`Database does not exist.` on `/_users/…`,
/// `/_replicator/…` or `/_global_changes/…`), if that is what it says.
fn missing_system_database(error: &CouchError) -> Option<&'static str> {
    let CouchError::NotFound { path, reason, .. } = error else { return None };
    if !reason.contains("Database does not exist") {
        return None;
    }
    let db = path.trim_start_matches('/').split(['/', '?']).next()?;
    crate::plan::server::SYSTEM_DATABASES.iter().copied().find(|s| *s == db)
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_policies() {
        // (error, reason, transient, waits for a change of the spec)
        let cases: Vec<(Error, &str, bool, bool)> = vec![
            (Error::InvalidSpec("x".into()), "InvalidSpec", false, true),
            (Error::InvalidSelector("x".into()), "InvalidSelector", false, true),
            (Error::SecretConflict("x".into()), "SecretConflict", false, true),
            (Error::Tls("x".into()), "InvalidTLS", false, true),
            (Error::ClientConfig("x".into()), "ClientConfigFailed", false, false),
            (Error::Startup("x".into()), "StartupFailed", false, false),
            (Error::Internal("x".into()), "InternalError", false, false),
            (Error::ConfigFailed("x".into()), "ConfigFailed", true, false),
            (Error::Waiting { what: "x".into() }, "Waiting", true, false),
            (Error::Settling { what: "x".into() }, "Waiting", true, false),
            (Error::Finalizer("x".into()), "FinalizerError", true, false),
            (Error::Leadership("x".into()), "LeadershipError", false, false),
            (
                Error::couch(
                    "writing the user",
                    "http://couch",
                    CouchError::Conflict { method: "PUT".into(), path: "/_users/x".into(), reason: "conflict".into() },
                ),
                "CouchDBError",
                true,
                false,
            ),
        ];
        for (error, reason, transient, waits) in cases {
            assert_eq!(error.reason(), reason, "{error:?}");
            assert_eq!(error.is_transient(), transient, "{error:?}");
            assert_eq!(error.waits_for_change(), waits, "{error:?}");
            assert!(!(transient && waits), "{error:?}: one policy");
        }
    }

    #[test]
    fn a_missing_system_database_is_a_wait_and_other_404s_are_not() {
        let not_found = |path: &str, reason: &str| CouchError::NotFound {
            method: "PUT".into(),
            path: path.into(),
            reason: reason.into(),
        };
        let waits =
            Error::couch("writing the user", "u", not_found("/_users/org.couchdb.user:a", "Database does not exist."));
        assert!(waits.waits_for_trigger(), "{waits:?}");
        assert!(waits.to_string().contains("_users database"), "{waits}");
        let replicator = Error::couch("x", "u", not_found("/_replicator/doc", "Database does not exist."));
        assert!(replicator.waits_for_trigger(), "{replicator:?}");
        for other in [
            not_found("/_users/org.couchdb.user:a", "missing"),
            not_found("/appdb/doc", "Database does not exist."),
            not_found("/_users_x/doc", "Database does not exist."),
        ] {
            let e = Error::couch("x", "u", other);
            assert!(!e.waits_for_trigger(), "{e:?}");
            assert_eq!(e.reason(), "CouchDBError");
        }
        assert!(!Error::Settling { what: "x".into() }.waits_for_trigger(), "backs off instead");
    }

    #[test]
    fn client_build_failures_blame_the_right_part() {
        let cases = [
            ("CouchDB URL \"ftp://x\" must start with http:// or https://", "InvalidSpec"),
            ("CA certificate PEM: bad base64", "InvalidTLS"),
            ("the CA PEM holds no certificate", "InvalidTLS"),
            ("HTTP client: builder error", "ClientConfigFailed"),
            ("TLS: no protocol versions", "ClientConfigFailed"),
        ];
        for (message, reason) in cases {
            let error = Error::client_config(CouchError::InvalidConfig(message.into()));
            assert_eq!(error.reason(), reason, "{message}");
        }
    }
}
