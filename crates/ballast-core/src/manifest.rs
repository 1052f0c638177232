//! A sealed version's manifest: every file's path, size, digest and media type, in path order.
//! The SHA-256 of the manifest's canonical JSON is the version's identity (its digest).

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative path inside the version.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: Sha256Digest,
    /// Media type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// The list of a version's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Files sorted by path (byte order).
    pub files: Vec<ManifestEntry>,
}

impl Manifest {
    /// Builds a manifest, sorting the entries by path.
    #[must_use]
    pub fn new(mut files: Vec<ManifestEntry>) -> Self {
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Self { files }
    }

    /// The canonical bytes: compact JSON of the sorted entries, fields in a fixed order.
    #[must_use]
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Struct field order is fixed by the derive, and the entries are sorted, so the compact
        // serialisation is canonical. Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The version digest: SHA-256 of the canonical bytes.
    #[must_use]
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.canonical_bytes())
    }

    /// Total size of all files.
    #[must_use]
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent() {
        let e = |p: &str| ManifestEntry {
            path: p.into(),
            size: 1,
            sha256: Sha256Digest::of(p.as_bytes()),
            media_type: None,
        };
        let a = Manifest::new(vec![e("b"), e("a")]);
        let b = Manifest::new(vec![e("a"), e("b")]);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), Manifest::new(vec![e("a")]).digest());
    }
}
