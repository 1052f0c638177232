//! `/v1/status` and `/v1/fsck`: artifact regions, replication lag, and integrity checks. The
//! answers are returned as the caller's type (the server's wire types live in
//! `ballast_server::api::regions`, or read them as `serde_json::Value`).

use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::Pairs;

impl Client {
    /// `GET /v1/status`: every artifact region's reachability, replication queue and lag.
    ///
    /// # Errors
    /// `permission_denied` (needs read on `*`), or a transport error.
    pub async fn status<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        let url = self.url(&["v1", "status"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `POST /v1/fsck`: checks every referenced blob in every region; with `repair`, copies
    /// good bytes over missing and corrupt copies.
    ///
    /// # Errors
    /// `permission_denied` (needs admin on `*`), or a transport error.
    pub async fn fsck<T: DeserializeOwned>(&self, repair: bool) -> Result<T, ClientError> {
        let url = self.url(&["v1", "fsck"], &Pairs::new())?;
        let body = serde_json::json!({ "repair": repair });
        self.send_json(self.call(Method::POST, url).json(&body)?).await
    }
}
