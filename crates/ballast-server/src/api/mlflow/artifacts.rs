//! The MLflow artifacts proxy (`/api/2.0/mlflow-artifacts/artifacts`): uploads stream into the
//! content-addressed blob store (hashed on the way in) and the path → digest mapping is kept as a
//! tracking object; downloads are verified on the way out. Versions created natively are served
//! read-only under `ballast-versions/<ns>/<model>/<n>/`.
//!
//! Registering a version whose `source` is under this proxy copies the digests of the files under
//! it into the version's manifest and seals it, so later changes to the proxy's paths never touch
//! the version.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use ballast_api::FileEntry;
use ballast_blob::{BoxError, PutOptions};
use ballast_core::{validate_artifact_path, ModelName, Sha256Digest};
use ballast_store::mlflow::MlflowObject;
use ballast_store::Ctx;
use futures_util::TryStreamExt;
use serde_json::{json, Value};

use super::{tracking, MlError, MlResult};
use crate::api::extract::{Params, QueryPairs};
use crate::api::RequestCtx;
use crate::state::AppState;

const KIND: &str = "artifact";
const NATIVE: &str = "ballast-versions/";
/// The file a version from an unreachable source holds: the sealed reference, not the content.
pub(crate) const EXTERNAL_FILE: &str = "ballast-external-source.json";

pub(super) fn routes(r: axum::Router<AppState>) -> axum::Router<AppState> {
    let mut r = r;
    for prefix in ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"] {
        r = r
            .route(&format!("{prefix}/artifacts"), get(list))
            .route(
                &format!("{prefix}/artifacts/{{*path}}"),
                get(download).put(upload).delete(remove),
            )
            .route(&format!("{prefix}/mpu/create/{{*path}}"), post(multipart))
            .route(&format!("{prefix}/mpu/complete/{{*path}}"), post(multipart))
            .route(&format!("{prefix}/mpu/abort/{{*path}}"), post(multipart));
    }
    r
}

async fn multipart() -> MlError {
    MlError::not_implemented(
        "multipart uploads are not supported by this server; upload with a single PUT (unset MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD)",
    )
}

/// The namespace whose registered versions an artifact path reads (`ballast-versions/<ns>/…`,
/// leading and trailing `/` ignored), or `None` for a path of the proxy's own files.
/// Authorization checks this namespace: reading a registered version's files through the
/// proxy needs `read` on its namespace, as reading them natively does.
pub(crate) fn native_namespace(path: &str) -> Option<&str> {
    let rest = path.trim_matches('/').strip_prefix(NATIVE)?;
    rest.split('/').next()
}

fn check_path(path: &str) -> MlResult<()> {
    validate_artifact_path(path).map_err(|e| MlError::invalid(e.message))
}

