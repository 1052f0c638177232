//! `ballast retention …` and `ballast gc`: retention policies on namespaces and models, and
//! garbage collection (dry runs list what would go and why the rest stays).

use ballast_api::retention::{GcReport, GcRequest, RetentionPolicy, RetentionRule};
use ballast_client::PolicyScope;
use ballast_core::ModelName;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::output;

fn parse_target(s: &str) -> Result<PolicyScope, String> {
    if s.contains('/') {
        ModelName::parse(s).map(PolicyScope::Model).map_err(|e| e.message)
    } else {
        ballast_core::validate_namespace(s)
            .map(|()| PolicyScope::Namespace(s.to_owned()))
            .map_err(|e| e.message)
    }
}

fn parse_model(s: &str) -> Result<ModelName, String> {
    ModelName::parse(s).map_err(|e| e.message)
}

fn parse_namespace(s: &str) -> Result<String, String> {
    ballast_core::validate_namespace(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.message)
}

/// `ballast retention` subcommands.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Show the retention policy of a namespace (NAMESPACE), or the one that applies to a model
    /// (NAMESPACE/MODEL: its own, else its namespace's).
    Get {
        /// NAMESPACE or NAMESPACE/MODEL.
        #[arg(value_parser = parse_target, value_name = "TARGET")]
        target: PolicyScope,
    },
    /// Create or replace the retention policy of a namespace or model. Garbage collection then
    /// removes development versions (and archived ones never in production) that are neither
    /// among the newest N development versions nor younger than D days, unless a stage, an
    /// alias, production history, a deployment, a pending transition request or a kept child
    /// version protects them.
    Set {
        /// NAMESPACE or NAMESPACE/MODEL (a model's policy replaces its namespace's).
        #[arg(value_parser = parse_target, value_name = "TARGET")]
        target: PolicyScope,
        /// Keep the newest N development versions.
        #[arg(long, value_name = "N")]
        keep_last_dev: u32,
        /// Keep every version changed within D days.
        #[arg(long, value_name = "D")]
        keep_days: u32,
        /// Exempt the target from version removal (e.g. one model of a namespace with a policy).
        #[arg(long)]
        disabled: bool,
    },
    /// Remove the retention policy of a namespace or model.
    Rm {
        /// NAMESPACE or NAMESPACE/MODEL.
        #[arg(value_parser = parse_target, value_name = "TARGET")]
        target: PolicyScope,
    },
}

/// `ballast gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only list what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only versions of this namespace (and the blobs their removal frees).
    #[arg(long, value_parser = parse_namespace, value_name = "NS", conflicts_with = "model")]
    pub namespace: Option<String>,
    /// Only versions of this model, NS/NAME (and the blobs their removal frees).
    #[arg(long, value_parser = parse_model, value_name = "NS/NAME")]
    pub model: Option<ModelName>,
    /// Also list every kept version and why it stays.
    #[arg(long)]
    pub explain: bool,
}

fn print_rule(r: &RetentionRule, source: Option<&str>) {
    let target = r.model.clone().unwrap_or_else(|| r.namespace.clone());
    let mut pairs = vec![
        ("target", target),
        ("keep_last_dev", r.policy.keep_last_dev.to_string()),
        ("keep_days", r.policy.keep_days.to_string()),
        ("enabled", r.policy.enabled.to_string()),
    ];
    if let Some(s) = source {
        pairs.push(("source", s.to_owned()));
    }
    pairs.push(("revision", r.revision.to_string()));
    pairs.push(("updated", format!("{} by {}", r.updated_at, r.updated_by)));
    output::fields(&pairs);
}

/// Runs `ballast retention …`.
///
/// # Errors
/// Whatever the registry answers.
pub async fn run_retention(ctx: &Ctx, cmd: RetentionCommand) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::Get { target } => match &target {
            PolicyScope::Namespace(ns) => {
                let r = ctx.client.get_namespace_retention(ns).await?;
                if ctx.json {
                    return output::json(&r);
                }
                print_rule(&r, None);
            }
            PolicyScope::Model(m) => {
                let e = ctx.client.get_model_retention(m).await?;
                if ctx.json {
                    return output::json(&e);
                }
                print_rule(&e.rule, Some(&e.source));
            }
        },
        RetentionCommand::Set {
            target,
            keep_last_dev,
            keep_days,
            disabled,
        } => {
            let policy = RetentionPolicy {
                keep_last_dev,
                keep_days,
                enabled: !disabled,
            };
            let r = ctx.client.set_retention(&target, &policy).await?;
            if ctx.json {
                return output::json(&r);
            }
            print_rule(&r, None);
        }
        RetentionCommand::Rm { target } => {
            ctx.client.delete_retention(&target).await?;
            if ctx.json {
                return output::json(&serde_json::json!({ "deleted": true }));
            }
            outln!("retention policy removed");
        }
    }
    Ok(())
}

fn print_report(r: &GcReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if !r.versions.is_empty() {
        let rows: Vec<Vec<String>> = r
            .versions
            .iter()
            .map(|v| {
                vec![
                    format!("{}/{}", v.model, v.version),
                    v.stage.clone(),
                    v.state.clone(),
                    output::size(v.size),
                    v.reason.clone(),
                ]
            })
            .collect();
        output::table(&["VERSION", "STAGE", "STATE", "SIZE", "REASON"], &rows);
    }
    if !r.kept.is_empty() {
        outln!("");
        let rows: Vec<Vec<String>> = r
            .kept
            .iter()
            .map(|k| vec![format!("{}/{}", k.model, k.version), k.reasons.join("; ")])
            .collect();
        output::table(&["KEPT", "WHY"], &rows);
    }
    for e in &r.errors {
        outln!("error: {}: {}", e.target, e.message);
    }
    outln!(
        "{verb} {} version(s) and {} blob(s), {} freed; {} unreferenced blob(s) within the {} s grace period{}",
        r.versions.len(),
        r.blobs.len(),
        output::size(r.bytes_freed),
        r.blobs_in_grace,
        r.blob_grace_secs,
        if r.dry_run { " (dry run: nothing changed)" } else { "" }
    );
}

/// Runs `ballast gc`.
///
/// # Errors
/// Whatever the registry answers (`conflict` while another collection runs).
pub async fn run_gc(ctx: &Ctx, args: GcArgs) -> anyhow::Result<()> {
    let req = GcRequest {
        dry_run: args.dry_run,
        namespace: args.namespace,
        model: args.model.map(|m| m.to_string()),
        explain: args.explain,
    };
    let report = ctx.client.run_gc(&req).await?;
    if ctx.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "garbage collection finished with {} error(s)",
            report.errors.len()
        );
    }
    Ok(())
}
