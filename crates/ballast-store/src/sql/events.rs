//! The outbox, webhook subscriptions and their deliveries.
//!
//! Every change writes one outbox row (its event) and, for each subscribed webhook, one delivery
//! row, in the same transaction as the change: no change without its event, no event without
//! its change, and no event that a subscriber misses. A dispatcher claims due deliveries with a
//! lease, so with several nodes each delivery is attempted by one node at a time.

use ballast_api::events::{
    is_event_type, CreateWebhook, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus, Event, EventList,
    Webhook,
};
use ballast_core::{name::validate_namespace, ErrorCode, ModelName};
use serde_json::{json, Value};

use super::query::{format_time, now, to_i64, to_u64};
use crate::db::{Db, Row, Value as SqlValue};
use crate::params;
use crate::{unix_ms, AttemptOutcome, Claim, ClaimedDelivery, Ctx, StoreError, StoreResult};

/// A webhook URL without its query and fragment (which often carry tokens), for the audit
/// trail and the change feed.
fn redact(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let base = &url[..end];
    // Drop `user:password@` too.
    match (base.find("://"), base.find('@')) {
        (Some(s), Some(at)) if at > s && !base[s + 3..at].contains('/') => {
            format!("{}{}", &base[..s + 3], &base[at + 1..])
        }
        _ => base.to_owned(),
    }
}

fn ms_to_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(format_time)
        .unwrap_or_default()
}

/// The event type of an audit action.
pub(super) fn event_type(action: &str) -> &str {
    match action {
        "model.create" => "model.created",
        "model.update" => "model.updated",
        "model.delete" => "model.deleted",
        "version.create" => "version.created",
        "version.update" => "version.updated",
        "version.file_put" => "version.file_added",
        "version.file_delete" => "version.file_removed",
        "version.seal" => "version.sealed",
        "version.stage" => "stage_transition.completed",
        "version.demote" => "version.demoted",
        "version.rollback" => "version.rolled_back",
        "alias.set" => "alias.set",
        "alias.delete" => "alias.removed",
        "model.mlflow_rename" => "model.renamed",
        "version.delete" => "version.deleted",
        "deployment.add" => "deployment.added",
        "deployment.remove" => "deployment.removed",
        "route.set" => "route.set",
        "route.delete" => "route.removed",
        "webhook.create" => "webhook.created",
        "webhook.delete" => "webhook.deleted",
        other => other,
    }
}

/// Splits a subject (`ns/m`, `ns/m/3`, `ns/m@alias`) into model, version and alias.
fn parse_subject(subject: &str) -> (Option<String>, Option<u64>, Option<String>) {
    if let Some((model, alias)) = subject.split_once('@') {
        return (Some(model.to_owned()), None, Some(alias.to_owned()));
    }
    let parts: Vec<&str> = subject.split('/').collect();
    match parts.as_slice() {
        [ns, m] if ModelName::new(ns, m).is_ok() => (Some(subject.to_owned()), None, None),
        [ns, m, n] if ModelName::new(ns, m).is_ok() => (Some(format!("{ns}/{m}")), n.parse().ok(), None),
        _ => (None, None, None),
    }
}

