//! `ballast router`: starts the data plane from a static routes file or a registry, says where it
//! listens, reloads the file on SIGHUP, and serves until SIGINT or SIGTERM (draining in-flight requests).

use anyhow::Context as _;
use ballast_router::{Router, RouterConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::RouterArgs;
use crate::output;

/// Runs the router until a shutdown signal.
///
/// # Errors
/// No usable routing snapshot, or an address that cannot be bound.
pub async fn run(args: RouterArgs, json: bool) -> anyhow::Result<()> {
    let mut config = RouterConfig::new(args.region.clone());
    config.listen = args.listen;
    if args.config.is_some() && args.registry.is_some() {
        anyhow::bail!("give either --config FILE or --registry URL, not both");
    }
    config.routes_file = args.config.clone();
    config.registry = args.registry.clone();
    config.state_dir = Some(args.state_dir.clone());
    config.upstream_ca = args.upstream_ca.clone();
    config.registry_token = args
        .registry_token
        .clone()
        .map(ballast_router::RegistryToken::new);
    if let Some(n) = args.workers {
        config.workers = n.min(256);
    }
    config.stream_idle_timeout = std::time::Duration::from_secs(args.stream_idle_timeout_secs.max(1));
    config.client_idle_timeout = std::time::Duration::from_secs(args.client_idle_timeout_secs.max(1));
    config.client_head_timeout = std::time::Duration::from_secs(args.client_head_timeout_secs.max(1));
    config.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    if let Some(path) = &args.admin_token_file {
        let token = ballast_router::AdminToken::from_file(path).map_err(anyhow::Error::msg)?;
        config.admin_token = Some(token);
    }
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let router = Router::bind(config).await.with_context(|| {
        format!(
            "cannot start the router on {} ({}, state in {})",
            args.listen,
            match (&args.config, &args.registry) {
                (Some(p), _) => format!("routes file {}", p.display()),
                (None, Some(r)) => format!("registry {r}"),
                (None, None) => "no routes file or registry".to_owned(),
            },
            args.state_dir.display()
        )
    })?;
    let addr = router.local_addr().context("cannot read the bound address")?;
    let handle = router.handle();
    let snapshot = handle.snapshot();
    tracing::info!(listen = %addr, region = %args.region, generation = snapshot.generation, "ballast router ready");
    if json {
        output::json(&serde_json::json!({
            "listen": addr.to_string(),
            "url": format!("http://{addr}"),
            "region": args.region,
            "generation": snapshot.generation,
            "digest": snapshot.digest,
        }))?;
    } else {
        outln!(
            "ballast router ({}) listening on http://{addr}, routing snapshot generation {}",
            args.region,
            snapshot.generation
        );
    }
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match handle.reload() {
                Ok(outcome) => tracing::info!(?outcome, "SIGHUP: routes file reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; the active snapshot stays"),
            }
        }
    });
    let shutdown = async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutdown requested");
    };
    let result = router.serve(shutdown).await;
    reloader.abort();
    result.context("the router stopped with an error")?;
    tracing::info!("ballast router stopped");
    Ok(())
}
