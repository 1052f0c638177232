//! Artifacts of a version: streaming upload with an on-the-fly digest, attaching blobs the
//! server already holds, verified downloads with `Range`, the manifest, and blob lookups.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::{AttachFile, BlobInfo, FileEntry, Version};
use ballast_blob::{BlobError, BoxError, PutOptions, Verified};
use ballast_core::{validate_artifact_path, ErrorCode, Manifest, ManifestEntry, Sha256Digest};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::extract::Params;
use super::{Mutation, RequestCtx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Header carrying a file's SHA-256 (expected on upload, given on download).
pub const SHA256_HEADER: &str = "x-ballast-sha256";

fn draft_check(v: &Version) -> ApiResult<()> {
    if v.state == ballast_api::VersionState::Sealed {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "version {} of {} is sealed: its files are immutable; create a new version to change them",
                v.version, v.model
            ),
        ));
    }
    Ok(())
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::Corrupt(_) => {
            metrics::counter!("ballast_blob_corrupt_total").increment(1);
            e.into()
        }
        BlobError::NotFound(d) => ApiError::new(
            ErrorCode::BlobCorrupt,
            format!("blob {d} is referenced by the registry but missing from artifact storage"),
        ),
        other => other.into(),
    }
}

pub(super) async fn upload(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
    req: Request,
) -> ApiResult<Response> {
    let name = p.model()?;
    let number = p.number()?;
    let path = p.get("path").to_owned();
    validate_artifact_path(&path)?;
    let headers = req.headers().clone();
    let expected_digest = match headers.get(SHA256_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Sha256Digest>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(SHA256_HEADER, "x-ballast-sha256 must be 64 hex characters")
                })?,
        ),
    };
    let expected_size = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Content-Length", "invalid Content-Length"))?,
        ),
    };
    if expected_size.is_some_and(|s| s > state.config.max_upload_bytes) {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("uploads are at most {} bytes", state.config.max_upload_bytes),
        ));
    }
    let media_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Content-Type", "Content-Type must be ASCII"))?
                .to_owned(),
        ),
    };
    // Fail fast, before receiving any bytes, when the version cannot take files.
    draft_check(&state.store.get_version(&name, number).await?)?;

    let stream = req
        .into_body()
        .into_data_stream()
        .map_err(|e| Box::new(e) as BoxError)
        .inspect_ok(|b| metrics::counter!("ballast_blob_bytes_in_total").increment(b.len() as u64));
    let opts = PutOptions {
        expected_digest,
        expected_size,
        max_size: state.config.max_upload_bytes,
    };
    let stored = state
        .blobs
        .put(Box::pin(stream), opts)
        .await
        .map_err(ApiError::from)?;
    let mut ctx = rc.ctx;
    if let Some(idem) = ctx.idempotency.as_mut() {
        // The body is streamed, so the request fingerprint could not include it: add the digest
        // of the bytes received, so that the same key with other bytes is refused, not replayed.
        idem.fingerprint = hex::encode(Sha256::digest(format!("{} {}", idem.fingerprint, stored.digest)));
    }
    let entry = FileEntry {
        path,
        size: stored.size,
        sha256: stored.digest.to_hex(),
        media_type,
    };
    let entry = state.store.put_file(&ctx, &name, number, entry).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

pub(super) async fn attach(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<AttachFile>,
) -> ApiResult<Response> {
    let name = p.model()?;
    let number = p.number()?;
    validate_artifact_path(&m.body.path)?;
    let digest: Sha256Digest = m
        .body
        .sha256
        .parse()
        .map_err(|e: ballast_core::ValidationError| ApiError::from(e).field("sha256"))?;
    draft_check(&state.store.get_version(&name, number).await?)?;
    // Verify the stored copy before trusting it: a corrupt one is quarantined and the client is
    // told to upload the bytes again (which repairs the blob).
    let size = match state.blobs.verify(digest).await.map_err(blob_error)? {
        Verified::Ok { size } => size,
        verdict @ (Verified::Missing | Verified::Corrupt) => {
            if verdict == Verified::Corrupt {
                metrics::counter!("ballast_blob_corrupt_total").increment(1);
            }
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("blob {digest} is not stored on this server; upload the file's bytes instead"),
            )
            .field("sha256"));
        }
    };
    // Mark the blob as used, so garbage collection keeps it until the file row commits (see
    // `crate::gc`); a blob swept since the check above is reported missing.
    if !state.blobs.touch(digest).await.map_err(blob_error)? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("blob {digest} is not stored on this server; upload the file's bytes instead"),
        )
        .field("sha256"));
    }
    if let Some(want) = m.body.size {
        if want != size {
            return Err(ApiError::invalid(
                "size",
                format!("blob {digest} has {size} bytes, not {want}"),
            ));
        }
    }
    let entry = FileEntry {
        path: m.body.path,
        size,
        sha256: digest.to_hex(),
        media_type: m.body.media_type,
    };
    let entry = state.store.put_file(&m.rc.ctx, &name, number, entry).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    let path = p.get("path");
    validate_artifact_path(path)?;
    state
        .store
        .delete_file(&rc.ctx, &p.model()?, p.number()?, path)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses a single `bytes=` range against `size` (inclusive bounds). `Ok(None)` means serve the
