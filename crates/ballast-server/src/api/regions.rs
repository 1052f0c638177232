//! `GET /v1/status` (artifact regions: reachability, replication queue and lag, totals) and
//! `POST /v1/fsck` (check every referenced blob in every region, optionally repairing).

use axum::extract::State;
use axum::Json;
use ballast_blob::regional::{CopyState, FsckReport as BlobFsckReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Mutation;
use crate::error::ApiResult;
use crate::state::AppState;

/// The registry's artifact storage, region by region.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryStatus {
    /// Every region, the local one first (a server without regions shows its one store as
    /// `local`).
    pub regions: Vec<RegionInfo>,
    /// Totals since this server started.
    pub replication: ReplicationTotals,
}

/// One artifact region.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegionInfo {
    /// Region name.
    pub name: String,
    /// Where its blobs live.
    pub location: String,
    /// Whether it is the local region (written first, read first).
    pub local: bool,
    /// Whether it answered just now.
    pub reachable: bool,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Blobs waiting to be copied into it (0 for the local region; null when unknown).
    pub replication_queue: Option<u64>,
    /// Age in seconds of the oldest waiting blob (0 when none waits; null when unknown).
    pub replication_lag_secs: Option<f64>,
}

/// Replication and fallback totals since the server started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ReplicationTotals {
    /// Blobs copied to another region.
    pub replicated: u64,
    /// Copies that failed (they are retried).
    pub replication_failures: u64,
    /// Reads served by a region other than the local one.
    pub fallback_reads: u64,
    /// Local copies restored from another region.
    pub repairs: u64,
    /// Local repairs that failed.
    pub repair_failures: u64,
}

/// Run an integrity check of the artifacts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FsckRequest {
    /// Copy good bytes over missing and corrupt copies.
    pub repair: bool,
}

/// What an integrity check found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsckReport {
    /// Referenced blobs checked (in every region).
    pub blobs: u64,
    /// Whether bad copies were repaired.
    pub repair: bool,
    /// Nothing is left missing, corrupt, unchecked or lost.
    pub clean: bool,
    /// Totals per region, the local one first.
    pub regions: Vec<FsckRegion>,
    /// Every bad copy and what was done about it.
    pub problems: Vec<FsckProblem>,
    /// Blobs with no good copy in any reachable region (SHA-256, hex).
    pub lost: Vec<String>,
}

/// Per-region totals of a check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsckRegion {
    /// Region name.
    pub name: String,
    /// Blobs checked.
    pub checked: u64,
    /// Good copies.
    pub ok: u64,
    /// Missing copies.
    pub missing: u64,
    /// Corrupt copies (quarantined by the check).
    pub corrupt: u64,
    /// Good bytes of another size than recorded.
    pub wrong_size: u64,
    /// Blobs that could not be checked (the region did not answer).
    pub unreachable: u64,
    /// Copies repaired.
    pub repaired: u64,
}

/// One bad copy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsckProblem {
    /// Blob SHA-256 (hex).
    pub sha256: String,
    /// Region holding the bad copy.
    pub region: String,
    /// `missing`, `corrupt`, `wrong_size` or `unreachable`.
    pub state: String,
    /// Whether it was repaired.
    pub repaired: bool,
    /// The size stored, for `wrong_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    /// More about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub(super) async fn status(State(state): State<AppState>) -> ApiResult<Json<RegistryStatus>> {
    let regions = state.regions.status().await;
    let c = state.regions.counters();
    crate::regions::record(&regions, c);
    Ok(Json(RegistryStatus {
        regions: regions
            .into_iter()
            .map(|r| RegionInfo {
                name: r.name,
                location: r.location,
                local: r.local,
                reachable: r.reachable,
                error: r.error,
                replication_queue: r.queued,
                replication_lag_secs: r.lag.map(|l| l.as_secs_f64()),
            })
            .collect(),
        replication: ReplicationTotals {
            replicated: c.replicated,
            replication_failures: c.replication_failures,
            fallback_reads: c.fallback_reads,
            repairs: c.repairs,
            repair_failures: c.repair_failures,
        },
    }))
}

pub(super) async fn fsck(
    State(state): State<AppState>,
    m: Mutation<FsckRequest>,
) -> ApiResult<Json<FsckReport>> {
    let blobs = state.store.referenced_blobs().await?;
    tracing::info!(blobs = blobs.len(), repair = m.body.repair, "fsck started");
    let report = state.regions.fsck(&blobs, m.body.repair).await;
    tracing::info!(
        problems = report.problems.len(),
        lost = report.lost.len(),
        clean = report.clean(),
        "fsck finished"
    );
    Ok(Json(wire(report)))
}

fn wire(r: BlobFsckReport) -> FsckReport {
    FsckReport {
        blobs: r.blobs,
        repair: r.repair,
        clean: r.clean(),
        regions: r
            .regions
            .into_iter()
            .map(|g| FsckRegion {
                name: g.name,
                checked: g.checked,
                ok: g.ok,
                missing: g.missing,
                corrupt: g.corrupt,
                wrong_size: g.wrong_size,
                unreachable: g.unreachable,
                repaired: g.repaired,
            })
            .collect(),
        problems: r
            .problems
            .into_iter()
            .map(|p| FsckProblem {
                sha256: p.digest.to_hex(),
                region: p.region,
                state: p.state.as_str().to_owned(),
                repaired: p.repaired,
                stored_size: match p.state {
                    CopyState::WrongSize { stored } => Some(stored),
                    _ => None,
                },
                detail: p.detail,
            })
            .collect(),
        lost: r.lost.iter().map(ballast_core::Sha256Digest::to_hex).collect(),
    }
}
