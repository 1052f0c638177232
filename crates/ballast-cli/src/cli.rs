//! The command line: every command, flag and help text of `ballast`, as clap derive types.
//! Parsing only; the work is done in `commands`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use ballast_client::Precondition;
use ballast_core::{ModelName, Stage};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::reference::VersionRef;

const ABOUT: &str = "Ballast: a fail-safe model registry and inference router. Run the registry, \
push and pull model versions, promote them through stages, point aliases at them, subscribe to \
events, and route inference traffic to healthy backends.";

const AFTER_HELP: &str = "\
Names are NAMESPACE/MODEL (lowercase letters, digits, '-', '_', '.').
A version is referred to as NAMESPACE/MODEL/N (a number), NAMESPACE/MODEL@ALIAS or
NAMESPACE/MODEL:STAGE (development, staging, production, archived).

Examples:
  ballast server --data-dir ./ballast-data
  ballast model create acme/support-bot --description 'answers tickets'
  ballast push acme/support-bot ./out --meta meta.yaml --alias champion
  ballast version stage acme/support-bot/3 staging
  ballast pull acme/support-bot:production ./model
  ballast webhook create https://ci.example.com/hook --event stage_transition.completed
  ballast router --config routes.toml --region eu-west

Exit codes: 0 success, 1 error reported by the registry or the command, 2 usage error,
130 interrupted.";

/// The `ballast` command.
#[derive(Debug, Parser)]
#[command(name = "ballast", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Base URL of the registry.
    #[arg(
        long,
        global = true,
        env = "BALLAST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API token, sent as `Authorization: Bearer TOKEN`.
    #[arg(long, global = true, env = "BALLAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Who is acting, recorded in the audit trail (sent as `x-ballast-actor`).
    #[arg(long, global = true, env = "BALLAST_ACTOR")]
    pub actor: Option<String>,
    /// Print machine-readable JSON on stdout instead of tables (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr (the level comes from RUST_LOG; default info for the server,
    /// warn otherwise).
    #[arg(long, global = true, value_enum, env = "BALLAST_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry server (until SIGINT or SIGTERM).
    ///
    /// Settings are layered: built-in defaults < ballast.toml (in the current directory, or
    /// --config) < BALLAST_* environment variables (BALLAST_LISTEN, BALLAST_DATA_DIR,
    /// BALLAST_DATABASE_URL, BALLAST_MAX_UPLOAD_BYTES, BALLAST_MAX_JSON_BYTES, BALLAST_DEFAULT_ACTOR,
    /// BALLAST_SHUTDOWN_GRACE_SECS) < flags.
    Server(ServerArgs),
    /// Run the inference router (the data plane) from a static routes file (until SIGINT or
    /// SIGTERM).
    ///
    /// Serves OpenAI-compatible /v1/chat/completions, /v1/completions and /v1/embeddings (by the
    /// body's model) and prefix routes, with fallback, health checks and region failover. The
    /// routes file is reloaded on SIGHUP and when it changes; or, with --registry, snapshots are
    /// long-polled from the registry. Every accepted snapshot is kept in --state-dir as
    /// last-known-good and used when the file or the registry is unavailable. See docs/router.md.
    Router(RouterArgs),
    /// Create, show, list, change and delete models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Create, show, list, seal and promote versions.
    #[command(subcommand)]
    Version(VersionCommand),
    /// Point named aliases (champion, challenger, …) at versions.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Upload a directory as a new sealed version of a model.
    ///
    /// Creates a draft version, uploads every file of DIR (skipping bytes the registry already
    /// holds), seals the version with the digest computed locally, then optionally sets an
    /// alias and a stage. Prints the version number and digest.
    Push(PushArgs),
    /// Download a version's files into a directory, verified and atomically.
    ///
    /// Files are downloaded into a hidden temporary directory next to DIR, each checked against
    /// its size and SHA-256, then the directory is renamed to DIR in one step. A failed or
    /// interrupted pull leaves nothing behind.
    Pull(PullArgs),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Record where versions are served (the registry compiles routing snapshots from them).
    #[command(subcommand)]
    Deployment(crate::commands::deployment::DeploymentCommand),
    /// Name the logical models routers serve (NAME → NS/MODEL:STAGE or NS/MODEL@ALIAS).
    #[command(subcommand)]
    Route(crate::commands::deployment::RouteCommand),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(crate::commands::access::TokenCommand),
    /// Grant, revoke and list roles per namespace (admin).
    #[command(subcommand)]
    Role(crate::commands::access::RoleCommand),
    /// Show who the token acts as and the roles it holds.
    Whoami,
    /// Set, show and remove governance policies (naming rule, required metadata and model-card
    /// sections, risk level and approvals, metric gates) on namespaces and models.
    #[command(subcommand)]
    Policy(crate::commands::governance::PolicyCommand),
    /// List, show, approve, reject, complete and cancel transition requests (moves into staging
    /// or production under a policy).
    #[command(subcommand)]
    Transition(crate::commands::governance::TransitionCommand),
    /// Set, show and remove retention policies (which versions garbage collection may remove)
    /// on namespaces and models.
    #[command(subcommand)]
    Retention(crate::commands::retention::RetentionCommand),
    /// Remove the versions retention policies let go, then blobs nothing references (past the
    /// grace period). --dry-run lists what would go and changes nothing.
    Gc(crate::commands::retention::GcArgs),
    /// Show the artifact regions: whether each answers, and its replication queue and lag.
    Status,
    /// Check every referenced blob in every artifact region (present, size, SHA-256) and report
    /// missing or corrupt copies per region; --repair copies good bytes over them (admin).
    /// Exits non-zero while problems remain.
    Fsck(crate::commands::regions::FsckArgs),
    /// Apply pending schema migrations to the metadata database and exit (servers also apply
    /// them on start, under a lock, so nodes starting together never race).
    ///
    /// The database comes from --database-url, else BALLAST_DATABASE_URL or database_url in
    /// ballast.toml, else SQLite in DATA_DIR/ballast.db. Prints the schema version before and
    /// after.
    Migrate(crate::commands::migrate::MigrateArgs),
    /// Subscribe URLs to registry events; inspect and redeliver deliveries.
    #[command(subcommand)]
    Webhook(crate::commands::webhook::WebhookCommand),
    /// Read the change feed and list the event types.
    #[command(subcommand)]
    Events(crate::commands::webhook::EventsCommand),
}

