//! `ballast deployment …` and `ballast route …`: record where versions are served, and name the
//! logical models that `ballast router --registry` serves from them.

use anyhow::Context as _;
use ballast_api::deployments::{Canary, CreateDeployment, SetRoute};
use ballast_api::routing::{LocalRegionPolicy, RouteRegions};
use clap::Subcommand;

use super::Ctx;
use crate::output;

/// `ballast deployment` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Record that a sealed version is served at URL in REGION.
    Add {
        /// NAMESPACE/MODEL/VERSION.
        #[arg(value_name = "NAME/VERSION")]
        name_version: String,
        /// Region the endpoint runs in.
        #[arg(long)]
        region: String,
        /// Base URL of the endpoint (http:// or https://). Named --endpoint because --url is
        /// the global registry URL.
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// Relative share among the version's endpoints in the region (1-10000).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// The name the backend knows the model by (the request's model is rewritten to it).
        #[arg(long)]
        upstream_model: Option<String>,
    },
    /// Remove a deployment.
    Rm {
        /// Deployment id.
        id: u64,
    },
    /// List deployments.
    List {
        /// Only this model (NAMESPACE/MODEL).
        #[arg(long)]
        model: Option<String>,
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
    },
}

/// `ballast route` subcommands.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Create or replace a route: NAME (what clients send as `model`) serves the deployments
    /// of the version TARGET resolves to, and follows promotions and alias moves.
    Set {
        /// Route name (letters, digits, '-', '_', '.').
        name: String,
        /// NAMESPACE/MODEL:STAGE or NAMESPACE/MODEL@ALIAS.
        #[arg(long)]
        target: String,
        /// A route tried after this one's targets (repeatable, in order).
        #[arg(long = "fallback", value_name = "ROUTE")]
        fallbacks: Vec<String>,
        /// Send PERCENT of the traffic to the version ALIAS points at (e.g. challenger=5).
        #[arg(long, value_name = "ALIAS=PERCENT")]
        canary: Option<String>,
        /// Pin sessions by this request header (default x-session-id).
        #[arg(long)]
        sticky_header: Option<String>,
        /// Region order of the route's targets, preferred first (comma-separated, e.g.
        /// eu-west,us-east). Without it the route keeps the order it has.
        #[arg(long, value_name = "REGION,...", value_delimiter = ',', num_args = 1..)]
        regions: Option<Vec<String>>,
        /// With --regions: where each router puts its own region. `first` (default): its own
        /// region first, then the listed order; `listed`: exactly the listed order (the first
        /// listed region serves for every router).
        #[arg(long, value_name = "first|listed", requires = "regions", value_parser = parse_local_region)]
        local_region: Option<LocalRegionPolicy>,
        /// Drop the route's region order (each router's own region first, then the others).
        #[arg(long, conflicts_with = "regions")]
        clear_regions: bool,
    },
    /// Delete a route.
    Rm {
        /// Route name.
        name: String,
    },
    /// List routes.
    List,
    /// Print the routing snapshot the registry compiles (what routers serve).
    Snapshot,
}

fn parse_version(s: &str) -> anyhow::Result<(String, u64)> {
    let (model, n) = s
        .rsplit_once('/')
        .with_context(|| format!("{s:?} is not NAMESPACE/MODEL/VERSION"))?;
    let n = n
        .parse::<u64>()
        .with_context(|| format!("{s:?} is not NAMESPACE/MODEL/VERSION (the version is a number)"))?;
    Ok((model.to_owned(), n))
}

fn parse_local_region(s: &str) -> Result<LocalRegionPolicy, String> {
    match s {
        "first" => Ok(LocalRegionPolicy::First),
        "listed" => Ok(LocalRegionPolicy::Listed),
        other => Err(format!("{other:?} is not first or listed")),
    }
}

fn parse_canary(s: &str) -> anyhow::Result<Canary> {
    let (alias, percent) = s
        .split_once('=')
        .with_context(|| format!("--canary {s:?} is not ALIAS=PERCENT"))?;
    let percent = percent
        .trim_end_matches('%')
        .parse::<u32>()
        .with_context(|| format!("--canary {s:?}: the percentage is a number from 0 to 100"))?;
    Ok(Canary {
        alias: alias.to_owned(),
        percent,
    })
}

/// Runs a `deployment` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run(ctx: &Ctx, cmd: DeploymentCommand) -> anyhow::Result<()> {
    match cmd {
        DeploymentCommand::Add {
            name_version,
            region,
            endpoint: url,
            weight,
            upstream_model,
        } => {
            let (model, version) = parse_version(&name_version)?;
            let d = ctx
                .client
                .add_deployment(&CreateDeployment {
                    model,
                    version,
                    region,
                    url,
                    weight,
                    upstream_model,
                })
                .await?;
            if ctx.json {
                output::json(&d)?;
            } else {
                outln!(
                    "deployment {}: {}/{} in {} at {} (weight {})",
                    d.id,
                    d.model,
                    d.version,
                    d.region,
                    d.url,
                    d.weight
                );
            }
        }
        DeploymentCommand::Rm { id } => {
            ctx.client.remove_deployment(id).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "removed": id }))?;
            } else {
                outln!("deployment {id} removed");
            }
        }
        DeploymentCommand::List { model, region } => {
            let list = ctx
                .client
                .list_deployments(model.as_deref(), region.as_deref())
                .await?;
            if ctx.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .deployments
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.to_string(),
                            format!("{}/{}", d.model, d.version),
                            d.region.clone(),
                            d.url.clone(),
                            d.weight.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "VERSION", "REGION", "URL", "WEIGHT"], &rows);
            }
        }
    }
    Ok(())
}

