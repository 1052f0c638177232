//! The error taxonomy: one stable code per kind of failure, and the one table that maps each code
//! to its HTTP status. The server, the client and the OpenAPI document all read this table.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The wire form is the `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A request field is malformed (wrong type, out of range, bad format).
    InvalidArgument,
    /// A model, namespace, alias or tag name breaks the naming rule.
    InvalidName,
    /// An artifact path is not a safe relative path.
    InvalidPath,
    /// The request body is not valid JSON or does not match the expected shape.
    InvalidJson,
    /// Authentication is missing or invalid.
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    PermissionDenied,
    /// The addressed resource does not exist.
    NotFound,
    /// The resource already exists.
    AlreadyExists,
    /// The request conflicts with the resource's current state (e.g. the version is sealed).
    Conflict,
    /// A stage transition that the state machine does not allow.
    InvalidTransition,
    /// A move into a gated stage failed the policy's gates (metrics, metadata, model card); the
    /// error lists each failed rule with what was observed and what was required.
    GateFailed,
    /// An `If-Match` precondition did not hold: someone changed the resource first.
    PreconditionFailed,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// Uploaded bytes do not match the digest the client said they have.
    DigestMismatch,
    /// The upload ended before the announced length was received.
    IncompleteUpload,
    /// An `Idempotency-Key` was reused with a different request.
    IdempotencyKeyReused,
    /// The requested byte range cannot be served.
    RangeNotSatisfiable,
    /// Stored bytes failed verification against their digest; they were quarantined.
    BlobCorrupt,
    /// The service cannot answer right now (shutting down, storage unavailable); retry later.
    Unavailable,
    /// An unexpected internal failure.
    Internal,
}

impl ErrorCode {
    /// Every code, in a stable order (for documentation and tests).
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidName,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidJson,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::InvalidTransition,
        ErrorCode::GateFailed,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::DigestMismatch,
        ErrorCode::IncompleteUpload,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::BlobCorrupt,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The HTTP status this code is answered with.
    #[must_use]
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument
            | ErrorCode::InvalidName
            | ErrorCode::InvalidPath
            | ErrorCode::InvalidJson
            | ErrorCode::IncompleteUpload => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::Conflict | ErrorCode::InvalidTransition => 409,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::DigestMismatch | ErrorCode::IdempotencyKeyReused | ErrorCode::GateFailed => 422,
            ErrorCode::BlobCorrupt | ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The wire name, e.g. `invalid_name`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::GateFailed => "gate_failed",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::IncompleteUpload => "incomplete_upload",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::BlobCorrupt => "blob_corrupt",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a client may retry the same request unchanged and hope for success.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that an input broke: which code, which field, and a message that names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The error code the API answers with.
    pub code: ErrorCode,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// A human-readable message that says what the rule is.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field` with `code`.
    pub fn new(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
