//! `ballast server`: loads the layered configuration (defaults < `ballast.toml` < `BALLAST_*`
//! environment < flags), binds, says where it listens and where the data lives, and serves
//! until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ballast_server::{Config, Server};
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServerArgs;
use crate::output;

/// The configuration file read from the current directory when `--config` is not given.
const DEFAULT_CONFIG_FILE: &str = "ballast.toml";

/// `BALLAST_*` variables that configure the CLI, not the server.
const CLIENT_ENV: [&str; 5] = ["url", "token", "actor", "log_format", "config"];

/// Flags that override everything else; absent ones leave the layers below alone.
#[derive(Debug, Default, Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<std::net::SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<ballast_server::auth::AuthMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blob_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blob_regions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_path_style: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_secret_access_key: Option<String>,
}

/// Builds the configuration from its layers.
pub(crate) fn load_config(args: &ServerArgs, env: Env) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => {
            if !path.is_file() {
                bail!(
                    "the configuration file {} does not exist (given with --config or BALLAST_CONFIG)",
                    path.display()
                );
            }
            path.clone()
        }
        None => PathBuf::from(DEFAULT_CONFIG_FILE),
    };
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        auth: args.auth,
        blob_url: args.blob_url.clone(),
        blob_regions: args.blob_regions.clone(),
        local_region: args.local_region.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
        s3_region: args.s3_region.clone(),
        s3_path_style: args.s3_path_style.then_some(true),
        s3_access_key_id: args.s3_access_key_id.clone(),
        s3_secret_access_key: args.s3_secret_access_key.clone(),
    };
    Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::file(&file))
        .merge(env)
        .merge(Serialized::defaults(overrides))
        .extract::<Config>()
        .map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!(
                "invalid server configuration: {}; see `ballast server --help` for the settings",
                all.join("; ")
            )
        })
}

/// The server's environment layer: `BALLAST_<FIELD>`, minus the CLI's own variables, those of
/// other commands (`BALLAST_ROUTER_*`, `BALLAST_WEBHOOK_SECRET`) and of the test setup
/// (`BALLAST_TEST_*`, `BALLAST_PG_*` from `.ci/postgres.sh`), so a shell set up for every
/// command still starts the server, while a misspelt server variable is still refused.
pub(crate) fn server_env() -> Env {
    Env::prefixed("BALLAST_").ignore(&CLIENT_ENV).filter(|key| {
        let key = key.as_str().to_ascii_lowercase();
        !key.starts_with("router_")
            && !key.starts_with("test_")
            && !key.starts_with("pg_")
            && key != "webhook_secret"
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutdown requested");
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path)))
}

