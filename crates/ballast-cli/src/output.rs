//! What the CLI prints: JSON on stdout with `--json`, aligned tables and `key: value` blocks
//! otherwise, and errors as `error: <code>: <message>` on stderr (plus the error body as JSON on
//! stdout with `--json`), with the exit code that goes with them.

use std::fmt::Write as _;
use std::process::ExitCode;

use ballast_api::{Model, Version};
use ballast_client::ClientError;
use serde::Serialize;

/// The command was interrupted (Ctrl-C); exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// A command whose result is a failure without an error from the registry (e.g. a broken audit
/// chain): the message is already printed; exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// Prints a line on stdout. A closed pipe (`ballast … | head`) ends the output quietly
/// instead of panicking as `println!` would.
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}

/// Writes one line to stdout, ignoring a closed pipe.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    outln!("{}", render_table(headers, rows).trim_end_matches('\n'));
}

fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in pairs {
        outln!("{:<width$} {v}", format!("{k}:"));
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
#[must_use]
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// The first 12 characters of a digest, or `-`.
#[must_use]
pub fn short_digest(d: Option<&str>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| d.chars().take(12).collect())
}

/// Tags as `k=v, k=v`, or `-`.
#[must_use]
pub fn tags(tags: &ballast_api::Tags) -> String {
    if tags.is_empty() {
        return "-".into();
    }
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `draft` or `sealed`.
#[must_use]
pub fn state(s: ballast_api::VersionState) -> &'static str {
    match s {
        ballast_api::VersionState::Draft => "draft",
        ballast_api::VersionState::Sealed => "sealed",
    }
}

/// A model as `key: value` lines.
pub fn model(m: &Model) {
    let aliases = if m.aliases.is_empty() {
        "-".to_owned()
    } else {
        m.aliases
            .iter()
            .map(|(a, v)| format!("{a}→{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    fields(&[
        ("name", m.name.clone()),
        ("description", m.description.clone()),
        ("tags", tags(&m.tags)),
        ("latest version", m.latest_version.to_string()),
        (
            "production",
            m.production_version.map_or_else(|| "-".into(), |v| v.to_string()),
        ),
        ("aliases", aliases),
        ("created", format!("{} by {}", m.created_at, m.created_by)),
        ("updated", m.updated_at.clone()),
        ("revision", m.revision.to_string()),
    ]);
}

/// A version as `key: value` lines and a table of its files.
pub fn version(v: &Version) {
    let meta = &v.metadata;
    let mut pairs = vec![
        ("version", format!("{}/{}", v.model, v.version)),
        ("state", state(v.state).to_owned()),
        ("stage", v.stage.to_string()),
        ("digest", v.digest.clone().unwrap_or_else(|| "- (draft)".into())),
        (
            "size",
            format!("{} in {} files", size(v.total_size), v.files.len()),
        ),
        (
            "aliases",
            if v.aliases.is_empty() {
                "-".into()
            } else {
                v.aliases.join(", ")
            },
        ),
        ("tags", tags(&v.tags)),
        ("description", meta.description.clone()),
    ];
    // Versions registered through MLflow from a source the registry could not read hold only a
    // reference to it: say so next to the digest.
    if v.tags.get("ballast.source_verified").map(String::as_str) == Some("false") {
        pairs.insert(
            4,
            (
                "source",
                "UNVERIFIED: an external reference the registry could not read (see ballast-external-source.json)"
                    .to_owned(),
            ),
        );
    }
    if let Some(o) = &meta.owner {
        pairs.push(("owner", o.clone()));
    }
    if !meta.metrics.is_empty() {
        let m = meta
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>();
        pairs.push(("metrics", m.join(", ")));
    }
    pairs.push(("created", format!("{} by {}", v.created_at, v.created_by)));
    if let Some(s) = &v.sealed_at {
        pairs.push(("sealed", s.clone()));
    }
    pairs.push(("stage changed", v.stage_changed_at.clone()));
    pairs.push(("revision", v.revision.to_string()));
    fields(&pairs);
    if !v.files.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = v
            .files
            .iter()
            .map(|f| vec![f.path.clone(), size(f.size), short_digest(Some(&f.sha256))])
            .collect();
        table(&["PATH", "SIZE", "SHA256"], &rows);
    }
}

/// Reports a failed command and returns its exit code.
pub fn report_error(err: &anyhow::Error, json_mode: bool) -> ExitCode {
    if err.is::<Interrupted>() {
        eprintln!("error: interrupted; nothing was left half-written");
        return ExitCode::from(130);
    }
    if let Some(Failed(msg)) = err.downcast_ref::<Failed>() {
        eprintln!("error: {msg}");
        return ExitCode::from(1);
    }
    let client = err.chain().find_map(|e| e.downcast_ref::<ClientError>());
    // Context added above the client error ("uploading weights.bin", …).
    let context: Vec<String> = err
        .chain()
        .take_while(|e| !e.is::<ClientError>())
        .map(ToString::to_string)
        .collect();
    match client.and_then(|c| c.body().map(|b| (c, b))) {
        Some((c, body)) => {
            let mut line = format!("error: {}: ", body.error.code);
            for ctx in &context {
                let _ = write!(line, "{ctx}: ");
            }
            line.push_str(&body.error.message);
            eprintln!("{line}");
            if let Some(h) = c.hint() {
                eprintln!("hint: {h}");
            }
            if let ClientError::Api {
                request_id: Some(id),
                status,
                ..
            } = c
            {
                if *status >= 500 {
                    eprintln!("request id: {id}");
                }
            }
            if json_mode {
                let _ = json(body);
            }
        }
        None => {
            eprintln!("error: {err:#}");
            if json_mode {
                let code = if client.is_some_and(ClientError::is_transport) {
                    "unavailable"
                } else {
                    "invalid_argument"
                };
                let _ = json(&serde_json::json!({
                    "error": { "code": code, "message": format!("{err:#}") }
                }));
            }
        }
    }
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
    }

    #[test]
    fn tables_align_columns() {
        let t = render_table(
            &["NAME", "N"],
            &[vec!["acme/bot".into(), "3".into()], vec!["x".into(), "12".into()]],
        );
        assert_eq!(t, "NAME      N\nacme/bot  3\nx         12\n");
    }
}