/// whole file (no header, or a form this server ignores as RFC 9110 allows).
fn parse_range(h: &HeaderMap, size: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = h.get(header::RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("the range cannot be served: the file has {size} bytes"),
        )
    };
    let Some(spec) = v.to_str().ok().and_then(|s| s.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| unsatisfiable())?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| unsatisfiable())?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .min(size.saturating_sub(1))
        };
        if start >= size || start > end {
            return Err(unsatisfiable());
        }
        (start, end)
    };
    Ok(Some(range))
}

pub(super) async fn download(State(state): State<AppState>, p: Params, req: Request) -> ApiResult<Response> {
    let path = p.get("path");
    validate_artifact_path(path)?;
    let v = state.store.get_version(&p.model()?, p.number()?).await?;
    let file = v.files.iter().find(|f| f.path == path).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "file {path:?} of version {} of {} does not exist",
                v.version, v.model
            ),
        )
    })?;
    let digest: Sha256Digest = file.sha256.parse()?;
    let range = match parse_range(req.headers(), file.size) {
        Ok(range) => range,
        Err(e) => {
            // RFC 9110 §15.5.17: a 416 says how large the representation is.
            let mut resp = e.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", file.sha256))
        .header(SHA256_HEADER, &file.sha256)
        .header(
            header::CONTENT_TYPE,
            file.media_type.as_deref().unwrap_or("application/octet-stream"),
        );
    let status = if let Some((a, b)) = range {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", file.size));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let len = range.map_or(file.size, |(a, b)| b - a + 1);
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if req.method() == Method::HEAD {
        if state.blobs.stat(digest).await.map_err(blob_error)?.is_none() {
            return Err(blob_error(BlobError::NotFound(digest)));
        }
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()));
    }
    let (_, stream) = match state.blobs.get(digest, range).await {
        Ok(found) => found,
        // The range was checked against the recorded size, so the stored bytes are shorter than
        // recorded: verify them (which quarantines them) and report corruption, not a bad range.
        Err(BlobError::Range { .. }) => {
            let _ = state.blobs.verify(digest).await;
            return Err(blob_error(BlobError::Corrupt(digest)));
        }
        Err(e) => return Err(blob_error(e)),
    };
    let stream = stream.map(|piece| match piece {
        Ok(b) => {
            metrics::counter!("ballast_blob_bytes_out_total").increment(b.len() as u64);
            Ok(b)
        }
        Err(e) => {
            if matches!(e, BlobError::Corrupt(_)) {
                metrics::counter!("ballast_blob_corrupt_total").increment(1);
            }
            tracing::error!(error = %e, "aborting a download");
            Err(e)
        }
    });
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

pub(super) async fn manifest(State(state): State<AppState>, p: Params) -> ApiResult<Json<serde_json::Value>> {
    let v = state.store.get_version(&p.model()?, p.number()?).await?;
    let entries = v
        .files
        .iter()
        .map(|f| {
            Ok(ManifestEntry {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.parse()?,
                media_type: f.media_type.clone(),
            })
        })
        .collect::<Result<Vec<_>, ballast_core::ValidationError>>()?;
    let manifest = Manifest::new(entries);
    Ok(Json(
        json!({ "files": manifest.files, "digest": v.digest, "total_size": manifest.total_size(), "state": v.state }),
    ))
}

pub(super) async fn blob_info(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let digest: Sha256Digest = p.get("digest").parse()?;
    // A client that finds the blob here may attach it next: the touch keeps it from garbage
    // collection for the grace period.
    let stored = state.blobs.touch(digest).await.map_err(blob_error)?;
    let size = if stored {
        state.blobs.stat(digest).await.map_err(blob_error)?
    } else {
        None
    };
    match size {
        Some(size) => {
            let mut r = Json(BlobInfo {
                sha256: digest.to_hex(),
                size,
            })
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
                r.headers_mut().insert("x-ballast-blob-size", v);
            }
            Ok(r)
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("blob {digest} is not stored"),
        )),
    }
}
