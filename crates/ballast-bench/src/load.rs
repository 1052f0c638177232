//! A closed-loop load generator: `concurrency` workers each issue one request after another for
//! a fixed time, after a short warm-up that opens the keep-alive connections. Every request is
//! bounded by a timeout, so a phase never runs longer than warm-up + duration + timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Longest a single request may take before it counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one operation failed.
#[derive(Debug)]
pub enum OpError {
    /// The server answered with an unexpected status.
    Status(u16, String),
    /// The request could not be sent or the answer not read.
    Transport(String),
}

impl OpError {
    fn describe(&self) -> String {
        match self {
            Self::Status(code, body) => {
                format!("HTTP {code}: {}", body.chars().take(300).collect::<String>())
            }
            Self::Transport(e) => e.clone(),
        }
    }
}

impl From<reqwest::Error> for OpError {
    fn from(e: reqwest::Error) -> Self {
        Self::Transport(format!("{e:#}"))
    }
}

/// Sends a request, checks for a 2xx answer and reads the whole body (so the connection can be
/// reused).
pub async fn send_checked(req: reqwest::RequestBuilder) -> Result<bytes::Bytes, OpError> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(OpError::Status(
            status.as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// Latency percentiles of the successful requests, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn from_nanos(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            // Nearest rank.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            ms(v[rank - 1])
        };
        #[allow(clippy::cast_precision_loss)]
        let mean = v.iter().map(|&n| n as f64).sum::<f64>() / v.len() as f64 / 1e6;
        Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: v.last().copied().map_or(0.0, ms),
            mean_ms: mean,
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// What a load phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// What was requested, e.g. `GET /v1/models/bench/alias/aliases/champion`.
    pub operation: String,
    /// Concurrent workers (and connections).
    pub concurrency: usize,
    /// Measured seconds (from the end of the warm-up until the last worker stopped).
    pub wall_secs: f64,
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Successful requests per second.
    pub rate_per_sec: f64,
    /// Answers with an unexpected status.
    pub errors_status: u64,
    /// Requests that could not be sent or read.
    pub errors_transport: u64,
    /// Requests that took longer than the per-request timeout.
    pub timeouts: u64,
    /// The first error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Latency of the successful requests.
    pub latency: Latency,
    /// Requests issued over the whole phase, warm-up included (what `cpu_secs` paid for).
    pub requests_incl_warmup: u64,
    /// CPU seconds of this process's thread groups over the phase (warm-up included).
    pub cpu_secs: BTreeMap<String, f64>,
    /// CPU microseconds per request (warm-up included) of the server's threads and of the
    /// load generator's.
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// The successful requests' latencies (nanoseconds, unsorted), so phases run in rounds can
    /// be pooled into one distribution.
    #[serde(skip)]
    pub latency_nanos: Vec<u64>,
}

impl LoadSummary {
    /// Every failed request.
    pub fn errors(&self) -> u64 {
        self.errors_status + self.errors_transport + self.timeouts
    }

