//! A typed async client of the Ballast registry's `/v1` HTTP API, used by the `ballast` CLI
//! and by anyone scripting the registry from Rust.
//!
//! One method per route, taking and returning the wire types of `ballast-api`. Every call sends
//! the token and actor the client was built with; writes carry a random `Idempotency-Key` that
//! is reused across internal retries, so a retried write is applied once. Failures are a
//! [`ClientError`]: either the server's error body (code, message, field, status) or a
//! transport problem, with a message that says what to do next.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ballast_client::ClientError> {
//! use ballast_client::Client;
//! let client = Client::new("http://127.0.0.1:8080", None, Some("alice".into()))?;
//! let name = ballast_core::ModelName::parse("acme/bot").map_err(|e| {
//!     ballast_client::ClientError::InvalidInput { what: "model name", reason: e.message }
//! })?;
//! let model = client.get_model(&name).await?;
//! println!("{} has {} versions", model.name, model.latest_version);
//! # Ok(()) }
//! ```

mod access;
mod aliases;
mod audit;
mod deployments;
mod error;
mod events;
mod files;
mod governance;
mod http;
mod models;
mod regions;
mod retention;
mod types;
mod versions;

pub use error::{hint_for, ClientError};
pub use files::Download;
pub use governance::{PolicyScope, StageOutcome, TransitionQuery, TransitionVerb};
pub use http::{
    Client, ClientBuilder, RetryPolicy, ACTOR_HEADER, IDEMPOTENCY_HEADER, REQUEST_ID_HEADER, SHA256_HEADER,
};
pub use types::{
    AuditQuery, AuditVerification, ByteRange, FileHead, ModelQuery, Precondition, ProgressFn, SortOrder,
    UploadOptions, VersionManifest, VersionQuery,
};
