//! `/v1/deployments`, `/v1/routes` and `/v1/routing/snapshot`: where versions are served, the
//! logical models routers serve, and the snapshot compiled from them.

use ballast_api::deployments::{
    CreateDeployment, Deployment, DeploymentList, RegistryRoute, RouteList, SetRoute,
};
use ballast_api::routing::RoutingSnapshot;
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::Pairs;

impl Client {
    /// `POST /v1/deployments`: records where a sealed version is served.
    ///
    /// # Errors
    /// `not_found` (model or version), `conflict` (draft), `already_exists`, `invalid_argument`
    /// naming the field at fault, or a transport error.
    pub async fn add_deployment(&self, body: &CreateDeployment) -> Result<Deployment, ClientError> {
        let url = self.url(&["v1", "deployments"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET /v1/deployments`, optionally of one model (`ns/model`) and/or region.
    ///
    /// # Errors
    /// A transport error.
    pub async fn list_deployments(
        &self,
        model: Option<&str>,
        region: Option<&str>,
    ) -> Result<DeploymentList, ClientError> {
        let mut q = Pairs::new();
        if let Some(m) = model {
            q.push(("model", m.to_owned()));
        }
        if let Some(r) = region {
            q.push(("region", r.to_owned()));
        }
        let url = self.url(&["v1", "deployments"], &q)?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `DELETE /v1/deployments/{id}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn remove_deployment(&self, id: u64) -> Result<(), ClientError> {
        let url = self.url(&["v1", "deployments", &id.to_string()], &Pairs::new())?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `PUT /v1/routes/{name}`: creates or replaces a registry route.
    ///
    /// # Errors
    /// `invalid_argument`, `not_found` (model), or a transport error.
    pub async fn set_route(&self, name: &str, body: &SetRoute) -> Result<RegistryRoute, ClientError> {
        let url = self.url(&["v1", "routes", name], &Pairs::new())?;
        self.send_json(self.call(Method::PUT, url).json(body)?).await
    }

    /// `GET /v1/routes`.
    ///
    /// # Errors
    /// A transport error.
    pub async fn list_routes(&self) -> Result<RouteList, ClientError> {
        let url = self.url(&["v1", "routes"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `DELETE /v1/routes/{name}`.
    ///
    /// # Errors
    /// `not_found`, `conflict` (another route falls back to it), or a transport error.
    pub async fn delete_route(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "routes", name], &Pairs::new())?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `GET /v1/routing/snapshot`: the current compiled snapshot.
    ///
    /// # Errors
    /// A transport error.
    pub async fn routing_snapshot(&self) -> Result<RoutingSnapshot, ClientError> {
        let url = self.url(&["v1", "routing", "snapshot"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }
}
