//! The conformance functions, one module per area, and what they share: the [`Fixture`] a
//! backend hands over, request contexts, small builders, and the invariants checked after a
//! test's changes (every change audited once with one event naming it; failed mutations leave
//! no trace).
//!
//! Each function takes a fresh, empty store and asserts behaviour through the trait alone.

pub mod audit;
pub mod auth;
pub mod cas;
pub mod errors;
pub mod events;
pub mod governance;
pub mod idempotency;
pub mod listing;
pub mod mlflow;
pub mod retention;
pub mod routing;
pub mod stages;
pub mod versions;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

use ballast_api::events::Event;
use ballast_api::{AuditEntry, CreateModel, CreateVersion, FileEntry, Model, Version, VersionMetadata};
use ballast_core::{ErrorCode, ModelName, Sha256Digest};
use ballast_store::{AuditFilter, Ctx, Idempotency, Store, StoreResult};

/// Expands one `#[tokio::test]` per conformance function for a backend whose `fresh()` returns
/// a [`Fixture`] holding a new, empty store. The list lives here only, so every backend runs
/// the same functions.
macro_rules! conformance_suite {
    ($fresh:path) => {
        conformance_suite!(@expand $fresh;
            versions::numbers_are_gap_free_under_concurrent_creates,
            versions::drafts_take_files_and_seal_once,
            versions::sealed_versions_are_immutable,
            versions::seal_checks_the_expected_digest,
            versions::blobs_are_known_once_referenced,
            cas::one_alias_move_wins_per_revision,
            cas::alias_preconditions,
            cas::model_update_preconditions,
            cas::concurrent_alias_creation_has_one_winner,
            cas::concurrent_model_updates_with_one_revision_have_one_winner,
            stages::stage_moves_follow_the_state_machine,
            stages::stage_moves_check_preconditions,
            stages::promotion_demotes_the_previous_production_version,
            stages::rollback_restores_the_replaced_version,
            stages::concurrent_promotions_leave_one_production_version,
            stages::models_with_live_versions_cannot_be_deleted,
            idempotency::retries_return_the_first_result_and_apply_once,
            idempotency::a_key_with_another_request_is_refused,
            idempotency::keys_belong_to_their_actor,
            idempotency::concurrent_retries_apply_once,
            idempotency::a_failed_request_does_not_consume_its_key,
            audit::the_chain_verifies_after_many_changes,
            audit::every_change_has_one_audit_entry_and_one_event,
            audit::audit_filters_and_paging,
            errors::usual_mistakes_have_stable_codes,
            errors::failed_mutations_change_nothing,
            errors::failures_among_concurrent_changes_leave_no_trace,
            errors::nul_characters_are_refused,
            events::the_change_feed_pages_without_gaps,
            events::the_change_feed_filters_by_type,
            events::events_describe_their_subject,
            events::the_watch_advances_with_every_commit,
            events::a_tailing_reader_misses_nothing_under_concurrent_writes,
            listing::model_pages_have_no_duplicates_or_gaps,
            listing::model_filters,
            listing::version_pages_in_every_order,
            listing::version_tag_metric_and_stage_filters,
            listing::bad_cursors_are_refused,
            listing::model_pages_are_in_byte_order,
            listing::listed_entries_equal_single_reads,
            routing::deployments_are_recorded_for_sealed_versions,
            routing::routes_resolve_in_the_routing_state,
            versions::deleted_numbers_are_never_reused,
            listing::versions_created_between_pages_are_not_repeated,
            auth::tokens_are_found_by_hash_and_revoked,
            auth::tokens_expire,
            auth::the_last_admin_cannot_be_removed,
            auth::roles_are_granted_and_revoked,
            auth::bootstrap_happens_once_under_concurrency,
            webhooks::subscriptions_queue_matching_deliveries,
            webhooks::two_claimers_never_hold_the_same_delivery,
            webhooks::leases_expire_and_lost_leases_cannot_finish,
            webhooks::attempts_retry_die_and_redeliver,
            mlflow::names_map_onto_registry_names_and_rename,
            mlflow::a_name_acts_in_the_namespace_it_names,
            mlflow::the_search_index_filters_by_name_prefix,
            mlflow::versions_keep_their_mlflow_fields,
            mlflow::transitions_move_in_one_step_and_archive_the_others,
            mlflow::tracking_objects_are_unique_and_ordered,
            mlflow::concurrent_registrations_have_one_winner_and_gap_free_numbers,
            governance::policies_have_revisions_and_preconditions,
            governance::a_transition_waits_for_approvals_then_moves,
            governance::concurrent_reviews_count_once,
            governance::requests_end_rejected_cancelled_blocked_or_superseded,
            retention::retention_policies_are_validated_and_revised,
            retention::retention_applies_to_the_models_in_scope,
            retention::the_plan_keeps_protected_versions_and_apply_removes_the_rest,
        );
    };
    (@expand $fresh:path; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                // `None`: the backend's server is not available on this machine (never under CI).
                let Some(fixture) = $fresh().await else {
                    return;
                };
                crate::conformance::$module::$name(fixture.store()).await;
                fixture.close().await;
            }
        )*
    };
}

