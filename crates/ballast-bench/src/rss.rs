//! Samples this process's resident set size (`VmRSS`) on a background thread. The server runs
//! in-process, so the figure is the server plus the load generator.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Current `VmRSS` of this process in bytes, if `/proc` tells.
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("self", "VmRSS:")
}

/// A `kB` field (`VmRSS:`, `VmHWM:`, …) of `/proc/<who>/status` in bytes; `who` is `self` or
/// a process id.
pub fn status_bytes(who: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A running sampler; [`RssSampler::finish`] stops it and returns what it saw.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What a sampler saw.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RssPeak {
    /// Highest sampled `VmRSS`, bytes.
    pub peak_bytes: u64,
    /// Number of samples taken.
    pub samples: u64,
}

impl RssSampler {
    /// Starts sampling every `every`.
    pub fn start(every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(current_rss_bytes().unwrap_or(0)));
        let samples = Arc::new(AtomicU64::new(1));
        let thread = {
            let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
            std::thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(rss) = current_rss_bytes() {
                            peak.fetch_max(rss, Ordering::Relaxed);
                            samples.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(every);
                    }
                })
                .ok()
        };
        Self {
            stop,
            peak,
            samples,
            thread,
        }
    }

    /// Stops sampling (taking one last sample) and returns the peak.
    pub fn finish(mut self) -> RssPeak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(rss) = current_rss_bytes() {
            self.peak.fetch_max(rss, Ordering::Relaxed);
            self.samples.fetch_add(1, Ordering::Relaxed);
        }
        RssPeak {
            peak_bytes: self.peak.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }
}
