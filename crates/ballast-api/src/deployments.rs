//! Where versions are served and which logical models clients call: the two registry resources
//! from which the registry compiles its [`RoutingSnapshot`](crate::routing::RoutingSnapshot).
//!
//! A [`Deployment`] records that a sealed version runs at an endpoint in a region (CD pipelines
//! record them with `ballast deployment add`). A [`RegistryRoute`] names a logical model and
//! points it at a stage (`acme/support-bot:production`) or an alias (`acme/support-bot@champion`),
//! so the compiled routes follow promotions and alias moves.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::routing::{FailoverPolicy, HealthPolicy, RetryPolicy, RouteRegions, Timeouts};

/// Largest deployment weight.
pub const MAX_DEPLOYMENT_WEIGHT: u32 = 10_000;

/// Where a model version is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// Id (stable; used to remove it).
    pub id: u64,
    /// `namespace/model`.
    #[schema(example = "acme/support-bot")]
    pub model: String,
    /// Version number (sealed).
    pub version: u64,
    /// Region the endpoint runs in.
    #[schema(example = "eu-west")]
    pub region: String,
    /// Base URL of the endpoint (`http://` or `https://`).
    #[schema(example = "http://127.0.1.10:8000")]
    pub url: String,
    /// Relative share among the deployments of the same version and region (1–10000).
    pub weight: u32,
    /// The name the backend knows the model by (the request body's `model` is rewritten to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Who recorded it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

/// Body of `POST /v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// `namespace/model`.
    pub model: String,
    /// Version number; the version must be sealed.
    pub version: u64,
    /// Region (letters, digits, `-`, `_`, `.`).
    pub region: String,
    /// Base URL (`http://` or `https://`, no query).
    pub url: String,
    /// Relative share (1–10000, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Optional name the backend knows the model by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// Answer of `GET /v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    /// Deployments, by id.
    pub deployments: Vec<Deployment>,
}

/// A canary: a share of a route's traffic goes to the version an alias points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Alias of the same model (e.g. `challenger`).
    pub alias: String,
    /// Percentage of traffic it gets (0–100).
    pub percent: u32,
}

/// Body of `PUT /v1/routes/{name}`: what a logical model resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoute {
    /// `ns/model:stage` (follows promotions) or `ns/model@alias` (follows the alias).
    #[schema(example = "acme/support-bot:production")]
    pub target: String,
    /// Other registry routes tried, in order, after this one's targets (and after the previous
    /// production version's, which is added automatically for `:production` targets).
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Optional canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Sticky-session header (default `x-session-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Time limits (snapshot defaults when absent).
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retry limits.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Health settings.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Region failover settings.
    #[serde(default)]
    pub failover: FailoverPolicy,
    /// Region order of the route's targets (absent: each router's own region first, then the
    /// others in the order their deployments appear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<RouteRegions>,
}

/// A registry route: a logical model clients call through `ballast router`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistryRoute {
    /// The name clients send as `model` (letters, digits, `-`, `_`, `.`).
    #[schema(example = "support-bot")]
    pub name: String,
    /// The settings.
    #[serde(flatten)]
    pub spec: SetRoute,
    /// Grows with every change.
    pub revision: u64,
    /// Who changed it last.
    pub updated_by: String,
    /// When.
    pub updated_at: String,
}

/// Answer of `GET /v1/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteList {
    /// Routes by name.
    pub routes: Vec<RegistryRoute>,
}

/// What a route's `target` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRef {
    /// The version in a stage (`ns/model:production`).
    Stage {
        /// `ns/model`.
        model: String,
        /// Stage name.
        stage: String,
    },
    /// The version an alias points at (`ns/model@champion`).
    Alias {
        /// `ns/model`.
        model: String,
        /// Alias name.
        alias: String,
    },
}

impl RouteRef {
    /// Parses `ns/model:stage` or `ns/model@alias` (syntax only).
    ///
    /// # Errors
    /// A message saying what is expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not NS/MODEL:STAGE or NS/MODEL@ALIAS");
        if let Some((model, alias)) = s.split_once('@') {
            if model.split('/').count() != 2 || alias.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Alias {
                model: model.to_owned(),
                alias: alias.to_owned(),
            });
        }
        if let Some((model, stage)) = s.rsplit_once(':') {
            if model.split('/').count() != 2 || stage.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Stage {
                model: model.to_owned(),
                stage: stage.to_owned(),
            });
        }
        Err(bad())
    }

    /// `ns/model`.
    #[must_use]
    pub fn model(&self) -> &str {
        match self {
            Self::Stage { model, .. } | Self::Alias { model, .. } => model,
        }
    }
}

/// Whether `name` may name a registry route (and so appear in target ids).
#[must_use]
pub fn is_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        assert_eq!(
            RouteRef::parse("acme/bot:production"),
            Ok(RouteRef::Stage {
                model: "acme/bot".into(),
                stage: "production".into()
            })
        );
        assert_eq!(
            RouteRef::parse("acme/bot@champion"),
            Ok(RouteRef::Alias {
                model: "acme/bot".into(),
                alias: "champion".into()
            })
        );
        assert!(RouteRef::parse("acme/bot").is_err());
        assert!(RouteRef::parse("bot:production").is_err());
        assert!(RouteRef::parse("acme/bot@").is_err());
    }

    #[test]
    fn route_body_round_trips() -> Result<(), serde_json::Error> {
        let r: SetRoute = serde_json::from_str(
            r#"{"target":"acme/bot@champion","canary":{"alias":"challenger","percent":5}}"#,
        )?;
        assert_eq!(r.canary.as_ref().map(|c| c.percent), Some(5));
        assert_eq!(r.timeouts, Timeouts::default());
        Ok(())
    }
}
