//! Where blobs live, as configured by a URL: `file:///path` (a directory on local disk) or
//! `s3://bucket/prefix` (an S3-compatible bucket), and opening the matching store.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::s3::{S3BlobStore, S3Options};
use crate::{BlobError, BlobStore, LocalBlobStore};

/// A parsed blob URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A directory on local disk.
    Local(PathBuf),
    /// A bucket and a key prefix (without leading or trailing `/`; may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix under which every object of the store lives.
        prefix: String,
    },
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A blob URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob URL {url:?}: {reason} (expected s3://bucket/prefix or file:///absolute/path)")]
pub struct BlobUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && b.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_graphic() && c != b'\\' && c != b'%')
}

impl FromStr for BlobLocation {
    type Err = BlobUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BlobUrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(bad(
                    "the bucket name must have 3 to 63 lowercase letters, digits, '.' or '-'",
                ));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() && !prefix.split('/').all(valid_segment) {
                return Err(bad(
                    "the prefix must be '/'-separated non-empty segments of visible ASCII, without '.', '..', '%' or '\\'",
                ));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file URL needs an absolute path (file:///srv/blobs)"));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        Err(bad("unknown scheme"))
    }
}

/// Opens the store at `location`; `s3` supplies the connection settings of an S3 location
/// (its bucket and prefix are taken from the location).
///
/// # Errors
/// When the directory cannot be created, the S3 settings are invalid, or the bucket cannot be
/// reached.
pub async fn open_store(location: &BlobLocation, s3: S3Options) -> Result<Arc<dyn BlobStore>, BlobError> {
    match location {
        BlobLocation::Local(dir) => Ok(Arc::new(LocalBlobStore::open(dir)?)),
        BlobLocation::S3 { bucket, prefix } => {
            let opts = S3Options {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                ..s3
            };
            Ok(Arc::new(S3BlobStore::open(opts).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_file_urls() {
        let s3 = |b: &str, p: &str| BlobLocation::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!("s3://models".parse(), Ok(s3("models", "")));
        assert_eq!("s3://models/".parse(), Ok(s3("models", "")));
        assert_eq!("s3://my.bucket-1/a/b/".parse(), Ok(s3("my.bucket-1", "a/b")));
        assert_eq!(
            "file:///srv/blobs".parse(),
            Ok(BlobLocation::Local(PathBuf::from("/srv/blobs")))
        );
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-lead",
            "s3://b_u",
            "s3://bucket//x",
            "s3://bucket/a/../b",
            "s3://bucket/a b",
            "file://relative/path",
            "http://x/y",
            "/srv/blobs",
            "",
        ] {
            let r: Result<BlobLocation, _> = bad.parse();
            assert!(r.is_err(), "{bad} was accepted");
        }
    }
}
