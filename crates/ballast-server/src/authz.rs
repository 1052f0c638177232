//! Authorization in one place: every route's rule ([`rule`]) and the middleware that applies it
//! before any handler runs ([`authorize`]).
//!
//! The check happens before the handler looks anything up, so a caller without the right role gets
//! 403 whether or not the model exists: answers never reveal what a caller may not see. Routes not
//! in the table need `admin` on `*` (deny by default). Lists that span namespaces (models, MLflow
//! searches) are filtered to the namespaces the caller may read.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ballast_api::auth::{Permission, ANY_NAMESPACE};
use ballast_core::{ErrorCode, ModelName};

use crate::api::ACTOR_HEADER;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// What the authorization layer needs of the server's state (a few handles, cloned per request,
/// instead of the whole [`AppState`]).
#[derive(Clone)]
pub struct AuthzState {
    auth: std::sync::Arc<crate::auth::Authenticator>,
    config: std::sync::Arc<crate::Config>,
    store: std::sync::Arc<dyn ballast_store::Store>,
}

impl AuthzState {
    /// The handles taken from the server's state.
    #[must_use]
    pub fn new(state: &AppState) -> Self {
        Self {
            auth: std::sync::Arc::clone(&state.auth),
            config: std::sync::Arc::clone(&state.config),
            store: std::sync::Arc::clone(&state.store),
        }
    }
}

/// Where the namespace of a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The `{ns}` segment of the path.
    Path,
    /// Every namespace (`*`): global resources (webhooks, tokens, events, routes …).
    Global,
    /// The `namespace/model` string in a JSON body field.
    BodyModel(&'static str),
    /// The `model=namespace/model` query parameter when given, else every namespace.
    QueryModel,
    /// The MLflow model `name` (query for GET, JSON body otherwise), mapped like the MLflow API.
    MlflowName,
    /// The MLflow default namespace (tracking objects and artifacts).
    MlflowDefault,
    /// Any namespace: the caller holds the permission in at least one (blob lookups, which
    /// push uses to skip uploads, are not tied to a model).
    Anywhere,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nothing (health, metrics, the API document).
    Public,
    /// Any valid token; the handler limits what is shown.
    Caller,
    /// A permission in a namespace.
    Need(Permission, Scope),
}

use Permission::{Admin, Maintain, Read, Review, Write};
use Scope::{Anywhere, BodyModel, Global, MlflowDefault, MlflowName, Path, QueryModel};

const M: &str = "/v1/models/{ns}/{model}";

/// The rule of a route (its matched path template) and method.
#[must_use]
pub fn rule(method: &Method, route: &str) -> Rule {
    if let Some(r) = mlflow_rule(method, route) {
        return r;
    }
    let get = method == Method::GET || method == Method::HEAD;
    if let Some(rest) = route.strip_prefix(M) {
        return Rule::Need(model_permission(method, rest), Path);
    }
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json" => Rule::Public,
        "/v1/whoami" => Rule::Caller,
        "/v1/blobs/sha256/{digest}" => Rule::Need(Write, Anywhere),
        "/v1/models" if get => Rule::Caller,
        "/v1/models" => Rule::Need(Write, BodyModel("name")),
        "/v1/audit" => Rule::Need(Read, QueryModel),
        "/v1/audit/verify" | "/v1/events" | "/v1/events/stream" => Rule::Need(Read, Global),
        "/v1/deployments" | "/v1/routes" | "/v1/routing/snapshot" if get => Rule::Need(Read, Global),
        "/v1/deployments" => Rule::Need(Maintain, BodyModel("model")),
        "/v1/deployments/{id}" | "/v1/routes/{name}" => Rule::Need(Maintain, Global),
        _ => governance_rule(method, route).unwrap_or(Rule::Need(Admin, Global)),
    }
}

/// Routes under `/v1/models/{ns}/{model}` (`rest` is what follows).
fn model_permission(method: &Method, rest: &str) -> Permission {
    if method == Method::GET || method == Method::HEAD {
        return Read;
    }
    let last = rest.rsplit('/').next().unwrap_or("");
    match (method.as_str(), rest, last) {
        ("DELETE", "", _) => Maintain,
        (_, "/rollback", _) | (_, "/versions/{n}/stage", _) | (_, "/aliases/{alias}", _) => Maintain,
        (_, "/policy", _) | (_, "/retention", _) => Maintain,
        (_, _, "approve" | "reject") => Review,
        (_, _, "complete") => Maintain,
        _ => Write,
    }
}

