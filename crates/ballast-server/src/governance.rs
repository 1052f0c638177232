//! The governance hook: every move into a gated stage (staging, production) asks the
//! [`TransitionGate`] first. Policies, metric gates and approvals plug in here; until they are
//! configured, [`OpenGate`] lets every move the state machine allows through.

use async_trait::async_trait;
use ballast_api::Version;
use ballast_core::Stage;
use ballast_store::Ctx;

use crate::error::ApiError;

/// Decides whether a stage change may happen now.
#[async_trait]
pub trait TransitionGate: Send + Sync + 'static {
    /// `Ok(())` lets the move proceed; an error is answered to the client and nothing moves.
    async fn check(&self, ctx: &Ctx, version: &Version, to: Stage) -> Result<(), ApiError>;
}

/// Allows every move that the stage state machine allows.
pub struct OpenGate;

#[async_trait]
impl TransitionGate for OpenGate {
    async fn check(&self, _ctx: &Ctx, _version: &Version, _to: Stage) -> Result<(), ApiError> {
        Ok(())
    }
}
