//! The last-known-good snapshot on disk: written atomically (temporary file, fsync, rename,
//! directory fsync) each time a new snapshot becomes active, and read at start so a router whose
//! configuration source is unreadable (or whose registry is down) still serves.
//!
//! The file is the snapshot's JSON with one extra member, `"origin"`: the source that produced
//! it (`registry <url>`, `file <path>` or `api`), so a registry-fed router can tell a snapshot
//! it did not get from its registry (a state directory shared with a `--config` run, or another
//! registry). Files without it (older routers) load with an unknown origin.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ballast_api::routing::RoutingSnapshot;

/// File name of the last-known-good snapshot inside the state directory.
pub const LKG_FILE: &str = "routing-snapshot.json";

/// The member of the file naming the snapshot's source.
const ORIGIN_KEY: &str = "origin";

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
    Ok(load_with_origin(dir)?.map(|(s, _)| s))
}

/// Reads the last-known-good snapshot and the source that produced it (`None` when the file
/// does not say); `Ok(None)` when there is none yet.
///
/// # Errors
/// The file exists but cannot be read, parsed, or fails validation (including its digest).
pub fn load_with_origin(dir: &Path) -> Result<Option<(RoutingSnapshot, Option<String>)>, LkgError> {
    let path = lkg_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LkgError::Read { path, source }),
    };
    let invalid = |message: String| LkgError::Invalid {
        path: path.clone(),
        message,
    };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let origin = value
        .as_object_mut()
        .and_then(|o| o.remove(ORIGIN_KEY))
        .and_then(|o| o.as_str().map(str::to_owned));
    let snapshot: RoutingSnapshot = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    snapshot.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(Some((snapshot, origin)))
}

/// Writes `snapshot`, produced by `origin`, as the last-known-good, atomically and durably.
/// This blocks on disk writes and fsyncs: async callers run it on a blocking thread.
///
/// # Errors
/// The directory or file cannot be written.
pub fn save(dir: &Path, snapshot: &RoutingSnapshot, origin: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut value = serde_json::to_value(snapshot).map_err(std::io::Error::other)?;
    if let Some(o) = value.as_object_mut() {
        o.insert(
            ORIGIN_KEY.to_owned(),
            serde_json::Value::String(origin.to_owned()),
        );
    }
    let bytes = serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)?;
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
        save(dir.path(), &s, "file routes.toml").unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s.clone()));
        assert_eq!(
            load_with_origin(dir.path()).unwrap(),
            Some((s.clone(), Some("file routes.toml".to_owned())))
        );
        // A file of an older router (no origin) still loads.
        std::fs::write(lkg_path(dir.path()), serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(load_with_origin(dir.path()).unwrap(), Some((s.clone(), None)));
        save(dir.path(), &s, "file routes.toml").unwrap();
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
