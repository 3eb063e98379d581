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
    /// merged); retried with backoff, and watches requeue it sooner.
    #[error("waiting for {what}")]
    Waiting {
        /// What it waits for.
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
    /// The spec cannot be acted on (what admission could not check).
    #[error("{0}")]
    InvalidSpec(String),
    /// The TLS settings could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
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
            Error::Waiting { .. } => "Waiting",
            Error::InvalidSelector(_) => "InvalidSelector",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::RemoteUnusable(_) => "RemoteUnusable",
            Error::ReplicationRefused(_) => "ReplicationRefused",
            Error::Tls(_) => "InvalidTLS",
            Error::Unreachable { .. } => "Unreachable",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Couch { .. } => "CouchDBError",
            Error::ConfigFailed(_) => "ConfigFailed",
            Error::Refused(Refusal::AlreadyExists { .. }) => "AlreadyExists",
            Error::Refused(Refusal::Conflict { .. }) => "Conflict",
            Error::Refused(Refusal::NotPermitted(refused)) | Error::NotPermitted(refused) => refused.reason(),
            Error::Kube(_) => "KubernetesError",
            Error::Finalizer(_) => "FinalizerError",
            Error::Leadership(_) => "LeadershipError",
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
            | Error::Waiting { .. } => true,
            Error::Couch { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// Maps a CouchDB error from `step`, telling an unreachable server apart.
    pub fn couch(step: &'static str, url: &str, source: CouchError) -> Self {
        if matches!(source, CouchError::Transport { .. }) {
            Error::Unreachable { url: url.to_string(), source: Box::new(source) }
        } else if matches!(source, CouchError::Unauthorized { .. }) {
            Error::Unauthorized(Box::new(source))
        } else {
            Error::Couch { step, source: Box::new(source) }
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}
