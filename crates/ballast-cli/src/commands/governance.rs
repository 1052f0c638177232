//! `ballast policy …`, `ballast transition …` and `ballast version compare`: policies from JSON
//! or YAML files, transition requests and their reviews, and versions side by side.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ballast_api::governance::{
    Comparison, GateVerdict, Policy, RequestState, StoredPolicy, TransitionRequest,
};
use ballast_client::{PolicyScope, Precondition, StageOutcome, TransitionQuery, TransitionVerb};
use ballast_core::{ModelName, Stage};
use clap::Subcommand;

use super::Ctx;
use crate::output;

fn parse_scope(s: &str) -> Result<PolicyScope, String> {
    if s.contains('/') {
        ModelName::parse(s).map(PolicyScope::Model).map_err(|e| e.message)
    } else {
        ballast_core::name::validate_namespace(s)
            .map(|()| PolicyScope::Namespace(s.to_owned()))
            .map_err(|e| e.message)
    }
}

fn parse_model(s: &str) -> Result<ModelName, String> {
    ModelName::parse(s).map_err(|e| e.message)
}

fn parse_state(s: &str) -> Result<RequestState, String> {
    s.parse().map_err(|e: ballast_core::ValidationError| e.message)
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    s.parse().map_err(|e: ballast_core::ValidationError| e.message)
}

/// `ballast policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the policy set on a namespace (NAMESPACE) or a model (NAMESPACE/MODEL).
    Get {
        /// NAMESPACE or NAMESPACE/MODEL.
        #[arg(value_parser = parse_scope, value_name = "TARGET")]
        target: PolicyScope,
        /// For a model: the policy in force (its namespace's, overridden field by field by its
        /// own) and where it comes from.
        #[arg(long)]
        effective: bool,
    },
    /// Create or replace a policy from a YAML or JSON file (JSON when it ends in .json).
    ///
    /// Fields: naming_rule, required_metadata {staging, production}, required_card_sections
    /// {staging, production}, risk (low|medium|high), approvals {low|medium|high: {staging,
    /// production}}, gates {staging, production} with rules such as 'accuracy >= 0.92' or
    /// 'accuracy >= production.accuracy - 0.005'. See docs/governance.md.
    Set {
        /// NAMESPACE or NAMESPACE/MODEL.
        #[arg(value_parser = parse_scope, value_name = "TARGET")]
        target: PolicyScope,
        /// The policy file.
        file: PathBuf,
        /// Only if the policy is still at this revision (or * for "exists").
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
    /// Remove a policy.
    Rm {
        /// NAMESPACE or NAMESPACE/MODEL.
        #[arg(value_parser = parse_scope, value_name = "TARGET")]
        target: PolicyScope,
        /// Only if the policy is still at this revision.
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
}

/// `ballast transition` subcommands.
#[derive(Debug, Subcommand)]
pub enum TransitionCommand {
    /// List transition requests, newest first (every readable model, or one model).
    List {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: Option<ModelName>,
        /// Only requests of this version number (with a model).
        #[arg(long, requires = "model", value_name = "N")]
        number: Option<u64>,
        /// pending, completed, rejected, cancelled, superseded or gates_failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<RequestState>,
        /// Only requests into this stage.
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// Page size (1-1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a request with its gate verdicts and reviews.
    Show {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: ModelName,
        /// Request id.
        id: u64,
    },
    /// Approve a request (not your own; a reviewer counts once). The approval that brings the
    /// count to what the policy needs moves the version.
    Approve {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: ModelName,
        /// Request id.
        id: u64,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// Reject a request.
    Reject {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: ModelName,
        /// Request id.
        id: u64,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// Complete a request without waiting for the remaining approvals (maintainers; the gates
    /// must still pass and a high-risk model still needs one approval).
    Complete {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: ModelName,
        /// Request id.
        id: u64,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// Withdraw your own pending request.
    Cancel {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model)]
        model: ModelName,
        /// Request id.
        id: u64,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
}

/// Reads a policy file strictly: an unknown or misspelt field is an error naming it.
fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let policy: Policy = if text.trim().is_empty() {
        Policy::default()
    } else if json {
        serde_json::from_str(&text).with_context(|| format!("invalid policy file {}", path.display()))?
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("invalid policy file {}", path.display()))?
    };
    Ok(policy)
}

fn print_policy(p: &StoredPolicy) -> anyhow::Result<()> {
    outln!(
        "policy on {} (revision {}, by {} at {})",
        p.target,
        p.revision,
        p.updated_by,
        p.updated_at
    );
    print_yaml(&p.policy)
}

fn print_yaml(p: &Policy) -> anyhow::Result<()> {
    if p.is_empty() {
        outln!("(empty: no rule)");
        return Ok(());
    }
    let text = serde_yaml::to_string(p).context("cannot render the policy")?;
    for line in text.lines() {
        outln!("  {line}");
    }
    Ok(())
}

/// Runs a `policy` subcommand.
///
/// # Errors
/// What the registry answers, a transport error, or an unreadable policy file.
pub async fn run_policy(ctx: &Ctx, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Get { target, effective } => {
            if effective {
                let PolicyScope::Model(m) = &target else {
                    anyhow::bail!("--effective needs a model (NAMESPACE/MODEL)");
                };
                let e = ctx.client.effective_policy(m).await?;
                if ctx.json {
                    return output::json(&e);
                }
                outln!("policy in force for {}: {}", e.model, e.source());
                match &e.policy {
                    Some(p) => print_yaml(p)?,
                    None => outln!("  (none: every move the stage rules allow goes through)"),
                }
            } else {
                let p = ctx.client.get_policy(&target).await?;
                if ctx.json {
                    return output::json(&p);
                }
                print_policy(&p)?;
            }
        }
        PolicyCommand::Set {
            target,
            file,
            if_match,
        } => {
            let policy = load_policy(&file)?;
            let p = ctx.client.set_policy(&target, &policy, if_match).await?;
            if ctx.json {
                return output::json(&p);
            }
            outln!("policy on {} set (revision {})", p.target, p.revision);
        }
        PolicyCommand::Rm { target, if_match } => {
            ctx.client.delete_policy(&target, if_match).await?;
            if ctx.json {
                return output::json(&serde_json::json!({ "deleted": true }));
            }
            outln!(
                "policy on {} removed",
                match &target {
                    PolicyScope::Namespace(ns) => ns.clone(),
                    PolicyScope::Model(m) => m.to_string(),
                }
            );
        }
    }
    Ok(())
}

fn request_row(r: &TransitionRequest) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.model.clone(),
        r.version.to_string(),
        format!("{} -> {}", r.from_stage, r.to_stage),
        r.state.to_string(),
        format!("{}/{}", r.approvals, r.required_approvals),
        if r.gates_passed { "passed" } else { "failed" }.into(),
        r.requested_by.clone(),
        r.created_at.clone(),
    ]
}