/// `ballast server`.
#[derive(Debug, Default, Args)]
pub struct ServerArgs {
    /// Address to listen on (e.g. 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the metadata database and the artifacts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: postgres://USER:PASSWORD@HOST:PORT/DB (several servers may share it)
    /// or sqlite:///PATH (default: SQLite in DATA_DIR/ballast.db). Also BALLAST_DATABASE_URL,
    /// which keeps a password out of `ps`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Configuration file (TOML); must exist when given. Default: ./ballast.toml if present.
    #[arg(long, env = "BALLAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Token checks: `on` (default; the first start writes an admin token to
    /// DATA_DIR/admin.token) or `off` (anyone reaching the port may do anything — local
    /// experiments only).
    #[arg(long, value_name = "on|off")]
    pub auth: Option<ballast_server::auth::AuthMode>,
    /// Where artifacts live: s3://bucket/prefix or file:///path (default: DATA_DIR/blobs).
    #[arg(long, value_name = "URL")]
    pub blob_url: Option<String>,
    /// An artifact region, NAME=URL (repeatable; instead of --blob-url), e.g.
    /// eu-west=s3://bucket/prefix or backup=file:///srv/blobs; an S3 region may add
    /// ?endpoint=URL&region=NAME. Blobs are written to the local region and replicated to the
    /// others; reads fall back to them in the order given.
    #[arg(long = "blob-region", value_name = "NAME=URL")]
    pub blob_regions: Vec<String>,
    /// Which --blob-region is local (written and read first; default: the first).
    #[arg(long, value_name = "NAME")]
    pub local_region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (default: AWS).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Send path-style S3 requests (endpoint/bucket/key), as most S3-compatible servers expect.
    #[arg(long)]
    pub s3_path_style: bool,
    /// S3 access key id (default: AWS_ACCESS_KEY_ID).
    #[arg(long, value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY, which keeps it out of `ps`).
    #[arg(long, value_name = "SECRET")]
    pub s3_secret_access_key: Option<String>,
}

