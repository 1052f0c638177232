//! The OpenAPI 3.1 document served at `/v1/openapi.json`: schemas derived from the wire types,
//! operations from one route table, and the error-code table.

use std::sync::OnceLock;

use ballast_api::auth::{
    CreateToken, CreatedToken, GrantRole, GrantRoleIn, Permission, Role, RoleBinding, RoleList, Token,
    TokenList, WhoAmI,
};
use ballast_api::deployments::{
    Canary, CreateDeployment, Deployment, DeploymentList, RegistryRoute, RouteList, SetRoute,
};
use ballast_api::events::{
    CreateWebhook, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus, Event, EventList, Webhook,
    EVENT_TYPES,
};
use ballast_api::governance::{
    ApprovalTable, ComparedField, ComparedMetric, ComparedVersion, Comparison, Decision, EffectivePolicy,
    GateKind, GateVerdict, PerStage, Policy, PolicyScope, RequestState, Review, ReviewBody, RiskLevel,
    StageApprovals, StoredPolicy, TransitionList, TransitionRequest,
};
use ballast_api::retention::{
    EffectiveRetention, GcBlob, GcError, GcKept, GcReport, GcRequest, GcVersion, RetentionPolicy,
    RetentionRule,
};
use ballast_api::routing::{
    ActiveCheck, FailoverPolicy, FailureRate, HealthPolicy, LocalRegionPolicy, RegionPolicy, RetryPolicy,
    Route, RouteKind, RouteRegions, RoutingSnapshot, Split, Target, Timeouts,
};
use ballast_api::{
    Alias, AttachFile, AuditEntry, AuditList, BlobInfo, CreateModel, CreateVersion, ErrorBody, ErrorDetail,
    FileEntry, Lineage, Model, ModelList, Resources, Rollback, SealVersion, SetAlias, SetStage, StageChange,
    UpdateModel, UpdateVersion, Version, VersionList, VersionMetadata, VersionState,
};
use ballast_core::ErrorCode;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ballast registry API",
        description = "Fail-safe model registry: models, versions, artifacts, stages, aliases, audit."
    ),
    components(schemas(
        crate::api::regions::RegistryStatus,
        crate::api::regions::RegionInfo,
        crate::api::regions::ReplicationTotals,
        crate::api::regions::FsckRequest,
        crate::api::regions::FsckReport,
        crate::api::regions::FsckRegion,
        crate::api::regions::FsckProblem,
        CreateToken,
        CreatedToken,
        GrantRole,
        GrantRoleIn,
        Permission,
        Role,
        RoleBinding,
        RoleList,
        Token,
        TokenList,
        WhoAmI,
        Canary,
        CreateDeployment,
        Deployment,
        DeploymentList,
        RegistryRoute,
        RouteList,
        SetRoute,
        ActiveCheck,
        FailoverPolicy,
        HealthPolicy,
        RegionPolicy,
        RetryPolicy,
        Route,
        RouteKind,
        RoutingSnapshot,
        Split,
        Target,
        Timeouts,
        FailureRate,
        RouteRegions,
        LocalRegionPolicy,
        Event,
        EventList,
        CreateWebhook,
        Webhook,
        Delivery,
        DeliveryAttempt,
        DeliveryList,
        DeliveryStatus,
        Alias,
        AttachFile,
        AuditEntry,
        AuditList,
        BlobInfo,
        CreateModel,
        CreateVersion,
        ErrorBody,
        ErrorDetail,
        FileEntry,
        Lineage,
        Model,
        ModelList,
        Resources,
        Rollback,
        SealVersion,
        SetAlias,
        SetStage,
        StageChange,
        UpdateModel,
        UpdateVersion,
        Version,
        VersionList,
        VersionMetadata,
        VersionState,
        ApprovalTable,
        ComparedField,
        ComparedMetric,
        ComparedVersion,
        Comparison,
        Decision,
        EffectivePolicy,
        GateKind,
        GateVerdict,
        PerStage,
        Policy,
        PolicyScope,
        RequestState,
        Review,
        ReviewBody,
        RiskLevel,
        StageApprovals,
        StoredPolicy,
        TransitionList,
        TransitionRequest,
        EffectiveRetention,
        GcBlob,
        GcError,
        GcKept,
        GcReport,
        GcRequest,
        GcVersion,
        RetentionPolicy,
        RetentionRule
    ))
)]
struct Schemas;

