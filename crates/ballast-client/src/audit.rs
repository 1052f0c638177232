//! `/v1/audit`: the hash-chained audit trail and its verification.

use ballast_api::AuditList;
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::{AuditQuery, AuditVerification, Pairs};

impl Client {
    /// `GET /v1/audit?…`: one page of audit entries, oldest first.
    ///
    /// # Errors
    /// `invalid_argument` for a bad filter, or a transport error.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<AuditList, ClientError> {
        let url = self.url(&["v1", "audit"], &query.pairs())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET /v1/audit/verify`: checks the whole hash chain.
    ///
    /// # Errors
    /// A transport error (a broken chain is `Ok` with `ok: false`).
    pub async fn verify_audit(&self) -> Result<AuditVerification, ClientError> {
        let url = self.url(&["v1", "audit", "verify"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }
}