    /// Several runs of the same phase (rounds) as one: counts, measured time and CPU summed,
    /// the rate over the summed time, percentiles over every sample of every round, CPU per
    /// request weighted by each round's requests. `None` for no rounds.
    pub fn pooled(rounds: &[&Self]) -> Option<Self> {
        let first = rounds.first()?;
        let sum = |f: fn(&Self) -> u64| rounds.iter().map(|r| f(r)).sum::<u64>();
        let wall = rounds.iter().map(|r| r.wall_secs).sum::<f64>().max(1e-9);
        let latency_nanos: Vec<u64> = rounds
            .iter()
            .flat_map(|r| r.latency_nanos.iter().copied())
            .collect();
        let ok = latency_nanos.len() as u64;
        let requests_incl_warmup = sum(|r| r.requests_incl_warmup);
        let mut cpu_secs: BTreeMap<String, f64> = BTreeMap::new();
        let mut cpu_us: BTreeMap<String, f64> = BTreeMap::new();
        for r in rounds {
            for (k, v) in &r.cpu_secs {
                *cpu_secs.entry(k.clone()).or_default() += v;
            }
            #[allow(clippy::cast_precision_loss)]
            let weight = r.requests_incl_warmup as f64 / requests_incl_warmup.max(1) as f64;
            for (k, v) in &r.cpu_us_per_request {
                *cpu_us.entry(k.clone()).or_default() += v * weight;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let rate_per_sec = ok as f64 / wall;
        Some(Self {
            operation: first.operation.clone(),
            concurrency: first.concurrency,
            wall_secs: wall,
            ok,
            rate_per_sec,
            errors_status: sum(|r| r.errors_status),
            errors_transport: sum(|r| r.errors_transport),
            timeouts: sum(|r| r.timeouts),
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
            latency: Latency::from_nanos(latency_nanos.clone()),
            requests_incl_warmup,
            cpu_secs,
            cpu_us_per_request: cpu_us,
            latency_nanos,
        })
    }
}

struct WorkerResult<T> {
    latencies: Vec<u64>,
    outputs: Vec<T>,
    errors_status: u64,
    errors_transport: u64,
    timeouts: u64,
    first_error: Option<String>,
    finished: Instant,
    issued: u64,
}

/// Runs `op` from `concurrency` workers: first for `warmup` (not counted), then for `duration`.
/// `op(worker, seq)` does one request. Returns the summary and the outputs of the measured,
/// successful operations (e.g. the version numbers assigned).
pub async fn run<T, F, Fut>(
    operation: &str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> anyhow::Result<(LoadSummary, Vec<T>)>
where
    T: Send + 'static,
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, OpError>> + Send + 'static,
{
    let op = Arc::new(op);
    let cpu_before = crate::cpu::Snapshot::take();
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency.max(1) {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult {
                latencies: Vec::with_capacity(4096),
                outputs: Vec::new(),
                errors_status: 0,
                errors_transport: 0,
                timeouts: 0,
                first_error: None,
                finished: Instant::now(),
                issued: 0,
            };
            let mut seq = 0u64;
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let measured = began >= measure_from;
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, op(w, seq)).await;
                seq += 1;
                let took = began.elapsed();
                if !measured {
                    continue;
                }
                match outcome {
                    Ok(Ok(out)) => {
                        r.latencies
                            .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                        r.outputs.push(out);
                    }
                    Ok(Err(e)) => {
                        match e {
                            OpError::Status(..) => r.errors_status += 1,
                            OpError::Transport(_) => r.errors_transport += 1,
                        }
                        if r.first_error.is_none() {
                            r.first_error = Some(e.describe());
                        }
                    }
                    Err(_) => {
                        r.timeouts += 1;
                        if r.first_error.is_none() {
                            r.first_error = Some(format!("timed out after {REQUEST_TIMEOUT:?}"));
                        }
                    }
                }
            }
            r.finished = Instant::now();
            r.issued = seq;
            r
        }));
    }
    let mut latencies = Vec::new();
    let mut outputs = Vec::new();
    let (mut errors_status, mut errors_transport, mut timeouts) = (0, 0, 0);
    let mut first_error = None;
    let mut finished = deadline;
    let mut issued = 0;
    for w in workers {
        let r = w
            .await
            .map_err(|e| anyhow::anyhow!("a load worker failed: {e}"))?;
        latencies.extend(r.latencies);
        outputs.extend(r.outputs);
        errors_status += r.errors_status;
        errors_transport += r.errors_transport;
        timeouts += r.timeouts;
        first_error = first_error.or(r.first_error);
        finished = finished.max(r.finished);
        issued += r.issued;
    }
    let cpu_secs = crate::cpu::Snapshot::take().since(&cpu_before);
    let cpu_us_per_request = crate::cpu::per_request(&cpu_secs, issued);
    let wall = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let ok = latencies.len() as u64;
    #[allow(clippy::cast_precision_loss)]
    let rate = ok as f64 / wall;
    Ok((
        LoadSummary {
            operation: operation.to_owned(),
            concurrency,
            wall_secs: wall,
            ok,
            rate_per_sec: rate,
            errors_status,
            errors_transport,
            timeouts,
            first_error,
            latency: Latency::from_nanos(latencies.clone()),
            requests_incl_warmup: issued,
            cpu_secs,
            cpu_us_per_request,
            latency_nanos: latencies,
        },
        outputs,
    ))
}

