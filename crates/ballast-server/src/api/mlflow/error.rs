//! MLflow's error body `{"error_code", "message"}` and the table from Ballast's codes to
//! MLflow's codes and statuses.
//!
//! MLflow answers `RESOURCE_ALREADY_EXISTS` and `INVALID_PARAMETER_VALUE` with 400 and
//! `RESOURCE_DOES_NOT_EXIST` with 404. A refused state change (conflict, invalid transition,
//! failed precondition) is `INVALID_STATE`, answered with 400 rather than MLflow's 500: the
//! MLflow client retries 5xx, and retrying a refused move only repeats the refusal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_core::{ErrorCode, ValidationError};
use ballast_store::StoreError;
use serde_json::json;

use crate::error::ApiError;

/// An error answered in MLflow's format.
#[derive(Debug, Clone)]
pub(crate) struct MlError {
    /// Ballast's code (mapped to MLflow's on the way out).
    pub code: ErrorCode,
    /// Message for people.
    pub message: String,
    /// An MLflow code to use instead of the mapped one.
    pub mlflow_code: Option<&'static str>,
}

impl MlError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            mlflow_code: None,
        }
    }

    /// `INVALID_PARAMETER_VALUE`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// `RESOURCE_DOES_NOT_EXIST`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `NOT_IMPLEMENTED` (501).
    pub(crate) fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: message.into(),
            mlflow_code: Some("NOT_IMPLEMENTED"),
        }
    }
}

/// MLflow's code and the HTTP status for a Ballast code.
pub(crate) fn mlflow_code(code: ErrorCode) -> (&'static str, u16) {
    match code {
        ErrorCode::InvalidArgument
        | ErrorCode::InvalidName
        | ErrorCode::InvalidPath
        | ErrorCode::InvalidJson
        | ErrorCode::DigestMismatch
        | ErrorCode::IncompleteUpload
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::RangeNotSatisfiable => ("INVALID_PARAMETER_VALUE", 400),
        ErrorCode::PayloadTooLarge => ("INVALID_PARAMETER_VALUE", 413),
        ErrorCode::Unauthenticated => ("UNAUTHENTICATED", 401),
        ErrorCode::PermissionDenied => ("PERMISSION_DENIED", 403),
        ErrorCode::NotFound => ("RESOURCE_DOES_NOT_EXIST", 404),
        ErrorCode::AlreadyExists => ("RESOURCE_ALREADY_EXISTS", 400),
        ErrorCode::Conflict
        | ErrorCode::InvalidTransition
        | ErrorCode::PreconditionFailed
        | ErrorCode::GateFailed => ("INVALID_STATE", 400),
        ErrorCode::BlobCorrupt | ErrorCode::Internal => ("INTERNAL_ERROR", 500),
        ErrorCode::Unavailable => ("TEMPORARILY_UNAVAILABLE", 503),
    }
}

impl IntoResponse for MlError {
    fn into_response(self) -> Response {
        let (code, status) = match self.mlflow_code {
            Some("NOT_IMPLEMENTED") => ("NOT_IMPLEMENTED", 501),
            Some(c) => (c, mlflow_code(self.code).1),
            None => mlflow_code(self.code),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code, message = %self.message, "MLflow request failed");
        }
        (
            status,
            Json(json!({ "error_code": code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<ApiError> for MlError {
    fn from(e: ApiError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<StoreError> for MlError {
    fn from(e: StoreError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<ValidationError> for MlError {
    fn from(e: ValidationError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<ballast_blob::BlobError> for MlError {
    fn from(e: ballast_blob::BlobError) -> Self {
        ApiError::from(e).into()
    }
}

/// The error table of the MLflow-compatible API, published in the OpenAPI document as the
/// `x-mlflow-errors` extension: the body's shape and, for every Ballast code, the MLflow
/// `error_code` and HTTP status it is answered with.
pub(crate) fn error_table() -> serde_json::Value {
    let mut codes: Vec<serde_json::Value> = ErrorCode::ALL
        .iter()
        .map(|c| {
            let (mlflow, status) = mlflow_code(*c);
            json!({ "ballast_code": c.as_str(), "error_code": mlflow, "status": status })
        })
        .collect();
    codes.push(json!({
        "error_code": "NOT_IMPLEMENTED", "status": 501,
        "when": "multipart artifact uploads (mlflow-artifacts mpu/*), as MLflow's own server without multipart"
    }));
    codes.push(json!({
        "error_code": "ENDPOINT_NOT_FOUND", "status": 404,
        "when": "an MLflow route this server does not serve"
    }));
    json!({
        "description": "Errors of the MLflow-compatible API (/api/2.0/mlflow/…, /ajax-api/2.0/mlflow/…, /api/2.0/mlflow-artifacts/…) are answered as MLflow answers them: a body {\"error_code\", \"message\"} with MLflow's status mapping (RESOURCE_ALREADY_EXISTS is 400). A refused state change is INVALID_STATE with 400 rather than MLflow's 500, which its client would retry. See docs/mlflow.md.",
        "body": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {
                "error_code": { "type": "string" },
                "message": { "type": "string" }
            }
        },
        "codes": codes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_table_lists_every_code_once() {
        let table = error_table();
        let codes = table["codes"].as_array().cloned().unwrap_or_default();
        for c in ErrorCode::ALL {
            let rows: Vec<_> = codes.iter().filter(|r| r["ballast_code"] == c.as_str()).collect();
            assert_eq!(rows.len(), 1, "{c:?}");
            assert_eq!(rows[0]["status"], mlflow_code(c).1);
        }
        let exists = codes
            .iter()
            .find(|r| r["ballast_code"] == "already_exists")
            .map(|r| (r["error_code"].clone(), r["status"].clone()));
        assert_eq!(exists, Some((json!("RESOURCE_ALREADY_EXISTS"), json!(400))));
    }
}
