//! Access-control storage: API tokens (kept as hashes) and role bindings.

use async_trait::async_trait;
use ballast_api::auth::{CreateToken, GrantRole, RoleBinding, Token};

use crate::{Ctx, StoreResult};

/// A token found by its secret's hash, with what decides whether it still works.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    /// The token.
    pub token: Token,
    /// Whether it is revoked or past its expiry at lookup time.
    pub usable: bool,
}

/// Tokens and roles. The server hashes secrets; the store never sees one.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Records a token (and the roles in the request) in one transaction.
    async fn create_token(
        &self,
        ctx: &Ctx,
        req: CreateToken,
        prefix: String,
        secret_sha256: String,
    ) -> StoreResult<Token>;
    /// When no token exists yet, records an admin token for `principal` with `admin` on `*`
    /// and returns it; otherwise returns `None` and changes nothing.
    async fn bootstrap_admin(
        &self,
        ctx: &Ctx,
        principal: &str,
        prefix: String,
        secret_sha256: String,
    ) -> StoreResult<Option<Token>>;
    /// Every token (never secrets), by id.
    async fn list_tokens(&self) -> StoreResult<Vec<Token>>;
    /// Revokes a token (revoking twice is not an error; the first time stays).
    async fn revoke_token(&self, ctx: &Ctx, id: u64) -> StoreResult<Token>;
    /// Finds a token by the SHA-256 (hex) of its secret.
    async fn token_by_hash(&self, secret_sha256: &str) -> StoreResult<Option<TokenLookup>>;
    /// Grants a role (granting one already held is not an error).
    async fn grant_role(&self, ctx: &Ctx, req: GrantRole) -> StoreResult<RoleBinding>;
    /// Revokes a role; `not_found` when it was not held.
    async fn revoke_role(&self, ctx: &Ctx, req: GrantRole) -> StoreResult<()>;
    /// Role bindings, of one principal or of everyone.
    async fn list_roles(&self, principal: Option<String>) -> StoreResult<Vec<RoleBinding>>;
}
