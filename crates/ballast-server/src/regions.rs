//! Artifact regions on the server: opening the blob stores the configuration names (one, or
//! one per region), running the replicator, and publishing replication metrics.
//!
//! With `blob_regions` the server's blob store is a [`RegionalBlobStore`]; without, it is the
//! single configured store, wrapped as a one-region [`RegionalBlobStore`] only for the status
//! and fsck endpoints (which then work the same way).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use ballast_blob::regional::{RegionStatus, RegionalCounters};
use ballast_blob::{BlobLocation, BlobStore, Region, RegionalBlobStore};

use crate::config::Config;
use crate::state::AppState;

/// How often replication metrics are refreshed in the background.
const METRICS_EVERY: Duration = Duration::from_secs(10);

/// A `NAME=URL` region setting, parsed.
#[derive(Debug)]
struct RegionSetting {
    name: String,
    location: BlobLocation,
    /// `?endpoint=`: this region's S3 endpoint instead of the shared `s3_endpoint`.
    endpoint: Option<String>,
    /// `?region=`: this region's S3 region instead of the shared `s3_region`.
    s3_region: Option<String>,
}

impl RegionSetting {
    fn s3_options(&self, config: &Config) -> ballast_blob::S3Options {
        let mut o = config.s3_options();
        if let Some(e) = &self.endpoint {
            o.endpoint = Some(e.clone());
        }
        if let Some(r) = &self.s3_region {
            o.region = Some(r.clone());
        }
        o
    }
}

/// Parses `NAME=URL[?endpoint=URL][&region=NAME]`.
fn parse_region(entry: &str) -> anyhow::Result<RegionSetting> {
    let Some((name, url)) = entry.split_once('=') else {
        bail!("invalid blob region {entry:?}: expected NAME=URL, e.g. eu-west=s3://bucket/prefix");
    };
    let name = name.trim();
    if !ballast_blob::valid_queue_name(name) {
        bail!("invalid blob region name {name:?}: use 1 to 63 lowercase letters, digits, '-' or '_'");
    }
    let (url, query) = url.trim().split_once('?').unwrap_or((url.trim(), ""));
    let location: BlobLocation = url.parse().map_err(|e| anyhow!("blob region {name}: {e}"))?;
    let mut setting = RegionSetting {
        name: name.to_owned(),
        location,
        endpoint: None,
        s3_region: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !matches!(setting.location, BlobLocation::S3 { .. }) {
            bail!("blob region {name}: options (?{key}=) apply to s3:// regions only");
        }
        match key {
            "endpoint" if value.starts_with("http://") || value.starts_with("https://") => {
                setting.endpoint = Some(value.to_owned());
            }
            "endpoint" => {
                bail!("blob region {name}: the endpoint must be an http:// or https:// URL, not {value:?}")
            }
            "region" if !value.is_empty() => setting.s3_region = Some(value.to_owned()),
            _ => bail!("blob region {name}: unknown option {pair:?} (expected endpoint=URL or region=NAME)"),
        }
    }
    Ok(setting)
}

