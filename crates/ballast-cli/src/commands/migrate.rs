//! `ballast migrate`: applies pending schema migrations to the metadata database (the same ones
//! a server applies on start, under the same lock) and reports the schema version before and
//! after. The database comes from the server's layered configuration, so `--database-url`,
//! `BALLAST_DATABASE_URL` and `database_url` in `ballast.toml` name it the same way.

use std::path::PathBuf;

use clap::Args;

use crate::cli::ServerArgs;
use crate::commands::server::{load_config, server_env};
use crate::output;

/// `ballast migrate`.
#[derive(Debug, Default, Args)]
pub struct MigrateArgs {
    /// Metadata database: postgres://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH (default:
    /// BALLAST_DATABASE_URL, database_url in the configuration, else SQLite in
    /// DATA_DIR/ballast.db).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Data directory whose SQLite database is migrated when no database URL is set.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (TOML); must exist when given. Default: ./ballast.toml if present.
    #[arg(long, env = "BALLAST_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs the migrations and prints what changed.
///
/// # Errors
/// Bad configuration, an unreachable database or a failed migration (rolled back).
pub async fn run(args: MigrateArgs, json: bool) -> anyhow::Result<()> {
    let server_args = ServerArgs {
        database_url: args.database_url,
        data_dir: args.data_dir,
        config: args.config,
        ..ServerArgs::default()
    };
    let config = load_config(&server_args, server_env())?;
    let database = config.database_description();
    let (before, after) = ballast_server::migrate(&config).await?;
    if json {
        output::json(&serde_json::json!({
            "database": database,
            "schema_version_before": before,
            "schema_version_after": after,
            "applied": after.saturating_sub(before),
        }))?;
    } else if before == after {
        outln!("{database}: schema is up to date (version {after})");
    } else {
        outln!(
            "{database}: migrated the schema from version {before} to {after} ({} step{})",
            after - before,
            if after - before == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "ballast",
            "migrate",
            "--database-url",
            "postgres://u:p@db:5432/reg",
            "--json",
        ])
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(cli.global.json);
        match cli.command {
            Command::Migrate(a) => {
                assert_eq!(a.database_url.as_deref(), Some("postgres://u:p@db:5432/reg"));
            }
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn database_descriptions_never_show_credentials() {
        let d = ballast_server::describe_database_url(
            "postgres://alice:s3cr@t@db.internal:5433/reg?sslmode=disable",
        );
        assert_eq!(d, "PostgreSQL at db.internal:5433/reg");
        let d = ballast_server::describe_database_url("postgresql://bob:pw@localhost/x");
        assert_eq!(d, "PostgreSQL at localhost/x");
        let d = ballast_server::describe_database_url("sqlite:///srv/ballast.db");
        assert_eq!(d, "SQLite at /srv/ballast.db");
        let d = ballast_server::describe_database_url("postgres://:pw@/db?host=/run/pg");
        assert!(!d.contains("pw"), "{d}");
    }
}
