//! The figures compared with their targets: printed as a table and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// One figure and its target.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured.
    pub figure: String,
    /// The measured value, in `unit`.
    pub measured: f64,
    /// Unit of `measured` and `target`.
    pub unit: &'static str,
    /// `>=` or `<` (a pass means `measured <op> target`).
    pub op: &'static str,
    /// The target.
    pub target: f64,
    /// Whether the target is met.
    pub pass: bool,
}

impl Check {
    /// `measured >= target`.
    pub fn at_least(figure: impl Into<String>, measured: f64, target: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            measured,
            unit,
            op: ">=",
            target,
            pass: measured >= target,
        }
    }

    /// `measured < target`.
    pub fn below(figure: impl Into<String>, measured: f64, target: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            measured,
            unit,
            op: "<",
            target,
            pass: measured < target,
        }
    }

    /// A figure reported for context, with no target (always passes).
    pub fn info(figure: impl Into<String>, measured: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            measured,
            unit,
            op: "info",
            target: 0.0,
            pass: true,
        }
    }

    /// A yes/no property that must hold.
    pub fn holds(figure: impl Into<String>, ok: bool) -> Self {
        Self {
            figure: figure.into(),
            measured: if ok { 1.0 } else { 0.0 },
            unit: "bool",
            op: ">=",
            target: 1.0,
            pass: ok,
        }
    }

    fn show(&self, v: f64) -> String {
        match self.unit {
            "bool" => (if v >= 1.0 { "yes" } else { "no" }).to_owned(),
            "%" => format!("{v:.1} %"),
            "ms" if v < 100.0 => format!("{v:.3} ms"),
            unit if v >= 100.0 => format!("{} {unit}", thousands(v)),
            unit => format!("{v:.2} {unit}"),
        }
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the checks as a table.
pub fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 4]> = checks
        .iter()
        .map(|c| {
            let target = if c.op == "info" {
                "—".to_owned()
            } else if c.unit == "bool" {
                "yes".to_owned()
            } else {
                format!("{} {}", if c.op == ">=" { "≥" } else { "<" }, c.show(c.target))
            };
            [
                c.figure.clone(),
                c.show(c.measured),
                target,
                (if c.op == "info" {
                    "info"
                } else if c.pass {
                    "pass"
                } else {
                    "FAIL"
                })
                .to_owned(),
            ]
        })
        .collect();
    let header = ["figure", "measured", "target", "pass/fail"];
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 4]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(width) {
            let pad = w - cell.chars().count();
            let _ = write!(s, " {cell}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('|');
    for w in width {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// Writes `value` as pretty JSON to `path`, creating parent directories.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up() {
        let t = table(&[
            Check::at_least("alias resolution", 23_456.7, 20_000.0, "req/s"),
            Check::below("peak RSS", 120.0, 100.0, "MB"),
            Check::holds("gap-free", true),
        ]);
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
        assert!(
            t.contains("23,457 req/s") && t.contains("FAIL") && t.contains("≥ 20,000 req/s"),
            "{t}"
        );
    }
}