/// Writes the event of a change and its deliveries. Returns the event id.
pub(super) fn append(
    db: &dyn Db,
    ctx: &Ctx,
    at: &str,
    action: &str,
    subject: &str,
    data: &Value,
) -> StoreResult<i64> {
    let kind = event_type(action);
    // `webhook/ID`, `route/NAME`, `token/ID` and `principal/NAME` also parse as a model name:
    // these events concern no model.
    let no_model = ["webhook.", "route.", "token.", "role."];
    let (model, version, alias) = if no_model.iter().any(|p| action.starts_with(p)) {
        (None, None, None)
    } else {
        parse_subject(subject)
    };
    let event_id = db
        .query_one(
            "INSERT INTO outbox (at, type, actor, subject, model, version, alias, data, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            params![
                at,
                kind,
                ctx.actor,
                subject,
                model,
                version.map(to_i64),
                alias,
                data.to_string(),
                ctx.request_id
            ],
        )?
        .get::<i64>(0)?;
    let hooks = db.query_map(
        "SELECT id, events, namespace, model FROM webhooks ORDER BY id",
        params![],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<String>(1)?,
                r.get::<Option<String>>(2)?,
                r.get::<Option<String>>(3)?,
            ))
        },
    )?;
    let ms = unix_ms();
    for (hook, events, ns, m) in hooks {
        let events: Vec<String> = serde_json::from_str(&events)?;
        let type_ok = events.is_empty() || events.iter().any(|e| e == kind);
        let ns_ok = ns.as_deref().is_none_or(|ns| {
            model
                .as_deref()
                .and_then(|m| m.split_once('/'))
                .is_some_and(|(n, _)| n == ns)
        });
        let model_ok = m.as_deref().is_none_or(|want| model.as_deref() == Some(want));
        if type_ok && ns_ok && model_ok {
            insert_delivery(db, hook, event_id, ms)?;
        }
    }
    Ok(event_id)
}

fn insert_delivery(db: &dyn Db, hook: i64, event: i64, ms: i64) -> StoreResult<i64> {
    db.query_one(
        "INSERT INTO deliveries (webhook_id, event_id, next_attempt_ms, created_ms, created_at)
         VALUES (?1, ?2, ?3, ?3, ?4) RETURNING id",
        params![hook, event, ms, ms_to_time(ms)],
    )?
    .get::<i64>(0)
}

fn event_from_row(r: &Row) -> StoreResult<Event> {
    let data: String = r.get(8)?;
    Ok(Event {
        id: to_u64(r.get(0)?),
        at: r.get(1)?,
        event_type: r.get(2)?,
        actor: r.get(3)?,
        subject: r.get(4)?,
        model: r.get(5)?,
        version: r.get::<Option<i64>>(6)?.map(to_u64),
        alias: r.get(7)?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        request_id: r.get(9)?,
    })
}

const EVENT_COLUMNS: &str = "id, at, type, actor, subject, model, version, alias, data, request_id";

pub(super) fn load_event(db: &dyn Db, id: i64) -> StoreResult<Event> {
    db.query_row_opt(
        &format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE id = ?1"),
        params![id],
        event_from_row,
    )?
    .ok_or_else(|| StoreError::not_found(format!("event {id}")))
}

pub(super) fn list_events(db: &dyn Db, after: u64, limit: u32, types: &[String]) -> StoreResult<EventList> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE id > ?1");
    let mut args: Vec<SqlValue> = vec![to_i64(after).into()];
    if !types.is_empty() {
        let marks: Vec<String> = types
            .iter()
            .map(|t| {
                args.push(t.clone().into());
                format!("?{}", args.len())
            })
            .collect();
        sql += &format!(" AND type IN ({})", marks.join(", "));
    }
    // The limit is a parameter too, so the statement text (and its prepared statement) is one
    // per number of types.
    args.push(i64::from(limit.clamp(1, 1000)).into());
    sql += &format!(" ORDER BY id LIMIT ?{}", args.len());
    let events = db.query_map(&sql, &args, event_from_row)?;
    let next_after = events.last().map_or(after, |e| e.id);
    Ok(EventList { events, next_after })
}

pub(super) fn last_event_id(db: &dyn Db) -> StoreResult<u64> {
    Ok(db
        .query_value::<u64>("SELECT coalesce(max(id), 0) FROM outbox", &[])?
        .unwrap_or(0))
}

fn invalid(field: &str, message: String) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message,
        field: Some(field.into()),
    }
}

