//! `ballast token …`, `ballast role …`, `ballast whoami`: API tokens and roles per namespace.

use anyhow::Context as _;
use ballast_api::auth::{CreateToken, GrantRole, GrantRoleIn, Role};
use clap::Subcommand;

use super::Ctx;
use crate::output;

/// `ballast token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for PRINCIPAL and print its secret (shown only this once).
    Create {
        /// Who the token acts as (recorded as the actor of its changes).
        principal: String,
        /// Grant NAMESPACE=ROLE to the principal at the same time (repeatable; `*` for every
        /// namespace; roles: reader, writer, reviewer, maintainer, admin).
        #[arg(long = "role", value_name = "NAMESPACE=ROLE", value_parser = parse_grant)]
        roles: Vec<GrantRoleIn>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Expire after this many days (default: never).
        #[arg(long, value_name = "DAYS", conflicts_with = "expires_at")]
        expires_in_days: Option<u32>,
        /// Expire at this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this principal's tokens.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke a token; it stops working at once on this node, within seconds on others.
    Revoke {
        /// Token id (see `ballast token list`).
        id: u64,
    },
}

/// `ballast role` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Grant PRINCIPAL the role ROLE in NAMESPACE (`*` for every namespace).
    Grant {
        /// Who.
        principal: String,
        /// A namespace, or '*' (quote it in the shell).
        namespace: String,
        /// reader, writer, reviewer, maintainer or admin.
        role: Role,
    },
    /// Take the role ROLE in NAMESPACE from PRINCIPAL.
    Revoke {
        /// Who.
        principal: String,
        /// A namespace, or '*'.
        namespace: String,
        /// reader, writer, reviewer, maintainer or admin.
        role: Role,
    },
    /// List role bindings.
    List {
        /// Only this principal's roles.
        #[arg(long)]
        principal: Option<String>,
    },
}

fn parse_grant(s: &str) -> Result<GrantRoleIn, String> {
    let (ns, role) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not NAMESPACE=ROLE (e.g. acme=writer or '*=reader')"))?;
    Ok(GrantRoleIn {
        namespace: ns.to_owned(),
        role: role.parse()?,
    })
}

fn expiry(days: Option<u32>, at: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(d) = days {
        let t = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d));
        return Ok(Some(
            t.format(&time::format_description::well_known::Rfc3339)
                .context("cannot format the expiry time")?,
        ));
    }
    Ok(at)
}

/// Runs a `token` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run_token(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            principal,
            roles,
            description,
            expires_in_days,
            expires_at,
        } => {
            let created = ctx
                .client
                .create_token(&CreateToken {
                    principal,
                    description,
                    expires_at: expiry(expires_in_days, expires_at)?,
                    roles,
                })
                .await?;
            if ctx.json {
                output::json(&created)?;
            } else {
                outln!(
                    "token {} for {} created; its secret is shown only now:",
                    created.token.id,
                    created.token.principal
                );
                outln!("{}", created.secret);
            }
        }
        TokenCommand::List { principal } => {
            let list = ctx.client.list_tokens(principal.as_deref()).await?;
            if ctx.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .tokens
                    .iter()
                    .map(|t| {
                        let state = match (&t.revoked_at, &t.expires_at) {
                            (Some(r), _) => format!("revoked {r}"),
                            (None, Some(e)) => format!("expires {e}"),
                            (None, None) => "active".into(),
                        };
                        vec![
                            t.id.to_string(),
                            t.principal.clone(),
                            format!("{}…", t.prefix),
                            t.created_at.clone(),
                            state,
                            t.description.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "PRINCIPAL", "PREFIX", "CREATED", "STATE", "DESCRIPTION"],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let t = ctx.client.revoke_token(id).await?;
            if ctx.json {
                output::json(&t)?;
            } else {
                outln!("token {} of {} revoked", t.id, t.principal);
            }
        }
    }
    Ok(())
}

/// Runs a `role` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run_role(ctx: &Ctx, cmd: RoleCommand) -> anyhow::Result<()> {
    match cmd {
        RoleCommand::Grant {
            principal,
            namespace,
            role,
        } => {
            let b = ctx
                .client
                .grant_role(&GrantRole {
                    principal,
                    namespace,
                    role,
                })
                .await?;
            if ctx.json {
                output::json(&b)?;
            } else {
                outln!("{} is {} in {}", b.principal, b.role, b.namespace);
            }
        }
        RoleCommand::Revoke {
            principal,
            namespace,
            role,
        } => {
            let req = GrantRole {
                principal,
                namespace,
                role,
            };
            ctx.client.revoke_role(&req).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "revoked": req }))?;
            } else {
                outln!("{} is no longer {} in {}", req.principal, req.role, req.namespace);
            }
        }
        RoleCommand::List { principal } => {
            let list = ctx.client.list_roles(principal.as_deref()).await?;
            if ctx.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .roles
                    .iter()
                    .map(|b| {
                        vec![
                            b.principal.clone(),
                            b.namespace.clone(),
                            b.role.to_string(),
                            b.granted_by.clone(),
                            b.granted_at.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["PRINCIPAL", "NAMESPACE", "ROLE", "GRANTED BY", "GRANTED AT"],
                    &rows,
                );
            }
        }
    }
    Ok(())
}

/// Runs `whoami`.
///
/// # Errors
/// `unauthenticated`, or a transport error.
pub async fn run_whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let me = ctx.client.whoami().await?;
    if ctx.json {
        output::json(&me)?;
    } else if !me.auth {
        outln!("{} (the server does not check tokens: auth is off)", me.principal);
    } else {
        outln!("{}", me.principal);
        for b in &me.roles {
            outln!("  {} in {}", b.role, b.namespace);
        }
    }
    Ok(())
}
