//! Artifacts: streaming uploads (from a path, a tokio file or any byte stream) with the
//! expected digest, attaching blobs the server already holds, blob lookups, streaming
//! downloads with `Range`, and the manifest.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use ballast_api::{AttachFile, BlobInfo, FileEntry};
use ballast_core::{validate_artifact_path, ModelName, Sha256Digest};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use crate::error::{innermost_cause, ClientError};
use crate::http::{Call, CallBody, Client, SHA256_HEADER};
use crate::types::{ByteRange, FileHead, Pairs, UploadOptions, VersionManifest};

/// A file being downloaded: what the headers said, and the bytes as a stream.
///
/// The stream yields [`ClientError::Transport`] if the connection breaks midway; the caller
/// checks size and digest (the registry verifies blobs as it reads them and aborts the body
/// rather than serve corrupt bytes).
pub struct Download {
    /// `true` for a `206 Partial Content` answer to a `Range` request.
    pub partial: bool,
    /// Bytes in this answer (`Content-Length`).
    pub content_length: Option<u64>,
    /// SHA-256 of the whole file (`x-ballast-sha256`).
    pub sha256: Option<String>,
    stream: BoxStream<'static, Result<Bytes, ClientError>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("partial", &self.partial)
            .field("content_length", &self.content_length)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Stream for Download {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

fn header_str(resp: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Client {
    /// The URL of a file of a version, checking the artifact path first.
    fn file_url(&self, name: &ModelName, number: u64, path: &str) -> Result<Url, ClientError> {
        validate_artifact_path(path).map_err(|e| ClientError::InvalidInput {
            what: "artifact path",
            reason: e.message,
        })?;
        let n = number.to_string();
        let mut rest = vec!["versions", n.as_str(), "files"];
        rest.extend(path.split('/'));
        self.model_url(name, &rest, &Pairs::new())
    }

    fn upload_call(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
        opts: &UploadOptions,
        body: CallBody,
    ) -> Result<Call, ClientError> {
        let mut call = self.call(Method::PUT, self.file_url(name, number, path)?);
        call.body = body;
        if let Some(d) = &opts.sha256 {
            call = call.header(SHA256_HEADER, &d.to_hex())?;
        }
        if let Some(m) = &opts.media_type {
            call = call.header(CONTENT_TYPE.as_str(), m)?;
        }
        Ok(call)
    }

    /// `PUT …/versions/{n}/files/{path}` from a local file, streamed (never held in memory).
    /// The file is reopened on a retry, so this is the upload to prefer.
    ///
    /// # Errors
    /// `digest_mismatch` when the bytes do not match `opts.sha256`, `conflict` for a sealed
    /// version, `payload_too_large`, [`ClientError::Io`] when the file cannot be read, or a
    /// transport error.
    pub async fn upload_path(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
        local: &Path,
        opts: &UploadOptions,
    ) -> Result<FileEntry, ClientError> {
        let len = tokio::fs::metadata(local)
            .await
            .map_err(|source| ClientError::Io {
                context: format!("cannot read {}", local.display()),
                source,
            })?
            .len();
        let body = CallBody::File {
            path: local.to_path_buf(),
            len,
            progress: opts.progress.clone(),
        };
        self.send_json(self.upload_call(name, number, path, opts, body)?)
            .await
    }

    /// `PUT …/versions/{n}/files/{path}` from an open tokio file, from its current position to
    /// its end. Sent once (a consumed file cannot be replayed); prefer [`Client::upload_path`].
    ///
    /// # Errors
    /// As [`Client::upload_path`].
    pub async fn upload_file(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
        mut file: tokio::fs::File,
        opts: &UploadOptions,
    ) -> Result<FileEntry, ClientError> {
        use tokio::io::AsyncSeekExt;
        let io = |source| ClientError::Io {
            context: format!("cannot read the file to upload as {path}"),
            source,
        };
        let len = file.metadata().await.map_err(io)?.len();
        let pos = file.stream_position().await.map_err(io)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        self.upload_stream(name, number, path, stream, Some(len.saturating_sub(pos)), opts)
            .await
    }

    /// `PUT …/versions/{n}/files/{path}` from any stream of byte chunks. With `len`, it is sent
    /// as `Content-Length` (the server then detects a short upload); without, the body is
    /// chunked. Sent once: a stream cannot be replayed.
    ///
    /// # Errors
    /// As [`Client::upload_path`].
    pub async fn upload_stream<S, E>(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
        body: S,
        len: Option<u64>,
        opts: &UploadOptions,
    ) -> Result<FileEntry, ClientError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let progress = opts.progress.clone();
        if let Some(p) = &progress {
            p(0);
        }
        let mut sent = 0u64;
        let counted = body.map(move |chunk| {
            if let (Ok(b), Some(p)) = (&chunk, &progress) {
                sent += b.len() as u64;
                p(sent);
            }
            chunk
        });
        let body = CallBody::Once(Some(reqwest::Body::wrap_stream(counted)));
        let mut call = self.upload_call(name, number, path, opts, body)?;
        if let Some(len) = len {
            call = call.header(CONTENT_LENGTH.as_str(), &len.to_string())?;
        }
        self.send_json(call).await
    }

    /// `POST …/versions/{n}/files`: adds a blob the server already holds under `path`,
    /// without sending its bytes again.
    ///
    /// # Errors
    /// `not_found` when the server does not hold the blob (upload it instead), `conflict` for
    /// a sealed version, or a transport error.
    pub async fn attach_file(
        &self,
        name: &ModelName,
        number: u64,
        body: &AttachFile,
    ) -> Result<FileEntry, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n, "files"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `DELETE …/versions/{n}/files/{path}` (drafts only).
    ///
    /// # Errors
    /// `not_found`, `conflict` for a sealed version, or a transport error.
    pub async fn delete_file(&self, name: &ModelName, number: u64, path: &str) -> Result<(), ClientError> {
        let url = self.file_url(name, number, path)?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `HEAD /v1/blobs/sha256/{hex}`: whether the server already holds these bytes.
    ///
    /// # Errors
    /// A transport error, or an answer other than 200/404.
    pub async fn blob_exists(&self, digest: &Sha256Digest) -> Result<bool, ClientError> {
        let hex = digest.to_hex();
        let url = self.url(&["v1", "blobs", "sha256", &hex], &Pairs::new())?;
        match self.send(self.call(Method::HEAD, url)).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/blobs/sha256/{hex}`: the stored blob's size, or `None` when not stored.
    ///
    /// # Errors
    /// A transport error, or an answer other than 200/404.
    pub async fn blob_info(&self, digest: &Sha256Digest) -> Result<Option<BlobInfo>, ClientError> {
        let hex = digest.to_hex();
        let url = self.url(&["v1", "blobs", "sha256", &hex], &Pairs::new())?;
        match self.send_json(self.call(Method::GET, url)).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET …/versions/{n}/files/{path}`: the file's bytes as a stream, or part of them with
    /// `range`.
    ///
    /// # Errors
    /// `not_found`, `range_not_satisfiable`, or a transport error (before the first byte; later
    /// failures come through the stream).
    pub async fn download_file(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, ClientError> {
        let url = self.file_url(name, number, path)?;
        let mut call = self.call(Method::GET, url.clone());
        if let Some(r) = range {
            call = call.header("range", &r.to_string())?;
        }
        let resp = self.send(call).await?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let content_length = header_str(&resp, CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let sha256 = header_str(&resp, SHA256_HEADER);
        let url = url.to_string();
        let stream = resp
            .bytes_stream()
            .map(move |chunk| {
                chunk.map_err(|e| ClientError::Transport {
                    method: "GET".into(),
                    url: url.clone(),
                    cause: innermost_cause(&e),
                })
            })
            .boxed();
        Ok(Download {
            partial,
            content_length,
            sha256,
            stream,
        })
    }

    /// `HEAD …/versions/{n}/files/{path}`: size and digest without the bytes.
    ///
    /// # Errors
    /// A 404 (as [`ClientError::Http`], HEAD answers have no body), or a transport error.
    pub async fn file_head(
        &self,
        name: &ModelName,
        number: u64,
        path: &str,
    ) -> Result<FileHead, ClientError> {
        let url = self.file_url(name, number, path)?;
        let resp = self.send(self.call(Method::HEAD, url)).await?;
        Ok(FileHead {
            size: header_str(&resp, CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            sha256: header_str(&resp, SHA256_HEADER),
        })
    }

    /// `GET …/versions/{n}/manifest`: every file with size and digest, and the version digest
    /// once sealed.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn manifest(&self, name: &ModelName, number: u64) -> Result<VersionManifest, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n, "manifest"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_keep_slashes_as_segments_and_refuse_unsafe_paths() {
        let c = Client::new("http://127.0.0.1:8080", None, None).unwrap_or_else(|e| unreachable!("{e}"));
        let name = ModelName::parse("acme/bot").unwrap_or_else(|e| unreachable!("{e}"));
        let u = c
            .file_url(&name, 3, "weights/model 1.bin")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            u.path(),
            "/v1/models/acme/bot/versions/3/files/weights/model%201.bin"
        );
        for bad in ["../x", "/etc/passwd", "a//b", ""] {
            assert!(
                matches!(c.file_url(&name, 3, bad), Err(ClientError::InvalidInput { .. })),
                "{bad}"
            );
        }
    }
}
