//! A throwaway S3-compatible server for tests: `s3s-fs` on `127.0.0.1:<free port>` over a fresh
//! temporary directory, stopped when dropped. The binary is `$BALLAST_S3S_FS` or `s3s-fs` on
//! `PATH`. When it is missing, [`S3Server::start`] fails the test when `CI=true` and otherwise
//! returns `None` after printing why the test is skipped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key the test server accepts.
pub const ACCESS_KEY: &str = "ballast-test";
/// Secret key the test server accepts.
pub const SECRET_KEY: &str = "ballast-test-secret";

/// A running `s3s-fs` with one bucket.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
    dir: tempfile::TempDir,
    child: Child,
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BALLAST_S3S_FS") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string()))
    {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    dirs.into_iter().map(|d| d.join("s3s-fs")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl S3Server {
    /// Starts a server with an empty bucket named `bucket`.
    pub fn start(bucket: &str) -> Option<Self> {
        let Some(bin) = find_binary() else {
            let why = "s3s-fs is not installed (cargo install s3s-fs@0.14.1 --features binary --locked, or set BALLAST_S3S_FS)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{why}: S3 tests cannot run, and CI=true requires them"
            );
            eprintln!("skipping an S3 test: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(bucket)).expect("bucket dir");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(dir.path())
                .env("RUST_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        bucket: bucket.to_owned(),
                        dir,
                        child,
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    // Most likely the port was taken meanwhile: try another one.
                    last_err = format!("s3s-fs exited with {status}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "s3s-fs did not accept connections within 15 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("cannot start s3s-fs: {last_err}");
    }

    /// The file holding the object `key` of the bucket.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.dir.path().join(&self.bucket).join(key)
    }

    /// Files of multipart uploads that were neither completed nor aborted.
    pub fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
