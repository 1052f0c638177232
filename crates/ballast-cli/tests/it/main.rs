//! Black-box tests of the `ballast` binary: the CLI against a real server process, and crash
//! tests that SIGKILL the server mid-write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod crash;
mod dboutage;
mod governance;
mod multinode;
mod pgtls;
mod regions;
mod retention;
mod support;
mod webhooks;
