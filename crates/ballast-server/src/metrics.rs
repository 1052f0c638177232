//! Prometheus metrics: request counts and latencies per route, bytes in and out, store sizes.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Handle on the process-wide Prometheus recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    /// Installs the recorder once per process and returns a handle on it.
    pub fn install() -> Self {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets(&[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        30.0,
                    ])
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was already installed; /metrics may be incomplete");
                }
                handle
            })
            .clone();
        describe();
        Self { handle }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn describe() {
    metrics::describe_counter!(
        "ballast_http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        "ballast_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "time to answer HTTP requests (headers), by method and route"
    );
    metrics::describe_gauge!("ballast_http_requests_in_flight", "HTTP requests being answered");
    metrics::describe_counter!(
        "ballast_blob_bytes_in_total",
        metrics::Unit::Bytes,
        "artifact bytes received and stored"
    );
    metrics::describe_counter!(
        "ballast_blob_bytes_out_total",
        metrics::Unit::Bytes,
        "artifact bytes sent"
    );
    metrics::describe_counter!(
        "ballast_blob_corrupt_total",
        "blobs that failed verification and were quarantined"
    );
    metrics::describe_gauge!("ballast_store_models", "registered models");
    metrics::describe_gauge!("ballast_store_versions", "versions of all models");
    metrics::describe_gauge!("ballast_store_blobs", "distinct blobs referenced by versions");
    metrics::describe_gauge!(
        "ballast_store_blob_bytes",
        metrics::Unit::Bytes,
        "bytes of distinct blobs referenced"
    );
    metrics::describe_gauge!("ballast_store_audit_entries", "entries in the audit trail");
    metrics::describe_gauge!(
        "ballast_blob_region_up",
        "whether an artifact region answered its last probe (1) or not (0), by region"
    );
    metrics::describe_gauge!(
        "ballast_replication_queue",
        "blobs waiting to be copied into a region, by region"
    );
    metrics::describe_gauge!(
        "ballast_replication_lag_seconds",
        metrics::Unit::Seconds,
        "age of the oldest blob waiting to be copied into a region (0 when none waits), by region"
    );
    metrics::describe_counter!(
        "ballast_replication_copies_total",
        "blob copies to other regions, by outcome (ok, failed)"
    );
    metrics::describe_counter!(
        "ballast_blob_fallback_reads_total",
        "reads served by a region other than the local one"
    );
    metrics::describe_counter!(
        "ballast_blob_repairs_total",
        "local copies restored from another region, by outcome (ok, failed)"
    );
}
