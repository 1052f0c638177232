//! The request machinery under every [`Client`] method: URL building, the common headers
//! (token, actor, idempotency key, preconditions), retries with backoff, and turning answers
//! into typed values or a [`ClientError`].
//!
//! Retry rule: a request is repeated on a connection failure or a `503` only when repeating it
//! is harmless — a `GET`/`HEAD`, or a write that carries an `Idempotency-Key` (the same key is
//! reused on every attempt, so the server applies the write once). A connection that could not
//! be opened at all is always retried: nothing was sent. Bodies that cannot be replayed (a
//! caller's stream) are sent once.

use std::path::PathBuf;
use std::time::Duration;

use ballast_api::ErrorBody;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{innermost_cause, ClientError};
use crate::types::{Pairs, Precondition, ProgressFn};

/// Header naming who acts (recorded in the audit trail).
pub const ACTOR_HEADER: &str = "x-ballast-actor";
/// Header carrying a file's SHA-256.
pub const SHA256_HEADER: &str = "x-ballast-sha256";
/// Header making a write safe to repeat.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 disables retries).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each further failure.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts (also caps a server's `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait after failed attempt number `attempt` (from 1): exponential, capped, with
    /// jitter between half and all of it so that many clients do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_backoff);
        let jitter: f64 = rand::random::<f64>().mul_add(0.5, 0.5);
        capped.mul_f64(jitter)
    }
}

/// A typed client of the Ballast registry's `/v1` HTTP API.
///
/// Cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    token: Option<HeaderValue>,
    actor: Option<HeaderValue>,
    retry: RetryPolicy,
    idempotency_keys: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("actor", &self.actor)
            .field("retry", &self.retry)
            .field("idempotency_keys", &self.idempotency_keys)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`] with non-default settings.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    actor: Option<String>,
    retry: RetryPolicy,
    idempotency_keys: bool,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer TOKEN` on every request.
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sends `x-ballast-actor: NAME` on every request.
    #[must_use]
    pub fn actor(mut self, actor: Option<String>) -> Self {
        self.actor = actor;
        self
    }

    /// Replaces the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Whether writes carry a fresh random `Idempotency-Key` per call (default: yes). Without
    /// keys, writes are only retried when no connection could be opened.
    #[must_use]
    pub fn idempotency_keys(mut self, on: bool) -> Self {
        self.idempotency_keys = on;
        self
    }

    /// How long to wait for a TCP/TLS connection (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for an unusable base URL, [`ClientError::InvalidInput`] for a
    /// token or actor that cannot be sent in a header.
    pub fn build(self) -> Result<Client, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: self.base_url.clone(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(self.base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("the URL has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .map(|t| {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| ClientError::InvalidInput {
                        what: "token",
                        reason: "the token must be printable ASCII".into(),
                    })?;
                v.set_sensitive(true);
                Ok::<_, ClientError>(v)
            })
            .transpose()?;
        let actor = self
            .actor
            .filter(|a| !a.is_empty())
            .map(|a| {
                HeaderValue::from_str(&a).map_err(|_| ClientError::InvalidInput {
                    what: "actor",
                    reason: format!("{a:?} must be printable ASCII"),
                })
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("ballast-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::InvalidInput {
                what: "HTTP client settings",
                reason: innermost_cause(&e),
            })?;
        Ok(Client {
            http,
            base,
            token,
            actor,
            retry: self.retry,
            idempotency_keys: self.idempotency_keys,
        })
    }
}

/// What a request sends as its body.
pub(crate) enum CallBody {
    /// Nothing.
    Empty,
    /// JSON bytes (replayable).
    Json(Bytes),
    /// A local file, opened anew on every attempt (replayable).
    File {
        path: PathBuf,
        len: u64,
        progress: Option<ProgressFn>,
    },
    /// A caller's body that can be sent only once.
    Once(Option<reqwest::Body>),
}

