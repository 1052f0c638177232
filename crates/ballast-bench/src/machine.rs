//! What the benchmark ran on, recorded next to the figures so they can be compared.

use serde::Serialize;

/// The machine and toolchain.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub nproc: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Total memory in MiB from `/proc/meminfo`.
    pub mem_total_mib: Option<u64>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// `rustc --version`, when a `rustc` is on the `PATH`.
    pub rustc: Option<String>,
    /// When the run started (RFC 3339, UTC).
    pub timestamp: String,
    /// `/proc/loadavg` when the run started: other work on the machine skews the figures.
    pub loadavg_at_start: Option<String>,
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_owned())
}

impl Machine {
    /// Looks around.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        let mem_total_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .map(|kib| kib / 1024)
        });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cpu_model,
            mem_total_mib,
            kernel,
            rustc,
            timestamp,
            loadavg_at_start: loadavg(),
        }
    }
}
