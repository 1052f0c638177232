//! The webhook dispatcher: claims due deliveries under a lease, POSTs each event signed with
//! HMAC-SHA256, and records every attempt. Failures (connection errors, timeouts, 5xx, 408, 429)
//! are retried with exponential back-off and jitter until the delivery is too old, then marked
//! dead; other 4xx answers are final. Each webhook has its own small in-flight limit, so a slow
//! or dead receiver never delays deliveries to the others, nor the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_api::events::DeliveryAttempt;
use ballast_store::{unix_ms, AttemptOutcome, Claim, ClaimedDelivery, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{watch, Notify};

use crate::config::Config;

/// Header carrying the event type.
pub const EVENT_HEADER: &str = "x-ballast-event";
/// Header carrying the delivery id (stable across retries: de-duplicate on it).
pub const DELIVERY_HEADER: &str = "x-ballast-delivery";
/// Header carrying the Unix time (seconds) the attempt was signed at.
pub const TIMESTAMP_HEADER: &str = "x-ballast-timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the webhook secret>`.
pub const SIGNATURE_HEADER: &str = "x-ballast-signature";

/// The most deliveries in flight in all.
const MAX_IN_FLIGHT: usize = 1024;
/// How much of an answer is kept with its attempt.
const SNIPPET: usize = 512;
/// How often due retries are looked for when nothing else wakes the dispatcher.
const POLL: Duration = Duration::from_millis(200);

/// The signature of a delivery: hex HMAC-SHA256 of `"{timestamp}.{body}"`.
#[must_use]
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Clone)]
struct Settings {
    timeout: Duration,
    retry_base: Duration,
    max_backoff: Duration,
    give_up_after: Duration,
    per_webhook: usize,
}