/// Runs the server until a shutdown signal.
///
/// # Errors
/// Bad configuration, an unusable data directory, or an address that cannot be bound.
pub async fn run(args: ServerArgs, json: bool) -> anyhow::Result<()> {
    let config = load_config(&args, server_env())?;
    let data_dir = config.data_dir.clone();
    let listen = config.listen;
    let auth_on = config.auth == ballast_server::auth::AuthMode::On;
    let database = config
        .database_url
        .is_some()
        .then(|| config.database_description());
    let blobs = config
        .blob_url
        .as_ref()
        .and(config.blob_location().ok())
        .map(|l| l.to_string())
        .or_else(|| {
            (!config.blob_regions.is_empty()).then(|| format!("regions {}", config.blob_regions.join(", ")))
        });
    let shutdown = shutdown_signal()?;
    let server = Server::bind(config).await.with_context(|| {
        format!(
            "cannot start the server on {listen} with data in {} (change them with --listen / BALLAST_LISTEN and --data-dir / BALLAST_DATA_DIR)",
            data_dir.display()
        )
    })?;
    let addr = server.local_addr().context("cannot read the bound address")?;
    let data_dir = absolute(&data_dir);
    tracing::info!(listen = %addr, data_dir = %data_dir.display(), database = database.as_deref().unwrap_or("data_dir"), blobs = blobs.as_deref().unwrap_or("data_dir"), "ballast server ready");
    if json {
        output::json(&serde_json::json!({
            "listen": addr.to_string(),
            "url": format!("http://{addr}"),
            "data_dir": data_dir.display().to_string(),
            "blob_url": blobs,
            "database": database,
            "auth": auth_on,
            "admin_token_file": auth_on.then(|| data_dir.join(ballast_server::auth::ADMIN_TOKEN_FILE).display().to_string()),
        }))?;
    } else {
        let artifacts = blobs.map(|b| format!(", artifacts in {b}")).unwrap_or_default();
        let metadata = database.map(|d| format!(", metadata in {d}")).unwrap_or_default();
        outln!(
            "ballast server listening on http://{addr} (data in {}{metadata}{artifacts})",
            data_dir.display()
        );
        if auth_on {
            let file = data_dir.join(ballast_server::auth::ADMIN_TOKEN_FILE);
            if file.is_file() {
                outln!(
                    "clients need a token: export BALLAST_TOKEN=$(cat {})",
                    file.display()
                );
            }
        } else {
            outln!(
                "WARNING: authentication is off; anyone who can reach this address can change every model"
            );
        }
    }
    server
        .serve(shutdown)
        .await
        .context("the server stopped with an error")?;
    tracing::info!("ballast server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("BALLAST_TEST_NOTHING_SET_HERE_")
    }

    fn args(config: Option<PathBuf>) -> ServerArgs {
        ServerArgs {
            config,
            ..ServerArgs::default()
        }
    }

    #[test]
    fn file_then_flags_override_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let file = dir.path().join("b.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nmax_upload_bytes = 1000\n")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let c = load_config(&args(Some(file.clone())), no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.max_upload_bytes, 1000);
        assert_eq!(c.default_actor, Config::default().default_actor);

        let mut a = args(Some(file));
        a.listen = Some("127.0.0.1:0".parse().unwrap_or_else(|e| unreachable!("{e}")));
        a.data_dir = Some(PathBuf::from("/srv/ballast"));
        let c = load_config(&a, no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/srv/ballast"));
        assert_eq!(c.max_upload_bytes, 1000);
    }

    #[test]
    fn unknown_keys_and_missing_explicit_files_are_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let file = dir.path().join("b.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").unwrap_or_else(|e| unreachable!("{e}"));
        let err = load_config(&args(Some(file)), no_env())
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.unwrap_or_default().contains("listn"));

        let err = load_config(&args(Some(dir.path().join("missing.toml"))), no_env())
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.unwrap_or_default().contains("does not exist"));
    }

    #[test]
    fn database_settings_come_from_file_and_flags_and_never_print() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let c = load_config(&args(None), no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert!(c.database_url.is_none());
        assert!(c.database().starts_with("sqlite://"));
        assert!(c.database().ends_with("ballast.db"));
        assert_eq!(c.pg_options().max_connections, 16);

        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "database_url = \"postgres://reg:file-pw@db.internal:5433/registry\"\ndatabase_max_connections = 4\ndatabase_pool_timeout_secs = 2\n",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let c = load_config(&args(Some(file.clone())), no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.database(), "postgres://reg:file-pw@db.internal:5433/registry");
        assert_eq!(
            c.database_description(),
            "PostgreSQL at db.internal:5433/registry"
        );
        let pg = c.pg_options();
        assert_eq!(pg.max_connections, 4);
        assert_eq!(pg.pool_timeout.as_secs(), 2);
        assert!(!format!("{c:?}").contains("file-pw"));

        let mut a = args(Some(file));
        a.database_url = Some("postgres://reg:flag-pw@other:5432/r2".into());
        let c = load_config(&a, no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.database_description(), "PostgreSQL at other:5432/r2");
        assert!(!format!("{c:?}").contains("flag-pw"));
    }

    #[test]
    fn blob_store_settings_come_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "blob_url = \"s3://from-file/x\"\ns3_region = \"eu-west-1\"\ns3_secret_access_key = \"file-secret\"\n",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let c = load_config(&args(Some(file.clone())), no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.blob_url.as_deref(), Some("s3://from-file/x"));
        assert!(!c.s3_path_style);
        assert!(!format!("{c:?}").contains("file-secret"));

        let mut a = args(Some(file));
        a.blob_url = Some("s3://from-flag/y".into());
        a.s3_endpoint = Some("http://127.0.0.1:9000".into());
        a.s3_path_style = true;
        a.s3_secret_access_key = Some("flag-secret".into());
        let c = load_config(&a, no_env()).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(c.blob_url.as_deref(), Some("s3://from-flag/y"));
        assert_eq!(c.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.s3_region.as_deref(), Some("eu-west-1"));
        assert!(c.s3_path_style);
        let s3 = c.s3_options();
        assert_eq!(s3.secret_access_key.as_deref(), Some("flag-secret"));
        assert!(!format!("{c:?} {s3:?}").contains("flag-secret"));
    }
}
