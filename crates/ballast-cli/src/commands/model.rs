//! `ballast model …`: create, get, list, update and delete models.

use ballast_api::{CreateModel, Model, ModelList, UpdateModel};
use ballast_client::ModelQuery;

use super::Ctx;
use crate::cli::ModelCommand;
use crate::output;

/// Runs a `model` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run(ctx: &Ctx, cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Create {
            name,
            description,
            tags,
        } => {
            let body = CreateModel {
                name: name.to_string(),
                description,
                tags: tags.into_iter().collect(),
            };
            let m = ctx.client.create_model(&body).await?;
            if ctx.json {
                output::json(&m)?;
            } else {
                outln!("created model {}", m.name);
            }
        }
        ModelCommand::Get { name } => {
            let m = ctx.client.get_model(&name).await?;
            if ctx.json {
                output::json(&m)?;
            } else {
                output::model(&m);
            }
        }
        ModelCommand::List {
            namespace,
            prefix,
            tag,
            limit,
            cursor,
            all,
        } => {
            let mut query = ModelQuery {
                namespace,
                prefix,
                tag,
                limit,
                cursor,
            };
            let mut page = ctx.client.list_models(&query).await?;
            if all {
                let mut models = std::mem::take(&mut page.models);
                while let Some(cursor) = page.next_cursor.take() {
                    query.cursor = Some(cursor);
                    page = ctx.client.list_models(&query).await?;
                    models.append(&mut page.models);
                }
                page = ModelList {
                    models,
                    next_cursor: None,
                };
            }
            if ctx.json {
                output::json(&page)?;
            } else {
                print_list(&page);
            }
        }
        ModelCommand::Update {
            name,
            description,
            tags,
            remove_tags,
            if_match,
        } => {
            let body = UpdateModel {
                description,
                set_tags: tags.into_iter().collect(),
                remove_tags,
            };
            let m = ctx.client.update_model(&name, &body, if_match).await?;
            if ctx.json {
                output::json(&m)?;
            } else {
                outln!("updated model {} (revision {})", m.name, m.revision);
            }
        }
        ModelCommand::Delete { name, if_match } => {
            ctx.client.delete_model(&name, if_match).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "deleted": name.to_string() }))?;
            } else {
                outln!("deleted model {name}");
            }
        }
    }
    Ok(())
}

fn print_list(page: &ModelList) {
    let rows: Vec<Vec<String>> = page.models.iter().map(row).collect();
    output::table(
        &[
            "NAME",
            "LATEST",
            "PRODUCTION",
            "ALIASES",
            "UPDATED",
            "DESCRIPTION",
        ],
        &rows,
    );
    if let Some(c) = &page.next_cursor {
        eprintln!("more models: pass --cursor {c} (or --all)");
    }
}

fn row(m: &Model) -> Vec<String> {
    let aliases = if m.aliases.is_empty() {
        "-".to_owned()
    } else {
        m.aliases
            .iter()
            .map(|(a, v)| format!("{a}→{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        m.name.clone(),
        m.latest_version.to_string(),
        m.production_version.map_or_else(|| "-".into(), |v| v.to_string()),
        aliases,
        m.updated_at.clone(),
        m.description.lines().next().unwrap_or("").to_owned(),
    ]
}
