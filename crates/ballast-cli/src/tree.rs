//! The local side of a push: walking a directory into artifact paths, hashing the files, and
//! computing the manifest digest the registry must arrive at.
//!
//! Paths are relative to the directory, `/`-separated and checked with the registry's own
//! rule. Symbolic links are followed only while they stay inside the directory (a link that
//! escapes it is an error naming the link), and a link that loops back is an error too.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ballast_core::{validate_artifact_path, Manifest, ManifestEntry, Sha256Digest};
use sha2::{Digest as _, Sha256};

/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 128;

/// A file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Artifact path: relative, `/`-separated.
    pub path: String,
    /// Where to read it.
    pub local: PathBuf,
    /// Size when walked.
    pub size: u64,
}

/// A file with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedFile {
    /// Artifact path.
    pub path: String,
    /// Where to read it.
    pub local: PathBuf,
    /// Size in bytes (as hashed).
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Sha256Digest,
    /// Media type, when one is recorded.
    pub media_type: Option<String>,
}

/// Every file under `root`, sorted by artifact path.
///
/// # Errors
/// When `root` is not a directory, a link escapes it or loops, an entry is not a file,
/// directory or link, or a name is not UTF-8 or not a valid artifact path.
pub fn walk(root: &Path) -> anyhow::Result<Vec<LocalFile>> {
    let canonical_root = std::fs::canonicalize(root)
        .with_context(|| format!("cannot open the directory {}", root.display()))?;
    if !canonical_root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut files = Vec::new();
    // (directory to read, its canonical path, its artifact-path prefix, depth)
    let mut stack = vec![(root.to_path_buf(), canonical_root.clone(), String::new(), 0usize)];
    while let Some((dir, canonical_dir, prefix, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            bail!(
                "{} is nested more than {MAX_DEPTH} directories deep",
                dir.display()
            );
        }
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list the directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list the directory {}", dir.display()))?;
            let local = entry.path();
            let Ok(name) = entry.file_name().into_string() else {
                bail!(
                    "{} has a name that is not valid UTF-8; rename it",
                    local.display()
                );
            };
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", local.display()))?;
            let (target_is_dir, canonical) = if kind.is_symlink() {
                let target = std::fs::canonicalize(&local).with_context(|| {
                    format!(
                        "{} is a symbolic link whose target does not exist or cannot be read",
                        local.display()
                    )
                })?;
                if !target.starts_with(&canonical_root) {
                    bail!(
                        "{} is a symbolic link to {}, outside {}; links must stay inside the directory being pushed",
                        local.display(),
                        target.display(),
                        root.display()
                    );
                }
                let meta = std::fs::metadata(&target)
                    .with_context(|| format!("cannot read {}", target.display()))?;
                if meta.is_dir() {
                    if canonical_dir.starts_with(&target) {
                        bail!(
                            "{} is a symbolic link to {}, which contains it: the link loops",
                            local.display(),
                            target.display()
                        );
                    }
                } else if !meta.is_file() {
                    bail!(
                        "{} links to something that is not a regular file or directory",
                        local.display()
                    );
                }
                (meta.is_dir(), target)
            } else if kind.is_dir() {
                (true, canonical_dir.join(entry.file_name()))
            } else if kind.is_file() {
                (false, PathBuf::new())
            } else {
                bail!(
                    "{} is not a regular file, directory or symbolic link (a socket, FIFO or device?); move it out of the directory",
                    local.display()
                );
            };
            validate_artifact_path(&path)
                .map_err(|e| anyhow::anyhow!("{}: {}", local.display(), e.message))?;
            if target_is_dir {
                stack.push((local, canonical, path, depth + 1));
            } else {
                let size = std::fs::metadata(&local)
                    .with_context(|| format!("cannot read {}", local.display()))?
                    .len();
                files.push(LocalFile { path, local, size });
            }
        }
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

/// SHA-256 and size of a file, calling `progress` with the bytes read since the last call.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(path: &Path, mut progress: impl FnMut(u64)) -> anyhow::Result<(Sha256Digest, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        progress(n as u64);
    }
    Ok((Sha256Digest::from_bytes(hasher.finalize().into()), size))
}

/// The manifest of the hashed files: the one whose digest the registry must seal.
#[must_use]
pub fn manifest(files: &[HashedFile]) -> Manifest {
    Manifest::new(
        files
            .iter()
            .map(|f| ManifestEntry {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256,
                media_type: f.media_type.clone(),
            })
            .collect(),
    )
}

