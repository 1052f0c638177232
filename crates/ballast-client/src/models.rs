//! `/v1/models`: create, read, list, update and delete models, plus the health check.

use ballast_api::{CreateModel, Model, ModelList, UpdateModel};
use ballast_core::ModelName;
use reqwest::{Method, Url};

use crate::error::ClientError;
use crate::http::Client;
use crate::types::{ModelQuery, Pairs, Precondition};

impl Client {
    /// The URL of `/v1/models/{ns}/{model}/REST…`.
    pub(crate) fn model_url(
        &self,
        name: &ModelName,
        rest: &[&str],
        query: &Pairs,
    ) -> Result<Url, ClientError> {
        let mut segments = vec!["v1", "models", name.namespace(), name.model()];
        segments.extend_from_slice(rest);
        self.url(&segments, query)
    }

    /// `GET /healthz`: whether the registry answers.
    ///
    /// # Errors
    /// When it cannot be reached or is not healthy.
    pub async fn health(&self) -> Result<(), ClientError> {
        let url = self.url(&["healthz"], &Pairs::new())?;
        self.send_empty(self.call(Method::GET, url)).await
    }

    /// `POST /v1/models`: registers a model.
    ///
    /// # Errors
    /// `already_exists`, `invalid_name`, or a transport error.
    pub async fn create_model(&self, body: &CreateModel) -> Result<Model, ClientError> {
        let url = self.url(&["v1", "models"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET /v1/models/{ns}/{model}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn get_model(&self, name: &ModelName) -> Result<Model, ClientError> {
        let url = self.model_url(name, &[], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET /v1/models?…`: one page of models, ordered by name.
    ///
    /// # Errors
    /// `invalid_argument` for a bad filter, or a transport error.
    pub async fn list_models(&self, query: &ModelQuery) -> Result<ModelList, ClientError> {
        let url = self.url(&["v1", "models"], &query.pairs())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `PATCH /v1/models/{ns}/{model}`: changes the description or tags.
    ///
    /// # Errors
    /// `not_found`, `precondition_failed`, or a transport error.
    pub async fn update_model(
        &self,
        name: &ModelName,
        body: &UpdateModel,
        precondition: Option<Precondition>,
    ) -> Result<Model, ClientError> {
        let url = self.model_url(name, &[], &Pairs::new())?;
        let call = self
            .call(Method::PATCH, url)
            .precondition(precondition)
            .json(body)?;
        self.send_json(call).await
    }

    /// `DELETE /v1/models/{ns}/{model}`.
    ///
    /// # Errors
    /// `not_found`, `conflict` while a version is in staging or production, or a transport error.
    pub async fn delete_model(
        &self,
        name: &ModelName,
        precondition: Option<Precondition>,
    ) -> Result<(), ClientError> {
        let url = self.model_url(name, &[], &Pairs::new())?;
        self.send_empty(self.call(Method::DELETE, url).precondition(precondition))
            .await
    }
}
