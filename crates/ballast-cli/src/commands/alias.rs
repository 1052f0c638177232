//! `ballast alias …`: point aliases at versions (with compare-and-swap), show and remove them.

use ballast_client::Precondition;

use super::Ctx;
use crate::cli::AliasCommand;
use crate::output;

/// Runs an `alias` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run(ctx: &Ctx, cmd: AliasCommand) -> anyhow::Result<()> {
    match cmd {
        AliasCommand::Set {
            name,
            alias,
            number,
            if_match,
            create_only,
        } => {
            let pre = if create_only {
                Some(Precondition::Absent)
            } else {
                if_match
            };
            let a = ctx.client.set_alias(&name, &alias, number, pre).await?;
            if ctx.json {
                output::json(&a)?;
            } else {
                outln!(
                    "{}@{} → version {} (revision {})",
                    a.model,
                    a.alias,
                    a.version,
                    a.revision
                );
            }
        }
        AliasCommand::Rm {
            name,
            alias,
            if_match,
        } => {
            ctx.client.delete_alias(&name, &alias, if_match).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "deleted": format!("{name}@{alias}") }))?;
            } else {
                outln!("removed alias {name}@{alias}");
            }
        }
        AliasCommand::Get { name, alias } => {
            let a = ctx.client.get_alias(&name, &alias).await?;
            if ctx.json {
                output::json(&a)?;
            } else {
                output::fields(&[
                    ("alias", format!("{}@{}", a.model, a.alias)),
                    ("version", a.version.to_string()),
                    ("updated", a.updated_at.clone()),
                    ("revision", a.revision.to_string()),
                ]);
            }
        }
    }
    Ok(())
}
