//! Request context extractors: who is acting, which request, the idempotency key, preconditions,
//! and JSON bodies parsed with errors that name the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use ballast_core::{ErrorCode, ModelName};
use ballast_store::{Ctx, Idempotency, Precondition};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::REQUEST_ID;
use crate::error::ApiError;
use crate::state::AppState;

/// Header naming the actor when authentication is off (with auth on, the token's principal is
/// the actor and this header is ignored).
pub const ACTOR: &str = "x-ballast-actor";
/// Header carrying an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Who, which request, which preconditions — without a body.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The store context (actor, request id, idempotency).
    pub ctx: Ctx,
    /// `If-Match` / `If-None-Match`.
    pub pre: Precondition,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::invalid(name, format!("header {name} must be printable ASCII"))),
    }
}

fn printable(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn precondition(h: &HeaderMap) -> Result<Precondition, ApiError> {
    if let Some(v) = header(h, "if-match")? {
        let v = v.trim();
        if v == "*" {
            return Ok(Precondition::Exists);
        }
        let inner = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
        return inner.parse::<u64>().map(Precondition::Revision).map_err(|_| {
            ApiError::invalid(
                "If-Match",
                format!("If-Match must be \"<revision>\" as given by the ETag header, or *; got {v:?}"),
            )
        });
    }
    if let Some(v) = header(h, "if-none-match")? {
        if v.trim() == "*" {
            return Ok(Precondition::Absent);
        }
        return Err(ApiError::invalid(
            "If-None-Match",
            "only If-None-Match: * is supported on writes",
        ));
    }
    Ok(Precondition::None)
}

fn build(parts: &Parts, state: &AppState, body: &[u8]) -> Result<RequestCtx, ApiError> {
    let h = &parts.headers;
    let principal = parts.extensions.get::<crate::auth::Principal>();
    let actor = match header(h, ACTOR)? {
        _ if principal.is_some_and(|p| p.enforced) => principal.map(|p| p.name.clone()).unwrap_or_default(),
        Some(a) if printable(a, 128) => a.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid(
                ACTOR,
                "x-ballast-actor must be 1-128 printable ASCII characters",
            ))
        }
        None => state.config.default_actor.clone(),
    };
    let request_id = header(h, REQUEST_ID)?.unwrap_or_default().to_owned();
    let idempotency = match header(h, IDEMPOTENCY_KEY)? {
        None => None,
        Some(k) if printable(k, 255) => {
            let mut fp = Sha256::new();
            fp.update(parts.method.as_str().as_bytes());
            fp.update(b" ");
            fp.update(parts.uri.path().as_bytes());
            fp.update(b"?");
            fp.update(parts.uri.query().unwrap_or("").as_bytes());
            for name in ["if-match", "if-none-match", "x-ballast-sha256", "content-type"] {
                fp.update(b"\n");
                fp.update(h.get(name).map_or(&b""[..], |v| v.as_bytes()));
            }
            fp.update(b"\n");
            fp.update(body);
            Some(Idempotency {
                key: k.to_owned(),
                fingerprint: hex::encode(fp.finalize()),
            })
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "Idempotency-Key must be 1-255 printable ASCII characters",
            ))
        }
    };
    Ok(RequestCtx {
        ctx: Ctx {
            actor,
            request_id,
            idempotency,
        },
        pre: precondition(h)?,
    })
}

impl FromRequestParts<AppState> for RequestCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        build(parts, state, b"")
    }
}

