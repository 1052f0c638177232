//! `ballast version …`: create drafts, show, search, seal, change stage and roll back.

use ballast_api::{
    CreateVersion, Rollback, SealVersion, SetStage, StageChange, Version, VersionList, VersionState,
};
use ballast_client::{SortOrder, VersionQuery};

use super::Ctx;
use crate::cli::{OrderArg, StateArg, VersionCommand};
use crate::{metadata, output};

/// Runs a `version` subcommand.
///
/// # Errors
/// What the registry answers, a transport error, or an unreadable metadata file.
pub async fn run(ctx: &Ctx, cmd: VersionCommand) -> anyhow::Result<()> {
    match cmd {
        VersionCommand::Compare { name, versions } => {
            super::governance::compare(ctx, &name, &versions).await?
        }
        VersionCommand::Create { name, meta, tags } => {
            let metadata = meta
                .as_deref()
                .map(metadata::load)
                .transpose()?
                .unwrap_or_default();
            let body = CreateVersion {
                metadata,
                tags: tags.into_iter().collect(),
            };
            let v = ctx.client.create_version(&name, &body).await?;
            if ctx.json {
                output::json(&v)?;
            } else {
                outln!("created draft {}/{}", v.model, v.version);
            }
        }
        VersionCommand::Get { reference } => {
            let v = reference.resolve(&ctx.client).await?;
            if ctx.json {
                output::json(&v)?;
            } else {
                output::version(&v);
            }
        }
        VersionCommand::List {
            name,
            stage,
            tags,
            metrics,
            state,
            order_by,
            order,
            limit,
            cursor,
            all,
        } => {
            let mut query = VersionQuery {
                stage,
                tags,
                metrics,
                state: state.map(|s| match s {
                    StateArg::Draft => VersionState::Draft,
                    StateArg::Sealed => VersionState::Sealed,
                }),
                order_by,
                order: order.map(|o| match o {
                    OrderArg::Asc => SortOrder::Asc,
                    OrderArg::Desc => SortOrder::Desc,
                }),
                limit,
                cursor,
            };
            let mut page = ctx.client.list_versions(&name, &query).await?;
            if all {
                let mut versions = std::mem::take(&mut page.versions);
                while let Some(cursor) = page.next_cursor.take() {
                    query.cursor = Some(cursor);
                    page = ctx.client.list_versions(&name, &query).await?;
                    versions.append(&mut page.versions);
                }
                page = VersionList {
                    versions,
                    next_cursor: None,
                };
            }
            if ctx.json {
                output::json(&page)?;
            } else {
                print_list(&page);
            }
        }
        VersionCommand::Stage {
            reference,
            stage,
            comment,
            if_match,
        } => {
            let number = match reference.number() {
                Some(n) => n,
                None => reference.resolve(&ctx.client).await?.version,
            };
            // Under a policy the move may wait for approvals (a transition request).
            let body = SetStage { stage, comment };
            if let Some(change) =
                super::governance::stage(ctx, &reference.model, number, &body, if_match).await?
            {
                print_change(ctx, &change)?;
            }
        }
        VersionCommand::Rollback { name, comment } => {
            let change = ctx.client.rollback(&name, &Rollback { comment }).await?;
            print_change(ctx, &change)?;
        }
        VersionCommand::Seal {
            reference,
            expect_digest,
        } => {
            let number = match reference.number() {
                Some(n) => n,
                None => reference.resolve(&ctx.client).await?.version,
            };
            let body = SealVersion {
                expected_digest: expect_digest,
            };
            let v = ctx.client.seal(&reference.model, number, &body).await?;
            if ctx.json {
                output::json(&v)?;
            } else {
                outln!(
                    "sealed {}/{}: digest {}",
                    v.model,
                    v.version,
                    v.digest.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

fn print_change(ctx: &Ctx, change: &StageChange) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(change);
    }
    let v = &change.version;
    match change.demoted {
        Some(d) => outln!(
            "{}/{} is now in {} (version {d} moved to archived)",
            v.model,
            v.version,
            v.stage
        ),
        None => outln!("{}/{} is now in {}", v.model, v.version, v.stage),
    }
    Ok(())
}

fn print_list(page: &VersionList) {
    let rows: Vec<Vec<String>> = page.versions.iter().map(row).collect();
    output::table(
        &[
            "VERSION", "STATE", "STAGE", "FILES", "SIZE", "DIGEST", "ALIASES", "CREATED",
        ],
        &rows,
    );
    if let Some(c) = &page.next_cursor {
        eprintln!("more versions: pass --cursor {c} (or --all)");
    }
}

fn row(v: &Version) -> Vec<String> {
    vec![
        v.version.to_string(),
        output::state(v.state).to_owned(),
        v.stage.to_string(),
        v.files.len().to_string(),
        output::size(v.total_size),
        output::short_digest(v.digest.as_deref()),
        if v.aliases.is_empty() {
            "-".into()
        } else {
            v.aliases.join(",")
        },
        v.created_at.clone(),
    ]
}
