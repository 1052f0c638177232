//! Integration tests of `ballast-router`: real routers on 127.0.0.1:0 in front of real,
//! fault-injecting upstream servers. One test binary (see CONVENTIONS.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod admin;
mod fallback;
mod health;
mod proxying;
mod region;
mod registry;
mod reload;
mod support;
mod tls;
mod traffic;
mod wire;
