//! The fields of an MLflow request: from the query string (GET; repeated keys make lists) and
//! from the JSON body (POST, PATCH, DELETE), with typed accessors that answer MLflow-style
//! `INVALID_PARAMETER_VALUE` errors.

use axum::extract::{FromRequest, Request};
use axum::http::Method;
use ballast_core::ErrorCode;
use serde_json::{Map, Value};

use super::MlError;
use crate::api::RequestCtx;
use crate::state::AppState;

/// A parsed MLflow request.
#[derive(Debug)]
pub(crate) struct MlRequest {
    /// Who, which request.
    pub rc: RequestCtx,
    fields: Map<String, Value>,
}

impl MlRequest {
    /// A field as text (numbers and booleans are given as their JSON text).
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        field_str(&self.fields, key)
    }

    /// A required text field.
    pub(crate) fn need(&self, key: &str) -> Result<String, MlError> {
        self.str(key)
            .ok_or_else(|| MlError::invalid(format!("Missing value for required parameter '{key}'.")))
    }

    /// A list field (a JSON array, or a repeated query key).
    pub(crate) fn list(&self, key: &str) -> Vec<String> {
        match self.fields.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(other) => vec![other.to_string()],
        }
    }

    /// A boolean field (`true`/`false`, also as text).
    pub(crate) fn bool(&self, key: &str) -> Result<bool, MlError> {
        match self.str(key).as_deref() {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(MlError::invalid(format!(
                "Invalid value {v:?} for parameter '{key}': expected true or false"
            ))),
        }
    }

    /// An integer field.
    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, MlError> {
        self.str(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    MlError::invalid(format!(
                        "Invalid value {v:?} for parameter '{key}' supplied: expected an integer"
                    ))
                })
            })
            .transpose()
    }

    /// A number field.
    pub(crate) fn float(&self, key: &str) -> Result<Option<f64>, MlError> {
        match self.fields.get(key) {
            Some(Value::Number(n)) => Ok(n.as_f64()),
            _ => self
                .str(key)
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|_| {
                        MlError::invalid(format!(
                            "Invalid value {v:?} for parameter '{key}' supplied: expected a number"
                        ))
                    })
                })
                .transpose(),
        }
    }

    /// A raw JSON field.
    pub(crate) fn raw(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A list of `{key, value}` objects (tags, params).
    pub(crate) fn pairs(&self, key: &str) -> Result<Vec<(String, String)>, MlError> {
        let Some(v) = self.fields.get(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = v else {
            return Err(MlError::invalid(format!(
                "'{key}' must be a list of {{key, value}} objects"
            )));
        };
        items
            .iter()
            .map(|item| {
                let k = item.get("key").and_then(Value::as_str);
                let val = match item.get("value") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => Some(String::new()),
                    Some(other) => Some(other.to_string()),
                };
                match (k, val) {
                    (Some(k), Some(val)) => Ok((k.to_owned(), val)),
                    _ => Err(MlError::invalid(format!(
                        "every item of '{key}' needs a string 'key'"
                    ))),
                }
            })
            .collect()
    }
}

/// A field of an MLflow request as text, as handlers read it: the last of a repeated key or
/// array, numbers and booleans as their JSON text.
pub(crate) fn field_str(fields: &Map<String, Value>, key: &str) -> Option<String> {
    match fields.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Array(a) => a.last().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        other => Some(other.to_string()),
    }
}

/// The fields of an MLflow request: the query string's (repeated keys make lists), then, for
/// methods other than GET, the JSON body's (which win). Authorization reads the fields it
/// checks through this same function, so it sees exactly what the handler will act on.
pub(crate) fn request_fields(
    uri: &axum::http::Uri,
    method: &Method,
    body: &[u8],
) -> Result<Map<String, Value>, MlError> {
    let mut fields = Map::new();
    if let Some(q) = uri.query() {
        let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .map_err(|e| MlError::invalid(format!("invalid query string {q:?}: {e}")))?;
        for (k, v) in pairs {
            match fields.get_mut(&k) {
                Some(Value::Array(a)) => a.push(Value::String(v)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(v)]);
                }
                None => {
                    fields.insert(k, Value::String(v));
                }
            }
        }
    }
    if method != Method::GET && !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => {
                for (k, v) in m {
                    fields.insert(k, v);
                }
            }
            Ok(_) => return Err(MlError::invalid("the request body must be a JSON object")),
            Err(e) => return Err(MlError::invalid(format!("malformed JSON body: {e}"))),
        }
    }
    Ok(fields)
}

impl FromRequest<AppState> for MlRequest {
    type Rejection = MlError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_json_bytes;
        let (mut parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            MlError::new(
                ErrorCode::PayloadTooLarge,
                format!("could not read the request body (at most {limit} bytes): {e}"),
            )
        })?;
        let fields = request_fields(&parts.uri, &parts.method, &bytes)?;
        let mut rc = {
            use axum::extract::FromRequestParts;
            RequestCtx::from_request_parts(&mut parts, state).await?
        };
        if let Some(idem) = rc.ctx.idempotency.as_mut() {
            // The fingerprint from the headers does not cover the body: add it, so the same key
            // with another body is refused instead of replayed.
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(idem.fingerprint.as_bytes());
            h.update(b"\n");
            h.update(&bytes);
            idem.fingerprint = hex::encode(h.finalize());
        }
        Ok(Self { rc, fields })
    }
}