/// The directories (artifact paths) that must exist to hold `paths`, parents first.
#[must_use]
pub fn parent_dirs<'a>(paths: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for p in paths {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            dirs.insert(p[..at + i].to_owned());
            at += i + 1;
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| unreachable!("{e}"));
        }
        std::fs::write(p, data).unwrap_or_else(|e| unreachable!("{e}"));
    }

    fn paths(files: &[LocalFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn walks_nested_files_in_byte_order() {
        let d = tmp();
        write(d.path(), "b.bin", b"bb");
        write(d.path(), "a/z.json", b"{}");
        write(d.path(), "a/b/c.txt", b"c");
        write(d.path(), "A.txt", b"");
        std::fs::create_dir_all(d.path().join("empty")).unwrap_or_else(|e| unreachable!("{e}"));
        let files = walk(d.path()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(paths(&files), ["A.txt", "a/b/c.txt", "a/z.json", "b.bin"]);
        assert_eq!(files[3].size, 2);
        assert_eq!(files[3].local, d.path().join("b.bin"));
    }

    #[test]
    fn follows_links_inside_and_refuses_links_outside() {
        let d = tmp();
        let outside = tmp();
        write(d.path(), "real/w.bin", b"weights");
        write(outside.path(), "secret", b"s");
        std::os::unix::fs::symlink(d.path().join("real/w.bin"), d.path().join("link.bin"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        std::os::unix::fs::symlink("real", d.path().join("alias-dir"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let files = walk(d.path()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(paths(&files), ["alias-dir/w.bin", "link.bin", "real/w.bin"]);
        assert_eq!(files[1].size, 7);

        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("escape"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let err = walk(d.path()).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("escape") && err.contains("outside"), "{err}");
    }

    #[test]
    fn refuses_link_loops_and_dangling_links() {
        let d = tmp();
        write(d.path(), "sub/x", b"x");
        std::os::unix::fs::symlink("..", d.path().join("sub/up")).unwrap_or_else(|e| unreachable!("{e}"));
        let err = walk(d.path()).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("loops"), "{err}");

        let d = tmp();
        std::os::unix::fs::symlink("nowhere", d.path().join("dangling"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let err = walk(d.path()).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("dangling"), "{err}");
    }

    #[test]
    fn refuses_names_that_are_not_artifact_paths_and_non_directories() {
        let d = tmp();
        write(d.path(), "back\\slash", b"");
        let err = walk(d.path()).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("'\\' is not allowed"), "{err}");

        let f = tmp();
        write(f.path(), "file", b"");
        assert!(walk(&f.path().join("file")).is_err());
        assert!(walk(&f.path().join("missing")).is_err());
    }

    #[test]
    fn manifest_matches_the_registry_rule() {
        let d = tmp();
        write(d.path(), "b.bin", b"bb");
        write(d.path(), "a/c.txt", b"abc");
        let files = walk(d.path()).unwrap_or_else(|e| unreachable!("{e:#}"));
        let mut seen = 0;
        let hashed: Vec<HashedFile> = files
            .into_iter()
            .map(|f| {
                let (sha256, size) =
                    hash_file(&f.local, |n| seen += n).unwrap_or_else(|e| unreachable!("{e:#}"));
                HashedFile {
                    path: f.path,
                    local: f.local,
                    size,
                    sha256,
                    media_type: None,
                }
            })
            .collect();
        assert_eq!(seen, 5);
        assert_eq!(hashed[0].sha256, Sha256Digest::of(b"abc"));
        let m = manifest(&hashed);
        let expected = Manifest::new(vec![
            ManifestEntry {
                path: "b.bin".into(),
                size: 2,
                sha256: Sha256Digest::of(b"bb"),
                media_type: None,
            },
            ManifestEntry {
                path: "a/c.txt".into(),
                size: 3,
                sha256: Sha256Digest::of(b"abc"),
                media_type: None,
            },
        ]);
        assert_eq!(m, expected);
        assert_eq!(m.digest(), expected.digest());
        assert_eq!(m.total_size(), 5);
        // The digest is the SHA-256 of the canonical JSON, as the registry computes it.
        let canonical = format!(
            r#"{{"files":[{{"path":"a/c.txt","size":3,"sha256":"{}"}},{{"path":"b.bin","size":2,"sha256":"{}"}}]}}"#,
            Sha256Digest::of(b"abc").to_hex(),
            Sha256Digest::of(b"bb").to_hex()
        );
        assert_eq!(m.digest(), Sha256Digest::of(canonical.as_bytes()));
    }

    #[test]
    fn parent_dirs_lists_every_level() {
        let dirs = parent_dirs(["a/b/c.txt", "a/d", "e", "f/g"]);
        assert_eq!(dirs.into_iter().collect::<Vec<_>>(), ["a", "a/b", "f"]);
    }
}
