//! Client-side parameter types (list filters, preconditions, byte ranges, upload options) and
//! the few answer shapes that `ballast-api` does not define as structs (manifest, audit check).

use std::fmt;
use std::sync::Arc;

use ballast_api::{FileEntry, VersionState};
use ballast_core::Stage;
use serde::{Deserialize, Serialize};

/// A write precondition, sent as `If-Match` / `If-None-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Only if the resource is at this revision (`If-Match: "<revision>"`).
    Revision(u64),
    /// Only if the resource exists (`If-Match: *`).
    Exists,
    /// Only if the resource does not exist yet (`If-None-Match: *`).
    Absent,
}

impl Precondition {
    /// The header name and value.
    pub(crate) fn header(self) -> (&'static str, String) {
        match self {
            Self::Revision(r) => ("if-match", format!("\"{r}\"")),
            Self::Exists => ("if-match", "*".to_owned()),
            Self::Absent => ("if-none-match", "*".to_owned()),
        }
    }
}

impl From<u64> for Precondition {
    fn from(revision: u64) -> Self {
        Self::Revision(revision)
    }
}

impl std::str::FromStr for Precondition {
    type Err = String;

    /// Parses a revision number, optionally quoted as in an `ETag`, or `*`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "*" {
            return Ok(Self::Exists);
        }
        t.trim_matches('"').parse::<u64>().map(Self::Revision).map_err(|_| {
            format!("expected a revision number (as shown in the resource's `revision` field) or *, got {s:?}")
        })
    }
}

/// A byte range of a file: `start..=end`, or `start..` to the end when `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte, from 0.
    pub start: u64,
    /// Last byte, inclusive; `None` for "to the end".
    pub end: Option<u64>,
}

impl ByteRange {
    /// From `start` to the end of the file.
    #[must_use]
    pub const fn from(start: u64) -> Self {
        Self { start, end: None }
    }
}

impl fmt::Display for ByteRange {
    /// The `Range` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "bytes={}-{end}", self.start),
            None => write!(f, "bytes={}-", self.start),
        }
    }
}

/// Filters for [`crate::Client::list_models`].
#[derive(Debug, Clone, Default)]
pub struct ModelQuery {
    /// Only models of this namespace.
    pub namespace: Option<String>,
    /// Only models whose full name starts with this.
    pub prefix: Option<String>,
    /// `key` (has the tag) or `key=value`.
    pub tag: Option<String>,
    /// Page size (server default 100, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Order of [`crate::Client::list_versions`] results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first (the server's default).
    Desc,
}