/// One logical request, possibly sent several times.
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    pub body: CallBody,
    pub key: Option<String>,
    pub pre: Option<Precondition>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    /// Adds a precondition.
    pub(crate) fn precondition(mut self, pre: Option<Precondition>) -> Self {
        self.pre = pre;
        self
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Result<Self, ClientError> {
        let v = HeaderValue::from_str(value).map_err(|_| ClientError::InvalidInput {
            what: "header value",
            reason: format!("{name}: {value:?} is not printable ASCII"),
        })?;
        self.headers.push((HeaderName::from_static(name), v));
        Ok(self)
    }

    /// Sets a JSON body.
    pub(crate) fn json<B: Serialize>(mut self, body: &B) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::InvalidInput {
            what: "request body",
            reason: e.to_string(),
        })?;
        self.body = CallBody::Json(Bytes::from(bytes));
        Ok(self)
    }
}

/// A fresh idempotency key: 128 random bits in hex.
pub(crate) fn new_idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// A client of the registry at `base_url` (e.g. `http://127.0.0.1:8080`), sending
    /// `Authorization: Bearer TOKEN` when `token` is set and `x-ballast-actor` when `actor` is.
    ///
    /// # Errors
    /// When the URL is unusable or the token/actor cannot be sent in a header.
    pub fn new(base_url: &str, token: Option<String>, actor: Option<String>) -> Result<Self, ClientError> {
        Self::builder(base_url).token(token).actor(actor).build()
    }

    /// A builder for non-default retry, timeout or idempotency settings.
    #[must_use]
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            token: None,
            actor: None,
            retry: RetryPolicy::default(),
            idempotency_keys: true,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The registry's base URL.
    #[must_use]
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` (each percent-encoded as one path segment) below the base URL.
    pub(crate) fn url(&self, segments: &[&str], query: &Pairs) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "the URL cannot have a path".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// A request without a body; writes get an idempotency key (unless disabled).
    pub(crate) fn call(&self, method: Method, url: Url) -> Call {
        let writes = !matches!(method, Method::GET | Method::HEAD);
        Call {
            key: (writes && self.idempotency_keys).then(new_idempotency_key),
            method,
            url,
            body: CallBody::Empty,
            pre: None,
            headers: Vec::new(),
        }
    }

    /// Sends a call, retrying as the module documentation says; `Ok` only for a 2xx answer.
    pub(crate) async fn send(&self, mut call: Call) -> Result<Response, ClientError> {
        let replay_safe = matches!(call.method, Method::GET | Method::HEAD) || call.key.is_some();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut rb = self.http.request(call.method.clone(), call.url.clone());
            if let Some(t) = &self.token {
                rb = rb.header(reqwest::header::AUTHORIZATION, t.clone());
            }
            if let Some(a) = &self.actor {
                rb = rb.header(ACTOR_HEADER, a.clone());
            }
            if let Some(k) = &call.key {
                rb = rb.header(IDEMPOTENCY_HEADER, k.as_str());
            }
            if let Some(p) = call.pre {
                let (name, value) = p.header();
                rb = rb.header(name, value);
            }
            for (name, value) in &call.headers {
                rb = rb.header(name.clone(), value.clone());
            }
            let replayable = match &mut call.body {
                CallBody::Empty => true,
                CallBody::Json(bytes) => {
                    rb = rb.header(CONTENT_TYPE, "application/json").body(bytes.clone());
                    true
                }
                CallBody::File { path, len, progress } => {
                    rb = rb
                        .header(CONTENT_LENGTH, *len)
                        .body(file_body(path, progress.clone()).await?);
                    true
                }
                CallBody::Once(body) => {
                    if let Some(b) = body.take() {
                        rb = rb.body(b);
                    }
                    false
                }
            };
            let may_retry = replayable && attempt < self.retry.max_attempts;
            match rb.send().await {
                Err(e) => {
                    let harmless =
                        e.is_connect() || (replay_safe && (e.is_timeout() || e.is_request() || e.is_body()));
                    if may_retry && harmless {
                        let wait = self.retry.backoff(attempt);
                        tracing::debug!(method = %call.method, url = %call.url, attempt, error = %innermost_cause(&e), ?wait, "retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(self.transport_error(&call, &e));
                }
                Ok(resp) => {
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && may_retry && replay_safe {
                        let wait = retry_after(&resp)
                            .unwrap_or_else(|| self.retry.backoff(attempt))
                            .min(self.retry.max_backoff);
                        tracing::debug!(method = %call.method, url = %call.url, attempt, ?wait, "registry unavailable; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if resp.status().is_success() {
                        return Ok(resp);
                    }
                    return Err(error_from_response(&call, resp).await);
                }
            }
        }
    }

    /// Sends a call and decodes its JSON answer.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let url = call.url.to_string();
        let resp = self.send(call).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            method: "reading the answer of".into(),
            url: url.clone(),
            cause: innermost_cause(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            cause: e.to_string(),
        })
    }

    /// Sends a call whose answer has no body worth reading (204).
    pub(crate) async fn send_empty(&self, call: Call) -> Result<(), ClientError> {
        self.send(call).await.map(drop)
    }

    fn transport_error(&self, call: &Call, e: &reqwest::Error) -> ClientError {
        let cause = innermost_cause(e);
        if e.is_connect() {
            ClientError::Connect {
                base_url: self.base.as_str().trim_end_matches('/').to_owned(),
                cause,
            }
        } else {
            ClientError::Transport {
                method: call.method.to_string(),
                url: call.url.to_string(),
                cause,
            }
        }
    }
}

/// A streaming body reading `path`, reporting progress.
async fn file_body(
    path: &std::path::Path,
    progress: Option<ProgressFn>,
) -> Result<reqwest::Body, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ClientError::Io {
            context: format!("cannot open {} for upload", path.display()),
            source,
        })?;
    if let Some(p) = &progress {
        p(0);
    }
    let mut sent = 0u64;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        if let (Ok(bytes), Some(p)) = (&chunk, &progress) {
            sent += bytes.len() as u64;
            p(sent);
        }
        chunk
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// `Retry-After` in seconds, when the server sent one.
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Turns a non-2xx answer into a [`ClientError`], reading the server's error body.
async fn error_from_response(call: &Call, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.bytes().await.unwrap_or_default();
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(&bytes) {
        return ClientError::Api {
            status,
            body,
            request_id,
        };
    }
    let text = String::from_utf8_lossy(&bytes);
    let snippet: String = text.trim().chars().take(200).collect();
    ClientError::Http {
        status,
        url: call.url.to_string(),
        snippet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(base, Some("secret".into()), Some("alice".into())).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = client("http://127.0.0.1:8080");
        let u = c
            .url(&["v1", "models", "acme", "bot", "files", "a b#?.bin"], &vec![])
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/v1/models/acme/bot/files/a%20b%23%3F.bin"
        );
        let c = client("http://host/registry/");
        let u = c
            .url(&["v1", "models"], &vec![("tag", "a=b&c".into())])
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(u.as_str(), "http://host/registry/v1/models?tag=a%3Db%26c");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://x/?q=1", "mailto:a@b"] {
            assert!(
                matches!(Client::new(bad, None, None), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Client::new("http://x", None, Some("bad\nactor".into())),
            Err(ClientError::InvalidInput { what: "actor", .. })
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let s = format!("{:?}", client("http://x"));
        assert!(!s.contains("secret"), "{s}");
    }

    #[test]
    fn writes_get_keys_reads_do_not() {
        let c = client("http://x");
        let url = c.url(&["v1"], &vec![]).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(c.call(Method::POST, url.clone()).key.is_some());
        assert!(c.call(Method::GET, url.clone()).key.is_none());
        let a = c.call(Method::PUT, url.clone()).key;
        let b = c.call(Method::PUT, url).key;
        assert_ne!(a, b);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let d = p.backoff(attempt);
            assert!(d <= p.max_backoff, "{d:?}");
        }
        assert!(p.backoff(1) <= p.initial_backoff);
        assert!(p.backoff(1) >= p.initial_backoff / 2);
    }
}