/// Runs the dispatcher until `stop` turns true.
pub async fn run(store: Arc<dyn Store>, config: &Config, mut stop: watch::Receiver<bool>) {
    let settings = Settings {
        timeout: Duration::from_secs(config.webhook_timeout_secs.max(1)),
        retry_base: Duration::from_millis(config.webhook_retry_base_ms.max(1)),
        max_backoff: Duration::from_secs(config.webhook_max_backoff_secs.max(1)),
        give_up_after: Duration::from_secs(config.webhook_give_up_after_secs),
        per_webhook: config.webhook_concurrency_per_target.max(1),
    };
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("ballast-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let node = format!("node-{:016x}", rand::random::<u64>());
    let in_flight: Arc<Mutex<HashMap<u64, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let finished = Arc::new(Notify::new());
    let mut events = store.watch_events();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let (snapshot, total) = match in_flight.lock() {
            Ok(m) => (m.clone(), m.values().sum::<usize>()),
            Err(_) => break,
        };
        if total < MAX_IN_FLIGHT {
            let claim = Claim {
                node: node.clone(),
                now_ms: unix_ms(),
                lease_ms: i64::try_from((settings.timeout + Duration::from_secs(30)).as_millis())
                    .unwrap_or(i64::MAX),
                in_flight: snapshot,
                per_webhook: settings.per_webhook,
                max: MAX_IN_FLIGHT - total,
            };
            match store.claim_deliveries(claim).await {
                Ok(claimed) => {
                    for d in claimed {
                        if let Ok(mut m) = in_flight.lock() {
                            *m.entry(d.webhook_id).or_default() += 1;
                        }
                        let (store, client, settings, node) =
                            (store.clone(), client.clone(), settings.clone(), node.clone());
                        let (in_flight, finished) = (in_flight.clone(), finished.clone());
                        tasks.spawn(async move {
                            let hook = d.webhook_id;
                            deliver(&*store, &client, &settings, &node, d).await;
                            if let Ok(mut m) = in_flight.lock() {
                                if let Some(n) = m.get_mut(&hook) {
                                    *n = n.saturating_sub(1);
                                }
                            }
                            finished.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e.message, "cannot claim webhook deliveries"),
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = events.changed() => {}
            () = finished.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
    // Attempts still running are abandoned; their leases lapse and they are retried (delivery
    // is at least once, and the delivery id lets receivers drop the duplicate).
    tasks.abort_all();
}

fn backoff(settings: &Settings, attempts: u32) -> Duration {
    let exp = settings
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(settings.max_backoff);
    // Full jitter in [exp/2, exp): spreads retries of many deliveries apart.
    let half = exp / 2;
    half + half.mul_f64(rand::random::<f64>())
}

async fn deliver(
    store: &dyn Store,
    client: &reqwest::Client,
    settings: &Settings,
    node: &str,
    d: ClaimedDelivery,
) {
    let body = serde_json::to_vec(&d.event).unwrap_or_default();
    let timestamp = u64::try_from(unix_ms() / 1000).unwrap_or(0);
    let started = Instant::now();
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let sent = client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, &d.event.event_type)
        .header(DELIVERY_HEADER, d.id.to_string())
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            format!("sha256={}", sign(&d.secret, timestamp, &body)),
        )
        .body(body)
        .send()
        .await;
    let mut attempt = DeliveryAttempt {
        at,
        status: None,
        latency_ms: 0,
        error: None,
        response_snippet: None,
    };
    let mut retry_after = None;
    let outcome_kind = match sent {
        Ok(mut resp) => {
            let status = resp.status();
            attempt.status = Some(status.as_u16());
            retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Only the snippet is read: a receiver sending a large or endless body neither holds
            // the attempt until the timeout nor fills memory.
            let mut text = Vec::new();
            while text.len() < SNIPPET {
                match resp.chunk().await {
                    Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            text.truncate(SNIPPET);
            if !text.is_empty() {
                attempt.response_snippet = Some(String::from_utf8_lossy(&text).into_owned());
            }
            if status.is_success() {
                Kind::Done
            } else if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
                Kind::Retry
            } else {
                Kind::Refused
            }
        }
        Err(e) => {
            attempt.error = Some(if e.is_timeout() {
                format!("timed out after {} s", settings.timeout.as_secs())
            } else if e.is_connect() {
                format!("cannot connect: {e}")
            } else {
                e.to_string()
            });
            Kind::Retry
        }
    };
    attempt.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let age = Duration::from_millis(u64::try_from(unix_ms().saturating_sub(d.created_ms)).unwrap_or(0));
    let outcome = match outcome_kind {
        Kind::Done => AttemptOutcome::Delivered,
        Kind::Refused => AttemptOutcome::Dead,
        Kind::Retry if age >= settings.give_up_after => AttemptOutcome::Dead,
        Kind::Retry => {
            let wait = backoff(settings, d.attempt_count + 1)
                .max(retry_after.unwrap_or_default().min(settings.max_backoff));
            AttemptOutcome::Retry {
                next_attempt_ms: unix_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            }
        }
    };
    metrics::counter!("ballast_webhook_attempts_total", "outcome" => match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::Dead => "dead",
    })
    .increment(1);
    match store.finish_delivery(node, d.id, attempt, outcome).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            delivery = d.id,
            "lost the lease of a delivery; another node owns it now"
        ),
        Err(e) => {
            tracing::warn!(delivery = d.id, error = %e.message, "cannot record a delivery attempt; it will be retried")
        }
    }
}

enum Kind {
    Done,
    Retry,
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_reference_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") is a published
        // test vector; here the message is "<timestamp>.<body>".
        let sig = sign("key", 1, b"x");
        assert_eq!(sig.len(), 64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap_or_else(|_| unreachable!());
        mac.update(b"1.x");
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
        let vector = {
            let mut m = Hmac::<Sha256>::new_from_slice(b"key").unwrap_or_else(|_| unreachable!());
            m.update(b"The quick brown fox jumps over the lazy dog");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(
            vector,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let s = Settings {
            timeout: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
            per_webhook: 4,
        };
        for attempt in 1..40 {
            let b = backoff(&s, attempt);
            let cap = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(20))).min(s.max_backoff);
            assert!(b >= cap / 2 && b <= cap, "attempt {attempt}: {b:?}");
        }
    }
}
