//! `/v1/audit`: the hash-chained audit trail and its verification.

use axum::extract::State;
use axum::Json;
use ballast_api::AuditList;
use ballast_store::AuditFilter;
use serde_json::json;

use super::extract::QueryPairs;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn list(State(state): State<AppState>, q: QueryPairs) -> ApiResult<Json<AuditList>> {
    q.only(&["after", "model", "actor", "action", "limit"])?;
    let after = q
        .one("after")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::invalid("after", format!("after must be an entry id, got {v:?}")))
        })
        .transpose()?;
    let filter = AuditFilter {
        after,
        model: q.one("model").map(str::to_owned),
        actor: q.one("actor").map(str::to_owned),
        action: q.one("action").map(str::to_owned),
        limit: q.limit()?,
    };
    Ok(Json(state.store.list_audit(filter).await?))
}

pub(super) async fn verify(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(match state.store.verify_audit().await? {
        Ok(n) => json!({ "ok": true, "entries": n, "first_bad_id": null }),
        Err(id) => json!({ "ok": false, "entries": null, "first_bad_id": id }),
    }))
}
