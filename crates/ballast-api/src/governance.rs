//! Governance: policies (naming rule, required metadata, required model-card sections, risk
//! level, approvals, metric gates), transition requests with their gate verdicts and reviews, and
//! the side-by-side comparison of versions.
//!
//! The rules themselves live here too, pure and shared: the store evaluates them under its
//! writer lock when a transition completes (so relative gates compare against the production
//! version of that moment), the server evaluates them for comparisons and dry runs.

use std::collections::BTreeMap;

use ballast_core::{ErrorCode, Stage, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{StageChange, Version, VersionMetadata};

/// How much harm a model can do, which decides how many approvals a move needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Gates decide; approvals only as configured (default none).
    #[default]
    Low,
    /// By default one approval for production.
    Medium,
    /// Always at least one human approval for staging and production, whatever is configured.
    High,
}

impl RiskLevel {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

impl std::fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Approvals needed for each gated stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageApprovals {
    /// Approvals needed to move into staging.
    #[serde(default)]
    pub staging: u32,
    /// Approvals needed to move into production.
    #[serde(default)]
    pub production: u32,
}

/// Approvals per risk level. A level that is not given keeps its default: low 0/0, medium 0/1,
/// high 1/2 (staging/production).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalTable {
    /// Low risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<StageApprovals>,
    /// Medium risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<StageApprovals>,
    /// High risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<StageApprovals>,
}

impl ApprovalTable {
    /// The approvals a level needs (configured, or the default).
    #[must_use]
    pub fn for_level(&self, risk: RiskLevel) -> StageApprovals {
        match risk {
            RiskLevel::Low => self.low.unwrap_or_default(),
            RiskLevel::Medium => self.medium.unwrap_or(StageApprovals {
                staging: 0,
                production: 1,
            }),
            RiskLevel::High => self.high.unwrap_or(StageApprovals {
                staging: 1,
                production: 2,
            }),
        }
    }
}

/// A list of strings for each gated stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PerStage {
    /// For moves into staging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staging: Vec<String>,
    /// For moves into production.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub production: Vec<String>,
}

impl PerStage {
    /// The entries for `stage` (none for ungated stages).
    #[must_use]
    pub fn for_stage(&self, stage: Stage) -> &[String] {
        match stage {
            Stage::Staging => &self.staging,
            Stage::Production => &self.production,
            Stage::Development | Stage::Archived => &[],
        }
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &String)> {
        self.staging
            .iter()
            .map(|s| ("staging", s))
            .chain(self.production.iter().map(|s| ("production", s)))
    }
}

/// A governance policy, set on a namespace and optionally overridden per model.
///
/// Every field is optional. A model's policy overrides its namespace's field by field: a field
/// the model policy sets replaces the namespace's whole field; a field it leaves out is
/// inherited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A regular expression the model part of every new model name in the namespace must match
    /// (anchored: the whole name must match). Checked when a model is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "^[a-z]+(-[a-z0-9]+)*$")]
    pub naming_rule: Option<String>,
    /// Metadata fields that must be present (non-empty) per target stage: `owner`,
    /// `training_data`, `code_commit`, `description`, `model_card`, `lineage.source_run_id`,
    /// `metrics.accuracy`, `hyperparameters.lr`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_metadata: Option<PerStage>,
    /// Model-card sections (Markdown headings, case-insensitive) that must be present with some
    /// text, per target stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_card_sections: Option<PerStage>,
    /// The model's risk level (default low).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskLevel>,
    /// Approvals each risk level needs for staging and production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalTable>,
    /// Metric gates per target stage: `accuracy >= 0.92`, `p99_latency_ms <= 300`,
    /// `accuracy >= production.accuracy - 0.005`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<PerStage>,
}

/// The most rules of one kind per stage.
pub const MAX_RULES: usize = 100;
/// The longest rule, field name, section title or naming rule.
pub const MAX_RULE_LEN: usize = 256;

/// Top-level fields of [`VersionMetadata`] that `required_metadata` may name.
pub const METADATA_FIELDS: &[&str] = &[
    "description",
    "owner",
    "training_data",
    "code_commit",
    "hyperparameters",
    "metrics",
    "frameworks",
    "resources",
    "lineage",
    "model_card",
];