/// Runs a `route` subcommand.
///
/// # Errors
/// What the registry answers, or a transport error.
pub async fn run_route(ctx: &Ctx, cmd: RouteCommand) -> anyhow::Result<()> {
    match cmd {
        RouteCommand::Set {
            name,
            target,
            fallbacks,
            canary,
            sticky_header,
            regions,
            local_region,
            clear_regions,
        } => {
            let canary = canary.as_deref().map(parse_canary).transpose()?;
            // Keep the settings this command has no flags for (timeouts, retry, health).
            let existing = ctx
                .client
                .list_routes()
                .await?
                .routes
                .into_iter()
                .find(|r| r.name == name);
            let mut spec = existing.map_or_else(
                || SetRoute {
                    target: String::new(),
                    fallbacks: Vec::new(),
                    canary: None,
                    sticky_header: None,
                    timeouts: ballast_api::routing::Timeouts::default(),
                    retry: ballast_api::routing::RetryPolicy::default(),
                    health: ballast_api::routing::HealthPolicy::default(),
                    failover: ballast_api::routing::FailoverPolicy::default(),
                    regions: None,
                },
                |r| r.spec,
            );
            spec.target = target;
            spec.fallbacks = fallbacks;
            spec.canary = canary;
            spec.sticky_header = sticky_header;
            if let Some(order) = regions {
                spec.regions = Some(RouteRegions {
                    order,
                    local: local_region.unwrap_or_default(),
                });
            } else if clear_regions {
                spec.regions = None;
            }
            let r = ctx.client.set_route(&name, &spec).await?;
            if ctx.json {
                output::json(&r)?;
            } else {
                outln!("route {} → {} (revision {})", r.name, r.spec.target, r.revision);
            }
        }
        RouteCommand::Rm { name } => {
            ctx.client.delete_route(&name).await?;
            if ctx.json {
                output::json(&serde_json::json!({ "removed": name }))?;
            } else {
                outln!("route {name} removed");
            }
        }
        RouteCommand::List => {
            let list = ctx.client.list_routes().await?;
            if ctx.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .routes
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.spec.target.clone(),
                            r.spec.fallbacks.join(","),
                            r.spec
                                .canary
                                .as_ref()
                                .map_or_else(|| "-".to_owned(), |c| format!("{}={}%", c.alias, c.percent)),
                            r.spec.regions.as_ref().map_or_else(
                                || "-".to_owned(),
                                |g| format!("{} ({})", g.order.join(","), g.local.as_str()),
                            ),
                            r.revision.to_string(),
                        ]
                    })
                    .collect();
                output::table(
                    &["NAME", "TARGET", "FALLBACKS", "CANARY", "REGIONS", "REVISION"],
                    &rows,
                );
            }
        }
        RouteCommand::Snapshot => {
            let s = ctx.client.routing_snapshot().await?;
            output::json(&s)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(parse_version("acme/bot/3").ok(), Some(("acme/bot".to_owned(), 3)));
        assert!(parse_version("acme/bot").is_err());
        let c = parse_canary("challenger=5").ok();
        assert_eq!(
            c.map(|c| (c.alias, c.percent)),
            Some(("challenger".to_owned(), 5))
        );
        assert!(parse_canary("challenger").is_err());
        assert_eq!(parse_local_region("listed"), Ok(LocalRegionPolicy::Listed));
        assert!(parse_local_region("last").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Route {
        #[command(subcommand)]
        cmd: RouteCommand,
    }

    #[test]
    fn route_set_takes_a_region_order() {
        use clap::Parser as _;
        let base = ["route", "set", "bot", "--target", "acme/bot:production"];
        let parse = |extra: &[&str]| Route::try_parse_from(base.iter().chain(extra.iter()));
        let Ok(Route {
            cmd:
                RouteCommand::Set {
                    regions,
                    local_region,
                    clear_regions,
                    ..
                },
        }) = parse(&["--regions", "eu-west,us-east", "--local-region", "listed"])
        else {
            panic!("--regions and --local-region parse");
        };
        assert_eq!(regions, Some(vec!["eu-west".to_owned(), "us-east".to_owned()]));
        assert_eq!(local_region, Some(LocalRegionPolicy::Listed));
        assert!(!clear_regions);
        // --local-region needs --regions; --clear-regions excludes it; bad policies are refused.
        assert!(parse(&["--local-region", "first"]).is_err());
        assert!(parse(&["--regions", "eu", "--clear-regions"]).is_err());
        assert!(parse(&["--regions", "eu", "--local-region", "nearest"]).is_err());
        assert!(parse(&["--clear-regions"]).is_ok());
    }
}