/// `ballast router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Routes file (TOML; or a JSON routing snapshot when it ends in .json).
    #[arg(
        long,
        value_name = "FILE",
        env = "BALLAST_ROUTER_CONFIG",
        conflicts_with = "registry"
    )]
    pub config: Option<PathBuf>,
    /// Registry to watch for routing snapshots (http://host:port); instead of --config.
    #[arg(long, value_name = "URL", env = "BALLAST_ROUTER_REGISTRY")]
    pub registry: Option<String>,
    /// The region this router runs in (its targets are tried first).
    #[arg(long, env = "BALLAST_ROUTER_REGION")]
    pub region: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "BALLAST_ROUTER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Directory holding the last-known-good routing snapshot.
    #[arg(
        long,
        value_name = "DIR",
        env = "BALLAST_ROUTER_STATE_DIR",
        default_value = "./ballast-router-state"
    )]
    pub state_dir: PathBuf,
    /// A PEM file of extra CA certificates trusted for https targets (beside the Web PKI roots).
    #[arg(long, value_name = "FILE", env = "BALLAST_ROUTER_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Cut a response whose upstream sends nothing for this many seconds (counts as a failure).
    #[arg(
        long,
        value_name = "SECS",
        env = "BALLAST_ROUTER_STREAM_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub stream_idle_timeout_secs: u64,
    /// Close a client connection that has no request under way for this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "BALLAST_ROUTER_CLIENT_IDLE_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub client_idle_timeout_secs: u64,
    /// Give a client this many seconds to finish a request head it started, and let a request
    /// body pause no longer than this (slow or stuck clients do not hold connections forever).
    #[arg(
        long,
        value_name = "SECS",
        env = "BALLAST_ROUTER_CLIENT_HEAD_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub client_head_timeout_secs: u64,
    /// API token sent to the registry (--registry) as a Bearer token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BALLAST_ROUTER_REGISTRY_TOKEN",
        hide_env_values = true
    )]
    pub registry_token: Option<String>,
    /// Request-serving threads, each with its own single-threaded runtime [default: one per
    /// CPU]; 0 serves on the process's shared runtime.
    #[arg(long, value_name = "N", env = "BALLAST_ROUTER_WORKERS")]
    pub workers: Option<usize>,
    /// File holding the token /admin/* requests must send as `Authorization: Bearer <token>`;
    /// without it /admin/* answers loopback clients only.
    #[arg(long, value_name = "PATH", env = "BALLAST_ROUTER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT, give in-flight requests this many seconds to finish.
    #[arg(
        long,
        value_name = "SECS",
        env = "BALLAST_ROUTER_SHUTDOWN_GRACE_SECS",
        default_value_t = 30
    )]
    pub shutdown_grace_secs: u64,
}