impl SortOrder {
    fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// Filters for [`crate::Client::list_versions`].
#[derive(Debug, Clone, Default)]
pub struct VersionQuery {
    /// Only versions in this stage.
    pub stage: Option<Stage>,
    /// Tag filters, all of which must hold: `key` or `key=value`.
    pub tags: Vec<String>,
    /// Metric thresholds, all of which must hold: `accuracy>=0.9` (ops `>=`, `<=`, `>`, `<`, `=`, `!=`).
    pub metrics: Vec<String>,
    /// Only drafts or only sealed versions.
    pub state: Option<VersionState>,
    /// `number` (default), `created_at` or `metric:NAME`.
    pub order_by: Option<String>,
    /// Direction (server default: descending).
    pub order: Option<SortOrder>,
    /// Page size (server default 100, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters for [`crate::Client::list_audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries after this id (pass `next_after` of the previous page).
    pub after: Option<u64>,
    /// Only entries about this model (`ns/model`).
    pub model: Option<String>,
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries of this action (`model.create`, `version.stage`, …).
    pub action: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only entries before this RFC 3339 time.
    pub until: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

/// Query pairs, in order, for a URL.
pub(crate) type Pairs = Vec<(&'static str, String)>;

impl ModelQuery {
    pub(crate) fn pairs(&self) -> Pairs {
        let mut p = Pairs::new();
        push_opt(&mut p, "namespace", self.namespace.as_deref());
        push_opt(&mut p, "prefix", self.prefix.as_deref());
        push_opt(&mut p, "tag", self.tag.as_deref());
        push_opt(&mut p, "limit", self.limit.map(|l| l.to_string()).as_deref());
        push_opt(&mut p, "cursor", self.cursor.as_deref());
        p
    }
}

impl VersionQuery {
    pub(crate) fn pairs(&self) -> Pairs {
        let mut p = Pairs::new();
        push_opt(&mut p, "stage", self.stage.map(Stage::as_str));
        for t in &self.tags {
            p.push(("tag", t.clone()));
        }
        for m in &self.metrics {
            p.push(("metric", m.clone()));
        }
        let state = self.state.map(|s| match s {
            VersionState::Draft => "draft",
            VersionState::Sealed => "sealed",
        });
        push_opt(&mut p, "state", state);
        push_opt(&mut p, "order_by", self.order_by.as_deref());
        push_opt(&mut p, "order", self.order.map(SortOrder::as_str));
        push_opt(&mut p, "limit", self.limit.map(|l| l.to_string()).as_deref());
        push_opt(&mut p, "cursor", self.cursor.as_deref());
        p
    }
}

impl AuditQuery {
    pub(crate) fn pairs(&self) -> Pairs {
        let mut p = Pairs::new();
        push_opt(&mut p, "after", self.after.map(|a| a.to_string()).as_deref());
        push_opt(&mut p, "model", self.model.as_deref());
        push_opt(&mut p, "actor", self.actor.as_deref());
        push_opt(&mut p, "action", self.action.as_deref());
        push_opt(&mut p, "since", self.since.as_deref());
        push_opt(&mut p, "until", self.until.as_deref());
        push_opt(&mut p, "limit", self.limit.map(|l| l.to_string()).as_deref());
        p
    }
}

fn push_opt(p: &mut Pairs, key: &'static str, value: Option<&str>) {
    if let Some(v) = value {
        p.push((key, v.to_owned()));
    }
}

/// A version's manifest as the registry serves it: every file, and the digest once sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionManifest {
    /// Files sorted by path.
    pub files: Vec<FileEntry>,
    /// SHA-256 of the canonical manifest, once the version is sealed.
    #[serde(default)]
    pub digest: Option<String>,
    /// Sum of file sizes.
    #[serde(default)]
    pub total_size: u64,
    /// Draft or sealed, when the server says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VersionState>,
}

/// The result of checking the audit trail's hash chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Whether every entry chains to the previous one.
    pub ok: bool,
    /// How many entries were checked (when the chain is intact).
    #[serde(default)]
    pub entries: Option<u64>,
    /// The first entry whose hash does not match.
    #[serde(default)]
    pub first_bad_id: Option<u64>,
}

/// What a `HEAD` on a file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    /// Size in bytes.
    pub size: Option<u64>,
    /// SHA-256 of the file (from `x-ballast-sha256`).
    pub sha256: Option<String>,
}

/// Called with the number of bytes sent so far in the current attempt (0 when an attempt
/// restarts), so a progress bar can follow an upload.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Options of an upload.
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// The file's SHA-256, sent as `x-ballast-sha256`: the server refuses bytes that do not
    /// match it (`digest_mismatch`).
    pub sha256: Option<ballast_core::Sha256Digest>,
    /// Media type, sent as `Content-Type` and recorded in the manifest.
    pub media_type: Option<String>,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadOptions")
            .field("sha256", &self.sha256)
            .field("media_type", &self.media_type)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_parse_and_print() {
        assert_eq!("3".parse::<Precondition>(), Ok(Precondition::Revision(3)));
        assert_eq!("\"3\"".parse::<Precondition>(), Ok(Precondition::Revision(3)));
        assert_eq!("*".parse::<Precondition>(), Ok(Precondition::Exists));
        assert!("x".parse::<Precondition>().is_err());
        assert_eq!(
            Precondition::Revision(7).header(),
            ("if-match", "\"7\"".to_owned())
        );
        assert_eq!(Precondition::Absent.header(), ("if-none-match", "*".to_owned()));
    }

    #[test]
    fn ranges() {
        assert_eq!(ByteRange::from(10).to_string(), "bytes=10-");
        assert_eq!(
            ByteRange {
                start: 0,
                end: Some(9)
            }
            .to_string(),
            "bytes=0-9"
        );
    }

    #[test]
    fn version_query_repeats_tags_and_metrics() {
        let q = VersionQuery {
            stage: Some(Stage::Staging),
            tags: vec!["a".into(), "b=c".into()],
            metrics: vec!["acc>=0.9".into()],
            state: Some(VersionState::Sealed),
            order: Some(SortOrder::Asc),
            ..VersionQuery::default()
        };
        let p = q.pairs();
        assert_eq!(
            p,
            vec![
                ("stage", "staging".to_owned()),
                ("tag", "a".to_owned()),
                ("tag", "b=c".to_owned()),
                ("metric", "acc>=0.9".to_owned()),
                ("state", "sealed".to_owned()),
                ("order", "asc".to_owned()),
            ]
        );
    }
}
