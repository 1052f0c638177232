//! `/v1/tokens`, `/v1/roles`, `/v1/whoami`: API tokens and roles per namespace.

use ballast_api::auth::{
    CreateToken, CreatedToken, GrantRole, RoleBinding, RoleList, Token, TokenList, WhoAmI,
};
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::Pairs;

impl Client {
    /// `POST /v1/tokens`: creates a token; the answer holds its secret, shown this once.
    ///
    /// # Errors
    /// `permission_denied` (needs admin on `*`), `invalid_argument`, or a transport error.
    pub async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken, ClientError> {
        let url = self.url(&["v1", "tokens"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET /v1/tokens`, optionally of one principal.
    ///
    /// # Errors
    /// `permission_denied`, or a transport error.
    pub async fn list_tokens(&self, principal: Option<&str>) -> Result<TokenList, ClientError> {
        let mut q = Pairs::new();
        if let Some(p) = principal {
            q.push(("principal", p.to_owned()));
        }
        let url = self.url(&["v1", "tokens"], &q)?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `DELETE /v1/tokens/{id}`: revokes a token.
    ///
    /// # Errors
    /// `not_found`, `conflict` (the last admin token), or a transport error.
    pub async fn revoke_token(&self, id: u64) -> Result<Token, ClientError> {
        let url = self.url(&["v1", "tokens", &id.to_string()], &Pairs::new())?;
        self.send_json(self.call(Method::DELETE, url)).await
    }

    /// `POST /v1/roles`: grants a role.
    ///
    /// # Errors
    /// `invalid_argument`, `permission_denied`, or a transport error.
    pub async fn grant_role(&self, body: &GrantRole) -> Result<RoleBinding, ClientError> {
        let url = self.url(&["v1", "roles"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `DELETE /v1/roles/{principal}/{namespace}/{role}`: revokes a role.
    ///
    /// # Errors
    /// `not_found`, `conflict` (the last admin), or a transport error.
    pub async fn revoke_role(&self, body: &GrantRole) -> Result<(), ClientError> {
        let url = self.url(
            &[
                "v1",
                "roles",
                &body.principal,
                &body.namespace,
                body.role.as_str(),
            ],
            &Pairs::new(),
        )?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `GET /v1/roles`, optionally of one principal.
    ///
    /// # Errors
    /// `permission_denied`, or a transport error.
    pub async fn list_roles(&self, principal: Option<&str>) -> Result<RoleList, ClientError> {
        let mut q = Pairs::new();
        if let Some(p) = principal {
            q.push(("principal", p.to_owned()));
        }
        let url = self.url(&["v1", "roles"], &q)?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET /v1/whoami`: the caller's principal and roles.
    ///
    /// # Errors
    /// `unauthenticated`, or a transport error.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        let url = self.url(&["v1", "whoami"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }
}
