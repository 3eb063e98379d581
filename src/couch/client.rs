//! The connection to one CouchDB server and the request plumbing every call goes through:
//! URL building, error mapping, retries, debug logging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use url::Url;

use super::config::{CouchConfig, Credentials, RetryPolicy, install_crypto_provider, parse_base_url, tls_config};
use super::error::{CouchError, redact_url};
use super::info::ServerInfo;

/// The generation of the next client built (see [`CouchClient::instance`]).
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A CouchDB client. Cheap to clone; clones share the connection pool and the cached
/// [`ServerInfo`].
#[derive(Clone)]
pub struct CouchClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<Credentials>,
    request_timeout: Duration,
    retry: RetryPolicy,
    pub(super) server_info: Arc<OnceCell<ServerInfo>>,
    observer: Option<RequestObserver>,
    /// See [`CouchClient::instance`].
    generation: u64,
}

/// What one request did, for metrics: never a body, never credentials.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path with names and ids replaced, e.g. `/{db}/_security` (see [`call_template`]).
    pub call: String,
    /// HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Called after every request (e.g. to count it); must be cheap.
pub type RequestObserver = Arc<dyn Fn(&RequestRecord<'_>) + Send + Sync>;

/// A request path with database names, document ids and other values replaced, so that
/// calls can be counted without one series per database: `/{db}/_security`,
/// `/_users/{id}`, `/_scheduler/docs/_replicator`.
pub fn call_template(path: &str) -> String {
    let mut out = String::new();
    let mut previous = "";
    for (i, segment) in path.trim_start_matches('/').split('/').enumerate() {
        out.push('/');
        // `_scheduler/docs` and `_scheduler/jobs` are API words, not names.
        let api_word = previous == "_scheduler" && matches!(segment, "docs" | "jobs");
        previous = segment;
        if segment.starts_with('_') || segment.is_empty() || api_word {
            out.push_str(segment);
        } else if i == 0 {
            out.push_str("{db}");
        } else {
            out.push_str("{id}");
        }
    }
    out
}

impl std::fmt::Debug for CouchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouchClient")
            .field("base", &redact_url(&self.base))
            .field("credentials", &self.credentials)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// One request, described before it is sent so that it can be sent again.
pub(crate) struct Request {
    pub method: Method,
    /// Already percent-encoded, starting with `/`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    /// Replaces the client's request timeout (longpoll feeds).
    pub timeout: Option<Duration>,
    pub retry: bool,
    /// Send without the client's credentials (`POST /_session` checks others).
    pub anonymous: bool,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            timeout: None,
            retry: true,
            anonymous: false,
        }
    }

    pub fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self, CouchError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CouchError::encode(self.method.as_str(), &self.path, e))?;
        self.body = Some(bytes);
        Ok(self)
    }
}

