//! Version references as users type them: `ns/model/3` (a number), `ns/model@champion` (an
//! alias) and `ns/model:production` (the version in a stage), and how each is resolved.

use std::fmt;
use std::str::FromStr;

use ballast_api::Version;
use ballast_client::{Client, ClientError};
use ballast_core::{validate_alias, ModelName, Stage};

/// The forms a reference may take, for error messages.
pub const FORMS: &str = "expected NAMESPACE/MODEL/N (a version number), NAMESPACE/MODEL@ALIAS \
or NAMESPACE/MODEL:STAGE (development, staging, production or archived)";

/// Which version of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A version number.
    Number(u64),
    /// The version an alias points at.
    Alias(String),
    /// The version in production, or the newest one in another stage.
    Stage(Stage),
}

/// A model and which of its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    /// The model.
    pub model: ModelName,
    /// Which version.
    pub selector: Selector,
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Number(n) => write!(f, "{}/{n}", self.model),
            Selector::Alias(a) => write!(f, "{}@{a}", self.model),
            Selector::Stage(s) => write!(f, "{}:{s}", self.model),
        }
    }
}

fn model(s: &str, whole: &str) -> Result<ModelName, String> {
    ModelName::parse(s).map_err(|e| format!("invalid version reference {whole:?}: {}; {FORMS}", e.message))
}

impl FromStr for VersionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("invalid version reference {s:?}: {why}; {FORMS}");
        if let Some((name, alias)) = s.split_once('@') {
            let model = model(name, s)?;
            if alias.parse::<Stage>().is_ok() {
                return Err(bad(&format!(
                    "{alias:?} is a stage, not an alias: write {name}:{alias}"
                )));
            }
            validate_alias(alias).map_err(|e| bad(&e.message))?;
            return Ok(Self {
                model,
                selector: Selector::Alias(alias.to_owned()),
            });
        }
        if let Some((name, stage)) = s.split_once(':') {
            let model = model(name, s)?;
            let stage = stage.parse::<Stage>().map_err(|e| bad(&e.message))?;
            return Ok(Self {
                model,
                selector: Selector::Stage(stage),
            });
        }
        match s.rsplit_once('/') {
            Some((name, n)) if name.contains('/') => {
                let model = model(name, s)?;
                let number = n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad(&format!("{n:?} is not a version number (1, 2, 3, …)")))?;
                Ok(Self {
                    model,
                    selector: Selector::Number(number),
                })
            }
            _ => Err(bad("no version given")),
        }
    }
}

impl VersionRef {
    /// Fetches the version the reference designates.
    ///
    /// # Errors
    /// `not_found` when the model, version, alias or staged version does not exist.
    pub async fn resolve(&self, client: &Client) -> Result<Version, ClientError> {
        match &self.selector {
            Selector::Number(n) => client.get_version(&self.model, *n).await,
            Selector::Alias(a) => client.resolve_alias(&self.model, a).await,
            Selector::Stage(s) => client.stage_version(&self.model, *s).await,
        }
    }

    /// The version number without a request, when the reference is a number.
    #[must_use]
    pub fn number(&self) -> Option<u64> {
        match self.selector {
            Selector::Number(n) => Some(n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> VersionRef {
        s.parse().unwrap_or_else(|e| unreachable!("{s}: {e}"))
    }

    #[test]
    fn accepted_forms() {
        let r = parse("acme/bot/3");
        assert_eq!(r.model.to_string(), "acme/bot");
        assert_eq!(r.selector, Selector::Number(3));
        assert_eq!(r.number(), Some(3));
        assert_eq!(
            parse("acme/bot@champion").selector,
            Selector::Alias("champion".into())
        );
        assert_eq!(
            parse("acme/bot:production").selector,
            Selector::Stage(Stage::Production)
        );
        assert_eq!(
            parse("team_1/model.v2:archived").model.to_string(),
            "team_1/model.v2"
        );
        for s in ["acme/bot/3", "acme/bot@champion", "acme/bot:staging"] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn refusals_name_the_accepted_forms() {
        for bad in [
            "acme/bot",
            "acme",
            "acme/bot/0",
            "acme/bot/x",
            "acme/bot/-1",
            "acme/bot/1/2",
            "acme/bot@",
            "acme/bot@1x",
            "acme/bot:prod",
            "acme/bot:",
            "Acme/bot/1",
            "acme/bot@production",
            "",
        ] {
            let err = bad
                .parse::<VersionRef>()
                .err()
                .unwrap_or_else(|| unreachable!("{bad} accepted"));
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("NAMESPACE/MODEL@ALIAS"), "{bad}: {err}");
        }
        let err = "acme/bot@production"
            .parse::<VersionRef>()
            .err()
            .unwrap_or_default();
        assert!(err.contains("acme/bot:production"), "{err}");
    }
}
