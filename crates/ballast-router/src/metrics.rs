//! The router's own Prometheus metrics, kept per router instance (no global recorder, so several
//! routers can run in one test process). Rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Latency buckets in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed buckets. Each observation counts in the one bucket it falls
/// in (a single atomic add); the cumulative counts Prometheus expects are summed when rendered.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// A metric with labels: one value per label combination.
#[derive(Debug)]
pub struct Family<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: RwLock<BTreeMap<Vec<String>, Arc<T>>>,
}

impl<T: Default> Family<T> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    /// The value for these label values (created at zero on first use).
    pub fn with(&self, values: &[&str]) -> Arc<T> {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Ok(map) = self.values.read() {
            if let Some(v) = map.get(&key) {
                return Arc::clone(v);
            }
        }
        match self.values.write() {
            Ok(mut map) => Arc::clone(map.entry(key).or_default()),
            Err(_) => Arc::new(T::default()),
        }
    }

    fn entries(&self) -> Vec<(Vec<String>, Arc<T>)> {
        self.values
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
            .unwrap_or_default()
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if let Some((k, v)) = extra {
            parts.push(format!("{k}=\"{v}\""));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", parts.join(","))
        }
    }
}

impl<T> Family<T> {
    /// Drops every series whose `label` has a value outside `keep` (a family without that
    /// label is left alone).
    pub fn retain(&self, label: &str, keep: &std::collections::HashSet<&str>) {
        let Some(i) = self.labels.iter().position(|l| *l == label) else {
            return;
        };
        let mut map = match self.values.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|k, _| k.get(i).is_some_and(|v| keep.contains(v.as_str())));
    }
}

/// Writes one unlabelled metric: its help, its type and its value.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// A metric value of a family looked up once and kept (by a route or target) so the request
/// path does not search the family's map.
#[derive(Debug)]
pub struct Handle<T>(std::sync::OnceLock<Arc<T>>);

impl<T> Default for Handle<T> {
    fn default() -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T: Default> Handle<T> {
    /// The value for these label values in `family` (looked up on first use only; the labels
    /// must be the same on every call).
    pub fn get(&self, family: &Family<T>, labels: &[&str]) -> &T {
        self.0.get_or_init(|| family.with(labels))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Family<Counter> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (labels, c) in self.entries() {
            let _ = writeln!(out, "{}{} {}", self.name, self.label_text(&labels, None), c.get());
        }
    }

    /// Sum over all label values (for tests and summaries).
    pub fn total(&self) -> u64 {
        self.entries().iter().map(|(_, c)| c.get()).sum()
    }
}

impl Family<Histogram> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (labels, h) in self.entries() {
            let mut cumulative = 0u64;
            for (i, le) in BUCKETS.iter().enumerate() {
                let le = le.to_string();
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    self.label_text(&labels, Some(("le", &le))),
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                self.name,
                self.label_text(&labels, Some(("le", "+Inf")))
            );
            #[allow(clippy::cast_precision_loss)]
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{}_sum{} {sum}", self.name, self.label_text(&labels, None));
            let _ = writeln!(
                out,
                "{}_count{} {count}",
                self.name,
                self.label_text(&labels, None)
            );
        }
    }
}

/// Every metric of one router.
#[derive(Debug)]
pub struct Metrics {
    /// Requests answered, by route and status.
    pub requests: Family<Counter>,
    /// Time until the response started, by route.
    pub request_duration: Family<Histogram>,
    /// Attempts, by route, target and outcome (`ok` or an error class).
    pub attempts: Family<Counter>,
    /// Time of each attempt until its response started, by target.
    pub attempt_duration: Family<Histogram>,
    /// Requests served by a fallback route, by requested route and serving route.
    pub fallbacks: Family<Counter>,
    /// Targets ejected by outlier detection, by route and target.
    pub ejections: Family<Counter>,
    /// Region failovers and failbacks, by route and direction.
    pub failovers: Family<Counter>,
    /// Retries refused by the retry budget, by route.
    pub retry_budget_exhausted: Family<Counter>,
    /// Requests routed in panic mode (health ignored), by route.
    pub panic_routing: Family<Counter>,
    /// Snapshot loads, by source and result.
    pub snapshot_loads: Family<Counter>,
    /// Streams that broke after the response started, by target.
    pub stream_errors: Family<Counter>,
    /// Last-known-good snapshots that could not be written.
    pub lkg_write_failures: Counter,
    /// 1 while the registry's current generation is lower than the active snapshot's (the
    /// registry was restored from an older state, or the snapshot came from elsewhere).
    pub registry_behind: AtomicU64,
    generation: AtomicU64,
    loaded_at_unix_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    #[must_use]
    pub fn new() -> Self {
        Self {
            requests: Family::new(
                "ballast_router_requests_total",
                "Requests answered by the router.",
                &["route", "status"],
            ),
            request_duration: Family::new(
                "ballast_router_request_duration_seconds",
                "Time from receiving a request to starting its response.",
                &["route"],
            ),
            attempts: Family::new(
                "ballast_router_attempts_total",
                "Upstream attempts by outcome.",
                &["route", "target", "outcome"],
            ),
            attempt_duration: Family::new(
                "ballast_router_target_latency_seconds",
                "Time of an upstream attempt until its response started.",
                &["target"],
            ),
            fallbacks: Family::new(
                "ballast_router_fallbacks_total",
                "Requests served by a fallback route.",
                &["route", "served_by"],
            ),
            ejections: Family::new(
                "ballast_router_ejections_total",
                "Targets ejected by passive outlier detection.",
                &["route", "target"],
            ),
            failovers: Family::new(
                "ballast_router_region_failovers_total",
                "Region failovers (direction=out) and failbacks (direction=back).",
                &["route", "direction"],
            ),
            retry_budget_exhausted: Family::new(
                "ballast_router_retry_budget_exhausted_total",
                "Retries refused because the retry budget was spent.",
                &["route"],
            ),
            panic_routing: Family::new(
                "ballast_router_panic_routing_total",
                "Requests routed across all targets because too few looked healthy.",
                &["route"],
            ),
            snapshot_loads: Family::new(
                "ballast_router_snapshot_loads_total",
                "Routing snapshots offered to the router, by source and result.",
                &["source", "result"],
            ),
            stream_errors: Family::new(
                "ballast_router_stream_errors_total",
                "Responses that broke after they started to flow to the client.",
                &["target"],
            ),
            lkg_write_failures: Counter::default(),
            registry_behind: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            loaded_at_unix_ms: AtomicU64::new(0),
        }
    }

