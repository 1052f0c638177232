//! One module per command group; each takes the parsed arguments and a [`Ctx`] and does the
//! work through `ballast-client` (or, for `server`, through `ballast-server`).

pub mod access;
pub mod alias;
pub mod audit;
pub mod deployment;
pub mod governance;
pub mod migrate;
pub mod model;
pub mod pull;
pub mod push;
pub mod regions;
pub mod retention;
pub mod router;
pub mod server;
pub mod version;
pub mod webhook;

use std::process::ExitCode;

use ballast_client::Client;

use crate::cli::{Cli, Command, GlobalArgs};

/// What every client command needs.
pub struct Ctx {
    /// The registry client.
    pub client: Client,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Ctx {
    fn new(global: &GlobalArgs) -> anyhow::Result<Self> {
        Ok(Self {
            client: Client::new(&global.url, global.token.clone(), global.actor.clone())?,
            json: global.json,
        })
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; the caller prints it.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    let ctx = || Ctx::new(&global);
    match cli.command {
        Command::Server(args) => server::run(args, global.json).await?,
        Command::Router(args) => router::run(args, global.json).await?,
        Command::Migrate(args) => migrate::run(args, global.json).await?,
        Command::Model(cmd) => model::run(&ctx()?, cmd).await?,
        Command::Version(cmd) => version::run(&ctx()?, cmd).await?,
        Command::Alias(cmd) => alias::run(&ctx()?, cmd).await?,
        Command::Push(args) => push::run(&ctx()?, args).await?,
        Command::Pull(args) => pull::run(&ctx()?, args).await?,
        Command::Audit(cmd) => audit::run(&ctx()?, cmd).await?,
        Command::Deployment(cmd) => deployment::run(&ctx()?, cmd).await?,
        Command::Route(cmd) => deployment::run_route(&ctx()?, cmd).await?,
        Command::Webhook(cmd) => webhook::run(&ctx()?, cmd).await?,
        Command::Token(cmd) => access::run_token(&ctx()?, cmd).await?,
        Command::Role(cmd) => access::run_role(&ctx()?, cmd).await?,
        Command::Whoami => access::run_whoami(&ctx()?).await?,
        Command::Policy(cmd) => governance::run_policy(&ctx()?, cmd).await?,
        Command::Transition(cmd) => governance::run_transition(&ctx()?, cmd).await?,
        Command::Events(cmd) => webhook::run_events(&ctx()?, cmd).await?,
        Command::Retention(cmd) => retention::run_retention(&ctx()?, cmd).await?,
        Command::Gc(args) => retention::run_gc(&ctx()?, args).await?,
        Command::Status => regions::run_status(&ctx()?).await?,
        Command::Fsck(args) => regions::run_fsck(&ctx()?, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