fn webhook_from_row(
    db: &dyn Db,
    r: (
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
    ),
) -> StoreResult<Webhook> {
    let (id, url, events, namespace, model, description, created_by, created_at) = r;
    let count = |status: &str| -> StoreResult<u64> {
        Ok(to_u64(
            db.query_one(
                "SELECT count(*) FROM deliveries WHERE webhook_id = ?1 AND status = ?2",
                params![id, status],
            )?
            .get::<i64>(0)?,
        ))
    };
    Ok(Webhook {
        id: to_u64(id),
        url,
        events: serde_json::from_str(&events)?,
        namespace,
        model,
        description,
        secret: None,
        created_by,
        created_at,
        pending: count("pending")?,
        dead: count("dead")?,
    })
}

const WEBHOOK_COLUMNS: &str = "id, url, events, namespace, model, description, created_by, created_at";

type WebhookRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

fn webhook_row(r: &Row) -> StoreResult<WebhookRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

pub(super) fn get_webhook(db: &dyn Db, id: u64) -> StoreResult<Webhook> {
    let row = db
        .query_row_opt(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"),
            params![to_i64(id)],
            webhook_row,
        )?
        .ok_or_else(|| StoreError::not_found(format!("webhook {id}")))?;
    webhook_from_row(db, row)
}

pub(super) fn list_webhooks(db: &dyn Db) -> StoreResult<Vec<Webhook>> {
    let rows = db.query_map(
        &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"),
        params![],
        webhook_row,
    )?;
    rows.into_iter().map(|r| webhook_from_row(db, r)).collect()
}

pub(super) fn create_webhook(db: &dyn Db, ctx: &Ctx, req: &CreateWebhook) -> StoreResult<Webhook> {
    let url = req.url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "url",
            format!("invalid webhook URL {url:?}: an http:// or https:// URL of at most 2048 characters"),
        ));
    }
    for e in &req.events {
        if !is_event_type(e) {
            return Err(invalid(
                "events",
                format!("unknown event type {e:?}; see the event catalogue in the API document"),
            ));
        }
    }
    if let Some(ns) = &req.namespace {
        validate_namespace(ns)?;
    }
    if let Some(m) = &req.model {
        // The filter is the request's `model` field, whichever part of the name is at fault.
        ModelName::parse(m).map_err(|e| StoreError {
            field: Some("model".into()),
            ..e.into()
        })?;
    }
    let secret = match &req.secret {
        Some(s) if s.len() >= 16 && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic()) => s.clone(),
        Some(_) => {
            return Err(invalid(
                "secret",
                "a webhook secret is 16-256 printable ASCII characters without spaces".into(),
            ))
        }
        None => format!(
            "whsec_{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        ),
    };
    if req.description.len() > 1024 {
        return Err(invalid(
            "description",
            "webhook descriptions are at most 1024 bytes".into(),
        ));
    }
    let id = db
        .query_one(
            "INSERT INTO webhooks (url, events, namespace, model, secret, description, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                url,
                serde_json::to_string(&req.events)?,
                req.namespace,
                req.model,
                secret,
                req.description,
                ctx.actor,
                now()
            ],
        )?
        .get::<u64>(0)?;
    let mut hook = get_webhook(db, id)?;
    super::ops::record_change(
        db,
        ctx,
        "webhook.create",
        &format!("webhook/{id}"),
        &Value::Null,
        &json!({ "url": redact(&hook.url), "events": hook.events, "namespace": hook.namespace, "model": hook.model }),
    )?;
    hook.secret = Some(secret);
    Ok(hook)
}

pub(super) fn delete_webhook(db: &dyn Db, ctx: &Ctx, id: u64) -> StoreResult<()> {
    let hook = get_webhook(db, id)?;
    db.execute("DELETE FROM webhooks WHERE id = ?1", params![to_i64(id)])?;
    super::ops::record_change(
        db,
        ctx,
        "webhook.delete",
        &format!("webhook/{id}"),
        &json!({ "url": redact(&hook.url), "events": hook.events }),
        &Value::Null,
    )
}