impl Policy {
    /// The policy in force when `model` overrides `self` (a namespace policy) field by field.
    #[must_use]
    pub fn merged_with(&self, model: &Policy) -> Policy {
        Policy {
            naming_rule: model.naming_rule.clone().or_else(|| self.naming_rule.clone()),
            required_metadata: model
                .required_metadata
                .clone()
                .or_else(|| self.required_metadata.clone()),
            required_card_sections: model
                .required_card_sections
                .clone()
                .or_else(|| self.required_card_sections.clone()),
            risk: model.risk.or(self.risk),
            approvals: model.approvals.or(self.approvals),
            gates: model.gates.clone().or_else(|| self.gates.clone()),
        }
    }

    /// The risk level (low when unset).
    #[must_use]
    pub fn risk_level(&self) -> RiskLevel {
        self.risk.unwrap_or_default()
    }

    /// Approvals needed to move into `stage`: the configured count for the risk level, and at
    /// least one for a high-risk model (never gates alone).
    #[must_use]
    pub fn required_approvals(&self, stage: Stage) -> u32 {
        let risk = self.risk_level();
        let table = self.approvals.unwrap_or_default().for_level(risk);
        let configured = match stage {
            Stage::Staging => table.staging,
            Stage::Production => table.production,
            Stage::Development | Stage::Archived => return 0,
        };
        if risk == RiskLevel::High {
            configured.max(1)
        } else {
            configured
        }
    }

    /// Checks every rule of the policy except the naming rule's regular-expression syntax
    /// (checked by the server, which compiles it).
    ///
    /// # Errors
    /// `invalid_argument` naming the field and the rule at fault.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(rule) = &self.naming_rule {
            if rule.is_empty() || rule.len() > MAX_RULE_LEN {
                return Err(invalid(
                    "naming_rule",
                    format!("naming_rule must be 1-{MAX_RULE_LEN} bytes"),
                ));
            }
        }
        if let Some(req) = &self.required_metadata {
            check_count("required_metadata", req)?;
            for (stage, field) in req.all() {
                validate_field_path(field).map_err(|m| {
                    invalid(
                        "required_metadata",
                        format!("required_metadata.{stage}: {field:?}: {m}"),
                    )
                })?;
            }
        }
        if let Some(req) = &self.required_card_sections {
            check_count("required_card_sections", req)?;
            for (stage, section) in req.all() {
                let t = section.trim();
                if t.is_empty() || t.len() > MAX_RULE_LEN || t.chars().any(char::is_control) {
                    return Err(invalid(
                        "required_card_sections",
                        format!(
                            "required_card_sections.{stage}: {section:?}: a section title is 1-{MAX_RULE_LEN} printable characters"
                        ),
                    ));
                }
            }
        }
        if let Some(gates) = &self.gates {
            check_count("gates", gates)?;
            for (stage, rule) in gates.all() {
                GateRule::parse(rule)
                    .map_err(|m| invalid("gates", format!("gates.{stage}: rule {rule:?}: {m}")))?;
            }
        }
        Ok(())
    }

    /// Whether the policy says nothing at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Policy::default()
    }
}

fn invalid(field: &str, message: String) -> ValidationError {
    ValidationError::new(ErrorCode::InvalidArgument, field, message)
}

fn check_count(field: &str, p: &PerStage) -> Result<(), ValidationError> {
    if p.staging.len() > MAX_RULES || p.production.len() > MAX_RULES {
        return Err(invalid(
            field,
            format!("{field}: at most {MAX_RULES} entries per stage"),
        ));
    }
    Ok(())
}

fn validate_field_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_RULE_LEN {
        return Err(format!("a field is 1-{MAX_RULE_LEN} bytes"));
    }
    let head = path.split('.').next().unwrap_or_default();
    if !METADATA_FIELDS.contains(&head) {
        return Err(format!(
            "unknown metadata field {head:?}; known fields: {}",
            METADATA_FIELDS.join(", ")
        ));
    }
    if path.split('.').any(str::is_empty) {
        return Err("empty path segment".into());
    }
    Ok(())
}

/// A comparison operator of a gate rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOp {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
}