/// `ballast model …`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a new model.
    Create {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// What the model is for.
        #[arg(long, default_value = "")]
        description: String,
        /// A tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Show a model.
    Get {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
    },
    /// List models, ordered by name.
    List {
        /// Only models of this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only models whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only models with this tag (KEY) or tag value (KEY=VALUE).
        #[arg(long, value_name = "KEY[=VALUE]")]
        tag: Option<String>,
        /// Page size (1-1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page (its next cursor).
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow cursors and list every matching model.
        #[arg(long)]
        all: bool,
    },
    /// Change a model's description or tags.
    Update {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Set a tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Remove a tag (repeatable).
        #[arg(long = "remove-tag", value_name = "KEY")]
        remove_tags: Vec<String>,
        /// Only if the model is still at this revision (or * for "exists").
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
    /// Delete a model (refused while a version is in staging or production).
    Delete {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Only if the model is still at this revision.
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
}

/// `ballast version …`.
#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// Compare 2 to 10 versions side by side: metadata, parameters, metrics with deltas against
    /// the first, and which gates each would pass for staging and production.
    Compare {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Version numbers (2 to 10).
        #[arg(num_args = 2..=10, required = true, value_name = "VERSION")]
        versions: Vec<u64>,
    },
    /// Create a draft version (use `ballast push` to create one with files).
    Create {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Metadata file (YAML, or JSON when it ends in .json): description, owner, metrics,
        /// hyperparameters, frameworks, resources, lineage, model_card, ….
        #[arg(long, value_name = "FILE")]
        meta: Option<PathBuf>,
        /// A tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Show a version with its files.
    Get {
        /// NAMESPACE/MODEL/N, NAMESPACE/MODEL@ALIAS or NAMESPACE/MODEL:STAGE.
        reference: VersionRef,
    },
    /// List and search a model's versions (newest first by default).
    List {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Only versions in this stage.
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// Only versions with this tag (KEY) or tag value (KEY=VALUE); repeatable, all must hold.
        #[arg(long = "tag", value_name = "KEY[=VALUE]")]
        tags: Vec<String>,
        /// A metric condition such as 'accuracy>=0.9' (>=, <=, >, <, =, !=); repeatable.
        #[arg(long = "metric", value_name = "NAME OP VALUE")]
        metrics: Vec<String>,
        /// Only drafts or only sealed versions.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Sort key: number, created_at or metric:NAME.
        #[arg(long, value_name = "KEY")]
        order_by: Option<String>,
        /// Sort direction.
        #[arg(long, value_enum)]
        order: Option<OrderArg>,
        /// Page size (1-1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page (its next cursor).
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow cursors and list every matching version.
        #[arg(long)]
        all: bool,
    },
    /// Move a version to another stage.
    ///
    /// Allowed moves: development → staging or archived; staging → production, development or
    /// archived; production → staging or archived; archived → staging. Staging and production
    /// need a sealed version; promoting to production archives the previous production version.
    Stage {
        /// NAMESPACE/MODEL/N, NAMESPACE/MODEL@ALIAS or NAMESPACE/MODEL:STAGE.
        reference: VersionRef,
        /// Target stage: development, staging, production or archived.
        #[arg(value_parser = parse_stage)]
        stage: Stage,
        /// Why (kept in the audit trail).
        #[arg(long)]
        comment: Option<String>,
        /// Only if the version is still at this revision.
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
    /// Put the version that the current production version replaced back into production.
    Rollback {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Why (kept in the audit trail).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Seal a draft: its files and metadata become immutable and it gets its digest.
    Seal {
        /// NAMESPACE/MODEL/N (or @ALIAS / :STAGE).
        reference: VersionRef,
        /// Only seal if the manifest digest is this one (64 hex characters).
        #[arg(long, value_name = "SHA256")]
        expect_digest: Option<String>,
    },
}

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Still taking files.
    Draft,
    /// Immutable.
    Sealed,
}

/// `--order` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// `ballast alias …`.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point an alias at a version (creating the alias if needed).
    Set {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Alias name (starts with a letter; not a stage name).
        alias: String,
        /// Version number to point at.
        #[arg(value_name = "VERSION")]
        number: u64,
        /// Only if the alias is still at this revision (compare-and-swap), or * if it exists.
        #[arg(long, value_name = "REV", conflicts_with = "create_only")]
        if_match: Option<Precondition>,
        /// Only if the alias does not exist yet.
        #[arg(long)]
        create_only: bool,
    },
    /// Remove an alias.
    Rm {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Alias name.
        alias: String,
        /// Only if the alias is still at this revision.
        #[arg(long, value_name = "REV")]
        if_match: Option<Precondition>,
    },
    /// Show which version an alias points at.
    Get {
        /// NAMESPACE/MODEL.
        #[arg(value_parser = parse_model_name)]
        name: ModelName,
        /// Alias name.
        alias: String,
    },
}

/// `ballast push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAMESPACE/MODEL (the model must exist: `ballast model create`).
    #[arg(value_parser = parse_model_name)]
    pub name: ModelName,
    /// Directory whose files make the version (symlinks must stay inside it).
    pub dir: PathBuf,
    /// Metadata file (YAML, or JSON when it ends in .json) matching the version metadata:
    /// description, owner, training_data, code_commit, hyperparameters, metrics, frameworks,
    /// resources, lineage, model_card. Unknown fields are an error.
    #[arg(long, value_name = "FILE")]
    pub meta: Option<PathBuf>,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Files hashed and uploaded at the same time.
    #[arg(long, default_value = "4")]
    pub parallel: NonZeroUsize,
    /// Point this alias at the new version once sealed.
    #[arg(long)]
    pub alias: Option<String>,
    /// Move the new version to this stage once sealed (a new version may go to staging).
    #[arg(long, value_parser = parse_stage)]
    pub stage: Option<Stage>,
}

/// `ballast pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAMESPACE/MODEL/N, NAMESPACE/MODEL@ALIAS or NAMESPACE/MODEL:STAGE.
    pub reference: VersionRef,
    /// Destination directory; it must not exist or be empty, unless --force.
    pub dir: PathBuf,
    /// Replace DIR if it exists (atomically: the old one is removed only after the new one is
    /// in place).
    #[arg(long)]
    pub force: bool,
    /// Files downloaded at the same time.
    #[arg(long, default_value = "4")]
    pub parallel: NonZeroUsize,
}

