#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The store conformance suite: the behaviour every metadata backend must share, written once
//! against the [`ballast_store::Store`] trait and run against each backend.
//!
//! Plugging in a backend:
//! 1. add a module next to `sqlite.rs` with an `async fn fresh() -> Option<Fixture>` that returns a new,
//!    empty store (a fresh database or schema) and whatever must outlive it (a temporary
//!    directory, a dropped-on-exit schema) as the fixture's guard;
//! 2. in that module, invoke `conformance_suite!(fresh);` — it expands one `#[tokio::test]` per
//!    conformance function, so the new backend runs exactly the same list;
//! 3. when the backend needs an external server, `fresh` must fail (not skip) when `CI=true` and
//!    the server is missing.
//!
//! The suite asserts what a user relies on (codes, numbering, revisions, audit and events),
//! never how a backend stores it.

#[macro_use]
mod conformance;
mod collation;
mod governance_nodes;
mod nodes;
mod postgres;
mod sqlite;
