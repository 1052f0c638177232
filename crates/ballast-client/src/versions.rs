//! `/v1/models/{ns}/{model}/versions…`: drafts, reads, searches, updates, sealing, stage
//! changes, rollback and the version currently in a stage.

use ballast_api::{
    CreateVersion, Rollback, SealVersion, SetStage, StageChange, UpdateVersion, Version, VersionList,
};
use ballast_core::{ModelName, Stage};
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::{Pairs, Precondition, VersionQuery};

impl Client {
    /// `POST …/versions`: creates a draft version (numbered by the registry).
    ///
    /// # Errors
    /// `not_found` for an unknown model, `invalid_argument` for bad metadata, or a transport error.
    pub async fn create_version(
        &self,
        name: &ModelName,
        body: &CreateVersion,
    ) -> Result<Version, ClientError> {
        let url = self.model_url(name, &["versions"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET …/versions/{n}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn get_version(&self, name: &ModelName, number: u64) -> Result<Version, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET …/versions?…`: one page of versions (default order: number, descending).
    ///
    /// # Errors
    /// `invalid_argument` for a bad filter, or a transport error.
    pub async fn list_versions(
        &self,
        name: &ModelName,
        query: &VersionQuery,
    ) -> Result<VersionList, ClientError> {
        let url = self.model_url(name, &["versions"], &query.pairs())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `PATCH …/versions/{n}`: replaces a draft's metadata, or changes tags of any version.
    ///
    /// # Errors
    /// `conflict` for metadata of a sealed version, `precondition_failed`, or a transport error.
    pub async fn update_version(
        &self,
        name: &ModelName,
        number: u64,
        body: &UpdateVersion,
        precondition: Option<Precondition>,
    ) -> Result<Version, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n], &Pairs::new())?;
        let call = self
            .call(Method::PATCH, url)
            .precondition(precondition)
            .json(body)?;
        self.send_json(call).await
    }

    /// `POST …/versions/{n}/seal`: makes a draft immutable. With `expected_digest`, only when
    /// the manifest digest is that one.
    ///
    /// # Errors
    /// `conflict` (already sealed, or the digest differs), or a transport error.
    pub async fn seal(
        &self,
        name: &ModelName,
        number: u64,
        body: &SealVersion,
    ) -> Result<Version, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n, "seal"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `POST …/versions/{n}/stage`: moves a version to another stage; promotion to production
    /// demotes the previous production version in the same step.
    ///
    /// # Errors
    /// `invalid_transition`, `conflict` for a draft, `precondition_failed`, or a transport error.
    pub async fn set_stage(
        &self,
        name: &ModelName,
        number: u64,
        body: &SetStage,
        precondition: Option<Precondition>,
    ) -> Result<StageChange, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n, "stage"], &Pairs::new())?;
        let call = self
            .call(Method::POST, url)
            .precondition(precondition)
            .json(body)?;
        self.send_json(call).await
    }

    /// `POST …/rollback`: puts the version that the current production version replaced back
    /// into production.
    ///
    /// # Errors
    /// `conflict` when there is nothing to roll back to, or a transport error.
    pub async fn rollback(&self, name: &ModelName, body: &Rollback) -> Result<StageChange, ClientError> {
        let url = self.model_url(name, &["rollback"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET …/stages/{stage}`: the version in production, or the newest one in another stage.
    ///
    /// # Errors
    /// `not_found` when no version is in that stage, or a transport error.
    pub async fn stage_version(&self, name: &ModelName, stage: Stage) -> Result<Version, ClientError> {
        let url = self.model_url(name, &["stages", stage.as_str()], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }
}
