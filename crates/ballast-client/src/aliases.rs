//! `/v1/models/{ns}/{model}/aliases/{alias}`: read, resolve, move (compare-and-swap) and delete
//! aliases.

use ballast_api::{Alias, SetAlias, Version};
use ballast_core::ModelName;
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::{Pairs, Precondition};

impl Client {
    /// `GET …/aliases/{alias}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn get_alias(&self, name: &ModelName, alias: &str) -> Result<Alias, ClientError> {
        let url = self.model_url(name, &["aliases", alias], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET …/aliases/{alias}/version`: the version the alias points at.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn resolve_alias(&self, name: &ModelName, alias: &str) -> Result<Version, ClientError> {
        let url = self.model_url(name, &["aliases", alias, "version"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `PUT …/aliases/{alias}`: points the alias at `version` (creating it if needed). With
    /// `Precondition::Revision` only if nobody moved it since; with `Precondition::Absent` only
    /// if it does not exist yet.
    ///
    /// # Errors
    /// `precondition_failed`, `not_found` for an unknown version, `invalid_name`, or a transport
    /// error.
    pub async fn set_alias(
        &self,
        name: &ModelName,
        alias: &str,
        version: u64,
        precondition: Option<Precondition>,
    ) -> Result<Alias, ClientError> {
        let url = self.model_url(name, &["aliases", alias], &Pairs::new())?;
        let call = self
            .call(Method::PUT, url)
            .precondition(precondition)
            .json(&SetAlias { version })?;
        self.send_json(call).await
    }

    /// `DELETE …/aliases/{alias}`.
    ///
    /// # Errors
    /// `not_found`, `precondition_failed`, or a transport error.
    pub async fn delete_alias(
        &self,
        name: &ModelName,
        alias: &str,
        precondition: Option<Precondition>,
    ) -> Result<(), ClientError> {
        let url = self.model_url(name, &["aliases", alias], &Pairs::new())?;
        self.send_empty(self.call(Method::DELETE, url).precondition(precondition))
            .await
    }
}