/// A mutating request with a JSON body of type `T` (an empty body reads as `{}`).
#[derive(Debug)]
pub struct Mutation<T> {
    /// Who, which request, which preconditions.
    pub rc: RequestCtx,
    /// The parsed body.
    pub body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Mutation<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_json_bytes;
        let (parts, body) = req.into_parts();
        if parts.method != Method::GET {
            if let Some(ct) = header(&parts.headers, "content-type")? {
                if !ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
                {
                    return Err(ApiError::invalid(
                        "Content-Type",
                        format!("expected Content-Type: application/json, got {ct:?}"),
                    ));
                }
            }
        }
        let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit")
            {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("JSON bodies are at most {limit} bytes"),
                )
            } else {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
        let rc = build(&parts, state, &bytes)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let body = T::deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
            .map_err(|e| {
                let msg = e.to_string();
                let field = msg
                    .split('`')
                    .nth(1)
                    .filter(|_| msg.contains("field"))
                    .map(str::to_owned);
                let mut err = ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {msg}"));
                err.field = field;
                err
            })?;
        Ok(Self { rc, body })
    }
}

/// Parses the `{ns}/{model}` path segments.
///
/// # Errors
/// `invalid_name` naming the rule.
pub fn parse_model(ns: &str, model: &str) -> Result<ModelName, ApiError> {
    Ok(ModelName::new(ns, model)?)
}

/// Parses a version number path segment.
pub(super) fn parse_number(n: &str) -> Result<u64, ApiError> {
    n.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1 && *n <= i64::MAX as u64)
        .ok_or_else(|| {
            ApiError::invalid(
                "version",
                format!("version must be a positive integer, got {n:?}"),
            )
        })
}

/// Path parameters by name, with a JSON error when they cannot be decoded.
#[derive(Debug)]
pub struct Params(pub std::collections::HashMap<String, String>);

impl Params {
    /// A parameter that the route always has.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// The path parameter `name` as a positive id (database ids are at most `i64::MAX`).
    pub fn id(&self, name: &str) -> Result<u64, ApiError> {
        let v = self.get(name);
        v.parse::<u64>()
            .ok()
            .filter(|n| *n >= 1 && i64::try_from(*n).is_ok())
            .ok_or_else(|| ApiError::invalid(name, format!("{name} must be a positive integer, got {v:?}")))
    }

    /// The model named by `{ns}/{model}`.
    pub fn model(&self) -> Result<ModelName, ApiError> {
        parse_model(self.get("ns"), self.get("model"))
    }

    /// The version number `{n}`.
    pub fn number(&self) -> Result<u64, ApiError> {
        parse_number(self.get("n"))
    }
}

impl FromRequestParts<AppState> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::invalid("path", format!("invalid path: {e}")))
    }
}

/// Query parameters as ordered pairs (keys may repeat).
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value of `key`.
    pub fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses parameters outside `known`, so a typo is not silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::invalid(
                k,
                format!("unknown query parameter {k:?}; accepted: {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// `limit`, 1–1000, default 100.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.one("limit") {
            None => Ok(100),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "limit",
                        format!("limit must be an integer from 1 to 1000, got {v:?}"),
                    )
                }),
        }
    }
}

impl FromRequestParts<AppState> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::invalid("query", format!("invalid query string: {e}")))
    }
}

/// Parses `key` or `key=value` (tag filters).
pub(super) fn tag_filter(v: &str) -> Result<(String, Option<String>), ApiError> {
    let (k, val) = match v.split_once('=') {
        Some((k, val)) => (k, Some(val.to_owned())),
        None => (v, None),
    };
    ballast_core::validate_tag_key(k).map_err(|e| ApiError::from(e).field("tag"))?;
    Ok((k.to_owned(), val))
}

/// The JSON response of one resource with its `ETag`.
pub(super) fn with_etag<T: serde::Serialize>(
    status: axum::http::StatusCode,
    revision: u64,
    body: &T,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{revision}\"")) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

/// The principal the request acts as (set by the authorization layer; with auth off, an
/// unchecked principal that may do everything).
#[derive(Debug, Clone)]
pub struct Caller(pub crate::auth::Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<crate::auth::Principal>() {
            Some(p) => Ok(Self(p.clone())),
            None if !state.auth.enforced() => Ok(Self(crate::auth::Principal::unchecked(
                state.config.default_actor.clone(),
            ))),
            None => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this request needs a token: send Authorization: Bearer <token>",
            )),
        }
    }
}
