//! `ballast`: the registry's command-line interface and server launcher.
//!
//! This file only parses flags, sets up logging and the async runtime, runs the command and
//! turns its outcome into an exit code: 0 success, 1 an error from the registry or the command
//! (`error: <code>: <message>` on stderr), 2 a usage error (clap), 130 interrupted.

#[macro_use]
mod output;
mod cli;
mod commands;
mod metadata;
mod progress;
mod reference;
mod signals;
mod tree;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn main() -> ExitCode {
    ballast_server::alloc::limit_malloc_arenas();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Server(_) | Command::Router(_)) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.global.log_format, default_level);
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => output::report_error(&e, json),
    }
}
