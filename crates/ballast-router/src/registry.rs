//! The registry source: long-polls the registry's `GET /v1/routing/snapshot` and offers every
//! new snapshot to the router, which applies it only when it is valid and newer (and persists
//! it as last-known-good first). When the registry is unreachable the active snapshot keeps
//! serving and the poll retries with exponential back-off.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ballast_api::routing::RoutingSnapshot;
use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::state::{unix_ms, Shared};

/// Largest snapshot accepted from the registry.
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Longest long-poll the registry grants (`wait` is capped to it).
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Why one fetch did not give a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry URL is not an `http://host[:port][/path]` URL.
    #[error("invalid registry URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer (connection refused, reset, timed out).
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered with an unexpected status.
    #[error("registry answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The body is not a snapshot.
    #[error("the registry's snapshot cannot be read: {0}")]
    Body(String),
    /// The registry token is unusable.
    #[error("invalid registry token: {0}")]
    Token(String),
}

/// What the registry said, and when the router last heard from it (for `/routes`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RegistryStatus {
    /// The registry's base URL.
    pub url: String,
    /// Last successful answer (ms since the Unix epoch).
    pub last_ok_unix_ms: Option<u64>,
    /// The last failure, cleared by the next success (but kept while `behind` is set).
    pub last_error: Option<String>,
    /// The registry's current generation when it was last asked for it in full (on each
    /// (re)connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_generation: Option<u64>,
    /// Set while the registry's current generation is lower than the active snapshot's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<String>,
}

/// A client of the registry's snapshot endpoint.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// `Bearer <token>`, marked sensitive so it is never logged.
    authorization: Option<http::HeaderValue>,
}

/// The result of one (long-)poll.
#[derive(Debug)]
pub enum Poll {
    /// A snapshot newer than asked for (not yet validated).
    Snapshot(Box<RoutingSnapshot>),
    /// Nothing newer within the wait.
    NotModified,
}

impl RegistryClient {
    /// A client of the registry at `base` (`http://host:port`).
    ///
    /// # Errors
    /// The URL is not usable (this build speaks plain HTTP to the registry).
    pub fn new(base: &str) -> Result<Self, FetchError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|e: http::uri::InvalidUri| FetchError::Url {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.query().is_some() {
            return Err(FetchError::Url {
                url: base,
                reason: "expected http://host[:port][/path] (no TLS to the registry in this build)".into(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            base,
            client,
            authorization: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    ///
    /// # Errors
    /// The token cannot be sent in a header (control characters, spaces).
    pub fn with_token(mut self, token: &crate::config::RegistryToken) -> Result<Self, FetchError> {
        let t = token.expose().trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FetchError::Token(
                "the registry token must be printable ASCII without spaces".into(),
            ));
        }
        let mut v = http::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|e| FetchError::Token(e.to_string()))?;
        v.set_sensitive(true);
        self.authorization = Some(v);
        Ok(self)
    }

    /// Asks for a snapshot newer than `after` (any, when `None`), waiting up to `wait` for one.
    ///
    /// # Errors
    /// Unreachable registry, unexpected answer or unreadable body.
    pub async fn poll(&self, after: Option<u64>, wait: Duration) -> Result<Poll, FetchError> {
        let wait = wait.min(MAX_WAIT);
        let mut url = format!("{}/v1/routing/snapshot", self.base);
        if let Some(a) = after {
            url.push_str(&format!("?wait={}&after_generation={a}", wait.as_secs()));
        }
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| FetchError::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        let limit = wait + Duration::from_secs(15);
        let resp = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| FetchError::Unreachable(format!("no answer within {limit:?}")))?
            .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Poll::NotModified);
        }
        let body = tokio::time::timeout(
            limit,
            Limited::new(resp.into_body(), MAX_SNAPSHOT_BYTES).collect(),
        )
        .await
        .map_err(|_| FetchError::Body("the body did not arrive in time".into()))?
        .map_err(|e| FetchError::Body(e.to_string()))?
        .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(FetchError::Status { status, body: text });
        }
        let snapshot: RoutingSnapshot =
            serde_json::from_slice(&body).map_err(|e| FetchError::Body(e.to_string()))?;
        Ok(Poll::Snapshot(Box::new(snapshot)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Polls forever: offers each new snapshot; on failure keeps the active one and backs off. On
/// each (re)connection it first asks for the registry's current snapshot in full, to notice a
/// registry whose generation is lower than the active one (it would answer 304 forever).
pub(crate) async fn watch(shared: Arc<Shared>, client: RegistryClient) {
    let min = shared.config.registry_retry_min;
    let max = shared.config.registry_retry_max.max(min);
    let wait = shared.config.registry_wait.min(MAX_WAIT);
    let mut backoff = min;
    let mut checked = false;
    loop {
        let after = checked.then(|| shared.active().snapshot.generation);
        let started = tokio::time::Instant::now();
        let poll_wait = if checked { wait } else { Duration::ZERO };
        match client.poll(after, poll_wait).await {
            Ok(poll) => {
                shared.registry_ok(unix_ms(SystemTime::now()));
                backoff = min;
                if !checked {
                    checked = true;
                    if let Poll::Snapshot(s) = &poll {
                        shared.registry_generation(s.generation);
                    }
                }
                // A long-poll answered well before its wait is up, or no long-poll at all (a wait
                // under a second).
                let early =
                    wait < Duration::from_secs(1) || started.elapsed() + Duration::from_secs(1) < wait;
                if matches!(poll, Poll::NotModified) && early {
                    tokio::time::sleep(min).await;
                }
                if let Poll::Snapshot(s) = poll {
                    let generation = s.generation;
                    match shared.offer(*s, "registry") {
                        Ok(outcome) => {
                            tracing::info!(generation, ?outcome, "registry snapshot offered");
                            shared.registry_generation(generation);
                        }
                        Err(crate::state::OfferRejected::Older { .. }) if after.is_none() => {
                            // The registry's current snapshot, older than ours (reported above):
                            // go on long-polling for a newer one.
                        }
                        Err(e) => {
                            // Refused (invalid or older): keep the active one, ask again later
                            // rather than spinning on the same answer.
                            tracing::warn!(generation, error = %e, "registry snapshot refused");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(max);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "registry poll failed; serving the active snapshot");
                shared.registry_failed(e.to_string());
                checked = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
