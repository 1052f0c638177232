//! Artifact paths inside a version: safe, relative, `/`-separated.

use crate::error::{ErrorCode, ValidationError};

/// Longest allowed artifact path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Checks an artifact path: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash, no NUL or other control character, at most 1024 bytes.
///
/// # Errors
/// `invalid_path` saying which rule the path breaks.
pub fn validate_artifact_path(path: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            ErrorCode::InvalidPath,
            "path",
            format!("invalid artifact path {path:?}: {why}"),
        ))
    };
    if path.is_empty() {
        return bad("the path is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("paths are at most 1024 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed; use a path relative to the version root");
    }
    if path.chars().any(char::is_control) {
        return bad("control characters (including NUL) are not allowed");
    }
    if path.contains('\\') {
        return bad("use '/' as the separator; '\\' is not allowed");
    }
    for seg in path.split('/') {
        match seg {
            "" => return bad("empty segments ('//' or a trailing '/') are not allowed"),
            "." | ".." => return bad("'.' and '..' segments are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        for ok in ["model.safetensors", "a/b/c.json", "weights/..hidden", "x y/ü.bin"] {
            assert!(validate_artifact_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "a\nb",
        ] {
            let e = validate_artifact_path(bad).err();
            assert_eq!(e.map(|e| e.code), Some(ErrorCode::InvalidPath), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn accepted_paths_stay_inside(p in "\\PC{0,64}") {
            if validate_artifact_path(&p).is_ok() {
                let mut depth = 0i32;
                for seg in p.split('/') {
                    prop_assert!(seg != ".." && seg != "." && !seg.is_empty());
                    depth += 1;
                }
                prop_assert!(depth >= 1 && !p.starts_with('/'));
            }
        }
    }
}
