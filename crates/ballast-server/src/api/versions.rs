//! `/v1/models/{ns}/{model}/versions…`: create drafts, read, search, update, seal, move between
//! stages, roll back.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ballast_api::{CreateVersion, Rollback, SealVersion, SetStage, StageChange, UpdateVersion, VersionList};
use ballast_core::{ErrorCode, Sha256Digest, Stage};
use ballast_store::{MetricFilter, VersionFilter, VersionOrder};

use super::extract::{tag_filter, with_etag, Params, QueryPairs};
use super::Mutation;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn create(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<CreateVersion>,
) -> ApiResult<Response> {
    let v = state.store.create_version(&m.rc.ctx, &p.model()?, m.body).await?;
    Ok(with_etag(StatusCode::CREATED, v.revision, &v))
}

pub(super) async fn get(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let v = state.store.get_version(&p.model()?, p.number()?).await?;
    Ok(with_etag(StatusCode::OK, v.revision, &v))
}

/// Parses `name>=0.9` style metric thresholds.
fn metric_filter(s: &str) -> Result<MetricFilter, ApiError> {
    const OPS: [&str; 6] = [">=", "<=", "!=", ">", "<", "="];
    for op in OPS {
        if let Some((name, value)) = s.split_once(op) {
            let value: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "metric",
                        format!("metric filter {s:?}: the threshold must be a number"),
                    )
                })?;
            let name = name.trim();
            if name.is_empty() || name.len() > 128 {
                return Err(ApiError::invalid(
                    "metric",
                    format!("metric filter {s:?}: missing metric name"),
                ));
            }
            return Ok(MetricFilter {
                name: name.to_owned(),
                op,
                value,
            });
        }
    }
    Err(ApiError::invalid(
        "metric",
        format!("metric filter {s:?}: expected NAME OP NUMBER with OP one of >=, <=, >, <, =, !="),
    ))
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Params,
    q: QueryPairs,
) -> ApiResult<Json<VersionList>> {
    q.only(&[
        "stage", "tag", "metric", "state", "order_by", "order", "limit", "cursor",
    ])?;
    let order = match q.one("order_by").unwrap_or("number") {
        "number" => VersionOrder::Number,
        "created_at" => VersionOrder::CreatedAt,
        other => match other.strip_prefix("metric:") {
            Some(m) if !m.is_empty() => VersionOrder::Metric(m.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "order_by",
                    format!("order_by must be number, created_at or metric:NAME, got {other:?}"),
                ))
            }
        },
    };
    let descending = match q.one("order").unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        other => {
            return Err(ApiError::invalid(
                "order",
                format!("order must be asc or desc, got {other:?}"),
            ))
        }
    };
    let sealed = match q.one("state") {
        None => None,
        Some("sealed") => Some(true),
        Some("draft") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("state must be draft or sealed, got {other:?}"),
            ))
        }
    };
    let filter = VersionFilter {
        stage: q.one("stage").map(str::parse::<Stage>).transpose()?,
        tags: q.all("tag").map(tag_filter).collect::<Result<_, _>>()?,
        metrics: q.all("metric").map(metric_filter).collect::<Result<_, _>>()?,
        sealed,
        order,
        descending,
        limit: q.limit()?,
        cursor: q.one("cursor").map(str::to_owned),
    };
    Ok(Json(state.store.list_versions(&p.model()?, filter).await?))
}

pub(super) async fn update(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<UpdateVersion>,
) -> ApiResult<Response> {
    let v = state
        .store
        .update_version(&m.rc.ctx, &p.model()?, p.number()?, m.body, m.rc.pre)
        .await?;
    Ok(with_etag(StatusCode::OK, v.revision, &v))
}

pub(super) async fn seal(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<SealVersion>,
) -> ApiResult<Response> {
    let expected = m
        .body
        .expected_digest
        .as_deref()
        .map(str::parse::<Sha256Digest>)
        .transpose()
        .map_err(|e| ApiError::from(e).field("expected_digest"))?;
    let v = state
        .store
        .seal_version(&m.rc.ctx, &p.model()?, p.number()?, expected)
        .await?;
    Ok(with_etag(StatusCode::OK, v.revision, &v))
}

pub(super) async fn stage(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<SetStage>,
) -> ApiResult<Response> {
    // Governance decides: without a policy the version moves (200); under one, the gates are
    // evaluated and a transition request records them (202 while approvals are pending, 422
    // `gate_failed` when a gate fails).
    let outcome = crate::governance::change_stage(
        &state,
        &m.rc.ctx,
        &p.model()?,
        p.number()?,
        m.body.stage,
        m.body.comment,
        m.rc.pre,
    )
    .await?;
    Ok(crate::governance::stage_response(outcome))
}

pub(super) async fn rollback(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<Rollback>,
) -> ApiResult<Json<StageChange>> {
    Ok(Json(
        state
            .store
            .rollback(&m.rc.ctx, &p.model()?, m.body.comment)
            .await?,
    ))
}

pub(super) async fn in_stage(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let stage: Stage = p.get("stage").parse()?;
    let v = state
        .store
        .version_in_stage(&p.model()?, stage)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::NotFound {
                ApiError::new(ErrorCode::NotFound, e.message)
            } else {
                e.into()
            }
        })?;
    Ok(with_etag(StatusCode::OK, v.revision, &v))
}