impl GateOp {
    /// The operator as written.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            GateOp::Ge => ">=",
            GateOp::Gt => ">",
            GateOp::Le => "<=",
            GateOp::Lt => "<",
            GateOp::Eq => "==",
        }
    }

    /// Whether `observed op required` holds.
    #[must_use]
    #[allow(clippy::float_cmp)]
    pub fn holds(self, observed: f64, required: f64) -> bool {
        match self {
            GateOp::Ge => observed >= required,
            GateOp::Gt => observed > required,
            GateOp::Le => observed <= required,
            GateOp::Lt => observed < required,
            GateOp::Eq => observed == required,
        }
    }
}

/// What a metric is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    /// A constant.
    Absolute(f64),
    /// The current production version's value of a metric, plus an offset.
    Production {
        /// The production metric.
        metric: String,
        /// Added to the production value (negative for `- c`).
        offset: f64,
    },
}

/// A parsed metric gate: `metric op threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRule {
    /// The version's metric.
    pub metric: String,
    /// The comparison.
    pub op: GateOp,
    /// What it is compared with.
    pub threshold: Threshold,
}

const RULE_SYNTAX: &str =
    "expected METRIC OP NUMBER or METRIC OP production.METRIC [+|- NUMBER], with OP one of >=, >, <=, <, ==";

fn metric_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a finite number; {RULE_SYNTAX}"))
}

impl GateRule {
    /// Parses a rule such as `accuracy >= production.accuracy - 0.005`.
    ///
    /// # Errors
    /// A message saying what is wrong and what the syntax is.
    pub fn parse(rule: &str) -> Result<GateRule, String> {
        if rule.len() > MAX_RULE_LEN {
            return Err(format!("a rule is at most {MAX_RULE_LEN} bytes"));
        }
        let (pos, op, len) = [
            (">=", GateOp::Ge),
            ("<=", GateOp::Le),
            ("==", GateOp::Eq),
            (">", GateOp::Gt),
            ("<", GateOp::Lt),
        ]
        .iter()
        .filter_map(|(text, op)| rule.find(text).map(|p| (p, *op, text.len())))
        .min_by_key(|(p, op, _)| (*p, !matches!(op, GateOp::Ge | GateOp::Le | GateOp::Eq)))
        .ok_or_else(|| format!("no comparison operator; {RULE_SYNTAX}"))?;
        let metric = rule[..pos].trim();
        let rhs = rule[pos + len..].trim();
        if !metric_name_ok(metric) {
            return Err(format!(
                "{metric:?} is not a metric name (letters, digits, _ - . / :); {RULE_SYNTAX}"
            ));
        }
        if rhs.is_empty() {
            return Err(format!("nothing to compare with; {RULE_SYNTAX}"));
        }
        if rhs.contains(['<', '>', '=']) {
            return Err(format!("more than one comparison operator; {RULE_SYNTAX}"));
        }
        let threshold = if let Some(rest) = rhs.strip_prefix("production.") {
            let tokens: Vec<&str> = rest.split_whitespace().collect();
            let (name, offset) = match tokens.as_slice() {
                [name] => (*name, 0.0),
                [name, sign, value] if *sign == "+" || *sign == "-" => {
                    let v = number(value)?;
                    (*name, if *sign == "-" { -v } else { v })
                }
                [name, signed] if signed.starts_with(['+', '-']) && signed.len() > 1 => {
                    (*name, number(signed)?)
                }
                _ => return Err(format!("cannot read {rhs:?}; {RULE_SYNTAX}")),
            };
            if !metric_name_ok(name) {
                return Err(format!("{name:?} is not a metric name; {RULE_SYNTAX}"));
            }
            Threshold::Production {
                metric: name.to_owned(),
                offset,
            }
        } else {
            Threshold::Absolute(number(rhs)?)
        };
        Ok(GateRule {
            metric: metric.to_owned(),
            op,
            threshold,
        })
    }
}

/// What a verdict checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// A metric gate.
    Metric,
    /// A required metadata field.
    Metadata,
    /// A required model-card section.
    ModelCard,
}

/// The verdict of one rule on one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GateVerdict {
    /// What was checked.
    pub kind: GateKind,
    /// The rule as written in the policy.
    pub rule: String,
    /// Whether it passed.
    pub passed: bool,
    /// What the version has (`0.91`, `missing`, `present`).
    pub observed: String,
    /// What the rule requires (`>= 0.92`, `>= 0.9255 (production v3: 0.9305 - 0.005)`,
    /// `present`).
    pub required: String,
    /// A note, e.g. `no production baseline: the rule passes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl GateVerdict {
    /// One line for people: `accuracy >= 0.92: failed (observed 0.91, required >= 0.92)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}: {} (observed {}, required {})",
            self.rule,
            if self.passed { "passed" } else { "failed" },
            self.observed,
            self.required
        );
        if let Some(n) = &self.note {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }
}