pub(super) fn ping_webhook(db: &dyn Db, ctx: &Ctx, id: u64) -> StoreResult<Delivery> {
    get_webhook(db, id)?;
    let at = now();
    let subject = format!("webhook/{id}");
    let data = json!({ "before": null, "after": { "webhook_id": id } }).to_string();
    let event = db
        .query_one(
            "INSERT INTO outbox (at, type, actor, subject, data, request_id)
             VALUES (?1, 'webhook.ping', ?2, ?3, ?4, ?5) RETURNING id",
            params![at, ctx.actor, subject, data, ctx.request_id],
        )?
        .get::<i64>(0)?;
    let delivery = insert_delivery(db, to_i64(id), event, unix_ms())?;
    get_delivery(db, id, to_u64(delivery))
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, o.type, d.status, d.attempt_count, d.next_attempt_ms, d.created_at, d.delivered_at";

fn delivery_from_row(r: &Row) -> StoreResult<Delivery> {
    let status: String = r.get(4)?;
    let status = match status.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "dead" => DeliveryStatus::Dead,
        _ => DeliveryStatus::Pending,
    };
    Ok(Delivery {
        id: to_u64(r.get(0)?),
        webhook_id: to_u64(r.get(1)?),
        event_id: to_u64(r.get(2)?),
        event_type: r.get(3)?,
        status,
        attempt_count: u32::try_from(r.get::<i64>(5)?).unwrap_or(u32::MAX),
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| ms_to_time(r.get(6).unwrap_or(0))),
        created_at: r.get(7)?,
        delivered_at: r.get(8)?,
        attempts: Vec::new(),
    })
}

pub(super) fn get_delivery(db: &dyn Db, webhook: u64, id: u64) -> StoreResult<Delivery> {
    let mut d = db
        .query_row_opt(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id
                 WHERE d.id = ?1 AND d.webhook_id = ?2"
            ),
            params![to_i64(id), to_i64(webhook)],
            delivery_from_row,
        )?
        .ok_or_else(|| StoreError::not_found(format!("delivery {id} of webhook {webhook}")))?;
    d.attempts = db.query_map(
        "SELECT at, status, latency_ms, error, response_snippet FROM delivery_attempts
         WHERE delivery_id = ?1 ORDER BY id",
        params![to_i64(id)],
        |r| {
            Ok(DeliveryAttempt {
                at: r.get(0)?,
                status: r.get::<Option<i64>>(1)?.and_then(|s| u16::try_from(s).ok()),
                latency_ms: to_u64(r.get(2)?),
                error: r.get(3)?,
                response_snippet: r.get(4)?,
            })
        },
    )?;
    Ok(d)
}

pub(super) fn list_deliveries(
    db: &dyn Db,
    webhook: u64,
    status: Option<DeliveryStatus>,
    limit: u32,
) -> StoreResult<DeliveryList> {
    get_webhook(db, webhook)?;
    let status = status.map(|s| match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    });
    let deliveries = db.query_map(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id
             WHERE d.webhook_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR d.status = CAST(?2 AS TEXT))
             ORDER BY d.id DESC LIMIT ?3"
        ),
        params![to_i64(webhook), status, i64::from(limit.clamp(1, 1000))],
        delivery_from_row,
    )?;
    Ok(DeliveryList { deliveries })
}

pub(super) fn redeliver(db: &dyn Db, ctx: &Ctx, webhook: u64, id: u64) -> StoreResult<Delivery> {
    let before = get_delivery(db, webhook, id)?;
    if before.status == DeliveryStatus::Pending {
        return Err(StoreError::new(
            ErrorCode::Conflict,
            format!(
                "delivery {id} is still pending; it will be attempted again at {}",
                before.next_attempt_at.unwrap_or_default()
            ),
        ));
    }
    db.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?2, lease_owner = NULL, lease_until_ms = 0,
                created_ms = ?2 WHERE id = ?1",
        params![to_i64(id), unix_ms()],
    )?;
    super::ops::record_audit_only(
        db,
        ctx,
        "webhook.redeliver",
        &format!("webhook/{webhook}"),
        &json!({ "delivery": id, "status": before.status }),
        &json!({ "delivery": id, "status": "pending" }),
    )?;
    get_delivery(db, webhook, id)
}

