//! Black-box tests of the `ballast` binary: the CLI against a real server process, and crash
//! tests that SIGKILL the server mid-write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod cli;
mod completion;
mod crash;
mod dboutage;
mod governance;
mod multinode;
mod pgtls;
mod regions;
mod retention;
mod router_process;
// The S3-compatible test server of the blob store's suite.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../../ballast-blob/tests/it/s3s.rs"]
mod s3s;
mod server_log;
mod support;
mod webhooks;