/// A fresh, empty store and whatever must live as long as it (a temporary directory, a
/// database that is dropped afterwards).
pub struct Fixture {
    store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Fixture {
    /// Wraps a new store and what it depends on.
    pub fn new(store: Arc<dyn Store>, guard: Box<dyn std::any::Any + Send>) -> Self {
        Self { store, _guard: guard }
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Closes the store cleanly before its guard goes.
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// A request by `actor` without an idempotency key.
pub fn ctx(actor: &str) -> Ctx {
    Ctx {
        actor: actor.to_owned(),
        request_id: format!("req-{}", rand::random::<u64>()),
        idempotency: None,
    }
}

/// A request by `actor` carrying an idempotency key and its request fingerprint.
pub fn keyed(actor: &str, key: &str, fingerprint: &str) -> Ctx {
    Ctx {
        idempotency: Some(Idempotency {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
        }),
        ..ctx(actor)
    }
}

/// Parses a model name known to be valid.
pub fn name(s: &str) -> ModelName {
    ModelName::parse(s).expect("valid model name")
}

/// The error code of a result that must have failed.
pub fn code<T: std::fmt::Debug>(r: StoreResult<T>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code,
    }
}

/// A file entry for `bytes` at `path` (the store records it; the bytes live in the blob store).
pub fn file(path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        path: path.to_owned(),
        size: bytes.len() as u64,
        sha256: Sha256Digest::of(bytes).to_hex(),
        media_type: None,
    }
}

/// Creates a model with tags.
pub async fn model(store: &dyn Store, full: &str, tags: &[(&str, &str)]) -> Model {
    store
        .create_model(
            &ctx("alice"),
            CreateModel {
                name: full.to_owned(),
                description: format!("{full} for tests"),
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
        )
        .await
        .expect("create model")
}

/// Creates a draft with metrics and tags.
pub async fn draft(
    store: &dyn Store,
    m: &ModelName,
    metrics: &[(&str, f64)],
    tags: &[(&str, &str)],
) -> Version {
    let metrics: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    store
        .create_version(
            &ctx("alice"),
            m,
            CreateVersion {
                metadata: VersionMetadata {
                    metrics,
                    ..VersionMetadata::default()
                },
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
        )
        .await
        .expect("create version")
}

/// Creates a version with one file (unique to it) and seals it.
pub async fn sealed(
    store: &dyn Store,
    m: &ModelName,
    metrics: &[(&str, f64)],
    tags: &[(&str, &str)],
) -> Version {
    let v = draft(store, m, metrics, tags).await;
    let bytes = format!("weights of {m}/{}", v.version);
    store
        .put_file(&ctx("alice"), m, v.version, file("model.bin", bytes.as_bytes()))
        .await
        .expect("put file");
    store
        .seal_version(&ctx("alice"), m, v.version, None)
        .await
        .expect("seal")
}

/// Every audit entry, oldest first, read page by page.
pub async fn all_audit(store: &dyn Store) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_audit(AuditFilter {
                after,
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("list audit");
        out.extend(page.entries);
        match page.next_after {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Every event, oldest first, read page by page.
pub async fn all_events(store: &dyn Store) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_events(after, 1000, Vec::new())
            .await
            .expect("list events");
        if page.events.is_empty() {
            return out;
        }
        after = page.next_after;
        out.extend(page.events);
    }
}

/// What a failed mutation must leave untouched: the audit trail and the change feed.
#[derive(Debug, PartialEq, Eq)]
pub struct Trail {
    /// Audit entries.
    pub audit: u64,
    /// The newest event id.
    pub last_event: u64,
}

/// The current [`Trail`].
pub async fn trail(store: &dyn Store) -> Trail {
    let audit = store.stats().await.expect("stats").audit_entries;
    let events = all_events(store).await;
    Trail {
        audit,
        last_event: events.last().map_or(0, |e| e.id),
    }
}

/// Actions audited without an event (bookkeeping of deliveries), and events without an audit
/// entry (test pings): both are outside the one-change-one-entry-one-event rule.
const AUDIT_ONLY: &[&str] = &["webhook.redeliver"];
const EVENT_ONLY: &[&str] = &["webhook.ping"];

/// Every audited change has exactly one event naming its audit entry, every event (but test
/// pings) names exactly one audit entry, the chain verifies, and the counts agree.
pub async fn assert_audit_matches_events(store: &dyn Store) {
    let audit = all_audit(store).await;
    let events = all_events(store).await;
    let mut by_audit: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        if EVENT_ONLY.contains(&e.event_type.as_str()) {
            continue;
        }
        let id = e
            .data
            .get("audit_id")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| {
                panic!(
                    "event {} ({}) names no audit entry: {}",
                    e.id, e.event_type, e.data
                )
            });
        by_audit.entry(id).or_default().push(e);
    }
    for a in &audit {
        let found = by_audit.remove(&a.id).unwrap_or_default();
        if AUDIT_ONLY.contains(&a.action.as_str()) {
            assert!(found.is_empty(), "audit-only entry {} has events", a.id);
            continue;
        }
        assert_eq!(
            found.len(),
            1,
            "audit entry {} ({}) has {} events",
            a.id,
            a.action,
            found.len()
        );
        let e = found[0];
        assert_eq!(
            e.actor, a.actor,
            "event {} and audit entry {} disagree on the actor",
            e.id, a.id
        );
        assert_eq!(
            e.request_id, a.request_id,
            "event {} and audit entry {} disagree on the request",
            e.id, a.id
        );
        assert_eq!(
            e.subject, a.target,
            "event {} and audit entry {} disagree on the subject",
            e.id, a.id
        );
    }
    assert!(
        by_audit.is_empty(),
        "events name audit entries that do not exist: {:?}",
        by_audit.keys()
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.audit_entries, audit.len() as u64);
    assert_eq!(
        store.verify_audit().await.expect("verify"),
        Ok(audit.len() as u64)
    );
}

/// A resource as JSON, to compare whole resources (what a client would see) for equality.
pub fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("resources serialize")
}