/// Opens the blob store(s) of `config`: the store handlers use, and the regional view of it.
///
/// # Errors
/// When the settings are invalid, or the local store cannot be opened. Another region that
/// cannot be reached at start is opened on first use instead.
pub(crate) async fn open(config: &Config) -> anyhow::Result<(Arc<dyn BlobStore>, Arc<RegionalBlobStore>)> {
    if config.blob_regions.is_empty() {
        if let Some(local) = &config.local_region {
            bail!("local_region {local:?} is set but no blob_regions are configured");
        }
        let location = config.blob_location()?;
        let store = ballast_blob::open_store(&location, config.s3_options())
            .await
            .map_err(|e| anyhow!("cannot open the blob store at {location}: {e}"))?;
        let single = RegionalBlobStore::single(location.to_string(), Arc::clone(&store));
        return Ok((store, Arc::new(single)));
    }
    if config.blob_url.is_some() {
        bail!("blob_url and blob_regions cannot both be set: give the single store as one of the regions");
    }
    let parsed = config
        .blob_regions
        .iter()
        .map(|e| parse_region(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local = match &config.local_region {
        Some(want) => parsed.iter().position(|r| &r.name == want).ok_or_else(|| {
            let names: Vec<&str> = parsed.iter().map(|r| r.name.as_str()).collect();
            anyhow!(
                "local_region {want:?} is not one of the blob regions ({})",
                names.join(", ")
            )
        })?,
        None => 0,
    };
    let mut regions = Vec::with_capacity(parsed.len());
    for (i, setting) in parsed.into_iter().enumerate() {
        let s3 = setting.s3_options(config);
        let shown = match &setting.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", setting.location),
            None => setting.location.to_string(),
        };
        let RegionSetting { name, location, .. } = setting;
        match ballast_blob::open_store(&location, s3.clone()).await {
            Ok(store) => regions.push(Region::new(name, shown, store)),
            Err(e) if i == local => {
                bail!("cannot open the local blob region {name} at {shown}: {e}")
            }
            Err(e) => {
                tracing::warn!(region = %name, location = %shown, error = %e, "a blob region is unreachable; it will be opened when it answers");
                regions.push(Region::lazy(name, location, s3));
            }
        }
    }
    let regional = Arc::new(RegionalBlobStore::new(regions, local)?);
    Ok((Arc::clone(&regional) as Arc<dyn BlobStore>, regional))
}

/// Runs the replicator (when there are several regions) and refreshes replication metrics,
/// until the server shuts down.
pub(crate) fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let regions = Arc::clone(&state.regions);
    let stop = state.shutdown.subscribe();
    tokio::spawn(async move {
        let several = regions.regions().len() > 1;
        let replicate = {
            let (regions, stop) = (Arc::clone(&regions), stop.clone());
            async move {
                if several {
                    regions.replicate(stop).await;
                }
            }
        };
        let refresh = {
            let mut stop = stop;
            async move {
                if !several {
                    return;
                }
                loop {
                    record(&regions.status().await, regions.counters());
                    tokio::select! {
                        () = tokio::time::sleep(METRICS_EVERY) => {}
                        r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                    }
                }
            }
        };
        tokio::join!(replicate, refresh);
    })
}

/// Publishes the regions' state and the replication totals as metrics.
pub(crate) fn record(status: &[RegionStatus], c: RegionalCounters) {
    #[allow(clippy::cast_precision_loss)]
    for r in status {
        let region = r.name.clone();
        metrics::gauge!("ballast_blob_region_up", "region" => region.clone()).set(if r.reachable {
            1.0
        } else {
            0.0
        });
        if r.local {
            continue;
        }
        if let Some(q) = r.queued {
            metrics::gauge!("ballast_replication_queue", "region" => region.clone()).set(q as f64);
        }
        if let Some(lag) = r.lag {
            metrics::gauge!("ballast_replication_lag_seconds", "region" => region).set(lag.as_secs_f64());
        }
    }
    metrics::counter!("ballast_replication_copies_total", "outcome" => "ok").absolute(c.replicated);
    metrics::counter!("ballast_replication_copies_total", "outcome" => "failed")
        .absolute(c.replication_failures);
    metrics::counter!("ballast_blob_fallback_reads_total").absolute(c.fallback_reads);
    metrics::counter!("ballast_blob_repairs_total", "outcome" => "ok").absolute(c.repairs);
    metrics::counter!("ballast_blob_repairs_total", "outcome" => "failed").absolute(c.repair_failures);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn region_settings_are_checked() {
        assert!(parse_region("eu-west=s3://bucket/p").is_ok());
        assert!(parse_region("backup=file:///srv/b").is_ok());
        let r = parse_region("us=s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-2").unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(r.s3_region.as_deref(), Some("us-east-2"));
        let o = r.s3_options(&Config::default());
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        for bad in [
            "eu-west",
            "=s3://bucket",
            "EU=s3://bucket",
            "eu=http://x",
            "eu=s3://B",
            "eu=s3://bucket?endpoint=ftp://x",
            "eu=s3://bucket?color=red",
            "eu=file:///x?endpoint=http://y",
        ] {
            assert!(parse_region(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn conflicting_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let url = format!("file://{}", dir.path().join("a").display());
        for config in [
            Config {
                local_region: Some("eu".into()),
                ..base.clone()
            },
            Config {
                blob_url: Some(url.clone()),
                blob_regions: vec![format!("eu={url}")],
                ..base.clone()
            },
            Config {
                blob_regions: vec![format!("eu={url}")],
                local_region: Some("us".into()),
                ..base.clone()
            },
            Config {
                blob_regions: vec![format!("eu={url}"), format!("eu={url}")],
                ..base.clone()
            },
        ] {
            assert!(open(&config).await.is_err(), "{config:?} accepted");
        }
        let ok = Config {
            blob_regions: vec![
                format!("eu={url}"),
                format!("us=file://{}", dir.path().join("b").display()),
            ],
            local_region: Some("us".into()),
            ..base
        };
        let (_, regional) = open(&ok).await.unwrap();
        assert_eq!(regional.regions()[0].name(), "us");
    }
}
