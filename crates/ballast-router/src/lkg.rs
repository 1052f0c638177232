//! The last-known-good snapshot on disk: written atomically (temporary file, fsync, rename,
//! directory fsync) each time a new snapshot becomes active, and read at start so a router whose
//! configuration source is unreadable (or whose registry is down) still serves.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ballast_api::routing::RoutingSnapshot;

/// File name of the last-known-good snapshot inside the state directory.
pub const LKG_FILE: &str = "routing-snapshot.json";

/// Why the last-known-good snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LkgError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is damaged or invalid (it is left in place, never used).
    #[error("{path} is not a valid routing snapshot: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The path of the last-known-good file in `dir`.
#[must_use]
pub fn lkg_path(dir: &Path) -> PathBuf {
    dir.join(LKG_FILE)
}

/// Reads the last-known-good snapshot; `Ok(None)` when there is none yet.
///
/// # Errors
/// The file exists but cannot be read, parsed, or fails validation (including its digest).
pub fn load(dir: &Path) -> Result<Option<RoutingSnapshot>, LkgError> {
    let path = lkg_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LkgError::Read { path, source }),
    };
    let snapshot: RoutingSnapshot = serde_json::from_str(&text).map_err(|e| LkgError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    snapshot.validate().map_err(|e| LkgError::Invalid {
        path,
        message: e.to_string(),
    })?;
    Ok(Some(snapshot))
}

/// Writes `snapshot` as the last-known-good, atomically and durably.
///
/// # Errors
/// The directory or file cannot be written.
pub fn save(dir: &Path, snapshot: &RoutingSnapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{LKG_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, lkg_path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let s = RoutingSnapshot::new(5, BTreeMap::new(), Vec::new());
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(LKG_FILE)]);
        let text = std::fs::read_to_string(lkg_path(dir.path())).unwrap();
        std::fs::write(
            lkg_path(dir.path()),
            text.replace("\"generation\": 5", "\"generation\": 6"),
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("digest"), "{err}");
    }
}
