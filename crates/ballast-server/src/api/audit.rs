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
    q.only(&["after", "model", "actor", "action", "since", "until", "limit"])?;
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
        since: q.one("since").map(|t| time_param("since", t)).transpose()?,
        until: q.one("until").map(|t| time_param("until", t)).transpose()?,
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

/// An RFC 3339 time in the store's sortable UTC form (milliseconds, `Z`).
fn time_param(field: &str, v: &str) -> Result<String, ApiError> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::invalid(
            field,
            format!("{field} must be an RFC 3339 time such as 2026-11-24T00:00:00Z, got {v:?}"),
        )
    })?;
    let t = t.to_offset(time::UtcOffset::UTC);
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}
