//! `ballast audit …`: list the audit trail and verify its hash chain.

use ballast_client::AuditQuery;

use super::Ctx;
use crate::cli::AuditCommand;
use crate::output::{self, Failed};

/// Runs an `audit` subcommand.
///
/// # Errors
/// What the registry answers, a transport error, or [`Failed`] when the chain is broken.
pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            model,
            by,
            action,
            since,
            until,
            after,
            limit,
        } => {
            let query = AuditQuery {
                after,
                model,
                actor: by,
                action,
                since,
                until,
                limit,
            };
            let page = ctx.client.list_audit(&query).await?;
            if ctx.json {
                output::json(&page)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.at.clone(),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "AT", "ACTOR", "ACTION", "TARGET"], &rows);
                if let Some(next) = page.next_after {
                    eprintln!("more entries: pass --after {next}");
                }
            }
        }
        AuditCommand::Verify => {
            let v = ctx.client.verify_audit().await?;
            if ctx.json {
                output::json(&v)?;
            } else if v.ok {
                match v.entries {
                    Some(n) => outln!("audit trail intact: {n} entries chain correctly"),
                    None => outln!("audit trail intact"),
                }
            }
            if !v.ok {
                let at = v
                    .first_bad_id
                    .map_or_else(|| "an unknown entry".to_owned(), |id| format!("entry {id}"));
                return Err(Failed(format!(
                    "the audit trail's hash chain is broken at {at}: it was changed or removed after it was written"
                ))
                .into());
            }
        }
    }
    Ok(())
}
