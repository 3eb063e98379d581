//! What it takes to reach a CouchDB server: URL, credentials, custom CA, timeouts and the
//! retry policy, and the rustls configuration built from them.

use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBuilder;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use url::Url;

use super::error::CouchError;

/// A CouchDB user name and password, sent as HTTP Basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials { username: username.into(), password: password.into() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// How transient failures are retried: exponential backoff with jitter, at most
/// `max_retries` extra attempts and `max_total_delay` of sleeping in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_total_delay: Duration,
}

impl RetryPolicy {
    /// One attempt only.
    pub fn none() -> Self {
        RetryPolicy { max_retries: 0, ..RetryPolicy::default() }
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total_delay))
            .with_jitter()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_total_delay: Duration::from_secs(20),
        }
    }
}

/// Everything needed to reach one CouchDB server.
#[derive(Clone)]
pub struct CouchConfig {
    /// `http://` or `https://`, optionally with a path prefix; no `user:password@`.
    pub url: String,
    /// The credentials requests carry; `None` for anonymous requests.
    pub credentials: Option<Credentials>,
    /// Extra trusted CA certificates (PEM), on top of the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Bound on each request (longpoll feeds add their own wait to it).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl CouchConfig {
    pub fn new(url: impl Into<String>, credentials: Option<Credentials>) -> Self {
        CouchConfig {
            url: url.into(),
            credentials,
            ca_pem: None,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

impl std::fmt::Debug for CouchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouchConfig")
            .field("url", &super::error::redact_url_str(&self.url))
            .field("credentials", &self.credentials)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Installs ring as rustls's process-wide provider; a no-op when one is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, CouchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in ca_certificates(pem)? {
            roots.add(cert).map_err(|e| CouchError::InvalidConfig(format!("CA certificate: {e}")))?;
        }
    }
    // An explicit provider, so the client never depends on which one the process installed.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| CouchError::InvalidConfig(format!("TLS: {e}")))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Every certificate of a PEM bundle, in order; other sections (a key, say) are skipped. A
/// malformed certificate section, or a bundle without one, is an error.
fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CouchError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CouchError::InvalidConfig(format!("CA certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CouchError::InvalidConfig("the CA PEM holds no certificate".into()));
    }
    Ok(certs)
}

pub(crate) fn parse_base_url(text: &str) -> Result<Url, CouchError> {
    let shown = super::error::redact_url_str(text);
    let mut url = Url::parse(text).map_err(|e| CouchError::InvalidConfig(format!("CouchDB URL {shown:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CouchError::InvalidConfig(format!("CouchDB URL {shown:?} must start with http:// or https://")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CouchError::InvalidConfig(format!(
            "CouchDB URL {shown:?} must not carry credentials; pass them separately"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
