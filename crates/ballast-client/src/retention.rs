//! `/v1/retention/{ns}`, `/v1/models/{ns}/{model}/retention` and `/v1/gc`: retention policies and
//! garbage collection.

use ballast_api::retention::{EffectiveRetention, GcReport, GcRequest, RetentionPolicy, RetentionRule};
use ballast_core::ModelName;
use reqwest::{Method, Url};

use crate::error::ClientError;
use crate::governance::PolicyScope;
use crate::http::Client;
use crate::types::Pairs;

impl Client {
    fn retention_url(&self, scope: &PolicyScope) -> Result<Url, ClientError> {
        match scope {
            PolicyScope::Namespace(ns) => self.url(&["v1", "retention", ns.as_str()], &Pairs::new()),
            PolicyScope::Model(m) => self.model_url(m, &["retention"], &Pairs::new()),
        }
    }

    /// `GET /v1/retention/{ns}`: the retention policy set on a namespace.
    ///
    /// # Errors
    /// `not_found` when none is set, `invalid_name`, or a transport error.
    pub async fn get_namespace_retention(&self, namespace: &str) -> Result<RetentionRule, ClientError> {
        let url = self.retention_url(&PolicyScope::Namespace(namespace.to_owned()))?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET /v1/models/{ns}/{model}/retention`: the policy that applies to a model (its own or
    /// its namespace's).
    ///
    /// # Errors
    /// `not_found` when neither is set (or the model does not exist), or a transport error.
    pub async fn get_model_retention(&self, model: &ModelName) -> Result<EffectiveRetention, ClientError> {
        let url = self.retention_url(&PolicyScope::Model(model.clone()))?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `PUT` a namespace's or model's retention policy (creating or replacing it).
    ///
    /// # Errors
    /// `invalid_argument` naming the field at fault, `not_found` (model), or a transport error.
    pub async fn set_retention(
        &self,
        scope: &PolicyScope,
        policy: &RetentionPolicy,
    ) -> Result<RetentionRule, ClientError> {
        let url = self.retention_url(scope)?;
        self.send_json(self.call(Method::PUT, url).json(policy)?).await
    }

    /// `DELETE` a namespace's or model's own retention policy.
    ///
    /// # Errors
    /// `not_found` when none is set there, or a transport error.
    pub async fn delete_retention(&self, scope: &PolicyScope) -> Result<(), ClientError> {
        let url = self.retention_url(scope)?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `POST /v1/gc`: runs (or, with `dry_run`, simulates) a garbage collection.
    ///
    /// # Errors
    /// `conflict` when another collection is running, `invalid_argument`/`invalid_name` for a
    /// bad scope, `not_found` (model), or a transport error.
    pub async fn run_gc(&self, req: &GcRequest) -> Result<GcReport, ClientError> {
        let url = self.url(&["v1", "gc"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(req)?).await
    }
}