fn verdict_rows(verdicts: &[GateVerdict]) -> Vec<Vec<String>> {
    verdicts
        .iter()
        .map(|v| {
            vec![
                if v.passed { "pass" } else { "FAIL" }.into(),
                v.rule.clone(),
                v.observed.clone(),
                v.required.clone(),
                v.note.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

fn print_request(r: &TransitionRequest) {
    output::fields(&[
        ("request", r.id.to_string()),
        ("version", format!("{}/{}", r.model, r.version)),
        ("move", format!("{} -> {}", r.from_stage, r.to_stage)),
        ("state", r.state.to_string()),
        ("requested by", r.requested_by.clone()),
        ("comment", r.comment.clone().unwrap_or_else(|| "-".into())),
        ("policy", format!("{} (risk {})", r.policy_source, r.risk)),
        (
            "approvals",
            format!("{} of {} needed", r.approvals, r.required_approvals),
        ),
        (
            "baseline",
            r.baseline_version.map_or_else(
                || "no production version".into(),
                |v| format!("production version {v}"),
            ),
        ),
        ("created", r.created_at.clone()),
        ("updated", r.updated_at.clone()),
        ("resolution", r.resolution.clone().unwrap_or_else(|| "-".into())),
    ]);
    if !r.verdicts.is_empty() {
        outln!("");
        output::table(
            &["GATE", "RULE", "OBSERVED", "REQUIRED", "NOTE"],
            &verdict_rows(&r.verdicts),
        );
    }
    if !r.reviews.is_empty() {
        outln!("");
        let rows: Vec<Vec<String>> = r
            .reviews
            .iter()
            .map(|v| {
                vec![
                    v.reviewer.clone(),
                    format!("{:?}", v.decision).to_lowercase(),
                    v.comment.clone().unwrap_or_default(),
                    v.at.clone(),
                ]
            })
            .collect();
        output::table(&["REVIEWER", "DECISION", "COMMENT", "AT"], &rows);
    }
}

/// Runs a `transition` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run_transition(ctx: &Ctx, cmd: TransitionCommand) -> anyhow::Result<()> {
    let (model, id, verb, comment) = match cmd {
        TransitionCommand::List {
            model,
            number: version,
            state,
            stage,
            limit,
        } => {
            let q = TransitionQuery {
                version,
                state,
                stage,
                limit,
                before: None,
            };
            let list = ctx.client.list_transitions(model.as_ref(), &q).await?;
            if ctx.json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list.requests.iter().map(request_row).collect();
            output::table(
                &[
                    "ID",
                    "MODEL",
                    "VERSION",
                    "MOVE",
                    "STATE",
                    "APPROVALS",
                    "GATES",
                    "REQUESTED_BY",
                    "CREATED",
                ],
                &rows,
            );
            return Ok(());
        }
        TransitionCommand::Show { model, id } => {
            let r = ctx.client.get_transition(&model, id).await?;
            if ctx.json {
                return output::json(&r);
            }
            print_request(&r);
            return Ok(());
        }
        TransitionCommand::Approve { model, id, comment } => (model, id, TransitionVerb::Approve, comment),
        TransitionCommand::Reject { model, id, comment } => (model, id, TransitionVerb::Reject, comment),
        TransitionCommand::Complete { model, id, comment } => (model, id, TransitionVerb::Complete, comment),
        TransitionCommand::Cancel { model, id, comment } => (model, id, TransitionVerb::Cancel, comment),
    };
    let r = ctx.client.decide_transition(&model, id, verb, comment).await?;
    if ctx.json {
        return output::json(&r);
    }
    match r.state {
        RequestState::Completed => outln!(
            "transition {} completed: {}/{} is now in {}",
            r.id,
            r.model,
            r.version,
            r.to_stage
        ),
        RequestState::Pending => outln!(
            "transition {} {}: {} of {} approval(s)",
            r.id,
            match verb {
                TransitionVerb::Approve => "approved",
                _ => "updated",
            },
            r.approvals,
            r.required_approvals
        ),
        RequestState::GatesFailed => {
            outln!(
                "transition {} approved, but the gates no longer pass; nothing moved:",
                r.id
            );
            for v in r.verdicts.iter().filter(|v| !v.passed) {
                outln!("  {}", v.describe());
            }
        }
        other => outln!(
            "transition {} is {other}{}",
            r.id,
            r.resolution
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// Moves a version, or reports the transition request that waits for approvals.
///
/// # Errors
/// What the registry answers (a failed gate names every failed rule), or a transport error.
pub async fn stage(
    ctx: &Ctx,
    model: &ModelName,
    number: u64,
    body: &ballast_api::SetStage,
    if_match: Option<Precondition>,
) -> anyhow::Result<Option<ballast_api::StageChange>> {
    match ctx.client.request_stage(model, number, body, if_match).await? {
        StageOutcome::Moved(change) => Ok(Some(change)),
        StageOutcome::Pending(r) => {
            if ctx.json {
                output::json(&r)?;
            } else {
                outln!(
                    "{}/{}: transition request {} to {} is pending: the gates passed; {} of {} approval(s) (risk {})",
                    r.model,
                    r.version,
                    r.id,
                    r.to_stage,
                    r.approvals,
                    r.required_approvals,
                    r.risk
                );
                outln!(
                    "a reviewer approves it with: ballast transition approve {} {}",
                    r.model,
                    r.id
                );
            }
            Ok(None)
        }
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fmt_f64(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" || s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

fn print_comparison(c: &Comparison) {
    let mut headers: Vec<String> = vec!["FIELD".into()];
    headers.extend(c.versions.iter().map(|v| format!("v{}", v.version)));
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut push = |name: String, cells: Vec<String>| {
        let mut row = vec![name];
        row.extend(cells);
        rows.push(row);
    };
    push(
        "stage".into(),
        c.versions.iter().map(|v| v.stage.to_string()).collect(),
    );
    push(
        "digest".into(),
        c.versions
            .iter()
            .map(|v| output::short_digest(v.digest.as_deref()))
            .collect(),
    );
    push(
        "created_by".into(),
        c.versions.iter().map(|v| v.created_by.clone()).collect(),
    );
    let gate = |passed: bool, verdicts: &[GateVerdict]| {
        if verdicts.is_empty() {
            "-".to_owned()
        } else if passed {
            "pass".to_owned()
        } else {
            format!("FAIL ({})", verdicts.iter().filter(|v| !v.passed).count())
        }
    };
    push(
        "gates staging".into(),
        c.versions
            .iter()
            .map(|v| gate(v.staging_gates_passed, &v.staging_verdicts))
            .collect(),
    );
    push(
        "gates production".into(),
        c.versions
            .iter()
            .map(|v| gate(v.production_gates_passed, &v.production_verdicts))
            .collect(),
    );
    for f in c
        .metadata
        .iter()
        .filter(|f| f.values.iter().any(|v| !v.is_null()))
    {
        push(f.name.clone(), f.values.iter().map(cell).collect());
    }
    for f in &c.params {
        push(format!("param {}", f.name), f.values.iter().map(cell).collect());
    }
    for m in &c.metrics {
        let cells = m
            .values
            .iter()
            .zip(&m.deltas)
            .enumerate()
            .map(|(i, (v, d))| match (v, d) {
                (None, _) => "-".to_owned(),
                (Some(v), Some(d)) if i > 0 => {
                    format!(
                        "{} ({}{})",
                        fmt_f64(*v),
                        if *d >= 0.0 { "+" } else { "" },
                        fmt_f64(*d)
                    )
                }
                (Some(v), _) => fmt_f64(*v),
            })
            .collect();
        push(format!("metric {}", m.name), cells);
    }
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    output::table(&header_refs, &rows);
    outln!(
        "deltas against v{}; gates under the policy of {}{}",
        c.versions.first().map_or(0, |v| v.version),
        c.policy_source,
        c.production_version
            .map(|p| format!("; relative gates against production v{p}"))
            .unwrap_or_default()
    );
}

/// `ballast version compare NS/MODEL A B [C…]`.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn compare(ctx: &Ctx, model: &ModelName, versions: &[u64]) -> anyhow::Result<()> {
    let c = ctx.client.compare_versions(model, versions).await?;
    if ctx.json {
        return output::json(&c);
    }
    print_comparison(&c);
    Ok(())
}
