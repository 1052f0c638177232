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
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

use super::query::{format_time, now, to_i64, to_u64};
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
    conn: &Connection,
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
    conn.prepare_cached(
        "INSERT INTO outbox (at, type, actor, subject, model, version, alias, data, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        at,
        kind,
        ctx.actor,
        subject,
        model,
        version.map(to_i64),
        alias,
        data.to_string(),
        ctx.request_id
    ])?;
    let event_id = conn.last_insert_rowid();
    let mut hooks = conn.prepare_cached("SELECT id, events, namespace, model FROM webhooks")?;
    let rows = hooks.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let ms = unix_ms();
    for row in rows {
        let (hook, events, ns, m) = row?;
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
            insert_delivery(conn, hook, event_id, ms)?;
        }
    }
    Ok(event_id)
}

fn insert_delivery(conn: &Connection, hook: i64, event: i64, ms: i64) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (webhook_id, event_id, next_attempt_ms, created_ms, created_at) VALUES (?1, ?2, ?3, ?3, ?4)",
    )?
    .execute(params![hook, event, ms, ms_to_time(ms)])?;
    Ok(conn.last_insert_rowid())
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let data: String = r.get(8)?;
    Ok(Event {
        id: to_u64(r.get(0)?),
        at: r.get(1)?,
        event_type: r.get(2)?,
        actor: r.get(3)?,
        subject: r.get(4)?,
        model: r.get(5)?,
        version: r.get::<_, Option<i64>>(6)?.map(to_u64),
        alias: r.get(7)?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        request_id: r.get(9)?,
    })
}

const EVENT_COLUMNS: &str = "id, at, type, actor, subject, model, version, alias, data, request_id";

pub(super) fn load_event(conn: &Connection, id: i64) -> StoreResult<Event> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE id = ?1"))?
        .query_row([id], event_from_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("event {id}")))
}

pub(super) fn list_events(
    conn: &Connection,
    after: u64,
    limit: u32,
    types: &[String],
) -> StoreResult<EventList> {
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
    sql += &format!(" ORDER BY id LIMIT {}", limit.clamp(1, 1000));
    let mut stmt = conn.prepare(&sql)?;
    let events = stmt
        .query_map(params_from_iter(args.iter()), event_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = events.last().map_or(after, |e| e.id);
    Ok(EventList { events, next_after })
}

pub(super) fn last_event_id(conn: &Connection) -> StoreResult<u64> {
    Ok(to_u64(conn.query_row(
        "SELECT coalesce(max(id), 0) FROM outbox",
        [],
        |r| r.get(0),
    )?))
}

fn invalid(field: &str, message: String) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message,
        field: Some(field.into()),
    }
}

fn webhook_from_row(
    conn: &Connection,
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
            conn.prepare_cached("SELECT count(*) FROM deliveries WHERE webhook_id = ?1 AND status = ?2")?
                .query_row(params![id, status], |r| r.get(0))?,
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

fn webhook_row(r: &Row<'_>) -> rusqlite::Result<WebhookRow> {
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

pub(super) fn get_webhook(conn: &Connection, id: u64) -> StoreResult<Webhook> {
    let row = conn
        .prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"))?
        .query_row([to_i64(id)], webhook_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("webhook {id}")))?;
    webhook_from_row(conn, row)
}

pub(super) fn list_webhooks(conn: &Connection) -> StoreResult<Vec<Webhook>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"))?;
    let rows = stmt.query_map([], webhook_row)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(|r| webhook_from_row(conn, r)).collect()
}

pub(super) fn create_webhook(conn: &Connection, ctx: &Ctx, req: &CreateWebhook) -> StoreResult<Webhook> {
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
    conn.prepare_cached(
        "INSERT INTO webhooks (url, events, namespace, model, secret, description, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        url,
        serde_json::to_string(&req.events)?,
        req.namespace,
        req.model,
        secret,
        req.description,
        ctx.actor,
        now()
    ])?;
    let id = to_u64(conn.last_insert_rowid());
    let mut hook = get_webhook(conn, id)?;
    super::ops::record_change(
        conn,
        ctx,
        "webhook.create",
        &format!("webhook/{id}"),
        &Value::Null,
        &json!({ "url": redact(&hook.url), "events": hook.events, "namespace": hook.namespace, "model": hook.model }),
    )?;
    hook.secret = Some(secret);
    Ok(hook)
}

pub(super) fn delete_webhook(conn: &Connection, ctx: &Ctx, id: u64) -> StoreResult<()> {
    let hook = get_webhook(conn, id)?;
    conn.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
        .execute([to_i64(id)])?;
    super::ops::record_change(
        conn,
        ctx,
        "webhook.delete",
        &format!("webhook/{id}"),
        &json!({ "url": redact(&hook.url), "events": hook.events }),
        &Value::Null,
    )
}

pub(super) fn ping_webhook(conn: &Connection, ctx: &Ctx, id: u64) -> StoreResult<Delivery> {
    get_webhook(conn, id)?;
    let at = now();
    let subject = format!("webhook/{id}");
    conn.prepare_cached(
        "INSERT INTO outbox (at, type, actor, subject, data, request_id) VALUES (?1, 'webhook.ping', ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at, ctx.actor, subject, json!({ "before": null, "after": { "webhook_id": id } }).to_string(), ctx.request_id])?;
    let event = conn.last_insert_rowid();
    let delivery = insert_delivery(conn, to_i64(id), event, unix_ms())?;
    get_delivery(conn, id, to_u64(delivery))
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, o.type, d.status, d.attempt_count, d.next_attempt_ms, d.created_at, d.delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
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
        attempt_count: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(u32::MAX),
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| ms_to_time(r.get(6).unwrap_or(0))),
        created_at: r.get(7)?,
        delivered_at: r.get(8)?,
        attempts: Vec::new(),
    })
}

