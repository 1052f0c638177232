//! The MLflow-compatible API: the Model Registry REST API under `/api/2.0/mlflow/` (and
//! `/ajax-api/2.0/mlflow/`), the artifacts proxy under `/api/2.0/mlflow-artifacts/`, and the
//! tracking subset that registration flows call. Existing `mlflow` clients work unchanged.
//!
//! Wire conventions are MLflow's: GET fields in the query string (repeated keys for lists),
//! other methods' fields in a JSON body, int64 millisecond timestamps, `version` as a string, and
//! errors as `{"error_code", "message"}`. Underneath, every call is a native Ballast operation:
//! versions are numbered, sealed, staged, aliased, audited and evented like any other.

mod artifacts;
mod convert;
mod error;
mod filter;
mod models;
mod request;
mod tracking;
mod versions;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub(crate) use artifacts::{native_namespace, proxy_path};
pub(crate) use error::{error_table, MlError};
pub(crate) use request::{field_str, request_fields, MlRequest};

/// Result of an MLflow handler.
pub(crate) type MlResult<T> = Result<T, MlError>;

/// Every MLflow route, under both prefixes the MLflow client and UI use.
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for prefix in ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"] {
        let rm = format!("{prefix}/registered-models");
        let mv = format!("{prefix}/model-versions");
        r = r
            .route(&format!("{rm}/create"), post(models::create))
            .route(&format!("{rm}/get"), get(models::get))
            .route(&format!("{rm}/rename"), post(models::rename))
            .route(&format!("{rm}/update"), axum::routing::patch(models::update))
            .route(&format!("{rm}/delete"), axum::routing::delete(models::delete))
            .route(&format!("{rm}/search"), get(models::search))
            .route(
                &format!("{rm}/get-latest-versions"),
                get(models::latest_versions).post(models::latest_versions),
            )
            .route(&format!("{rm}/set-tag"), post(models::set_tag))
            .route(
                &format!("{rm}/delete-tag"),
                axum::routing::delete(models::delete_tag),
            )
            .route(
                &format!("{rm}/alias"),
                get(models::get_alias)
                    .post(models::set_alias)
                    .delete(models::delete_alias),
            )
            .route(&format!("{mv}/create"), post(versions::create))
            .route(&format!("{mv}/get"), get(versions::get))
            .route(&format!("{mv}/update"), axum::routing::patch(versions::update))
            .route(&format!("{mv}/delete"), axum::routing::delete(versions::delete))
            .route(&format!("{mv}/search"), get(versions::search))
            .route(&format!("{mv}/transition-stage"), post(versions::transition))
            .route(&format!("{mv}/get-download-uri"), get(versions::download_uri))
            .route(&format!("{mv}/set-tag"), post(versions::set_tag))
            .route(
                &format!("{mv}/delete-tag"),
                axum::routing::delete(versions::delete_tag),
            );
        r = tracking::routes(r, prefix);
        r = r.route(&format!("{prefix}/{{*rest}}"), axum::routing::any(unknown));
    }
    artifacts::routes(r)
}

/// An MLflow route this server does not serve, answered the way MLflow's client understands.
async fn unknown(uri: axum::http::Uri) -> MlError {
    MlError {
        code: ballast_core::ErrorCode::NotFound,
        message: format!(
            "{} is not served by Ballast's MLflow-compatible API (see docs/mlflow.md)",
            uri.path()
        ),
        mlflow_code: Some("ENDPOINT_NOT_FOUND"),
    }
}