fn fmt_num(v: f64) -> String {
    // Up to 12 significant decimals without float noise such as 0.9250000000000001.
    let s = format!("{v:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

fn value_present(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::String(s) => !s.trim().is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => true,
    }
}

fn field_present(meta: &serde_json::Value, path: &str) -> bool {
    let mut cur = meta;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    value_present(cur)
}

/// The titles of the Markdown sections of a card that have some text, lowercased.
fn card_sections(card: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut has_text = false;
    for line in card.lines() {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && t[hashes..].starts_with([' ', '\t']) {
            if let Some(title) = current.take() {
                if has_text {
                    out.push(title);
                }
            }
            current = Some(t[hashes..].trim().trim_end_matches('#').trim().to_lowercase());
            has_text = false;
        } else if !t.trim().is_empty() {
            has_text = true;
        }
    }
    if let Some(title) = current {
        if has_text {
            out.push(title);
        }
    }
    out
}

/// Evaluates the gates of `policy` for moving `version` into `to`, against `production` (the
/// version in production now, if any; when it is `version` itself, relative rules compare the
/// version with itself).
#[must_use]
pub fn evaluate(
    policy: &Policy,
    version: &Version,
    production: Option<&Version>,
    to: Stage,
) -> Vec<GateVerdict> {
    let mut out = Vec::new();
    let meta = &version.metadata;
    if let Some(req) = &policy.required_metadata {
        let json = serde_json::to_value(meta).unwrap_or(serde_json::Value::Null);
        for field in req.for_stage(to) {
            let ok = field_present(&json, field);
            out.push(GateVerdict {
                kind: GateKind::Metadata,
                rule: format!("metadata {field}"),
                passed: ok,
                observed: if ok { "present" } else { "missing" }.into(),
                required: "present".into(),
                note: None,
            });
        }
    }
    if let Some(req) = &policy.required_card_sections {
        let sections = meta.model_card.as_deref().map(card_sections).unwrap_or_default();
        for section in req.for_stage(to) {
            let want = section.trim().to_lowercase();
            let ok = sections.contains(&want);
            out.push(GateVerdict {
                kind: GateKind::ModelCard,
                rule: format!("model card section {:?}", section.trim()),
                passed: ok,
                observed: if ok {
                    "present"
                } else if meta.model_card.is_none() {
                    "missing (no model card)"
                } else {
                    "missing"
                }
                .into(),
                required: "present with text".into(),
                note: None,
            });
        }
    }
    if let Some(gates) = &policy.gates {
        for rule in gates.for_stage(to) {
            out.push(evaluate_rule(rule, meta, production));
        }
    }
    out
}

fn evaluate_rule(rule: &str, meta: &VersionMetadata, production: Option<&Version>) -> GateVerdict {
    let mut v = GateVerdict {
        kind: GateKind::Metric,
        rule: rule.to_owned(),
        passed: false,
        observed: "missing".into(),
        required: String::new(),
        note: None,
    };
    let parsed = match GateRule::parse(rule) {
        Ok(p) => p,
        Err(e) => {
            v.required = "a valid rule".into();
            v.note = Some(e);
            return v;
        }
    };
    let observed = meta.metrics.get(&parsed.metric).copied();
    if let Some(o) = observed {
        v.observed = fmt_num(o);
    }
    let required = match &parsed.threshold {
        Threshold::Absolute(t) => {
            v.required = format!("{} {}", parsed.op.as_str(), fmt_num(*t));
            Some(*t)
        }
        Threshold::Production { metric, offset } => match production {
            None => {
                v.required = format!("{} production.{metric}", parsed.op.as_str());
                v.passed = true;
                v.note = Some("no production baseline (no version is in production): the rule passes".into());
                return v;
            }
            Some(p) => match p.metadata.metrics.get(metric) {
                None => {
                    v.required = format!("{} production.{metric}", parsed.op.as_str());
                    v.note = Some(format!(
                        "production version {} has no metric {metric:?}, so there is no baseline",
                        p.version
                    ));
                    return v;
                }
                Some(base) => {
                    // Rounded to 12 decimals so that 0.95 - 0.005 is 0.945, not 0.94499…
                    let raw = base + offset;
                    let t = if raw.abs() < 1e6 {
                        (raw * 1e12).round() / 1e12
                    } else {
                        raw
                    };
                    let adj = if *offset == 0.0 {
                        String::new()
                    } else if *offset < 0.0 {
                        format!(" - {}", fmt_num(-offset))
                    } else {
                        format!(" + {}", fmt_num(*offset))
                    };
                    v.required = format!(
                        "{} {} (production v{}: {}{adj})",
                        parsed.op.as_str(),
                        fmt_num(t),
                        p.version,
                        fmt_num(*base)
                    );
                    Some(t)
                }
            },
        },
    };
    match (observed, required) {
        (Some(o), Some(r)) => v.passed = parsed.op.holds(o, r),
        (None, _) => v.note = Some(format!("the version has no metric {:?}", parsed.metric)),
        (Some(_), None) => {}
    }
    v
}

/// Where a policy is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyScope {
    /// On a namespace (every model in it).
    Namespace,
    /// On one model (overriding its namespace's policy field by field).
    Model,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredPolicy {
    /// Namespace or model.
    pub scope: PolicyScope,
    /// The namespace (`acme`) or model (`acme/bot`) it is set on.
    pub target: String,
    /// The policy.
    pub policy: Policy,
    /// Revision, increased on each change (the ETag is `"<revision>"`).
    pub revision: u64,
    /// Who last changed it.
    pub updated_by: String,
    /// When.
    pub updated_at: String,
}

/// The policy in force for a model, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EffectivePolicy {
    /// `ns/model`.
    pub model: String,
    /// The merged policy (absent: no policy applies, every move the state machine allows goes
    /// through as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// The namespace policy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_policy: Option<StoredPolicy>,
    /// The model policy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_policy: Option<StoredPolicy>,
}

