//! `/v1/tokens`, `/v1/roles`, `/v1/whoami`: API tokens (secrets shown once, stored as hashes)
//! and roles per namespace. Changes take effect on this node at once (the token cache is cleared).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::auth::{CreateToken, CreatedToken, GrantRole, Role, RoleList, TokenList, WhoAmI};

use super::extract::{Caller, Params, QueryPairs};
use super::{Mutation, RequestCtx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn create_token(
    State(state): State<AppState>,
    m: Mutation<CreateToken>,
) -> ApiResult<Response> {
    let (secret, prefix, hash) = crate::auth::new_secret();
    let token = state.store.create_token(&m.rc.ctx, m.body, prefix, hash).await?;
    state.auth.invalidate();
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })).into_response())
}

pub(super) async fn list_tokens(State(state): State<AppState>, q: QueryPairs) -> ApiResult<Json<TokenList>> {
    q.only(&["principal"])?;
    let mut tokens = state.store.list_tokens().await?;
    if let Some(p) = q.one("principal") {
        tokens.retain(|t| t.principal == p);
    }
    Ok(Json(TokenList { tokens }))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<Response> {
    let id = p.id("id")?;
    let token = state.store.revoke_token(&rc.ctx, id).await?;
    state.auth.invalidate();
    Ok(Json(token).into_response())
}

pub(super) async fn list_roles(State(state): State<AppState>, q: QueryPairs) -> ApiResult<Json<RoleList>> {
    q.only(&["principal"])?;
    let roles = state
        .store
        .list_roles(q.one("principal").map(str::to_owned))
        .await?;
    Ok(Json(RoleList { roles }))
}

pub(super) async fn grant_role(State(state): State<AppState>, m: Mutation<GrantRole>) -> ApiResult<Response> {
    let binding = state.store.grant_role(&m.rc.ctx, m.body).await?;
    state.auth.invalidate();
    Ok(Json(binding).into_response())
}

pub(super) async fn revoke_role(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    let role = p
        .get("role")
        .parse::<Role>()
        .map_err(|e| ApiError::invalid("role", e))?;
    let req = GrantRole {
        principal: p.get("principal").to_owned(),
        namespace: p.get("namespace").to_owned(),
        role,
    };
    state.store.revoke_role(&rc.ctx, req).await?;
    state.auth.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn whoami(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<WhoAmI>> {
    let roles = if caller.enforced {
        state.store.list_roles(Some(caller.name.clone())).await?
    } else {
        Vec::new()
    };
    Ok(Json(WhoAmI {
        principal: caller.name,
        auth: caller.enforced,
        roles,
    }))
}
