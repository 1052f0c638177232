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
}

impl AuthzState {
    /// The handles taken from the server's state.
    #[must_use]
    pub fn new(state: &AppState) -> Self {
        Self {
            auth: std::sync::Arc::clone(&state.auth),
            config: std::sync::Arc::clone(&state.config),
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
    /// The MLflow model `name` (query for GET, JSON body otherwise): the namespace
    /// [`ballast_store::mlflow::mlflow_namespace`] gives, which depends on the name alone.
    MlflowName,
    /// An MLflow rename: the permission in the namespace of `name` and in that of `new_name`.
    MlflowRename,
    /// An MLflow version create: the permission in the namespace of `name`, and `read` in the
    /// namespace whose registered versions `source` copies (`…/ballast-versions/<ns>/…`).
    MlflowNewVersion,
    /// An MLflow artifact path (`{*path}`, or `?path=` for a listing): a path under
    /// `ballast-versions/<ns>/` acts in `<ns>`, any other in the MLflow default namespace.
    MlflowArtifact,
    /// The MLflow default namespace (tracking objects, multipart uploads).
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
use Scope::{
    Anywhere, BodyModel, Global, MlflowArtifact, MlflowDefault, MlflowName, MlflowNewVersion, MlflowRename,
    Path, QueryModel,
};

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

const MLFLOW_PREFIXES: [&str; 4] = [
    "/api/2.0/mlflow/",
    "/ajax-api/2.0/mlflow/",
    "/api/2.0/mlflow-artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/",
];

fn mlflow_rule(method: &Method, route: &str) -> Option<Rule> {
    let tail = MLFLOW_PREFIXES.iter().find_map(|p| route.strip_prefix(p))?;
    if tail == "{*rest}" {
        return Some(Rule::Caller);
    }
    let registry = tail.starts_with("registered-models/") || tail.starts_with("model-versions/");
    let reads = method == Method::GET
        || method == Method::HEAD
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
        "registered-models/alias" if method != Method::GET && method != Method::HEAD => Maintain,
        _ if reads => Read,
        _ => Write,
    };
    let scope = match tail {
        "registered-models/rename" => MlflowRename,
        "model-versions/create" => MlflowNewVersion,
        _ if registry => MlflowName,
        _ if tail == "artifacts" || tail.starts_with("artifacts/") => MlflowArtifact,
        _ => MlflowDefault,
    };
    Some(Rule::Need(perm, scope))
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
        let (ns, extra, r) = namespaces(state, scope, route, req).await?;
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
        // What else the request touches (a rename's target, a version source's namespace).
        if let Some((p, ns)) = extra.iter().find(|(p, ns)| !principal.can(*p, ns)) {
            return Err(principal.denied(*p, ns));
        }
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

/// What a request needs besides the route's permission in its namespace.
type Extra = Vec<(Permission, String)>;

/// The namespace a request acts in (`None` when a malformed request does not say), and the
/// other permissions it needs.
async fn namespaces(
    state: &AuthzState,
    scope: Scope,
    route: &str,
    req: Request,
) -> Result<(Option<String>, Extra, Request), ApiError> {
    let default = &state.config.mlflow_default_namespace;
    let home = |n: &str| ballast_store::mlflow::mlflow_namespace(n, default);
    let ns = match scope {
        Anywhere => None,
        Global => Some(ANY_NAMESPACE.to_owned()),
        MlflowDefault => Some(default.clone()),
        Path => path_segment(route, req.uri().path(), "{ns}"),
        QueryModel => match query_param(req.uri().query(), "model") {
            Some(m) => Some(ModelName::parse(&m).map_or(m, |n| n.namespace().to_owned())),
            None => Some(ANY_NAMESPACE.to_owned()),
        },
        MlflowArtifact => {
            let path = match path_rest(route, req.uri().path(), "{*path}") {
                Some(p) => p,
                None => query_param(req.uri().query(), "path").unwrap_or_default(),
            };
            Some(crate::api::mlflow::native_namespace(&path).map_or_else(|| default.clone(), str::to_owned))
        }
        BodyModel(field) => {
            let (value, req) = body_fields(state, req, &[field]).await?;
            let ns = value[0]
                .as_ref()
                .and_then(|m| ModelName::parse(m).ok().map(|n| n.namespace().to_owned()));
            return Ok((ns, Vec::new(), req));
        }
        MlflowName => {
            let (v, req) = mlflow_fields(state, req, &["name"]).await?;
            return Ok((v[0].as_deref().map(home), Vec::new(), req));
        }
        MlflowRename => {
            let (v, req) = mlflow_fields(state, req, &["name", "new_name"]).await?;
            let extra = v[1].iter().map(|n| (Write, home(n))).collect();
            return Ok((v[0].as_deref().map(home), extra, req));
        }
        MlflowNewVersion => {
            let (v, req) = mlflow_fields(state, req, &["name", "source"]).await?;
            // Registering from another namespace's registered version copies its files: that
            // needs `read` there. Other sources are the default namespace's artifacts or
            // external references.
            let extra = v[1]
                .as_deref()
                .and_then(crate::api::mlflow::proxy_path)
                .and_then(|p| crate::api::mlflow::native_namespace(&p).map(str::to_owned))
                .map(|ns| (Read, ns))
                .into_iter()
                .collect();
            return Ok((v[0].as_deref().map(home), extra, req));
        }
    };
    Ok((ns, Vec::new(), req))
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

/// What follows the literal part of `template` before `param` (a trailing wildcard) in `path`,
/// percent-decoded as the router decodes it.
fn path_rest(template: &str, path: &str, param: &str) -> Option<String> {
    let i = template.split('/').position(|s| s == param)?;
    let rest: Vec<&str> = path.split('/').skip(i).collect();
    (!rest.is_empty()).then(|| {
        percent_encoding::percent_decode_str(&rest.join("/"))
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// A query parameter; the last one when the key repeats, as handlers read it.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(k, _)| k == key)
        .last()
        .map(|(_, v)| v.into_owned())
}

/// Reads a body (bounded like every JSON body) and puts the bytes back for the handler.
async fn read_body(state: &AuthzState, req: Request) -> Result<(bytes::Bytes, Request), ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.config.max_json_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the JSON body is larger than {limit} bytes, or it could not be read"),
        )
    })?;
    Ok((bytes.clone(), Request::from_parts(parts, Body::from(bytes))))
}

/// Fields of an MLflow request, read exactly as its handler reads them (query string, then
/// the JSON body for methods other than GET). A request the handler will refuse as malformed
/// names nothing.
async fn mlflow_fields(
    state: &AuthzState,
    req: Request,
    keys: &[&str],
) -> Result<(Vec<Option<String>>, Request), ApiError> {
    let (bytes, req) = read_body(state, req).await?;
    let fields = crate::api::mlflow::request_fields(req.uri(), req.method(), &bytes).unwrap_or_default();
    let found = keys
        .iter()
        .map(|k| crate::api::mlflow::field_str(&fields, k))
        .collect();
    Ok((found, req))
}

/// Reads a JSON body to find string fields, and puts the bytes back for the handler.
async fn body_fields(
    state: &AuthzState,
    req: Request,
    fields: &[&str],
) -> Result<(Vec<Option<String>>, Request), ApiError> {
    let (bytes, req) = read_body(state, req).await?;
    let value = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let found = fields
        .iter()
        .map(|f| {
            value
                .as_ref()
                .and_then(|v| v.get(*f).and_then(|x| x.as_str()).map(str::to_owned))
        })
        .collect();
    Ok((found, req))
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
        assert_eq!(
            rule(&m("POST"), "/ajax-api/2.0/mlflow/registered-models/rename"),
            Rule::Need(Write, MlflowRename)
        );
        assert_eq!(
            rule(&m("POST"), "/api/2.0/mlflow/model-versions/create"),
            Rule::Need(Write, MlflowNewVersion)
        );
        for prefix in ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"] {
            assert_eq!(
                rule(&m("GET"), &format!("{prefix}/artifacts")),
                Rule::Need(Read, MlflowArtifact)
            );
            assert_eq!(
                rule(&m("GET"), &format!("{prefix}/artifacts/{{*path}}")),
                Rule::Need(Read, MlflowArtifact)
            );
            assert_eq!(
                rule(&m("HEAD"), &format!("{prefix}/artifacts/{{*path}}")),
                Rule::Need(Read, MlflowArtifact)
            );
            assert_eq!(
                rule(&m("PUT"), &format!("{prefix}/artifacts/{{*path}}")),
                Rule::Need(Write, MlflowArtifact)
            );
            assert_eq!(
                rule(&m("POST"), &format!("{prefix}/mpu/create/{{*path}}")),
                Rule::Need(Write, MlflowDefault)
            );
        }
    }

    #[test]
    fn wildcards_and_repeated_query_keys_read_as_the_handlers_read_them() {
        let t = "/api/2.0/mlflow-artifacts/artifacts/{*path}";
        assert_eq!(
            path_rest(
                t,
                "/api/2.0/mlflow-artifacts/artifacts/ballast-versions%2Facme/b/1",
                "{*path}"
            )
            .as_deref(),
            Some("ballast-versions/acme/b/1")
        );
        assert_eq!(path_rest("/v1/x", "/v1/x", "{*path}"), None);
        assert_eq!(
            query_param(Some("name=a&name=acme%2Fb"), "name").as_deref(),
            Some("acme/b")
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
