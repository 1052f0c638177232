//! What can go wrong when talking to the registry: the server said no (with its [`ErrorBody`]),
//! or the registry could not be reached or answered something that is not Ballast.
//!
//! Every message ends by saying what to do next, because it is what a person reads in the CLI.

use ballast_api::ErrorBody;
use ballast_core::ErrorCode;

/// An error from a [`crate::Client`] call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The registry answered with an error body.
    #[error("{}: {}{}", .body.error.code, .body.error.message, hint_suffix(.body.error.code))]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// The server's error body (code, message, field).
        body: ErrorBody,
        /// The `x-request-id` of the failed request, for the server's logs.
        request_id: Option<String>,
    },

    /// No connection could be made to the registry.
    #[error("cannot reach the registry at {base_url}: {cause}; is `ballast server` running there? set BALLAST_URL (or --url) to the registry's address")]
    Connect {
        /// The registry's base URL.
        base_url: String,
        /// The innermost cause (e.g. "Connection refused").
        cause: String,
    },

    /// The connection broke or timed out during the request.
    #[error("the connection to the registry broke during {method} {url}: {cause}; retry the command (the registry may be overloaded or restarting)")]
    Transport {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// The innermost cause.
        cause: String,
    },

    /// The answer was an HTTP error without a Ballast error body (a proxy, or not a registry).
    #[error("the server at {url} answered HTTP {status} without a Ballast error body{}; check that BALLAST_URL points at a Ballast registry", snippet_suffix(.snippet))]
    Http {
        /// HTTP status.
        status: u16,
        /// Full request URL.
        url: String,
        /// Start of the body, if any.
        snippet: String,
    },

    /// A success answer whose body is not what the API promises.
    #[error("unexpected answer from {url}: {cause}; this client (ballast {}) may not match the registry's version", env!("CARGO_PKG_VERSION"))]
    Decode {
        /// Full request URL.
        url: String,
        /// What did not parse.
        cause: String,
    },

    /// The base URL is not usable.
    #[error("invalid registry URL {url:?}: {reason}; expected something like http://127.0.0.1:8080")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// An argument was refused before anything was sent (bad header value, unsafe path, …).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was refused (e.g. "actor", "artifact path").
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A local file could not be read for an upload.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn hint_suffix(code: ErrorCode) -> String {
    hint_for(code).map_or_else(String::new, |h| format!(" ({h})"))
}

fn snippet_suffix(snippet: &str) -> String {
    if snippet.is_empty() {
        String::new()
    } else {
        format!(" ({snippet:?})")
    }
}

/// What to do next about an error code, when the server's message may not say it.
#[must_use]
pub fn hint_for(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::Unauthenticated => Some("set BALLAST_TOKEN (or --token) to a valid token"),
        ErrorCode::PermissionDenied => Some("ask an administrator of the registry for access"),
        ErrorCode::IdempotencyKeyReused => {
            Some("an Idempotency-Key may only be reused for the very same request")
        }
        ErrorCode::Unavailable => Some("the registry is busy or shutting down: retry in a moment"),
        ErrorCode::Internal => Some("retry; if it persists, look for the request id in the registry's logs"),
        _ => None,
    }
}

impl ClientError {
    /// The server's error body, when the server answered with one.
    #[must_use]
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Self::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The server's error code, when the server answered with one.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        self.body().map(|b| b.error.code)
    }

    /// The HTTP status, when the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the addressed resource does not exist.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the registry could not be reached or the connection broke.
    #[must_use]
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Transport { .. })
    }

    /// Whether repeating the same call may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Transport { .. } => true,
            Self::Api { body, .. } => body.error.code.is_retryable(),
            Self::Http { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// What to do next, when it is not already in the message.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        self.code().and_then(hint_for)
    }
}

/// The innermost message of an error's source chain (reqwest's outer layers only say "error
/// sending request", the cause is at the bottom).
pub(crate) fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_api::ErrorDetail;

    #[test]
    fn api_error_displays_code_message_and_hint() {
        let e = ClientError::Api {
            status: 503,
            body: ErrorBody {
                error: ErrorDetail {
                    code: ErrorCode::Unavailable,
                    message: "shutting down".into(),
                    field: None,
                },
            },
            request_id: None,
        };
        let s = e.to_string();
        assert!(
            s.starts_with("unavailable: shutting down (the registry is busy"),
            "{s}"
        );
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert!(e.is_retryable());
    }

    #[test]
    fn connect_error_says_what_to_do() {
        let e = ClientError::Connect {
            base_url: "http://127.0.0.1:1".into(),
            cause: "Connection refused".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("cannot reach the registry at http://127.0.0.1:1"),
            "{s}"
        );
        assert!(s.contains("BALLAST_URL"), "{s}");
        assert!(e.is_retryable() && e.is_transport());
    }
}
