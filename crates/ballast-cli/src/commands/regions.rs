//! `ballast status` (artifact regions: reachability, replication queue and lag) and
//! `ballast fsck [--repair]` (check every referenced blob in every region).

use ballast_server::api::regions::{FsckReport, RegistryStatus};
use clap::Args;

use super::Ctx;
use crate::output;

/// `ballast fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Copy good bytes from another region over every missing or corrupt copy.
    #[arg(long)]
    pub repair: bool,
}

fn lag(secs: Option<f64>) -> String {
    match secs {
        None => "?".into(),
        Some(s) if s < 1.0 => "0s".into(),
        Some(s) => format!("{s:.0}s"),
    }
}

/// Prints every region's state.
///
/// # Errors
/// The server's refusal, or a transport error.
pub async fn run_status(ctx: &Ctx) -> anyhow::Result<()> {
    let status: RegistryStatus = ctx.client.status().await?;
    if ctx.json {
        return output::json(&status);
    }
    let rows: Vec<Vec<String>> = status
        .regions
        .iter()
        .map(|r| {
            vec![
                if r.local {
                    format!("{} (local)", r.name)
                } else {
                    r.name.clone()
                },
                r.location.clone(),
                if r.reachable {
                    "yes".into()
                } else {
                    format!("NO: {}", r.error.as_deref().unwrap_or("no answer"))
                },
                r.replication_queue.map_or_else(|| "?".into(), |q| q.to_string()),
                lag(r.replication_lag_secs),
            ]
        })
        .collect();
    output::table(&["REGION", "LOCATION", "REACHABLE", "QUEUED", "LAG"], &rows);
    let t = status.replication;
    outln!(
        "replicated {}, failed copies {}, fallback reads {}, repairs {} ({} failed)",
        t.replicated,
        t.replication_failures,
        t.fallback_reads,
        t.repairs,
        t.repair_failures
    );
    Ok(())
}

/// Runs the check and prints its report; fails when anything is left bad.
///
/// # Errors
/// The server's refusal, a transport error, or problems left unrepaired.
pub async fn run_fsck(ctx: &Ctx, args: FsckArgs) -> anyhow::Result<()> {
    let report: FsckReport = ctx.client.fsck(args.repair).await?;
    if ctx.json {
        output::json(&report)?;
    } else {
        let rows: Vec<Vec<String>> = report
            .regions
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.checked.to_string(),
                    r.ok.to_string(),
                    r.missing.to_string(),
                    r.corrupt.to_string(),
                    r.wrong_size.to_string(),
                    r.unreachable.to_string(),
                    r.repaired.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "REGION",
                "CHECKED",
                "OK",
                "MISSING",
                "CORRUPT",
                "WRONG SIZE",
                "UNREACHABLE",
                "REPAIRED",
            ],
            &rows,
        );
        if !report.problems.is_empty() {
            outln!("");
            let rows: Vec<Vec<String>> = report
                .problems
                .iter()
                .map(|p| {
                    vec![
                        p.sha256.clone(),
                        p.region.clone(),
                        p.state.clone(),
                        if p.repaired { "repaired".into() } else { "-".into() },
                        p.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["SHA256", "REGION", "STATE", "ACTION", "DETAIL"], &rows);
        }
        for d in &report.lost {
            outln!("LOST: blob {d} has no good copy in any reachable region");
        }
        outln!(
            "{} blob(s) checked: {}",
            report.blobs,
            if report.clean {
                "all copies good"
            } else {
                "problems remain"
            }
        );
    }
    if !report.clean {
        let hint = if args.repair {
            ""
        } else {
            " (run with --repair to fix what can be fixed)"
        };
        // The report is printed already (JSON on stdout stays one document): exit 1.
        return Err(output::Failed(format!(
            "fsck found {} bad copies and {} lost blobs{hint}",
            report.problems.iter().filter(|p| !p.repaired).count(),
            report.lost.len()
        ))
        .into());
    }
    Ok(())
}