pub(super) fn get_delivery(conn: &Connection, webhook: u64, id: u64) -> StoreResult<Delivery> {
    let mut d = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id WHERE d.id = ?1 AND d.webhook_id = ?2"
        ))?
        .query_row(params![to_i64(id), to_i64(webhook)], delivery_from_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("delivery {id} of webhook {webhook}")))?;
    let mut stmt = conn.prepare_cached(
        "SELECT at, status, latency_ms, error, response_snippet FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY id",
    )?;
    d.attempts = stmt
        .query_map([to_i64(id)], |r| {
            Ok(DeliveryAttempt {
                at: r.get(0)?,
                status: r.get::<_, Option<i64>>(1)?.and_then(|s| u16::try_from(s).ok()),
                latency_ms: to_u64(r.get(2)?),
                error: r.get(3)?,
                response_snippet: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(d)
}

pub(super) fn list_deliveries(
    conn: &Connection,
    webhook: u64,
    status: Option<DeliveryStatus>,
    limit: u32,
) -> StoreResult<DeliveryList> {
    get_webhook(conn, webhook)?;
    let status = status.map(|s| match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    });
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id
         WHERE d.webhook_id = ?1 AND (?2 IS NULL OR d.status = ?2) ORDER BY d.id DESC LIMIT ?3"
    ))?;
    let deliveries = stmt
        .query_map(
            params![to_i64(webhook), status, i64::from(limit.clamp(1, 1000))],
            delivery_from_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(DeliveryList { deliveries })
}

pub(super) fn redeliver(conn: &Connection, ctx: &Ctx, webhook: u64, id: u64) -> StoreResult<Delivery> {
    let before = get_delivery(conn, webhook, id)?;
    if before.status == DeliveryStatus::Pending {
        return Err(StoreError::new(
            ErrorCode::Conflict,
            format!(
                "delivery {id} is still pending; it will be attempted again at {}",
                before.next_attempt_at.unwrap_or_default()
            ),
        ));
    }
    conn.prepare_cached(
        "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?2, lease_owner = NULL, lease_until_ms = 0,
                created_ms = ?2 WHERE id = ?1",
    )?
    .execute(params![to_i64(id), unix_ms()])?;
    super::ops::record_audit_only(
        conn,
        ctx,
        "webhook.redeliver",
        &format!("webhook/{webhook}"),
        &json!({ "delivery": id, "status": before.status }),
        &json!({ "delivery": id, "status": "pending" }),
    )?;
    get_delivery(conn, webhook, id)
}

/// Claims due deliveries for `claim.node`, at most `claim.per_webhook` in flight per webhook.
pub(super) fn claim(conn: &Connection, claim: &Claim) -> StoreResult<Vec<ClaimedDelivery>> {
    let now = claim.now_ms;
    let mut hooks = conn.prepare_cached(
        "SELECT DISTINCT webhook_id FROM deliveries
         WHERE status = 'pending' AND next_attempt_ms <= ?1 AND lease_until_ms < ?1",
    )?;
    let due: Vec<i64> = hooks.query_map([now], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for hook in due {
        let busy = claim.in_flight.get(&to_u64(hook)).copied().unwrap_or(0);
        let room = claim.per_webhook.saturating_sub(busy);
        if room == 0 || out.len() >= claim.max {
            continue;
        }
        let room = room.min(claim.max - out.len());
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.attempt_count, d.created_ms, d.event_id, w.url, w.secret FROM deliveries d
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_ms <= ?2 AND d.lease_until_ms < ?2
             ORDER BY d.id LIMIT ?3",
        )?;
        let rows: Vec<(i64, i64, i64, i64, String, String)> = stmt
            .query_map(params![hook, now, i64::try_from(room).unwrap_or(1)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect::<Result<_, _>>()?;
        for (id, attempts, created_ms, event, url, secret) in rows {
            conn.prepare_cached("UPDATE deliveries SET lease_owner = ?2, lease_until_ms = ?3 WHERE id = ?1")?
                .execute(params![id, claim.node, now + claim.lease_ms])?;
            out.push(ClaimedDelivery {
                id: to_u64(id),
                webhook_id: to_u64(hook),
                url,
                secret,
                attempt_count: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_ms,
                event: load_event(conn, event)?,
            });
        }
    }
    Ok(out)
}

/// Records an attempt and its outcome, if this node still holds the lease.
pub(super) fn finish(
    conn: &Connection,
    node: &str,
    id: u64,
    attempt: &DeliveryAttempt,
    outcome: AttemptOutcome,
) -> StoreResult<bool> {
    let owner: Option<Option<String>> = conn
        .prepare_cached("SELECT lease_owner FROM deliveries WHERE id = ?1")?
        .query_row([to_i64(id)], |r| r.get(0))
        .optional()?;
    if owner.flatten().as_deref() != Some(node) {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, at, status, latency_ms, error, response_snippet) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to_i64(id),
        attempt.at,
        attempt.status.map(i64::from),
        to_i64(attempt.latency_ms),
        attempt.error,
        attempt.response_snippet
    ])?;
    let (status, next, delivered) = match outcome {
        AttemptOutcome::Delivered => ("delivered", 0, Some(now())),
        AttemptOutcome::Retry { next_attempt_ms } => ("pending", next_attempt_ms, None),
        AttemptOutcome::Dead => ("dead", 0, None),
    };
    conn.prepare_cached(
        "UPDATE deliveries SET status = ?2, next_attempt_ms = ?3, delivered_at = ?4, attempt_count = attempt_count + 1,
                lease_owner = NULL, lease_until_ms = 0 WHERE id = ?1",
    )?
    .execute(params![to_i64(id), status, next, delivered])?;
    Ok(true)
}