/// One operation: method, path, summary, request schema, success status and schema.
struct Op(
    HttpMethod,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

const M: &str = "/v1/models/{ns}/{model}";

fn table() -> Vec<Op> {
    use HttpMethod::{Delete, Get, Head, Patch, Post, Put};
    let v = format!("{M}/versions/{{n}}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        Op(Get, "/healthz", "Liveness", None, "200", None),
        Op(Get, "/readyz", "Readiness: the store answers", None, "200", None),
        Op(Get, "/metrics", "Prometheus metrics", None, "200", None),
        Op(
            Post,
            "/v1/models",
            "Create a model",
            Some("CreateModel"),
            "201",
            Some("Model"),
        ),
        Op(
            Get,
            "/v1/models",
            "List models (query: namespace, prefix, tag=k[=v], limit, cursor)",
            None,
            "200",
            Some("ModelList"),
        ),
        Op(Get, M, "Get a model", None, "200", Some("Model")),
        Op(
            Patch,
            M,
            "Update a model's description or tags (If-Match)",
            Some("UpdateModel"),
            "200",
            Some("Model"),
        ),
        Op(
            Delete,
            M,
            "Delete a model (refused while a version is in staging or production)",
            None,
            "204",
            None,
        ),
        Op(
            Post,
            leak(format!("{M}/versions")),
            "Create a draft version",
            Some("CreateVersion"),
            "201",
            Some("Version"),
        ),
        Op(
            Get,
            leak(format!("{M}/versions")),
            "List or search versions (query: stage, tag, metric, state, order_by, order, limit, cursor)",
            None,
            "200",
            Some("VersionList"),
        ),
        Op(
            Get,
            leak(v.clone()),
            "Get a version",
            None,
            "200",
            Some("Version"),
        ),
        Op(
            Patch,
            leak(v.clone()),
            "Replace a draft's metadata or change tags (If-Match)",
            Some("UpdateVersion"),
            "200",
            Some("Version"),
        ),
        Op(
            Put,
            leak(format!("{v}/files/{{path}}")),
            "Upload a file (raw bytes, streamed; x-ballast-sha256 checked)",
            None,
            "201",
            Some("FileEntry"),
        ),
        Op(
            Get,
            leak(format!("{v}/files/{{path}}")),
            "Download a file (verified; Range supported)",
            None,
            "200",
            None,
        ),
        Op(
            Head,
            leak(format!("{v}/files/{{path}}")),
            "File size and digest",
            None,
            "200",
            None,
        ),
        Op(
            Delete,
            leak(format!("{v}/files/{{path}}")),
            "Remove a file from a draft",
            None,
            "204",
            None,
        ),
        Op(
            Post,
            leak(format!("{v}/files")),
            "Attach a blob the server already holds",
            Some("AttachFile"),
            "201",
            Some("FileEntry"),
        ),
        Op(
            Get,
            leak(format!("{v}/manifest")),
            "The version's manifest and digest",
            None,
            "200",
            None,
        ),
        Op(
            Post,
            leak(format!("{v}/seal")),
            "Seal a draft",
            Some("SealVersion"),
            "200",
            Some("Version"),
        ),
        Op(
            Post,
            leak(format!("{v}/stage")),
            "Move a version to a stage (If-Match). Under a policy, a move into staging or production creates a transition request: 200 when it completes at once, 202 with the pending TransitionRequest when approvals are needed, 422 gate_failed (error.details lists the failed rules, transition_request the stored request)",
            Some("SetStage"),
            "200",
            Some("StageChange"),
        ),
        Op(
            Post,
            leak(format!("{M}/rollback")),
            "Restore the previous production version",
            Some("Rollback"),
            "200",
            Some("StageChange"),
        ),
        Op(
            Get,
            leak(format!("{M}/stages/{{stage}}")),
            "The version in a stage",
            None,
            "200",
            Some("Version"),
        ),
        Op(
            Get,
            leak(format!("{M}/aliases/{{alias}}")),
            "Get an alias",
            None,
            "200",
            Some("Alias"),
        ),
        Op(
            Get,
            leak(format!("{M}/aliases/{{alias}}/version")),
            "Resolve an alias to its version",
            None,
            "200",
            Some("Version"),
        ),
        Op(
            Put,
            leak(format!("{M}/aliases/{{alias}}")),
            "Set or move an alias (If-Match / If-None-Match)",
            Some("SetAlias"),
            "200",
            Some("Alias"),
        ),
        Op(
            Delete,
            leak(format!("{M}/aliases/{{alias}}")),
            "Delete an alias (If-Match)",
            None,
            "204",
            None,
        ),
        Op(
            Get,
            "/v1/blobs/sha256/{digest}",
            "Whether the server holds a blob",
            None,
            "200",
            Some("BlobInfo"),
        ),
        Op(
            Get,
            "/v1/audit",
            "The audit trail (query: after, model, actor, action, limit)",
            None,
            "200",
            Some("AuditList"),
        ),
        Op(
            Get,
            "/v1/audit/verify",
            "Recompute the audit hash chain",
            None,
            "200",
            None,
        ),
        Op(Get, "/v1/openapi.json", "This document", None, "200", None),
        Op(
            Get,
            "/v1/events",
            "The change feed (query: after, limit, type)",
            None,
            "200",
            Some("EventList"),
        ),
        Op(
            Get,
            "/v1/events/stream",
            "The change feed as Server-Sent Events (resume with after or Last-Event-ID)",
            None,
            "200",
            None,
        ),
        Op(
            Post,
            "/v1/deployments",
            "Record where a sealed version is served (model, version, region, url, weight)",
            Some("CreateDeployment"),
            "201",
            Some("Deployment"),
        ),
        Op(
            Get,
            "/v1/deployments",
            "List deployments (query: model, region)",
            None,
            "200",
            Some("DeploymentList"),
        ),
        Op(Delete, "/v1/deployments/{id}", "Remove a deployment", None, "204", None),
        Op(Get, "/v1/routes", "List registry routes", None, "200", Some("RouteList")),
        Op(
            Put,
            "/v1/routes/{name}",
            "Create or replace a registry route (target NS/MODEL:STAGE or NS/MODEL@ALIAS)",
            Some("SetRoute"),
            "200",
            Some("RegistryRoute"),
        ),
        Op(Delete, "/v1/routes/{name}", "Delete a registry route", None, "204", None),
        Op(
            Get,
            "/v1/routing/snapshot",
            "The compiled routing snapshot (ETag = digest; query: wait, after_generation for long-polling; 304 when unchanged)",
            None,
            "200",
            Some("RoutingSnapshot"),
        ),
        Op(
            Post,
            "/v1/webhooks",
            "Subscribe a URL to events (the answer shows the secret once)",
            Some("CreateWebhook"),
            "201",
            Some("Webhook"),
        ),
        Op(Get, "/v1/webhooks", "List webhooks", None, "200", None),
        Op(
            Get,
            "/v1/webhooks/{id}",
            "Get a webhook",
            None,
            "200",
            Some("Webhook"),
        ),
        Op(Delete, "/v1/webhooks/{id}", "Delete a webhook", None, "204", None),
        Op(
            Post,
            "/v1/webhooks/{id}/test",
            "Queue a webhook.ping delivery",
            None,
            "202",
            Some("Delivery"),
        ),
        Op(
            Get,
            "/v1/webhooks/{id}/deliveries",
            "A webhook's deliveries (query: status, limit)",
            None,
            "200",
            Some("DeliveryList"),
        ),
        Op(
            Get,
            "/v1/webhooks/{id}/deliveries/{delivery}",
            "One delivery with every attempt",
            None,
            "200",
            Some("Delivery"),
        ),
        Op(
            Post,
            "/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            "Queue a delivered or dead delivery again",
            None,
            "202",
            Some("Delivery"),
        ),
        Op(Get, "/v1/whoami", "The caller's principal and roles", None, "200", Some("WhoAmI")),
        Op(
            Post,
            "/v1/tokens",
            "Create a token (admin on *); the answer holds the secret, shown only this once",
            Some("CreateToken"),
            "201",
            Some("CreatedToken"),
        ),
        Op(Get, "/v1/tokens", "List tokens, never their secrets (query: principal)", None, "200", Some("TokenList")),
        Op(
            Delete,
            "/v1/tokens/{id}",
            "Revoke a token (refused for the last usable admin token)",
            None,
            "200",
            Some("Token"),
        ),
        Op(Post, "/v1/roles", "Grant a role in a namespace or * (admin on *)", Some("GrantRole"), "200", Some("RoleBinding")),
        Op(Get, "/v1/roles", "List role bindings (query: principal)", None, "200", Some("RoleList")),
        Op(
            Delete,
            "/v1/roles/{principal}/{namespace}/{role}",
            "Revoke a role (refused for the last admin on *)",
            None,
            "204",
            None,
        ),
        Op(
            Get,
            "/v1/retention/{ns}",
            "A namespace's retention policy",
            None,
            "200",
            Some("RetentionRule"),
        ),
        Op(
            Put,
            "/v1/retention/{ns}",
            "Set a namespace's retention policy (keep the newest N development versions and anything younger than D days)",
            Some("RetentionPolicy"),
            "200",
            Some("RetentionRule"),
        ),
        Op(
            Delete,
            "/v1/retention/{ns}",
            "Remove a namespace's retention policy",
            None,
            "204",
            None,
        ),
        Op(
            Get,
            leak(format!("{M}/retention")),
            "The retention policy that applies to a model (its own or its namespace's)",
            None,
            "200",
            Some("EffectiveRetention"),
        ),
        Op(
            Put,
            leak(format!("{M}/retention")),
            "Set a model's own retention policy (replaces its namespace's for this model)",
            Some("RetentionPolicy"),
            "200",
            Some("RetentionRule"),
        ),
        Op(
            Delete,
            leak(format!("{M}/retention")),
            "Remove a model's own retention policy",
            None,
            "204",
            None,
        ),
        Op(
            Post,
            "/v1/gc",
            "Garbage collection: remove versions that retention policies let go, then unreferenced blobs past the grace period (dry_run reports only)",
            Some("GcRequest"),
            "200",
            Some("GcReport"),
        ),
        Op(
            Get,
            "/v1/status",
            "Artifact regions: reachability, replication queue and lag per region, replication and fallback totals",
            None,
            "200",
            Some("RegistryStatus"),
        ),
        Op(
            Post,
            "/v1/fsck",
            "Check every referenced blob in every region (present, size, digest); repair copies good bytes over missing and corrupt ones (admin on *)",
            Some("FsckRequest"),
            "200",
            Some("FsckReport"),
        ),
        Op(Get, "/v1/policies/{ns}", "A namespace's policy", None, "200", Some("StoredPolicy")),
        Op(
            Put,
            "/v1/policies/{ns}",
            "Create or replace a namespace's policy (JSON or application/yaml; If-Match)",
            Some("Policy"),
            "200",
            Some("StoredPolicy"),
        ),
        Op(Delete, "/v1/policies/{ns}", "Remove a namespace's policy", None, "204", None),
        Op(Get, leak(format!("{M}/policy")), "A model's own policy", None, "200", Some("StoredPolicy")),
        Op(
            Put,
            leak(format!("{M}/policy")),
            "Create or replace a model's policy, overriding its namespace's field by field (JSON or application/yaml; If-Match)",
            Some("Policy"),
            "200",
            Some("StoredPolicy"),
        ),
        Op(Delete, leak(format!("{M}/policy")), "Remove a model's policy", None, "204", None),
        Op(
            Get,
            leak(format!("{M}/policy/effective")),
            "The policy in force for a model and where it comes from",
            None,
            "200",
            Some("EffectivePolicy"),
        ),
        Op(
            Get,
            leak(format!("{M}/compare")),
            "Versions side by side (query: versions=1,2[,...], 2 to 10): metadata, parameters, metrics with deltas against the first, and gate verdicts for staging and production",
            None,
            "200",
            Some("Comparison"),
        ),
        Op(
            Get,
            "/v1/transition-requests",
            "Transition requests of every readable model, newest first (query: model, version, state, stage, limit, before)",
            None,
            "200",
            Some("TransitionList"),
        ),
        Op(
            Get,
            leak(format!("{M}/transition-requests")),
            "A model's transition requests, newest first (query: version, state, stage, limit, before)",
            None,
            "200",
            Some("TransitionList"),
        ),
        Op(
            Get,
            leak(format!("{M}/transition-requests/{{id}}")),
            "A transition request with its verdicts and reviews",
            None,
            "200",
            Some("TransitionRequest"),
        ),
        Op(
            Post,
            leak(format!("{M}/transition-requests/{{id}}/approve")),
            "Approve (not the requester; a reviewer counts once); the approval that suffices completes the move",
            Some("ReviewBody"),
            "200",
            Some("TransitionRequest"),
        ),
        Op(
            Post,
            leak(format!("{M}/transition-requests/{{id}}/reject")),
            "Reject (not the requester)",
            Some("ReviewBody"),
            "200",
            Some("TransitionRequest"),
        ),
        Op(
            Post,
            leak(format!("{M}/transition-requests/{{id}}/complete")),
            "Complete without waiting for the remaining approvals (gates must pass; high risk needs one approval); 422 gate_failed when a gate fails",
            Some("ReviewBody"),
            "200",
            Some("TransitionRequest"),
        ),
        Op(
            Post,
            leak(format!("{M}/transition-requests/{{id}}/cancel")),
            "Withdraw a pending request (the requester only)",
            Some("ReviewBody"),
            "200",
            Some("TransitionRequest"),
        ),
    ]
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Put => "put",
        HttpMethod::Post => "post",
        HttpMethod::Delete => "delete",
        HttpMethod::Head => "head",
        HttpMethod::Patch => "patch",
        HttpMethod::Options => "options",
        HttpMethod::Trace => "trace",
    }
}

