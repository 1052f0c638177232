//! `ballast webhook …` and `ballast events`: subscribe URLs to registry events, inspect and
//! redeliver deliveries, and read the change feed.

use ballast_api::events::{CreateWebhook, Delivery, DeliveryStatus, EVENT_TYPES};
use clap::{Subcommand, ValueEnum};

use super::Ctx;
use crate::output;

/// `ballast webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to events. Prints the signing secret once: store it where the receiver
    /// can read it.
    ///
    /// Each delivery is a POST of the event's JSON with headers x-ballast-event,
    /// x-ballast-delivery (stable across retries), x-ballast-timestamp and
    /// x-ballast-signature: sha256=HMAC-SHA256(secret, "<timestamp>.<body>").
    Create {
        /// Where to POST events (http:// or https://).
        #[arg(value_name = "URL")]
        target: String,
        /// Deliver only this event type (repeatable; default: every type). See `ballast events types`.
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        /// Deliver only events of this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Deliver only events of this model (NAMESPACE/MODEL).
        #[arg(long)]
        model: Option<String>,
        /// Use this secret (16-256 characters) instead of a generated one.
        #[arg(long, env = "BALLAST_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// A note for people.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List webhooks with their pending and dead deliveries.
    List,
    /// Delete a webhook (its pending deliveries are dropped).
    Rm {
        /// Webhook id.
        id: u64,
    },
    /// Send a `webhook.ping` event to one webhook.
    Test {
        /// Webhook id.
        id: u64,
    },
    /// List a webhook's deliveries (newest first), or show one with every attempt.
    Deliveries {
        /// Webhook id.
        id: u64,
        /// Show this delivery with its attempts.
        #[arg(long)]
        delivery: Option<u64>,
        /// Only deliveries in this state.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue a delivered or dead delivery again.
    Redeliver {
        /// Webhook id.
        id: u64,
        /// Delivery id.
        delivery: u64,
    },
}

/// A delivery state, as a flag value.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Waiting for an attempt.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Gave up.
    Dead,
}

impl From<StatusArg> for DeliveryStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Pending => DeliveryStatus::Pending,
            StatusArg::Delivered => DeliveryStatus::Delivered,
            StatusArg::Dead => DeliveryStatus::Dead,
        }
    }
}

/// `ballast events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events after an id, oldest first.
    List {
        /// Only events after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this event type (repeatable).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The event types and what they mean.
    Types,
}

fn status_name(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    }
}

fn print_delivery(d: &Delivery) {
    output::fields(&[
        ("delivery", d.id.to_string()),
        ("webhook", d.webhook_id.to_string()),
        ("event", format!("{} ({})", d.event_id, d.event_type)),
        ("status", status_name(d.status).to_owned()),
        ("attempts", d.attempt_count.to_string()),
        (
            "next attempt",
            d.next_attempt_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("delivered", d.delivered_at.clone().unwrap_or_else(|| "-".into())),
    ]);
    if !d.attempts.is_empty() {
        let rows: Vec<Vec<String>> = d
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.at.clone(),
                    a.status.map_or_else(|| "-".into(), |s| s.to_string()),
                    format!("{} ms", a.latency_ms),
                    a.error
                        .clone()
                        .or_else(|| a.response_snippet.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        output::table(&["AT", "STATUS", "LATENCY", "DETAIL"], &rows);
    }
}

/// Runs a `webhook` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run(ctx: &Ctx, cmd: WebhookCommand) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Create {
            target: url,
            events,
            namespace,
            model,
            secret,
            description,
        } => {
            let hook = ctx
                .client
                .create_webhook(&CreateWebhook {
                    url,
                    events,
                    namespace,
                    model,
                    secret,
                    description,
                })
                .await?;
            if ctx.json {
                output::json(&hook)?;
            } else {
                outln!("webhook {} → {}", hook.id, hook.url);
                outln!(
                    "secret: {} (shown once; receivers verify x-ballast-signature with it)",
                    hook.secret.unwrap_or_default()
                );
            }
        }
        WebhookCommand::List => {
            let hooks = ctx.client.list_webhooks().await?;
            if ctx.json {
                output::json(&hooks)?;
            } else {
                let rows: Vec<Vec<String>> = hooks
                    .iter()
                    .map(|h| {
                        let filter = [h.namespace.clone(), h.model.clone()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![
                            h.id.to_string(),
                            h.url.clone(),
                            if h.events.is_empty() {
                                "all".into()
                            } else {
                                h.events.join(",")
                            },
                            if filter.is_empty() { "-".into() } else { filter },
                            h.pending.to_string(),
                            h.dead.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "URL", "EVENTS", "FILTER", "PENDING", "DEAD"], &rows);
            }
        }
        WebhookCommand::Rm { id } => {
            ctx.client.delete_webhook(id).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "deleted": id }))?;
            } else {
                outln!("deleted webhook {id}");
            }
        }
        WebhookCommand::Test { id } => {
            let d = ctx.client.test_webhook(id).await?;
            if ctx.json {
                output::json(&d)?;
            } else {
                outln!("queued ping delivery {} to webhook {id}; see `ballast webhook deliveries {id} --delivery {}`", d.id, d.id);
            }
        }
        WebhookCommand::Deliveries {
            id,
            delivery: Some(delivery),
            ..
        } => {
            let d = ctx.client.get_delivery(id, delivery).await?;
            if ctx.json {
                output::json(&d)?;
            } else {
                print_delivery(&d);
            }
        }
        WebhookCommand::Deliveries {
            id,
            delivery: None,
            status,
            limit,
        } => {
            let list = ctx
                .client
                .list_deliveries(id, status.map(Into::into), Some(limit))
                .await?;
            if ctx.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .deliveries
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.to_string(),
                            d.event_id.to_string(),
                            d.event_type.clone(),
                            status_name(d.status).to_owned(),
                            d.attempt_count.to_string(),
                            d.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["DELIVERY", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "CREATED"],
                    &rows,
                );
            }
        }
        WebhookCommand::Redeliver { id, delivery } => {
            let d = ctx.client.redeliver(id, delivery).await?;
            if ctx.json {
                output::json(&d)?;
            } else {
                outln!("delivery {} of webhook {id} queued again", d.id);
            }
        }
    }
    Ok(())
}

/// Runs an `events` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run_events(ctx: &Ctx, cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List { after, types, limit } => {
            let page = ctx.client.list_events(after, limit, &types).await?;
            if ctx.json {
                output::json(&page)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.at.clone(),
                            e.event_type.clone(),
                            e.subject.clone(),
                            e.actor.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "AT", "TYPE", "SUBJECT", "ACTOR"], &rows);
            }
        }
        EventsCommand::Types => {
            if ctx.json {
                let map: serde_json::Map<String, serde_json::Value> = EVENT_TYPES
                    .iter()
                    .map(|(t, d)| ((*t).to_owned(), (*d).into()))
                    .collect();
                output::json(&map)?;
            } else {
                let rows: Vec<Vec<String>> = EVENT_TYPES
                    .iter()
                    .map(|(t, d)| vec![(*t).to_owned(), (*d).to_owned()])
                    .collect();
                output::table(&["TYPE", "MEANING"], &rows);
            }
        }
    }
    Ok(())
}
