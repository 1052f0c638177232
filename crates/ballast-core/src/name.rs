//! Names: `namespace/model`, aliases and tag keys, and the rules they follow.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ValidationError};

/// Longest allowed namespace or model part, in bytes.
pub const MAX_PART_LEN: usize = 64;

/// The naming rule, as stated in every error about it.
pub const NAME_RULE: &str =
    "each part must be 1-64 characters of lowercase letters, digits, '-', '_' or '.', and must not be '.' or '..'";

fn check_part(part: &str, field: &str, what: &str) -> Result<(), ValidationError> {
    let ok_chars = part
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if part.is_empty() || part.len() > MAX_PART_LEN || !ok_chars || part == "." || part == ".." {
        return Err(ValidationError::new(
            ErrorCode::InvalidName,
            field,
            format!("invalid {what} {part:?}: {NAME_RULE}"),
        ));
    }
    Ok(())
}

/// Checks a namespace on its own (for filters and per-namespace settings).
///
/// # Errors
/// `invalid_name` naming the rule.
pub fn validate_namespace(namespace: &str) -> Result<(), ValidationError> {
    check_part(namespace, "namespace", "namespace")
}

/// A validated model name: `namespace/model`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName {
    namespace: String,
    model: String,
}

impl ModelName {
    /// Builds a name from its two parts, checking both.
    ///
    /// # Errors
    /// `invalid_name` naming the rule and the part at fault.
    pub fn new(namespace: &str, model: &str) -> Result<Self, ValidationError> {
        check_part(namespace, "namespace", "namespace")?;
        check_part(model, "name", "model name")?;
        Ok(Self {
            namespace: namespace.to_owned(),
            model: model.to_owned(),
        })
    }

    /// Parses `namespace/model`.
    ///
    /// # Errors
    /// `invalid_name` when there is not exactly one `/` or a part breaks the rule.
    pub fn parse(full: &str) -> Result<Self, ValidationError> {
        match full.split_once('/') {
            Some((ns, model)) if !model.contains('/') => Self::new(ns, model),
            _ => Err(ValidationError::new(
                ErrorCode::InvalidName,
                "name",
                format!("invalid model name {full:?}: expected 'namespace/model' ({NAME_RULE})"),
            )),
        }
    }

    /// The namespace part.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The model part (without namespace).
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.model)
    }
}

impl TryFrom<String> for ModelName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ModelName> for String {
    fn from(value: ModelName) -> Self {
        value.to_string()
    }
}

/// The alias rule, as stated in every error about it.
pub const ALIAS_RULE: &str = "an alias is 1-64 characters of lowercase letters, digits, '-' or '_', starts with a letter, and is not a stage name";

/// Checks an alias name (`champion`, `challenger`, …). Aliases start with a letter so they never
/// look like a version number, and may not be a stage name so references stay unambiguous.
///
/// # Errors
/// `invalid_name` naming the rule.
pub fn validate_alias(alias: &str) -> Result<(), ValidationError> {
    let ok = !alias.is_empty()
        && alias.len() <= MAX_PART_LEN
        && alias.as_bytes()[0].is_ascii_lowercase()
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
        && alias.parse::<crate::Stage>().is_err();
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorCode::InvalidName,
            "alias",
            format!("invalid alias {alias:?}: {ALIAS_RULE}"),
        ))
    }
}

/// Longest allowed tag key.
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Longest allowed tag value.
pub const MAX_TAG_VALUE_LEN: usize = 1024;

/// Checks a tag key: 1-128 printable ASCII characters without spaces, `=` or `,`.
///
/// # Errors
/// `invalid_name` naming the rule.
pub fn validate_tag_key(key: &str) -> Result<(), ValidationError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_TAG_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'=' && b != b',');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorCode::InvalidName,
            "tags",
            format!("invalid tag key {key:?}: 1-{MAX_TAG_KEY_LEN} printable ASCII characters without spaces, '=' or ','"),
        ))
    }
}

/// Checks a tag value's length.
///
/// # Errors
/// `invalid_argument` when the value is too long.
pub fn validate_tag_value(key: &str, value: &str) -> Result<(), ValidationError> {
    if value.len() > MAX_TAG_VALUE_LEN || value.contains('\0') {
        return Err(ValidationError::new(
            ErrorCode::InvalidArgument,
            "tags",
            format!("tag {key:?}: values are at most {MAX_TAG_VALUE_LEN} bytes and contain no NUL"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_good_names() {
        for n in ["acme/support-bot", "a/b", "team_1/model.v2", "x.y/z-_.9"] {
            assert!(ModelName::parse(n).is_ok(), "{n}");
        }
        let n = ModelName::parse("acme/bot").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(n.namespace(), "acme");
        assert_eq!(n.model(), "bot");
        assert_eq!(n.to_string(), "acme/bot");
    }

    #[test]
    fn refuses_bad_names_naming_the_rule() {
        for n in [
            "",
            "acme",
            "acme/",
            "/bot",
            "Acme/bot",
            "acme/bot/x",
            "acme/b t",
            "acme/..",
            "./x",
            "acme/bót",
            "acme/bot\0",
        ] {
            let err = ModelName::parse(n).err();
            let err = err.unwrap_or_else(|| unreachable!("{n:?} accepted"));
            assert_eq!(err.code, ErrorCode::InvalidName);
            assert!(err.message.contains("lowercase letters"), "{}", err.message);
        }
        let long = "a".repeat(65);
        assert!(ModelName::new("acme", &long).is_err());
        assert!(ModelName::new(&"a".repeat(64), &"b".repeat(64)).is_ok());
    }

    #[test]
    fn aliases() {
        assert!(validate_alias("champion").is_ok());
        assert!(validate_alias("c-2_x").is_ok());
        for bad in ["", "1", "2x", "Champion", "a.b", "production", "staging", "a b"] {
            assert!(validate_alias(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn name_rule_matches_spec(ns in "[ -~]{0,70}", model in "[ -~]{0,70}") {
            let expected = |p: &str| !p.is_empty() && p.len() <= 64 && p != "." && p != ".."
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            let ok = ModelName::new(&ns, &model).is_ok();
            prop_assert_eq!(ok, expected(&ns) && expected(&model));
            if ok {
                let parsed = ModelName::parse(&format!("{ns}/{model}"));
                prop_assert!(parsed.is_ok());
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = ModelName::parse(&s);
            let _ = validate_alias(&s);
            let _ = validate_tag_key(&s);
        }
    }
}