/// Claims due deliveries for `claim.node`, at most `claim.per_webhook` in flight per webhook.
/// Whether any delivery is due and unleased at `now` (Unix ms).
pub(super) fn any_due(db: &dyn Db, now: i64) -> StoreResult<bool> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM deliveries WHERE status = 'pending' AND next_attempt_ms <= ?1 AND lease_until_ms < ?1 LIMIT 1",
            params![now],
        )?
        .is_some())
}

pub(super) fn claim(db: &dyn Db, claim: &Claim) -> StoreResult<Vec<ClaimedDelivery>> {
    let now = claim.now_ms;
    let due: Vec<i64> = db.query_map(
        "SELECT DISTINCT webhook_id FROM deliveries
         WHERE status = 'pending' AND next_attempt_ms <= ?1 AND lease_until_ms < ?1 ORDER BY webhook_id",
        params![now],
        |r| r.get::<i64>(0),
    )?;
    let mut out = Vec::new();
    for hook in due {
        let busy = claim.in_flight.get(&to_u64(hook)).copied().unwrap_or(0);
        let room = claim.per_webhook.saturating_sub(busy);
        if room == 0 || out.len() >= claim.max {
            continue;
        }
        let room = room.min(claim.max - out.len());
        let rows: Vec<(i64, i64, i64, i64, String, String)> = db.query_map(
            "SELECT d.id, d.attempt_count, d.created_ms, d.event_id, w.url, w.secret FROM deliveries d
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_ms <= ?2 AND d.lease_until_ms < ?2
             ORDER BY d.id LIMIT ?3",
            params![hook, now, i64::try_from(room).unwrap_or(1)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
        for (id, attempts, created_ms, event, url, secret) in rows {
            db.execute(
                "UPDATE deliveries SET lease_owner = ?2, lease_until_ms = ?3 WHERE id = ?1",
                params![id, claim.node, now.saturating_add(claim.lease_ms)],
            )?;
            out.push(ClaimedDelivery {
                id: to_u64(id),
                webhook_id: to_u64(hook),
                url,
                secret,
                attempt_count: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_ms,
                event: load_event(db, event)?,
            });
        }
    }
    Ok(out)
}

/// Records an attempt and its outcome, if this node still holds the lease.
pub(super) fn finish(
    db: &dyn Db,
    node: &str,
    id: u64,
    attempt: &DeliveryAttempt,
    outcome: AttemptOutcome,
) -> StoreResult<bool> {
    let owner: Option<Option<String>> = db.query_row_opt(
        "SELECT lease_owner FROM deliveries WHERE id = ?1",
        params![to_i64(id)],
        |r| r.get::<Option<String>>(0),
    )?;
    if owner.flatten().as_deref() != Some(node) {
        return Ok(false);
    }
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, at, status, latency_ms, error, response_snippet)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            to_i64(id),
            attempt.at,
            attempt.status.map(i64::from),
            to_i64(attempt.latency_ms),
            attempt.error,
            attempt.response_snippet
        ],
    )?;
    let (status, next, delivered) = match outcome {
        AttemptOutcome::Delivered => ("delivered", 0, Some(now())),
        AttemptOutcome::Retry { next_attempt_ms } => ("pending", next_attempt_ms, None),
        AttemptOutcome::Dead => ("dead", 0, None),
    };
    db.execute(
        "UPDATE deliveries SET status = ?2, next_attempt_ms = ?3, delivered_at = ?4, attempt_count = attempt_count + 1,
                lease_owner = NULL, lease_until_ms = 0 WHERE id = ?1",
        params![to_i64(id), status, next, delivered],
    )?;
    Ok(true)
}
