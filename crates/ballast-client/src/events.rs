//! `/v1/webhooks` and `/v1/events`: webhook subscriptions, their deliveries, and the change feed.

use ballast_api::events::{CreateWebhook, Delivery, DeliveryList, DeliveryStatus, EventList, Webhook};
use reqwest::Method;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::Pairs;

impl Client {
    /// `POST /v1/webhooks`: the answer carries the secret (shown this once).
    ///
    /// # Errors
    /// `invalid_argument` naming the field at fault, or a transport error.
    pub async fn create_webhook(&self, body: &CreateWebhook) -> Result<Webhook, ClientError> {
        let url = self.url(&["v1", "webhooks"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url).json(body)?).await
    }

    /// `GET /v1/webhooks`.
    ///
    /// # Errors
    /// A transport error.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, ClientError> {
        let url = self.url(&["v1", "webhooks"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `DELETE /v1/webhooks/{id}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn delete_webhook(&self, id: u64) -> Result<(), ClientError> {
        let url = self.url(&["v1", "webhooks", &id.to_string()], &Pairs::new())?;
        self.send_empty(self.call(Method::DELETE, url)).await
    }

    /// `POST /v1/webhooks/{id}/test`: queues a `webhook.ping` delivery.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn test_webhook(&self, id: u64) -> Result<Delivery, ClientError> {
        let url = self.url(&["v1", "webhooks", &id.to_string(), "test"], &Pairs::new())?;
        self.send_json(self.call(Method::POST, url)).await
    }

    /// `GET /v1/webhooks/{id}/deliveries`, newest first.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn list_deliveries(
        &self,
        id: u64,
        status: Option<DeliveryStatus>,
        limit: Option<u32>,
    ) -> Result<DeliveryList, ClientError> {
        let mut q = Pairs::new();
        if let Some(s) = status {
            let s = match s {
                DeliveryStatus::Pending => "pending",
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Dead => "dead",
            };
            q.push(("status", s.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        let url = self.url(&["v1", "webhooks", &id.to_string(), "deliveries"], &q)?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET /v1/webhooks/{id}/deliveries/{delivery}`, with every attempt.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn get_delivery(&self, id: u64, delivery: u64) -> Result<Delivery, ClientError> {
        let url = self.url(
            &[
                "v1",
                "webhooks",
                &id.to_string(),
                "deliveries",
                &delivery.to_string(),
            ],
            &Pairs::new(),
        )?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `POST /v1/webhooks/{id}/deliveries/{delivery}/redeliver`.
    ///
    /// # Errors
    /// `not_found`, `conflict` when still pending, or a transport error.
    pub async fn redeliver(&self, id: u64, delivery: u64) -> Result<Delivery, ClientError> {
        let url = self.url(
            &[
                "v1",
                "webhooks",
                &id.to_string(),
                "deliveries",
                &delivery.to_string(),
                "redeliver",
            ],
            &Pairs::new(),
        )?;
        self.send_json(self.call(Method::POST, url)).await
    }

    /// `GET /v1/events?after=…`: one page of the change feed.
    ///
    /// # Errors
    /// `invalid_argument` for an unknown type, or a transport error.
    pub async fn list_events(
        &self,
        after: u64,
        limit: u32,
        types: &[String],
    ) -> Result<EventList, ClientError> {
        let mut q: Pairs = vec![("after", after.to_string()), ("limit", limit.to_string())];
        q.extend(types.iter().map(|t| ("type", t.clone())));
        let url = self.url(&["v1", "events"], &q)?;
        self.send_json(self.call(Method::GET, url)).await
    }
}