/// The blob behind an artifact path, if any.
async fn lookup(state: &AppState, path: &str) -> MlResult<Option<(Sha256Digest, u64)>> {
    if let Some(rest) = path.strip_prefix(NATIVE) {
        let Some((version_path, file)) = native_split(rest) else {
            return Ok(None);
        };
        let Some((name, n)) = version_path else {
            return Ok(None);
        };
        let Ok(v) = state.store.get_version(&name, n).await else {
            return Ok(None);
        };
        return Ok(v
            .files
            .iter()
            .find(|f| f.path == file)
            .and_then(|f| f.sha256.parse().ok().map(|d| (d, f.size))));
    }
    match state.store.mlflow_get_object(KIND, path).await {
        Ok(o) => Ok(blob_of(&o.body)),
        Err(e) if e.code == ballast_core::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

type NativeRef = Option<(ModelName, u64)>;

/// Splits `ns/model/N/rest` into the version and the rest.
fn native_split(rest: &str) -> Option<(NativeRef, String)> {
    let mut parts = rest.splitn(4, '/');
    let (ns, model, n) = (parts.next()?, parts.next()?, parts.next()?);
    let file = parts.next().unwrap_or("").to_owned();
    let name = ModelName::new(ns, model).ok();
    let n = n.parse::<u64>().ok();
    Some((name.zip(n), file))
}

fn blob_of(body: &Value) -> Option<(Sha256Digest, u64)> {
    let d = body.get("sha256")?.as_str()?.parse().ok()?;
    Some((d, body.get("size")?.as_u64()?))
}

/// Every file under `dir` (relative paths), from the proxy or a native version.
async fn files_under(state: &AppState, dir: &str) -> MlResult<Vec<FileEntry>> {
    let dir = dir.trim_matches('/');
    if let Some(rest) = dir.strip_prefix(NATIVE) {
        if let Some((Some((name, n)), sub)) = native_split(rest) {
            if let Ok(v) = state.store.get_version(&name, n).await {
                let prefix = if sub.is_empty() {
                    String::new()
                } else {
                    format!("{sub}/")
                };
                return Ok(v
                    .files
                    .into_iter()
                    .filter_map(|f| {
                        f.path.strip_prefix(&prefix).map(|rel| FileEntry {
                            path: rel.to_owned(),
                            ..f.clone()
                        })
                    })
                    .collect());
            }
        }
        return Ok(Vec::new());
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::new();
    for o in state.store.mlflow_objects(KIND).await? {
        if let (Some(rel), Some((d, size))) = (o.id.strip_prefix(&prefix), blob_of(&o.body)) {
            out.push(FileEntry {
                path: rel.to_owned(),
                size,
                sha256: d.to_hex(),
                media_type: None,
            });
        }
    }
    Ok(out)
}

/// The proxy path of an `mlflow-artifacts:` URI (`mlflow-artifacts://host/p`, `mlflow-artifacts:/p`).
pub(crate) fn proxy_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = match rest.strip_prefix("//") {
        Some(auth) => auth.find('/').map_or("", |i| &auth[i..]),
        None => rest,
    };
    Some(rest.trim_matches('/').to_owned())
}

/// The files a version registered from `source` gets, and whether they are Ballast-held
/// (verified) content; an unreachable source yields one sealed reference file instead.
pub(crate) async fn source_files(
    state: &AppState,
    source: &str,
    ctx: &Ctx,
) -> MlResult<(Vec<FileEntry>, bool)> {
    let mut uri = source.to_owned();
    // Authorization checked `read` on the namespace of a `ballast-versions/` source given
    // directly; one reached through a run or logged model was not checked, so it is not followed
    // (runs and logged models created here never point there).
    let direct = source.starts_with("mlflow-artifacts:");
    if let Some(id) = source.strip_prefix("models:/").filter(|s| s.starts_with("m-")) {
        if let Some(u) = tracking::logged_model_uri(state, id).await? {
            uri = u;
        }
    } else if let Some(rest) = source.strip_prefix("runs:/") {
        let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(u) = tracking::run_artifact_uri(state, run).await? {
            uri = format!("{}/{}", u.trim_end_matches('/'), sub);
        }
    }
    if let Some(p) = proxy_path(&uri).filter(|p| direct || native_namespace(p).is_none()) {
        let files = files_under(state, &p).await?;
        if !files.is_empty() {
            // The version will reference these blobs: touch them so that garbage collection
            // keeps them even if the artifacts are deleted before the version commits.
            for f in &files {
                if let Ok(d) = f.sha256.parse::<Sha256Digest>() {
                    state.blobs.touch(d).await?;
                }
            }
            return Ok((files, true));
        }
    }
    let _ = ctx;
    let reference = serde_json::to_vec_pretty(&json!({
        "source": source,
        "verified": false,
        "note": "Ballast could not reach this source: the reference is sealed, the content is not",
    }))
    .map_err(|e| MlError::new(ballast_core::ErrorCode::Internal, e.to_string()))?;
    let size = reference.len() as u64;
    let stream = futures_util::stream::once(async move { Ok::<_, BoxError>(bytes::Bytes::from(reference)) });
    let stored = state
        .blobs
        .put(
            Box::pin(stream),
            PutOptions {
                expected_digest: None,
                expected_size: Some(size),
                max_size: state.config.max_upload_bytes,
            },
        )
        .await?;
    Ok((
        vec![FileEntry {
            path: EXTERNAL_FILE.into(),
            size: stored.size,
            sha256: stored.digest.to_hex(),
            media_type: Some("application/json".into()),
        }],
        false,
    ))
}

async fn download(State(state): State<AppState>, p: Params) -> MlResult<Response> {
    let path = p.get("path").to_owned();
    check_path(&path)?;
    let (digest, size) = lookup(&state, &path)
        .await?
        .ok_or_else(|| MlError::not_found(format!("artifact {path} does not exist")))?;
    let (_, stream) = state.blobs.get(digest, None).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .header("x-ballast-sha256", digest.to_hex())
        .body(Body::from_stream(stream))
        .map_err(|e| MlError::new(ballast_core::ErrorCode::Internal, e.to_string()))
}

async fn upload(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
    req: Request,
) -> MlResult<Json<Value>> {
    let path = p.get("path").to_owned();
    check_path(&path)?;
    if path.starts_with(NATIVE) {
        return Err(MlError::new(
            ballast_core::ErrorCode::Conflict,
            "ballast-versions/ holds registered versions, which are immutable",
        ));
    }
    let expected_size = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let stream = req
        .into_body()
        .into_data_stream()
        .map_err(|e| Box::new(e) as BoxError);
    let stored = state
        .blobs
        .put(
            Box::pin(stream),
            PutOptions {
                expected_digest: None,
                expected_size,
                max_size: state.config.max_upload_bytes,
            },
        )
        .await?;
    state
        .store
        .mlflow_put_object(
            &rc.ctx,
            MlflowObject {
                kind: KIND.into(),
                id: path,
                name: None,
                body: json!({ "sha256": stored.digest.to_hex(), "size": stored.size }),
            },
            false,
        )
        .await?;
    Ok(Json(json!({})))
}

async fn remove(State(state): State<AppState>, p: Params, rc: RequestCtx) -> MlResult<Json<Value>> {
    let path = p.get("path").to_owned();
    check_path(&path)?;
    if path.starts_with(NATIVE) {
        return Err(MlError::new(
            ballast_core::ErrorCode::Conflict,
            "ballast-versions/ holds registered versions, which are immutable",
        ));
    }
    // Only the path mapping goes: registered versions hold their own digests, and blobs may be
    // shared, so no version loses a byte.
    let n = state.store.mlflow_delete_objects(&rc.ctx, KIND, &path).await?;
    if n == 0 {
        return Err(MlError::not_found(format!("artifact {path} does not exist")));
    }
    Ok(Json(json!({})))
}

async fn list(State(state): State<AppState>, q: QueryPairs) -> MlResult<Json<Value>> {
    let dir = q.one("path").unwrap_or("").trim_matches('/').to_owned();
    if !dir.is_empty() {
        check_path(&dir)?;
    }
    let mut seen = std::collections::BTreeMap::<String, Option<u64>>::new();
    for f in files_under(&state, &dir).await? {
        match f.path.split_once('/') {
            Some((d, _)) => {
                seen.insert(d.to_owned(), None);
            }
            None => {
                seen.insert(f.path.clone(), Some(f.size));
            }
        }
    }
    let files: Vec<Value> = seen
        .into_iter()
        .map(|(p, size)| match size {
            Some(s) => json!({ "path": p, "is_dir": false, "file_size": s }),
            None => json!({ "path": p, "is_dir": true }),
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}
