//! A CouchDB HTTP client: typed calls, typed errors, retries. Knows nothing of Kubernetes.
//!
//! One [`CouchClient`] per server; [`CouchClient::with_credentials`] and
//! [`CouchClient::anonymous`] act as someone else over the same connections. What the server
//! can do is read once from `GET /` ([`Capabilities`]); calls that need a missing capability
//! fall back (`/_config`, `_replication_state`) or answer [`CouchError::NotSupported`].

mod backup;
mod client;
mod config;
mod database;
mod documents;
mod error;
mod feeds;
mod info;
mod path;
mod replicate;
mod replication;
mod server;
mod users;

pub use backup::{BulkGetDoc, BulkGetError, BulkGetResult};
pub use client::{CouchClient, RequestObserver, RequestRecord, call_template};
pub use config::{CouchConfig, Credentials, RetryPolicy, install_crypto_provider};
pub use database::{ClusterInfo, CreateDatabase, DatabaseInfo, DatabaseProps, DatabaseSizes, Principals, Security};
pub use documents::{AllDocs, AllDocsQuery, AllDocsRow, AllDocsValue, BulkDocResult, DocWrite, PurgeResult};
pub use error::{CouchError, TransportKind, redact_url, redact_url_str};
pub use feeds::{Change, ChangeRev, Changes, ChangesQuery, DbUpdate, DbUpdates, DbUpdatesQuery, FeedMode};
pub use info::{Capabilities, ServerInfo};
pub use path::{encode_db, encode_doc_id};
pub use replicate::{ALL_DBS_PAGE, Replicated};
pub use replication::{
    REPLICATOR_DB, ReplicationInfo, ReplicationState, ReplicationStatus, SchedulerJob, status_from_replicator_doc,
};
pub use server::{Membership, SINGLE_NODE_NAME};
pub use users::{USERS_DB, UserContext, UserDoc, user_doc_id};