impl EffectivePolicy {
    /// Builds the effective policy from the stored ones.
    #[must_use]
    pub fn from_parts(model: String, ns: Option<StoredPolicy>, m: Option<StoredPolicy>) -> Self {
        let policy = match (&ns, &m) {
            (None, None) => None,
            (Some(n), None) => Some(n.policy.clone()),
            (None, Some(m)) => Some(m.policy.clone()),
            (Some(n), Some(m)) => Some(n.policy.merged_with(&m.policy)),
        };
        Self {
            model,
            policy,
            namespace_policy: ns,
            model_policy: m,
        }
    }

    /// Where the policy comes from, for people (`namespace acme + model acme/bot`).
    #[must_use]
    pub fn source(&self) -> String {
        let parts: Vec<String> = [
            self.namespace_policy
                .as_ref()
                .map(|p| format!("namespace {}", p.target)),
            self.model_policy.as_ref().map(|p| format!("model {}", p.target)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }
}

/// Where a transition request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Gates passed; waiting for approvals.
    Pending,
    /// The version moved.
    Completed,
    /// A reviewer rejected it.
    Rejected,
    /// The requester withdrew it.
    Cancelled,
    /// The version moved by other means; the request no longer applies.
    Superseded,
    /// A gate failed (at request time or when it was about to complete); nothing moved.
    GatesFailed,
}

impl RequestState {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Completed => "completed",
            RequestState::Rejected => "rejected",
            RequestState::Cancelled => "cancelled",
            RequestState::Superseded => "superseded",
            RequestState::GatesFailed => "gates_failed",
        }
    }

    /// Every state.
    pub const ALL: [RequestState; 6] = [
        RequestState::Pending,
        RequestState::Completed,
        RequestState::Rejected,
        RequestState::Cancelled,
        RequestState::Superseded,
        RequestState::GatesFailed,
    ];
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "state",
                    format!(
                        "unknown request state {s:?}; one of: {}",
                        RequestState::ALL.map(RequestState::as_str).join(", ")
                    ),
                )
            })
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Approve.
    Approve,
    /// Reject.
    Reject,
}

/// One review of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Review {
    /// Who.
    pub reviewer: String,
    /// Approve or reject.
    pub decision: Decision,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When.
    pub at: String,
}

