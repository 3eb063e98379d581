//! Where a backup's objects live (an S3 bucket or a mounted directory, under a prefix), and
//! the streamed writes and reads of those objects with their sha256.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};

use super::error::BackupError;

/// Bytes per multipart part (S3's minimum is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploading at once: memory of an upload stays under `PART_BYTES * (1 + this)`.
const PARTS_IN_FLIGHT: usize = 2;

/// The connection settings of an S3-compatible bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key` (SeaweedFS, MinIO).
    pub path_style: bool,
    pub allow_http: bool,
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// Where a backup's objects live: an object store and a prefix (the backup's own folder).
#[derive(Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's Display names the bucket or directory, never the keys.
        f.debug_struct("Target").field("store", &self.store.to_string()).field("prefix", &self.prefix.as_ref()).finish()
    }
}

fn prefix_path(prefix: &str) -> Result<Path, BackupError> {
    Path::parse(prefix.trim_matches('/'))
        .map_err(|e| BackupError::Format(format!("invalid backup prefix {prefix:?}: {e}")))
}

/// A virtual-hosted-style endpoint names the bucket in its host (object_store takes it as
/// given): `https://s3.example` becomes `https://BUCKET.s3.example`, unless it already is.
fn bucket_host(endpoint: &str, bucket: &str) -> Result<String, BackupError> {
    let invalid = || BackupError::Format(format!("invalid S3 endpoint {endpoint:?}"));
    let mut url = url::Url::parse(endpoint).map_err(|_| invalid())?;
    let host = url.host_str().ok_or_else(invalid)?.to_owned();
    if !host.starts_with(&format!("{bucket}.")) {
        url.set_host(Some(&format!("{bucket}.{host}"))).map_err(|_| invalid())?;
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl Target {
    /// An S3-compatible bucket. A few quick retries only, so an unreachable store is reported
    /// within seconds and the caller (the controller) retries on its own schedule.
    pub fn s3(s3: &S3Settings, prefix: &str) -> Result<Target, BackupError> {
        crate::couch::install_crypto_provider();
        let options = ClientOptions::new()
            .with_allow_http(s3.allow_http)
            .with_allow_invalid_certificates(s3.insecure_skip_verify)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        // A store's 500 or 503 is worth waiting out (SeaweedFS answered one to a part upload
        // while growing its volumes under load): 5 retries over about 8 s, then the error.
        let backoff =
            BackoffConfig { init_backoff: Duration::from_millis(250), max_backoff: Duration::from_secs(4), base: 2.0 };
        let retry = RetryConfig { backoff, max_retries: 5, retry_timeout: Duration::from_secs(30) };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key)
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_allow_http(s3.allow_http)
            .with_client_options(options)
            .with_retry(retry);
        match &s3.endpoint {
            Some(endpoint) if !s3.path_style => builder = builder.with_endpoint(bucket_host(endpoint, &s3.bucket)?),
            Some(endpoint) => builder = builder.with_endpoint(endpoint),
            None => {}
        }
        let store = builder.build().map_err(BackupError::from)?;
        Ok(Target { store: Arc::new(store), prefix: prefix_path(prefix)? })
    }

    /// Any object store (e.g. one a caller configured itself), under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Target, BackupError> {
        Ok(Target { store, prefix: prefix_path(prefix)? })
    }

    /// A mounted directory; created when missing.
    pub fn volume(path: &std::path::Path, prefix: &str) -> Result<Target, BackupError> {
        std::fs::create_dir_all(path)
            .map_err(|e| BackupError::io(format!("cannot create directory {}", path.display()), &e))?;
        let store = LocalFileSystem::new_with_prefix(path).map_err(BackupError::from)?;
        Ok(Target { store: Arc::new(store), prefix: prefix_path(prefix)? })
    }

    /// The prefix, without leading or trailing `/`.
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    /// The location of `name` (relative to the prefix).
    pub(crate) fn path(&self, name: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// Writes a small object at once; returns its sha256 (hex) and size.
    pub(crate) async fn put_small(&self, name: &str, bytes: Vec<u8>) -> Result<(String, u64), BackupError> {
        let sha = hex::encode(Sha256::digest(&bytes));
        let len = bytes.len() as u64;
        self.store.put(&self.path(name), PutPayload::from(bytes)).await?;
        Ok((sha, len))
    }

    /// Starts a streamed (multipart) write of `name`.
    pub(crate) async fn writer(&self, name: &str) -> Result<ObjectWriter, BackupError> {
        let upload = self.store.put_multipart(&self.path(name)).await?;
        Ok(ObjectWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
            sha: Sha256::new(),
            bytes: 0,
        })
    }

    /// The whole of a small object; `None` when it does not exist.
    pub(crate) async fn get_small(&self, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        match self.store.get(&self.path(name)).await {
            Ok(got) => Ok(Some(got.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams an object through `chunk`, piece by piece; returns its sha256 (hex) and size.
    /// `Ok(None)` when the object does not exist.
    pub(crate) async fn read_each<F>(&self, name: &str, mut chunk: F) -> Result<Option<(String, u64)>, BackupError>
    where
        F: FnMut(&[u8]) -> Result<(), BackupError>,
    {
        let got = match self.store.get(&self.path(name)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut stream = got.into_stream();
        let mut sha = Sha256::new();
        let mut bytes = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            sha.update(&piece);
            bytes += piece.len() as u64;
            chunk(&piece)?;
        }
        Ok(Some((hex::encode(sha.finalize()), bytes)))
    }

    /// The pieces of an object, as they come; `Ok(None)` when it does not exist.
    pub(crate) async fn stream(
        &self,
        name: &str,
    ) -> Result<Option<impl futures::Stream<Item = Result<impl AsRef<[u8]>, BackupError>> + Unpin>, BackupError> {
        match self.store.get(&self.path(name)).await {
            Ok(got) => Ok(Some(got.into_stream().map(|piece| piece.map_err(BackupError::from)))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` when it is there. Checked first with a HEAD, so that a bucket that lets
    /// couchshare write but not delete takes a backup under a fresh prefix; an object the
    /// credentials may not even see is left as it is (whoever reads it later cannot see it either).
    pub(crate) async fn remove_if_present(&self, name: &str) -> Result<(), BackupError> {
        match self.store.head(&self.path(name)).await {
            Ok(_) => self.delete(name).await,
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name`; a missing object is fine.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), BackupError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A streamed object write that hashes what it uploads. Dropped without [`finish`]
/// (`ObjectWriter::finish`), the upload is left incomplete and no object appears.
pub(crate) struct ObjectWriter {
    upload: WriteMultipart,
    sha: Sha256,
    bytes: u64,
}

impl ObjectWriter {
    /// Adds `data`, waiting while too many parts are uploading (bounded memory).
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.sha.update(data);
        self.bytes += data.len() as u64;
        self.upload.write(data);
        Ok(())
    }

    /// Completes the object; returns its sha256 (hex) and size.
    pub(crate) async fn finish(self) -> Result<(String, u64), BackupError> {
        self.upload.finish().await?;
        Ok((hex::encode(self.sha.finalize()), self.bytes))
    }

    /// Gives the upload up (its parts are removed).
    pub(crate) async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::debug!(error = %e, "aborting a backup upload failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_is_not_in_debug_output() {
        let s3 = S3Settings {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            path_style: true,
            allow_http: true,
            insecure_skip_verify: false,
        };
        let shown = format!("{s3:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let target = Target::s3(&s3, "/backups/db-1/").expect("target");
        assert_eq!(target.prefix(), "backups/db-1");
        assert_eq!(target.path("data.jsonl").as_ref(), "backups/db-1/data.jsonl");
        assert!(!format!("{target:?}").contains("very-secret"));
    }

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket_in_their_host() {
        assert_eq!(bucket_host("https://s3.example:9000", "b").expect("valid"), "https://b.s3.example:9000");
        assert_eq!(bucket_host("https://b.s3.example/", "b").expect("valid"), "https://b.s3.example");
        assert!(bucket_host("not a url", "b").is_err());
    }
}
