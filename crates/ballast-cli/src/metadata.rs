//! Reading a version's metadata from a YAML or JSON file (`--meta`), strictly: the file must
//! match `ballast_api::VersionMetadata`, and an unknown or misspelt field is an error that
//! names it.

use std::path::Path;

use anyhow::Context as _;
use ballast_api::VersionMetadata;

/// Loads metadata from `path`: JSON when the name ends in `.json`, YAML otherwise (YAML also
/// reads JSON). An empty file is empty metadata.
///
/// # Errors
/// When the file cannot be read or does not match the metadata's shape.
pub fn load(path: &Path) -> anyhow::Result<VersionMetadata> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the metadata file {}", path.display()))?;
    parse(&text, is_json(path)).with_context(|| format!("invalid metadata file {}", path.display()))
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Parses metadata text.
fn parse(text: &str, json: bool) -> anyhow::Result<VersionMetadata> {
    if text.trim().is_empty() {
        return Ok(VersionMetadata::default());
    }
    let meta: VersionMetadata = if json {
        serde_json::from_str(text)?
    } else {
        serde_yaml::from_str(text)?
    };
    if let Some((name, _)) = meta.metrics.iter().find(|(_, v)| !v.is_finite()) {
        anyhow::bail!("metric {name:?} must be a finite number");
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_read_the_same_metadata() {
        let yaml = "description: first cut\nowner: ml-team\nmetrics:\n  accuracy: 0.93\n\
                    hyperparameters:\n  lr: 0.001\n  layers: [4, 8]\nresources:\n  gpu_count: 1\n\
                    lineage:\n  datasets: [s3://bucket/train]\n";
        let json = r#"{"description":"first cut","owner":"ml-team","metrics":{"accuracy":0.93},
            "hyperparameters":{"lr":0.001,"layers":[4,8]},"resources":{"gpu_count":1},
            "lineage":{"datasets":["s3://bucket/train"]}}"#;
        let a = parse(yaml, false).unwrap_or_else(|e| unreachable!("{e:#}"));
        let b = parse(json, true).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(a, b);
        assert_eq!(a.metrics.get("accuracy"), Some(&0.93));
        assert_eq!(a.resources.gpu_count, Some(1));
    }

    #[test]
    fn unknown_fields_are_named() {
        for (text, json, field) in [
            ("descripton: x\n", false, "descripton"),
            ("resources:\n  gpus: 2\n", false, "gpus"),
            (r#"{"lineage": {"run": "r1"}}"#, true, "run"),
        ] {
            let err = parse(text, json)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
        }
    }

    #[test]
    fn wrong_types_and_non_finite_metrics_are_refused() {
        assert!(parse("metrics:\n  accuracy: high\n", false).is_err());
        assert!(parse("metrics:\n  accuracy: .nan\n", false).is_err());
        assert_eq!(parse("  \n", false).ok(), Some(VersionMetadata::default()));
    }

    #[test]
    fn files_are_read_by_extension() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let j = dir.path().join("meta.JSON");
        std::fs::write(&j, r#"{"owner":"x"}"#).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(load(&j).ok().and_then(|m| m.owner), Some("x".into()));
        let missing = load(&dir.path().join("nope.yaml"))
            .err()
            .map(|e| format!("{e:#}"));
        assert!(missing.unwrap_or_default().contains("nope.yaml"));
    }
}
