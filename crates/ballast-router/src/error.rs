//! Router errors: what went wrong, where it came from (upstream, client, router) and whether
//! another attempt may fix it. Fallback decisions branch on [`ErrorKind`] and
//! [`RouterError::retryable`], never on message text.

use std::time::Duration;

use ballast_api::routing::AttemptErrorClass;
use http::StatusCode;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// A target: refused, timed out, answered 5xx/429, broke the connection.
    Upstream,
    /// The client: a bad request, a body too large, a body that broke while being read.
    Client,
    /// The router itself.
    Internal,
}

impl ErrorSource {
    /// The lowercase name used in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Client => "client",
            Self::Internal => "internal",
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused, reset or unreachable before the request was sent.
    Connect,
    /// Connecting took longer than the route's `connect_ms`.
    ConnectTimeout,
    /// No response (headers and first body byte) within `first_byte_ms`.
    FirstByteTimeout,
    /// The request's overall deadline ran out.
    Deadline,
    /// The target answered 5xx.
    UpstreamStatus,
    /// The target answered 429.
    RateLimited,
    /// The connection broke after the request started or before the first body byte.
    UpstreamIo,
    /// The client's request body broke while it was read or forwarded.
    ClientBody,
    /// The request body is larger than the router accepts for this kind of route.
    BodyTooLarge,
    /// The request is malformed (e.g. an OpenAI body without `model`).
    InvalidRequest,
    /// No route matches the request.
    UnknownRoute,
    /// The route has no target to try.
    NoTarget,
    /// The retry budget is spent: the router does not retry now.
    RetryBudget,
    /// A bug or an impossible state in the router.
    Internal,
}

/// An error met while routing a request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RouterError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where it came from.
    pub origin: ErrorSource,
    /// Whether another target may succeed where this attempt failed.
    pub retryable: bool,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// The upstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// Human-readable detail (for logs and the error body only).
    pub message: String,
}

impl RouterError {
    /// An error of `kind`, with its source and retryability derived from the kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let (origin, retryable) = match kind {
            ErrorKind::Connect
            | ErrorKind::ConnectTimeout
            | ErrorKind::FirstByteTimeout
            | ErrorKind::UpstreamStatus
            | ErrorKind::RateLimited
            | ErrorKind::UpstreamIo => (ErrorSource::Upstream, true),
            ErrorKind::Deadline => (ErrorSource::Upstream, false),
            ErrorKind::ClientBody
            | ErrorKind::BodyTooLarge
            | ErrorKind::InvalidRequest
            | ErrorKind::UnknownRoute => (ErrorSource::Client, false),
            ErrorKind::NoTarget | ErrorKind::RetryBudget | ErrorKind::Internal => {
                (ErrorSource::Internal, false)
            }
        };
        Self {
            kind,
            origin,
            retryable,
            status: None,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Adds the upstream status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether this failure counts against the target's health (outlier detection).
    #[must_use]
    pub fn counts_against_target(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connect
                | ErrorKind::ConnectTimeout
                | ErrorKind::FirstByteTimeout
                | ErrorKind::UpstreamStatus
                | ErrorKind::UpstreamIo
        )
    }

    /// The class listed in a final failure, for attempt errors.
    #[must_use]
    pub fn attempt_class(&self) -> AttemptErrorClass {
        match self.kind {
            ErrorKind::Connect => AttemptErrorClass::Connect,
            ErrorKind::ConnectTimeout => AttemptErrorClass::ConnectTimeout,
            ErrorKind::FirstByteTimeout => AttemptErrorClass::FirstByteTimeout,
            ErrorKind::Deadline => AttemptErrorClass::Deadline,
            ErrorKind::UpstreamStatus => AttemptErrorClass::UpstreamStatus,
            ErrorKind::RateLimited => AttemptErrorClass::RateLimited,
            _ => AttemptErrorClass::UpstreamIo,
        }
    }

    /// Stable code of the error body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::UnknownRoute => "unknown_route",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::BodyTooLarge => "payload_too_large",
            ErrorKind::ClientBody => "client_body",
            ErrorKind::NoTarget => "no_healthy_target",
            ErrorKind::RetryBudget => "retry_budget_exhausted",
            ErrorKind::Deadline | ErrorKind::FirstByteTimeout | ErrorKind::ConnectTimeout => {
                "deadline_exceeded"
            }
            ErrorKind::Internal => "internal",
            ErrorKind::Connect
            | ErrorKind::UpstreamStatus
            | ErrorKind::RateLimited
            | ErrorKind::UpstreamIo => "upstream_failed",
        }
    }

    /// The status the router answers with when this error ends the request.
    #[must_use]
    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::UnknownRoute => StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest | ErrorKind::ClientBody => StatusCode::BAD_REQUEST,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Deadline | ErrorKind::FirstByteTimeout | ErrorKind::ConnectTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Connect
            | ErrorKind::UpstreamStatus
            | ErrorKind::RateLimited
            | ErrorKind::UpstreamIo
            | ErrorKind::RetryBudget => StatusCode::BAD_GATEWAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_source_and_retryability() {
        let e = RouterError::new(ErrorKind::Connect, "x");
        assert!(e.retryable && e.origin == ErrorSource::Upstream && e.counts_against_target());
        let e = RouterError::new(ErrorKind::RateLimited, "x");
        assert!(e.retryable && !e.counts_against_target());
        let e = RouterError::new(ErrorKind::ClientBody, "x");
        assert!(!e.retryable && e.origin == ErrorSource::Client);
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        let e = RouterError::new(ErrorKind::Deadline, "x");
        assert!(!e.retryable);
        assert_eq!(e.http_status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            RouterError::new(ErrorKind::RetryBudget, "x").code(),
            "retry_budget_exhausted"
        );
    }
}