/// A request to move a version into a gated stage, with its gate verdicts and reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransitionRequest {
    /// Id.
    pub id: u64,
    /// `ns/model`.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// The stage the version was in when requested.
    #[schema(value_type = String, example = "staging")]
    pub from_stage: Stage,
    /// The stage requested.
    #[schema(value_type = String, example = "production")]
    pub to_stage: Stage,
    /// Where it stands.
    pub state: RequestState,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The risk level of the policy in force.
    pub risk: RiskLevel,
    /// Where the policy comes from (`namespace acme + model acme/bot`).
    pub policy_source: String,
    /// Whether every gate passed at the last evaluation.
    pub gates_passed: bool,
    /// Each rule's verdict at the last evaluation.
    pub verdicts: Vec<GateVerdict>,
    /// The production version relative gates compared against (none: no production version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_version: Option<u64>,
    /// Approvals needed.
    pub required_approvals: u32,
    /// Distinct approvals so far.
    pub approvals: u32,
    /// Every review, oldest first.
    pub reviews: Vec<Review>,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Who closed it (completed, rejected, cancelled), if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// Why it closed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

impl TransitionRequest {
    /// The verdicts that failed.
    pub fn failed(&self) -> impl Iterator<Item = &GateVerdict> {
        self.verdicts.iter().filter(|v| !v.passed)
    }
}

/// A page of transition requests.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransitionList {
    /// Requests, newest first.
    pub requests: Vec<TransitionRequest>,
}

/// Approve, reject, complete or cancel a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Why (kept with the review and in the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What asking for a stage change led to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // short-lived: answered at once
pub enum TransitionOutcome {
    /// The version moved (no policy, or the gates passed and no approval is needed).
    Moved {
        /// The change.
        change: StageChange,
        /// The completed request, when a policy applied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<TransitionRequest>,
    },
    /// The gates passed; the request waits for approvals.
    Pending {
        /// The request.
        request: TransitionRequest,
    },
    /// A gate failed; the request is stored with its verdicts and nothing moved.
    Blocked {
        /// The request.
        request: TransitionRequest,
    },
}

/// One version in a comparison.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComparedVersion {
    /// Version number.
    pub version: u64,
    /// Stage.
    #[schema(value_type = String)]
    pub stage: Stage,
    /// Draft or sealed.
    pub state: crate::VersionState,
    /// Manifest digest, once sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// Whether it would pass the gates into staging under the current policy.
    pub staging_gates_passed: bool,
    /// Whether it would pass the gates into production under the current policy.
    pub production_gates_passed: bool,
    /// The verdicts for staging.
    pub staging_verdicts: Vec<GateVerdict>,
    /// The verdicts for production.
    pub production_verdicts: Vec<GateVerdict>,
}

/// One row of a comparison: a field's value in each version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComparedField {
    /// Field, metric or parameter name.
    pub name: String,
    /// Its value in each version, in the order asked (null: absent).
    #[schema(value_type = Vec<Object>)]
    pub values: Vec<serde_json::Value>,
    /// Whether the values differ.
    pub differs: bool,
}

/// One metric across versions with deltas against the first version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComparedMetric {
    /// Metric name.
    pub name: String,
    /// Its value in each version (null: absent).
    pub values: Vec<Option<f64>>,
    /// Value minus the first version's value (null when either is absent; 0 for the first).
    pub deltas: Vec<Option<f64>>,
}

/// Versions side by side.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Comparison {
    /// `ns/model`.
    pub model: String,
    /// The versions compared, in the order asked; deltas are against the first.
    pub versions: Vec<ComparedVersion>,
    /// The version in production now (the baseline of relative gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_version: Option<u64>,
    /// Where the policy comes from (`none` when no policy applies).
    pub policy_source: String,
    /// Descriptive metadata (description, owner, training data, commit, lineage, frameworks,
    /// resources).
    pub metadata: Vec<ComparedField>,
    /// Hyperparameters.
    pub params: Vec<ComparedField>,
    /// Metrics with deltas.
    pub metrics: Vec<ComparedMetric>,
}