/// `ballast audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        /// Only entries about this model (NAMESPACE/MODEL).
        #[arg(long)]
        model: Option<String>,
        /// Only entries by this actor (the principal of the token that made them). Named --by
        /// because --actor is the global option naming who acts.
        #[arg(long = "by", value_name = "ACTOR")]
        by: Option<String>,
        /// Only this action (model.create, version.stage, alias.set, …).
        #[arg(long)]
        action: Option<String>,
        /// Only entries at or after this RFC 3339 time (e.g. 2026-11-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries before this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only entries after this id.
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// Page size (1-1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Check the audit trail's hash chain; exits with 1 and names the first bad entry when an
    /// entry was changed or removed.
    Verify,
}

/// Parses `NAMESPACE/MODEL`.
fn parse_model_name(s: &str) -> Result<ModelName, String> {
    ModelName::parse(s).map_err(|e| e.message)
}

/// Parses a stage name.
fn parse_stage(s: &str) -> Result<Stage, String> {
    s.parse::<Stage>().map_err(|e| e.message)
}

/// Parses `KEY=VALUE`.
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tags_parse() {
        assert_eq!(parse_tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_tag("a="), Ok(("a".into(), String::new())));
        assert!(parse_tag("a").is_err());
        assert!(parse_tag("=b").is_err());
    }

    #[test]
    fn push_flags_parse() {
        let cli = Cli::try_parse_from([
            "ballast",
            "push",
            "acme/bot",
            "out",
            "--tag",
            "a=1",
            "--parallel",
            "8",
            "--stage",
            "staging",
            "--json",
        ]);
        let cli = cli.unwrap_or_else(|e| unreachable!("{e}"));
        assert!(cli.global.json);
        match cli.command {
            Command::Push(p) => {
                assert_eq!(p.name.to_string(), "acme/bot");
                assert_eq!(p.parallel.get(), 8);
                assert_eq!(p.stage, Some(Stage::Staging));
                assert_eq!(p.tags, vec![("a".to_owned(), "1".to_owned())]);
            }
            other => unreachable!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["ballast", "push", "acme", "out"]).is_err());
        assert!(Cli::try_parse_from(["ballast", "push", "a/b", "out", "--parallel", "0"]).is_err());
    }
}