fn json_ref(name: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(name)))
        .build()
}

/// The document, rendered once.
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = Schemas::openapi();
        let codes: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("`{}` → {}", c.as_str(), c.http_status()))
            .collect();
        let events: Vec<String> = EVENT_TYPES.iter().map(|(t, d)| format!("`{t}`: {d}")).collect();
        doc.info.description = Some(format!(
            "Fail-safe model registry. Errors answer `ErrorBody` with one of these codes: {}. Every request except /healthz, /readyz, /metrics and this document needs `Authorization: Bearer <token>` (unknown, expired or revoked → 401 `unauthenticated`; a role missing in the namespace → 403 `permission_denied`, checked before anything is looked up); the token's principal is the actor recorded for changes (`x-ballast-actor` names the actor only when the server runs with auth off). Mutations accept `Idempotency-Key`. Event types (the `type` of an `Event`): {}. Webhook deliveries carry `x-ballast-event`, `x-ballast-delivery` (stable across retries), `x-ballast-timestamp` and `x-ballast-signature: sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">`.",
            codes.join(", "),
            events.join("; ")
        ));
        for Op(method, path, summary, req, status, resp) in table() {
            let mut op = OperationBuilder::new()
                .summary(Some(summary))
                .operation_id(Some(format!("{}{}", method_name(&method), path.replace(['/', '{', '}', '.'], "_"))));
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(seg.trim_matches(|c| c == '{' || c == '}'))
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String))),
                );
            }
            if let Some(r) = req {
                op = op.request_body(Some(RequestBodyBuilder::new().content("application/json", json_ref(r)).build()));
            }
            let mut ok = ResponseBuilder::new().description("success");
            if let Some(r) = resp {
                ok = ok.content("application/json", json_ref(r));
            }
            op = op
                .response(status, ok.build())
                .response("default", ResponseBuilder::new().description("error").content("application/json", json_ref("ErrorBody")).build());
            doc.paths.add_path_operation(path, vec![method], op.build());
        }
        let mut doc = serde_json::to_value(&doc).unwrap_or_default();
        if let Some(root) = doc.as_object_mut() {
            // Bearer tokens on every operation but the public ones.
            let components = root.entry("components").or_insert_with(|| serde_json::json!({}));
            if let Some(c) = components.as_object_mut() {
                c.insert(
                    "securitySchemes".into(),
                    serde_json::json!({ "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (`ballast token create`); the first start writes an admin token to <data_dir>/admin.token" } }),
                );
            }
            root.insert("security".into(), serde_json::json!([{ "bearer": [] }]));
            if let Some(paths) = root.get_mut("paths").and_then(|p| p.as_object_mut()) {
                for public in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
                    if let Some(op) = paths.get_mut(public).and_then(|p| p.get_mut("get")) {
                        op["security"] = serde_json::json!([]);
                    }
                }
            }
            // The MLflow-compatible API's own error shape and status mapping.
            root.insert("x-mlflow-errors".into(), crate::api::mlflow::error_table());
        }
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
    })
    .clone()
}