/// Builds the per-field rows of a comparison.
#[must_use]
pub fn compare_fields(
    versions: &[&Version],
) -> (Vec<ComparedField>, Vec<ComparedField>, Vec<ComparedMetric>) {
    let metas: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| serde_json::to_value(&v.metadata).unwrap_or(serde_json::Value::Null))
        .collect();
    let row = |name: String, values: Vec<serde_json::Value>| {
        let differs = values.windows(2).any(|w| w[0] != w[1]);
        ComparedField {
            name,
            values,
            differs,
        }
    };
    let mut metadata = Vec::new();
    for field in [
        "description",
        "owner",
        "training_data",
        "code_commit",
        "lineage",
        "frameworks",
        "resources",
    ] {
        let values: Vec<serde_json::Value> = metas
            .iter()
            .map(|m| m.get(field).cloned().unwrap_or(serde_json::Value::Null))
            .collect();
        metadata.push(row(field.to_owned(), values));
    }
    let cards: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| {
            v.metadata
                .model_card
                .as_deref()
                .map_or(serde_json::Value::Null, |c| {
                    serde_json::Value::from(format!("{} bytes", c.len()))
                })
        })
        .collect();
    metadata.push(row("model_card".into(), cards));
    let mut param_names: Vec<&String> = versions
        .iter()
        .flat_map(|v| v.metadata.hyperparameters.keys())
        .collect();
    param_names.sort();
    param_names.dedup();
    let params = param_names
        .into_iter()
        .map(|p| {
            let values = versions
                .iter()
                .map(|v| {
                    v.metadata
                        .hyperparameters
                        .get(p)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null)
                })
                .collect();
            row(p.clone(), values)
        })
        .collect();
    let mut metric_names: BTreeMap<&String, ()> = BTreeMap::new();
    for v in versions {
        for k in v.metadata.metrics.keys() {
            metric_names.insert(k, ());
        }
    }
    let metrics = metric_names
        .into_keys()
        .map(|m| {
            let values: Vec<Option<f64>> = versions
                .iter()
                .map(|v| v.metadata.metrics.get(m).copied())
                .collect();
            let first = values.first().copied().flatten();
            let deltas = values
                .iter()
                .map(|v| match (first, v) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                })
                .collect();
            ComparedMetric {
                name: m.clone(),
                values,
                deltas,
            }
        })
        .collect();
    (metadata, params, metrics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn version(n: u64, metrics: &[(&str, f64)]) -> Version {
        Version {
            model: "acme/bot".into(),
            version: n,
            state: crate::VersionState::Sealed,
            stage: Stage::Staging,
            metadata: VersionMetadata {
                metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                ..VersionMetadata::default()
            },
            tags: crate::Tags::new(),
            files: Vec::new(),
            total_size: 0,
            digest: None,
            aliases: Vec::new(),
            created_by: "a".into(),
            created_at: String::new(),
            sealed_at: None,
            stage_changed_at: String::new(),
            revision: 1,
        }
    }

    #[test]
    fn parses_rules() {
        let r = GateRule::parse("accuracy >= 0.92").unwrap();
        assert_eq!(r.metric, "accuracy");
        assert_eq!(r.op, GateOp::Ge);
        assert_eq!(r.threshold, Threshold::Absolute(0.92));
        let r = GateRule::parse("p99_latency_ms<300").unwrap();
        assert_eq!(r.op, GateOp::Lt);
        let r = GateRule::parse("accuracy >= production.accuracy - 0.005").unwrap();
        assert_eq!(
            r.threshold,
            Threshold::Production {
                metric: "accuracy".into(),
                offset: -0.005
            }
        );
        let r = GateRule::parse("loss <= production.loss +0.1").unwrap();
        assert_eq!(
            r.threshold,
            Threshold::Production {
                metric: "loss".into(),
                offset: 0.1
            }
        );
        for bad in [
            "",
            "accuracy",
            "accuracy >= ",
            ">= 0.9",
            "accuracy >= high",
            "accuracy >= 0.9 >= 1",
            "acc uracy >= 1",
            "accuracy >= production.",
            "accuracy >= production.accuracy * 2",
            "accuracy >= NaN",
            "accuracy => 0.9",
        ] {
            assert!(GateRule::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn odd_input_is_refused_without_panicking() {
        for odd in [
            "é >= 1",
            "a >= é",
            "≥ 1",
            "a >= production.é - 1",
            "a >= production.b - ",
            "a >= production.b -- 1",
            "a >= 1e400",
            "a >= -inf",
            "<",
            ">=",
            "a <",
            "\u{0} >= 1",
        ] {
            assert!(GateRule::parse(odd).is_err(), "{odd:?} parsed");
        }
        assert!(GateRule::parse(&"a".repeat(300)).is_err());
        let card = "#\n##\n### é\ntext\n#### \n";
        assert_eq!(card_sections(card), vec!["é".to_owned()]);
    }

    #[test]
    fn absolute_and_relative_gates() {
        let policy = Policy {
            gates: Some(PerStage {
                staging: vec![],
                production: vec![
                    "accuracy >= 0.92".into(),
                    "accuracy >= production.accuracy - 0.005".into(),
                    "p99_latency_ms <= 300".into(),
                ],
            }),
            ..Policy::default()
        };
        let prod = version(1, &[("accuracy", 0.95)]);
        let cand = version(2, &[("accuracy", 0.945), ("p99_latency_ms", 310.0)]);
        let v = evaluate(&policy, &cand, Some(&prod), Stage::Production);
        assert_eq!(v.len(), 3);
        assert!(v[0].passed);
        assert!(v[1].passed, "{v:?}");
        assert!(!v[2].passed);
        assert_eq!(v[2].observed, "310");
        let better_prod = version(1, &[("accuracy", 0.96)]);
        let v = evaluate(&policy, &cand, Some(&better_prod), Stage::Production);
        assert!(!v[1].passed);
        assert!(v[1].required.contains("production v1"), "{}", v[1].required);
        // No baseline: passes, and says so.
        let v = evaluate(&policy, &cand, None, Stage::Production);
        assert!(v[1].passed);
        assert!(v[1]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("no production baseline"));
        // Missing metric fails.
        let v = evaluate(&policy, &version(3, &[]), None, Stage::Production);
        assert!(!v[0].passed);
        assert_eq!(v[0].observed, "missing");
        // Staging has no gates.
        assert!(evaluate(&policy, &cand, None, Stage::Staging).is_empty());
    }

    #[test]
    fn metadata_and_card_sections() {
        let policy = Policy {
            required_metadata: Some(PerStage {
                staging: vec!["owner".into(), "lineage.source_run_id".into()],
                production: vec![],
            }),
            required_card_sections: Some(PerStage {
                staging: vec!["Intended use".into(), "Limitations".into()],
                production: vec![],
            }),
            ..Policy::default()
        };
        let mut v = version(1, &[]);
        v.metadata.owner = Some("ml".into());
        v.metadata.model_card = Some("# Bot\n## Intended use\nSupport.\n## Limitations\n\n".into());
        let out = evaluate(&policy, &v, None, Stage::Staging);
        assert!(out[0].passed);
        assert!(!out[1].passed);
        assert!(out[2].passed);
        assert!(!out[3].passed, "an empty section does not count");
        assert!(policy.validate().is_ok());
        let bad = Policy {
            required_metadata: Some(PerStage {
                staging: vec!["ownr".into()],
                production: vec![],
            }),
            ..Policy::default()
        };
        assert!(bad.validate().unwrap_err().message.contains("ownr"));
    }

    #[test]
    fn approvals_and_merge() {
        let ns = Policy {
            risk: Some(RiskLevel::Medium),
            gates: Some(PerStage {
                staging: vec!["a >= 1".into()],
                production: vec![],
            }),
            ..Policy::default()
        };
        assert_eq!(ns.required_approvals(Stage::Production), 1);
        assert_eq!(ns.required_approvals(Stage::Staging), 0);
        let model = Policy {
            risk: Some(RiskLevel::High),
            approvals: Some(ApprovalTable {
                high: Some(StageApprovals {
                    staging: 0,
                    production: 0,
                }),
                ..ApprovalTable::default()
            }),
            ..Policy::default()
        };
        let m = ns.merged_with(&model);
        assert_eq!(m.risk_level(), RiskLevel::High);
        assert_eq!(m.gates, ns.gates);
        // High risk never goes on gates alone.
        assert_eq!(m.required_approvals(Stage::Production), 1);
        assert_eq!(m.required_approvals(Stage::Staging), 1);
        assert_eq!(m.required_approvals(Stage::Archived), 0);
    }
}