/// What an open-loop (fixed-rate) phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRateSummary {
    /// Requests per second asked for.
    pub target_rate_per_sec: f64,
    /// Latency here (`load.latency`) runs from each request's *scheduled* time to the end of
    /// its answer, so a stall also counts for the requests that queued behind it.
    #[serde(flatten)]
    pub load: LoadSummary,
    /// Latency from the moment the request was written to the end of its answer.
    pub service_latency: Latency,
    /// How late the pacer thread dispatched requests relative to their schedule.
    pub dispatch_lag: Latency,
    /// Requests dropped unsent because the phase ran out of time.
    pub dropped: u64,
    /// Requests the pacer scheduled, warm-up included.
    pub scheduled: u64,
    /// Service latencies (nanoseconds, unsorted), for pooling rounds.
    #[serde(skip)]
    pub service_nanos: Vec<u64>,
    /// Dispatch lags (nanoseconds, unsorted), for pooling rounds.
    #[serde(skip)]
    pub lag_nanos: Vec<u64>,
}

impl FixedRateSummary {
    /// Several rounds of the same fixed-rate phase as one (see [`LoadSummary::pooled`]).
    pub fn pooled(rounds: &[&Self]) -> Option<Self> {
        let first = rounds.first()?;
        let load = LoadSummary::pooled(&rounds.iter().map(|r| &r.load).collect::<Vec<_>>())?;
        let all = |f: fn(&Self) -> &Vec<u64>| -> Vec<u64> {
            rounds.iter().flat_map(|r| f(r).iter().copied()).collect()
        };
        let (service_nanos, lag_nanos) = (all(|r| &r.service_nanos), all(|r| &r.lag_nanos));
        Some(Self {
            target_rate_per_sec: first.target_rate_per_sec,
            load,
            service_latency: Latency::from_nanos(service_nanos.clone()),
            dispatch_lag: Latency::from_nanos(lag_nanos.clone()),
            dropped: rounds.iter().map(|r| r.dropped).sum(),
            scheduled: rounds.iter().map(|r| r.scheduled).sum(),
            service_nanos,
            lag_nanos,
        })
    }
}

/// One scheduled request: its sequence number and when it was due.
type Slot = (u64, Instant);

