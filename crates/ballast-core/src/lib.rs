//! Ballast's domain: model names, stages and their state machine, digests, artifact paths,
//! manifests and the error taxonomy shared by every other crate.
//!
//! Everything here is pure (no I/O, no async, no HTTP), so the rules can be property-tested and
//! reused unchanged by the server, the store, the client and the router.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;
pub mod path;
pub mod stage;

pub use digest::Sha256Digest;
pub use error::{ErrorCode, ValidationError};
pub use manifest::{Manifest, ManifestEntry};
pub use name::{validate_alias, validate_namespace, validate_tag_key, ModelName};
pub use path::validate_artifact_path;
pub use stage::Stage;
