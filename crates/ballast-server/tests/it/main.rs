#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Black-box tests of the registry server over HTTP: one binary, one module per area, each test
//! on its own server (`app::spawn_app`) with a fresh data directory.

mod app;
mod authz;
mod bad_input;
mod completion;
mod concurrency;
mod downloads;
mod durability;
mod events;
mod gc_schedule;
mod governance;
mod idempotency;
mod lifecycle;
mod listing;
mod mlflow;
mod mlflow_authz;
mod mlflow_tracking;
mod regions;
mod retention;
mod routing;
mod s3;