/// Governance and retention routes outside a model's path.
fn governance_rule(method: &Method, route: &str) -> Option<Rule> {
    let get = method == Method::GET || method == Method::HEAD;
    Some(match route {
        "/v1/policies/{ns}" | "/v1/retention/{ns}" if get => Rule::Need(Read, Path),
        "/v1/policies/{ns}" | "/v1/retention/{ns}" => Rule::Need(Maintain, Path),
        "/v1/transition-requests" if get => Rule::Caller,
        "/v1/gc" => Rule::Need(Admin, Global),
        "/v1/fsck" => Rule::Need(Admin, Global),
        "/v1/status" => Rule::Need(Read, Global),
        _ => return None,
    })
}

const MLFLOW_PREFIXES: [&str; 3] = [
    "/api/2.0/mlflow/",
    "/ajax-api/2.0/mlflow/",
    "/api/2.0/mlflow-artifacts/",
];

fn mlflow_rule(method: &Method, route: &str) -> Option<Rule> {
    let tail = MLFLOW_PREFIXES.iter().find_map(|p| route.strip_prefix(p))?;
    if tail == "{*rest}" {
        return Some(Rule::Caller);
    }
    let registry = tail.starts_with("registered-models/") || tail.starts_with("model-versions/");
    let reads = method == Method::GET
        || [
            "/get",
            "/search",
            "/get-latest-versions",
            "/get-download-uri",
            "/get-by-name",
        ]
        .iter()
        .any(|s| tail.ends_with(s))
        || tail == "search";
    let perm = match tail {
        "registered-models/delete" | "model-versions/delete" | "model-versions/transition-stage" => Maintain,
        "registered-models/alias" if method != Method::GET => Maintain,
        _ if reads => Read,
        _ => Write,
    };
    Some(Rule::Need(
        perm,
        if registry { MlflowName } else { MlflowDefault },
    ))
}

fn is_mlflow(route: &str) -> bool {
    MLFLOW_PREFIXES.iter().any(|p| route.starts_with(p))
}

/// Applies the route's rule: authenticates, checks the permission in the request's namespace, and
/// hands the [`Principal`] to the handler.
pub async fn authorize(State(state): State<AuthzState>, req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().cloned() else {
        return next.run(req).await;
    };
    let route = route.as_str();
    let mlflow = is_mlflow(route);
    match check(&state, route, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            let outcome = if e.code == ErrorCode::PermissionDenied {
                "denied"
            } else {
                "unauthenticated"
            };
            metrics::counter!("ballast_auth_refusals_total", "outcome" => outcome).increment(1);
            if mlflow {
                crate::api::mlflow_error(e)
            } else {
                e.into_response()
            }
        }
    }
}