/// Runs `op` open-loop at `rate` requests per second *for each* of `operations` (interleaved
/// request by request, so every target of the run meets the same conditions on a shared
/// machine) for `warmup` (not counted) then `duration`. A pacer thread schedules request `k` at
/// `start + k / (rate × operations)`; it belongs to operation `k mod operations` and goes to
/// worker `k mod (connections × operations)`, which sends it on its own keep-alive connection
/// when that is free. `op(operation, connection, seq)` sends one request, `connection` being
/// `0..connections` within the operation. Latency is measured from the scheduled time (no
/// coordinated omission). The pacer sleeps with `std::thread::sleep` (tens of microseconds late,
/// which every operation pays alike) rather than on tokio's millisecond timer.
pub async fn run_fixed_rate<F, Fut>(
    operations: &[String],
    rate: f64,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> anyhow::Result<Vec<FixedRateSummary>>
where
    F: Fn(usize, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), OpError>> + Send + 'static,
{
    let op = Arc::new(op);
    let classes = operations.len().max(1);
    let per_class = connections.max(1);
    let connections = per_class * classes;
    #[allow(clippy::cast_precision_loss)]
    let interval = Duration::from_secs_f64(1.0 / (rate.clamp(1.0, 1e7) * classes as f64));
    let cpu_before = crate::cpu::Snapshot::take();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    // Nothing is sent after this: a stalled target cannot stretch the phase indefinitely.
    let give_up = deadline + REQUEST_TIMEOUT;
    let mut senders = Vec::with_capacity(connections);
    let mut workers = Vec::with_capacity(connections);
    for w in 0..connections {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Slot>();
        senders.push(tx);
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut r = FixedWorker::default();
            while let Some((seq, due)) = rx.recv().await {
                let sent = Instant::now();
                if sent >= give_up {
                    r.dropped += 1;
                    continue;
                }
                let measured = due >= measure_from;
                if measured {
                    r.lag.push(nanos(sent.saturating_duration_since(due)));
                }
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, op(w % classes, w / classes, seq)).await;
                r.issued += 1;
                if !measured {
                    continue;
                }
                let done = Instant::now();
                match outcome {
                    Ok(Ok(())) => {
                        r.latencies.push(nanos(done - due));
                        r.service.push(nanos(done - sent));
                    }
                    Ok(Err(e)) => {
                        match e {
                            OpError::Status(..) => r.errors_status += 1,
                            OpError::Transport(_) => r.errors_transport += 1,
                        }
                        r.first_error.get_or_insert_with(|| e.describe());
                    }
                    Err(_) => {
                        r.timeouts += 1;
                        r.first_error
                            .get_or_insert_with(|| format!("timed out after {REQUEST_TIMEOUT:?}"));
                    }
                }
            }
            r.finished = Some(Instant::now());
            r
        }));
    }
    let pacer = std::thread::Builder::new().name("pacer".into()).spawn(move || {
        let mut k = 0u64;
        loop {
            let due = start + interval.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
            if due >= deadline {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            #[allow(clippy::cast_possible_truncation)]
            let w = (k % connections as u64) as usize;
            if senders[w].send((k, due)).is_err() {
                break;
            }
            k += 1;
        }
        k
    })?;
    let scheduled = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    let mut per: Vec<FixedWorker> = (0..classes).map(|_| FixedWorker::default()).collect();
    for (w, handle) in workers.into_iter().enumerate() {
        let r = handle
            .await
            .map_err(|e| anyhow::anyhow!("a load worker failed: {e}"))?;
        let all = &mut per[w % classes];
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.latencies.extend(r.latencies);
        all.service.extend(r.service);
        all.lag.extend(r.lag);
        all.errors_status += r.errors_status;
        all.errors_transport += r.errors_transport;
        all.timeouts += r.timeouts;
        all.dropped += r.dropped;
        all.issued += r.issued;
        all.finished = all.finished.max(r.finished);
    }
    let cpu_secs = crate::cpu::Snapshot::take().since(&cpu_before);
    let issued_total: u64 = per.iter().map(|w| w.issued).sum();
    let cpu_us_per_request = crate::cpu::per_request(&cpu_secs, issued_total);
    let mut out = Vec::with_capacity(classes);
    for (class, all) in per.into_iter().enumerate() {
        let wall = all
            .finished
            .unwrap_or(deadline)
            .max(deadline)
            .saturating_duration_since(measure_from)
            .as_secs_f64()
            .max(1e-9);
        let ok = all.latencies.len() as u64;
        #[allow(clippy::cast_precision_loss)]
        let rate_per_sec = ok as f64 / wall;
        out.push(FixedRateSummary {
            target_rate_per_sec: rate,
            service_latency: Latency::from_nanos(all.service.clone()),
            dispatch_lag: Latency::from_nanos(all.lag.clone()),
            service_nanos: all.service,
            lag_nanos: all.lag,
            dropped: all.dropped,
            scheduled: scheduled / classes as u64,
            load: LoadSummary {
                operation: operations.get(class).cloned().unwrap_or_default(),
                concurrency: per_class,
                wall_secs: wall,
                ok,
                rate_per_sec,
                errors_status: all.errors_status,
                errors_transport: all.errors_transport,
                timeouts: all.timeouts,
                first_error: all.first_error,
                latency: Latency::from_nanos(all.latencies.clone()),
                requests_incl_warmup: all.issued,
                // Shared by every operation of the phase (they ran interleaved).
                cpu_secs: cpu_secs.clone(),
                cpu_us_per_request: cpu_us_per_request.clone(),
                latency_nanos: all.latencies,
            },
        });
    }
    Ok(out)
}

