//! Lifecycle stages and the state machine between them.
//!
//! ```text
//! development ──► staging ──► production ──► archived
//!      │   ▲         │  ▲          │             │
//!      │   └─────────┘  └──────────┴─────────────┘   (back to staging for re-review)
//!      └──────────────────────────────────────► archived
//! ```
//!
//! Promotion to production demotes the previous production version to `archived` in the same
//! transaction; `rollback` is the one way back from `archived` straight to `production`, and only
//! for the version that the current production version replaced.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ValidationError};

/// A version's lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Newly created; the only stage in which a draft may be.
    Development,
    /// Under review before production.
    Staging,
    /// Serving. At most one version per model is in production.
    Production,
    /// Retired; kept for audit and rollback.
    Archived,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 4] = [
        Stage::Development,
        Stage::Staging,
        Stage::Production,
        Stage::Archived,
    ];

    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Development => "development",
            Stage::Staging => "staging",
            Stage::Production => "production",
            Stage::Archived => "archived",
        }
    }

    /// Whether a user may request a move from `self` to `to` (rollback is a separate operation).
    #[must_use]
    pub const fn can_move_to(self, to: Stage) -> bool {
        matches!(
            (self, to),
            (Stage::Development, Stage::Staging | Stage::Archived)
                | (
                    Stage::Staging,
                    Stage::Development | Stage::Production | Stage::Archived
                )
                | (Stage::Production, Stage::Staging | Stage::Archived)
                | (Stage::Archived, Stage::Staging)
        )
    }

    /// Whether moving into this stage requires a sealed version.
    #[must_use]
    pub const fn requires_sealed(self) -> bool {
        matches!(self, Stage::Staging | Stage::Production)
    }

    /// Whether this stage goes through the governance hook (policy checks, approvals).
    #[must_use]
    pub const fn is_gated(self) -> bool {
        matches!(self, Stage::Staging | Stage::Production)
    }

    /// Checks a requested move, explaining a refusal.
    ///
    /// # Errors
    /// `invalid_transition` naming the allowed targets, or `conflict` for an unsealed version.
    pub fn check_move(self, to: Stage, sealed: bool) -> Result<(), ValidationError> {
        if self == to {
            return Err(ValidationError::new(
                ErrorCode::InvalidTransition,
                "stage",
                format!("the version is already in {to}"),
            ));
        }
        if !self.can_move_to(to) {
            let allowed: Vec<&str> = Stage::ALL
                .iter()
                .filter(|s| self.can_move_to(**s))
                .map(|s| s.as_str())
                .collect();
            return Err(ValidationError::new(
                ErrorCode::InvalidTransition,
                "stage",
                format!(
                    "cannot move from {self} to {to}; from {self} a version may move to: {}",
                    allowed.join(", ")
                ),
            ));
        }
        if to.requires_sealed() && !sealed {
            return Err(ValidationError::new(
                ErrorCode::Conflict,
                "stage",
                format!("the version is a draft: seal it before moving it to {to}"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            ValidationError::new(
                ErrorCode::InvalidArgument,
                "stage",
                format!("unknown stage {s:?}: expected development, staging, production or archived"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = Stage> {
        prop::sample::select(Stage::ALL.to_vec())
    }

    #[test]
    fn documented_transitions() {
        use Stage::*;
        assert!(Development.can_move_to(Staging));
        assert!(Staging.can_move_to(Production));
        assert!(Production.can_move_to(Archived));
        assert!(Production.can_move_to(Staging));
        assert!(Archived.can_move_to(Staging));
        assert!(!Development.can_move_to(Production));
        assert!(!Archived.can_move_to(Production));
        assert!(!Archived.can_move_to(Development));
        assert!(!Production.can_move_to(Development));
    }

    proptest! {
        #[test]
        fn nothing_moves_to_itself(s in stage()) {
            prop_assert!(!s.can_move_to(s));
            prop_assert!(s.check_move(s, true).is_err());
        }

        #[test]
        fn production_only_through_staging(path in prop::collection::vec(stage(), 1..12)) {
            // Walk any sequence of allowed moves from development: production is only ever
            // entered from staging, and a draft never leaves development except to archived.
            let mut cur = Stage::Development;
            for next in path {
                if cur.check_move(next, true).is_ok() {
                    if next == Stage::Production {
                        prop_assert_eq!(cur, Stage::Staging);
                    }
                    cur = next;
                }
                prop_assert!(!(cur == Stage::Development && next.requires_sealed()
                    && Stage::Development.check_move(next, false).is_ok()));
            }
        }

        #[test]
        fn check_move_agrees_with_can_move(a in stage(), b in stage(), sealed in any::<bool>()) {
            let ok = a.check_move(b, sealed).is_ok();
            prop_assert_eq!(ok, a.can_move_to(b) && (sealed || !b.requires_sealed()));
        }

        #[test]
        fn parse_roundtrip(s in stage()) {
            prop_assert_eq!(s.as_str().parse::<Stage>().ok(), Some(s));
        }
    }
}