async fn check(state: &AuthzState, route: &str, mut req: Request) -> Result<Request, ApiError> {
    let rule = rule(req.method(), route);
    if rule == Rule::Public {
        return Ok(req);
    }
    let principal = if state.auth.enforced() {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        state.auth.authenticate(header).await?
    } else {
        let actor = req
            .headers()
            .get(ACTOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&state.config.default_actor);
        Principal::unchecked(actor.to_owned())
    };
    if let Rule::Need(perm, scope) = rule {
        let (ns, r) = namespace(state, scope, route, req).await?;
        req = r;
        match ns {
            Some(ns) if !principal.can(perm, &ns) => return Err(principal.denied(perm, &ns)),
            // No namespace (`Anywhere`, or a malformed request that does not name one, which the
            // handler then refuses precisely): the caller must hold the permission somewhere.
            None if !principal.roles.iter().any(|(_, r)| r.grants(perm)) && principal.enforced => {
                return Err(principal.denied(perm, ANY_NAMESPACE));
            }
            _ => {}
        }
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

/// The namespace a request acts in (`None` when a malformed request does not say).
async fn namespace(
    state: &AuthzState,
    scope: Scope,
    route: &str,
    req: Request,
) -> Result<(Option<String>, Request), ApiError> {
    let ns = match scope {
        Anywhere => None,
        Global => Some(ANY_NAMESPACE.to_owned()),
        MlflowDefault => Some(state.config.mlflow_default_namespace.clone()),
        Path => path_segment(route, req.uri().path(), "{ns}"),
        QueryModel => match query_param(req.uri().query(), "model") {
            Some(m) => Some(ModelName::parse(&m).map_or(m, |n| n.namespace().to_owned())),
            None => Some(ANY_NAMESPACE.to_owned()),
        },
        BodyModel(field) => {
            let (value, req) = body_field(state, req, field).await?;
            let ns = value.and_then(|m| ModelName::parse(&m).ok().map(|n| n.namespace().to_owned()));
            return Ok((ns, req));
        }
        MlflowName => {
            let (name, req) = if req.method() == Method::GET {
                (query_param(req.uri().query(), "name"), req)
            } else {
                body_field(state, req, "name").await?
            };
            let ns = match name {
                Some(n) => Some(mlflow_namespace(state, &n).await),
                None => None,
            };
            return Ok((ns, req));
        }
    };
    Ok((ns, req))
}

/// The namespace an MLflow name lives in: the model it resolves to, or where it would be created.
async fn mlflow_namespace(state: &AuthzState, name: &str) -> String {
    let default = &state.config.mlflow_default_namespace;
    if let Ok(m) = state.store.mlflow_resolve(name, default).await {
        return m.namespace().to_owned();
    }
    match name.split_once('/') {
        Some(_) => ModelName::parse(name).map_or_else(|_| default.clone(), |n| n.namespace().to_owned()),
        None => default.clone(),
    }
}

/// The segment of `path` at the position of `param` in the route template.
fn path_segment(template: &str, path: &str, param: &str) -> Option<String> {
    let i = template.split('/').position(|s| s == param)?;
    path.split('/').nth(i).map(|s| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    })
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Reads a JSON body (bounded like every JSON body) to find one string field, and puts the bytes
/// back for the handler.
async fn body_field(
    state: &AuthzState,
    req: Request,
    field: &str,
) -> Result<(Option<String>, Request), ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.config.max_json_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the JSON body is larger than {limit} bytes, or it could not be read"),
        )
    })?;
    let value = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_owned));
    Ok((value, Request::from_parts(parts, Body::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_api() {
        let m = |s: &str| s.parse::<Method>().unwrap_or_default();
        assert_eq!(rule(&m("GET"), "/healthz"), Rule::Public);
        assert_eq!(rule(&m("GET"), "/v1/models/{ns}/{model}"), Rule::Need(Read, Path));
        assert_eq!(
            rule(&m("DELETE"), "/v1/models/{ns}/{model}"),
            Rule::Need(Maintain, Path)
        );
        assert_eq!(
            rule(&m("POST"), "/v1/models/{ns}/{model}/versions/{n}/stage"),
            Rule::Need(Maintain, Path)
        );
        assert_eq!(
            rule(&m("PUT"), "/v1/models/{ns}/{model}/versions/{n}/files/{*path}"),
            Rule::Need(Write, Path)
        );
        assert_eq!(rule(&m("POST"), "/v1/webhooks"), Rule::Need(Admin, Global));
        assert_eq!(rule(&m("POST"), "/v1/unknown"), Rule::Need(Admin, Global));
        assert_eq!(
            rule(&m("GET"), "/api/2.0/mlflow/registered-models/search"),
            Rule::Need(Read, MlflowName)
        );
        assert_eq!(
            rule(&m("POST"), "/api/2.0/mlflow/model-versions/transition-stage"),
            Rule::Need(Maintain, MlflowName)
        );
        assert_eq!(
            rule(&m("POST"), "/api/2.0/mlflow/runs/search"),
            Rule::Need(Read, MlflowDefault)
        );
        assert_eq!(
            rule(&m("POST"), "/api/2.0/mlflow/runs/create"),
            Rule::Need(Write, MlflowDefault)
        );
    }

    #[test]
    fn path_segments_are_found_by_template_position() {
        assert_eq!(
            path_segment("/v1/models/{ns}/{model}", "/v1/models/acme/bot", "{ns}").as_deref(),
            Some("acme")
        );
        assert_eq!(path_segment("/v1/x", "/v1/x", "{ns}"), None);
    }
}