#[derive(Default)]
struct FixedWorker {
    latencies: Vec<u64>,
    service: Vec<u64>,
    lag: Vec<u64>,
    errors_status: u64,
    errors_transport: u64,
    timeouts: u64,
    dropped: u64,
    issued: u64,
    first_error: Option<String>,
    finished: Option<Instant>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = Latency::from_nanos((1..=100).map(|i| i * 1_000_000).collect());
        assert!((l.p50_ms - 50.0).abs() < 1e-9);
        assert!((l.p99_ms - 99.0).abs() < 1e-9);
        assert!((l.max_ms - 100.0).abs() < 1e-9);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
    }

    fn summary(latencies_ms: &[u64], wall_secs: f64, cpu_us: f64, issued: u64) -> LoadSummary {
        let nanos: Vec<u64> = latencies_ms.iter().map(|ms| ms * 1_000_000).collect();
        LoadSummary {
            operation: "op".into(),
            concurrency: 2,
            wall_secs,
            ok: nanos.len() as u64,
            rate_per_sec: 0.0,
            errors_status: 1,
            errors_transport: 0,
            timeouts: 0,
            first_error: None,
            latency: Latency::from_nanos(nanos.clone()),
            requests_incl_warmup: issued,
            cpu_secs: BTreeMap::from([("machine steal".to_owned(), 0.5)]),
            cpu_us_per_request: BTreeMap::from([("server".to_owned(), cpu_us)]),
            latency_nanos: nanos,
        }
    }

    #[test]
    fn rounds_pool_into_one_distribution() -> anyhow::Result<()> {
        // 1..=50 ms over 1 s, then 51..=100 ms over 3 s.
        let a = summary(&(1..=50).collect::<Vec<_>>(), 1.0, 10.0, 100);
        let b = summary(&(51..=100).collect::<Vec<_>>(), 3.0, 20.0, 300);
        let p = LoadSummary::pooled(&[&a, &b]).ok_or_else(|| anyhow::anyhow!("two rounds"))?;
        assert_eq!(p.ok, 100);
        assert!((p.wall_secs - 4.0).abs() < 1e-9);
        assert!((p.rate_per_sec - 25.0).abs() < 1e-9);
        // Percentiles over every sample, not an average of each round's.
        assert!((p.latency.p50_ms - 50.0).abs() < 1e-9);
        assert!((p.latency.p99_ms - 99.0).abs() < 1e-9);
        assert_eq!(p.errors_status, 2);
        assert_eq!(p.requests_incl_warmup, 400);
        assert!((p.cpu_secs["machine steal"] - 1.0).abs() < 1e-9);
        // Weighted by requests: (10 × 100 + 20 × 300) / 400.
        assert!((p.cpu_us_per_request["server"] - 17.5).abs() < 1e-9);
        assert!(LoadSummary::pooled(&[]).is_none());

        let fixed = |l: LoadSummary, service_ms: u64| FixedRateSummary {
            target_rate_per_sec: 100.0,
            load: l,
            service_latency: Latency::default(),
            dispatch_lag: Latency::default(),
            dropped: 1,
            scheduled: 10,
            service_nanos: vec![service_ms * 1_000_000],
            lag_nanos: vec![0],
        };
        let f = FixedRateSummary::pooled(&[&fixed(a, 1), &fixed(b, 3)])
            .ok_or_else(|| anyhow::anyhow!("two rounds"))?;
        assert_eq!((f.dropped, f.scheduled, f.load.ok), (2, 20, 100));
        assert!((f.service_latency.max_ms - 3.0).abs() < 1e-9);
        assert!((f.service_latency.p50_ms - 1.0).abs() < 1e-9);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fixed_rate_phase_keeps_its_rate() -> anyhow::Result<()> {
        let all = run_fixed_rate(
            &["a".to_owned(), "b".to_owned()],
            1000.0,
            4,
            Duration::from_millis(50),
            Duration::from_millis(300),
            |class, conn, _| async move {
                if class < 2 && conn < 4 {
                    Ok(())
                } else {
                    Err(OpError::Transport("bad index".into()))
                }
            },
        )
        .await?;
        assert_eq!(all.len(), 2);
        for s in all {
            assert!((250..=350).contains(&s.load.ok), "{s:?}");
            assert_eq!(s.load.errors(), 0);
            assert!(s.load.latency.p50_ms < 5.0, "{s:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_phase_stops_on_time_and_counts_errors() -> anyhow::Result<()> {
        let (s, out) = run(
            "noop",
            4,
            Duration::from_millis(20),
            Duration::from_millis(100),
            |_, seq| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if seq % 2 == 0 {
                    Ok(seq)
                } else {
                    Err(OpError::Status(500, "boom".into()))
                }
            },
        )
        .await?;
        assert!(s.wall_secs < 1.0);
        assert_eq!(out.len() as u64, s.ok);
        assert!(s.ok > 0 && s.errors_status > 0);
        Ok(())
    }
}