    /// Removes the series of routes and targets that are not in the active snapshot any more
    /// (`routes`: its route names, `targets`: its target ids), so `/metrics` does not grow
    /// with every redeployment.
    pub fn forget_absent(
        &self,
        routes: &std::collections::HashSet<&str>,
        targets: &std::collections::HashSet<&str>,
    ) {
        for f in [
            &self.requests,
            &self.attempts,
            &self.fallbacks,
            &self.ejections,
            &self.failovers,
            &self.retry_budget_exhausted,
            &self.panic_routing,
        ] {
            f.retain("route", routes);
        }
        self.fallbacks.retain("served_by", routes);
        self.request_duration.retain("route", routes);
        for f in [&self.attempts, &self.ejections, &self.stream_errors] {
            f.retain("target", targets);
        }
        self.attempt_duration.retain("target", targets);
    }

    /// Records that a snapshot became active.
    pub fn snapshot_active(&self, generation: u64, loaded_at_unix_ms: u64) {
        self.generation.store(generation, Ordering::Relaxed);
        self.loaded_at_unix_ms.store(loaded_at_unix_ms, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self, now_unix_ms: u64) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(&mut out);
        self.request_duration.render(&mut out);
        self.attempts.render(&mut out);
        self.attempt_duration.render(&mut out);
        self.fallbacks.render(&mut out);
        self.ejections.render(&mut out);
        self.failovers.render(&mut out);
        self.retry_budget_exhausted.render(&mut out);
        self.panic_routing.render(&mut out);
        self.snapshot_loads.render(&mut out);
        self.stream_errors.render(&mut out);
        scalar(
            &mut out,
            "ballast_router_lkg_write_failures_total",
            "counter",
            "Last-known-good snapshots that could not be written to the state directory.",
            self.lkg_write_failures.get(),
        );
        scalar(
            &mut out,
            "ballast_router_registry_behind",
            "gauge",
            "1 while the registry's current generation is lower than the active snapshot's.",
            self.registry_behind.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "ballast_router_snapshot_generation",
            "gauge",
            "Generation of the active routing snapshot.",
            self.generation.load(Ordering::Relaxed),
        );
        let loaded = self.loaded_at_unix_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let age = now_unix_ms.saturating_sub(loaded) as f64 / 1000.0;
        scalar(
            &mut out,
            "ballast_router_snapshot_age_seconds",
            "gauge",
            "Time since the active routing snapshot became active in this process (snapshots carry no creation time).",
            age,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_escaped_labels() {
        let m = Metrics::new();
        m.requests.with(&["bot\"x", "200"]).inc();
        m.requests.with(&["bot\"x", "200"]).inc();
        m.attempt_duration.with(&["t1"]).observe(Duration::from_millis(3));
        m.attempt_duration
            .with(&["t1"])
            .observe(Duration::from_millis(700));
        m.snapshot_active(7, 1_000);
        let text = m.render(3_500);
        assert!(
            text.contains("ballast_router_requests_total{route=\"bot\\\"x\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ballast_router_target_latency_seconds_bucket{target=\"t1\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ballast_router_target_latency_seconds_bucket{target=\"t1\",le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ballast_router_target_latency_seconds_count{target=\"t1\"} 2"),
            "{text}"
        );
        // Buckets are cumulative: the 3 ms observation counts in every bucket from 5 ms up.
        assert!(
            text.contains("ballast_router_target_latency_seconds_bucket{target=\"t1\",le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ballast_router_target_latency_seconds_bucket{target=\"t1\",le=\"1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ballast_router_target_latency_seconds_bucket{target=\"t1\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(text.contains("ballast_router_snapshot_generation 7"), "{text}");
        assert!(text.contains("ballast_router_snapshot_age_seconds 2.5"), "{text}");
        assert_eq!(m.requests.total(), 2);
    }
}