impl CouchClient {
    /// A client for `config.url`. Refuses URLs that are not http(s) or carry credentials,
    /// and CA PEM without certificates. Installs ring as rustls's provider if none is.
    pub fn new(config: CouchConfig) -> Result<Self, CouchError> {
        install_crypto_provider();
        let base = parse_base_url(&config.url)?;
        let tls = tls_config(config.ca_pem.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| CouchError::InvalidConfig(format!("HTTP client: {e}")))?;
        Ok(CouchClient {
            http,
            base,
            credentials: config.credentials,
            request_timeout: config.request_timeout,
            retry: config.retry,
            server_info: Arc::new(OnceCell::new()),
            observer: None,
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The same client, reporting every request to `observer`.
    pub fn with_observer(&self, observer: RequestObserver) -> Self {
        CouchClient { observer: Some(observer), ..self.clone() }
    }

    /// The same server and connection pool, acting as another user.
    pub fn with_credentials(&self, credentials: Credentials) -> Self {
        CouchClient { credentials: Some(credentials), ..self.clone() }
    }

    /// The same server and connection pool, without credentials.
    pub fn anonymous(&self) -> Self {
        CouchClient { credentials: None, ..self.clone() }
    }

    /// The same client with another bound on each request.
    pub fn with_request_timeout(&self, request_timeout: Duration) -> Self {
        CouchClient { request_timeout, ..self.clone() }
    }

    /// The same client with another retry policy (`RetryPolicy::none()` in tests).
    pub fn with_retry(&self, retry: RetryPolicy) -> Self {
        CouchClient { retry, ..self.clone() }
    }

    /// The server's URL (never carries credentials).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Which client this is, as a number that grows with each client built in this process: its
    /// clones (another user, an observer) share it, and a client built again (for a new password
    /// or CA) has a larger one. A task started with a newer client is never replaced by one with
    /// an older client (a pass that resolved its client before a rotation).
    pub fn instance(&self) -> u64 {
        self.generation
    }

    /// The user requests are made as, if any.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.username.as_str())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn url_for(&self, req: &Request) -> Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}{}", req.path));
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        url
    }

    /// Sends once; any status comes back as it is (the caller maps it).
    pub(crate) async fn send_raw(&self, req: &Request) -> Result<(StatusCode, Vec<u8>), CouchError> {
        let url = self.url_for(req);
        let method = req.method.as_str();
        let mut builder = self
            .http
            .request(req.method.clone(), url.clone())
            .timeout(req.timeout.unwrap_or(self.request_timeout))
            .header(reqwest::header::ACCEPT, "application/json");
        if let (Some(c), false) = (&self.credentials, req.anonymous) {
            builder = builder.basic_auth(&c.username, Some(&c.password));
        }
        if let Some(body) = &req.body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let started = Instant::now();
        let result = async {
            let response = builder.send().await?;
            let status = response.status();
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        if let Some(observer) = &self.observer {
            let status = result.as_ref().ok().map(|(s, _)| s.as_u16());
            observer(&RequestRecord { method, call: call_template(&req.path), status, elapsed });
        }
        match result {
            Ok((status, body)) => {
                // Method, path and status only: bodies of _users and _replicator carry passwords.
                tracing::debug!(method, path = %req.path, status = status.as_u16(), elapsed_ms, "couchdb request");
                Ok((status, body))
            }
            Err(e) => {
                let err = CouchError::transport(method, &url, e);
                tracing::debug!(method, path = %req.path, error = %err, elapsed_ms, "couchdb request failed");
                Err(err)
            }
        }
    }

    async fn send_once(&self, req: &Request) -> Result<Vec<u8>, CouchError> {
        let (status, body) = self.send_raw(req).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(CouchError::from_response(req.method.as_str(), &req.path, status, &body))
        }
    }

    /// Sends, retrying transient failures per the policy; non-2xx answers become errors.
    /// A write retried after a lost answer may come back as a `Conflict`: callers re-read.
    pub(crate) async fn send(&self, req: &Request) -> Result<Vec<u8>, CouchError> {
        if !req.retry {
            return self.send_once(req).await;
        }
        (|| self.send_once(req))
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(CouchError::is_transient)
            .notify(|e, wait| {
                tracing::debug!(method = req.method.as_str(), path = %req.path, error = %e, wait_ms = wait.as_millis() as u64, "retrying couchdb request");
            })
            .await
    }

    /// Sends and decodes the JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(&self, req: Request) -> Result<T, CouchError> {
        let body = self.send(&req).await?;
        serde_json::from_slice(&body).map_err(|e| CouchError::decode(req.method.as_str(), &req.path, e))
    }

    /// Like [`call`](Self::call), with 404 as `None`.
    pub(crate) async fn call_opt<T: DeserializeOwned>(&self, req: Request) -> Result<Option<T>, CouchError> {
        match self.call(req).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_templates_hide_names_and_ids() {
        assert_eq!(call_template("/drafft%2Fx/_security"), "/{db}/_security");
        assert_eq!(call_template("/_users/org.couchdb.user%3Aalice"), "/_users/{id}");
        assert_eq!(call_template("/_scheduler/docs/_replicator"), "/_scheduler/docs/_replicator");
        assert_eq!(call_template("/_node/couchdb%40h/_config/cors/origins"), "/_node/{id}/_config/{id}/{id}");
        assert_eq!(call_template("/"), "/");
        assert_eq!(call_template("/db/_local/couchshare.io-owner"), "/{db}/_local/{id}");
    }

    #[test]
    fn paths_join_the_base_path_prefix() {
        let mut config = CouchConfig::new("http://h:1/couch/", None);
        config.retry = RetryPolicy::none();
        let client = CouchClient::new(config).expect("client");
        let req = Request::new(Method::GET, "/a%2Fb/doc").query("include_docs", true);
        assert_eq!(client.url_for(&req).as_str(), "http://h:1/couch/a%2Fb/doc?include_docs=true");
    }
}
