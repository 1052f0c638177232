//! CPU time of this process's threads, grouped by thread name, so a phase can say how the two
//! cores were split between the server's runtime, its SQLite writer and the load generator.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every mainstream Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Per-thread CPU ticks at one instant, keyed by thread id.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    threads: BTreeMap<u64, (String, u64)>,
    wall: Option<std::time::Instant>,
    /// Machine-wide `(busy, idle, steal)` ticks from `/proc/stat`.
    machine: Option<(u64, u64, u64)>,
}

/// Machine-wide busy, idle (idle + iowait) and steal ticks. Steal is time this machine's
/// virtual CPUs wanted to run while the hypervisor ran something else; it is not in busy.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let idle = v.get(3)? + v.get(4)?;
    let steal = v.get(7).copied().unwrap_or(0);
    let busy = v.iter().take(8).sum::<u64>() - idle - steal;
    Some((busy, idle, steal))
}

impl Snapshot {
    /// Reads `/proc/self/task/*/stat` (empty when unavailable).
    pub fn take() -> Self {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|s| parse_stat(&s))
                {
                    threads.insert(tid, t);
                }
            }
        }
        Self {
            threads,
            wall: Some(std::time::Instant::now()),
            machine: machine_ticks(),
        }
    }

    /// CPU seconds used since `earlier`, by thread group, plus `"wall"` (elapsed seconds),
    /// `"total"` (this process), `"machine busy"`, `"machine idle"` and `"machine steal"` (all
    /// CPUs, all processes).
    pub fn since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        let mut total = 0.0;
        for (tid, (name, ticks)) in &self.threads {
            let before = earlier.threads.get(tid).map_or(0, |(_, t)| *t);
            #[allow(clippy::cast_precision_loss)]
            let secs = ticks.saturating_sub(before) as f64 / TICKS_PER_SEC;
            if secs > 0.0 {
                *out.entry(group(name).to_owned()).or_default() += secs;
                total += secs;
            }
        }
        out.insert("total".into(), total);
        if let (Some((b0, i0, s0)), Some((b1, i1, s1))) = (earlier.machine, self.machine) {
            #[allow(clippy::cast_precision_loss)]
            let secs = |t: u64| t as f64 / TICKS_PER_SEC;
            out.insert("machine busy".into(), secs(b1.saturating_sub(b0)));
            out.insert("machine idle".into(), secs(i1.saturating_sub(i0)));
            out.insert("machine steal".into(), secs(s1.saturating_sub(s0)));
        }
        if let (Some(a), Some(b)) = (earlier.wall, self.wall) {
            out.insert("wall".into(), b.saturating_duration_since(a).as_secs_f64());
        }
        out
    }
}

/// This process's thread groups of a [`Snapshot::since`] split that used at least 10 ms:
/// `server runtime 1.62 s, load generator 1.80 s`.
pub fn groups_line(cpu: &BTreeMap<String, f64>) -> String {
    cpu.iter()
        .filter(|(k, v)| !matches!(k.as_str(), "wall" | "total") && !k.starts_with("machine ") && **v >= 0.01)
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole machine's share of a [`Snapshot::since`] split: `busy 3.10 s / idle 0.80 s /
/// steal 0.05 s`.
pub fn machine_line(cpu: &BTreeMap<String, f64>) -> String {
    let get = |k: &str| cpu.get(k).copied().unwrap_or(0.0);
    format!(
        "busy {:.2} s / idle {:.2} s / steal {:.2} s",
        get("machine busy"),
        get("machine idle"),
        get("machine steal")
    )
}

/// Server and load-generator CPU microseconds per request, from a [`Snapshot::since`] split.
pub fn per_request(cpu: &BTreeMap<String, f64>, requests: u64) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if requests == 0 {
        return out;
    }
    let sum = |pred: &dyn Fn(&str) -> bool| cpu.iter().filter(|(k, _)| pred(k)).map(|(_, v)| v).sum::<f64>();
    #[allow(clippy::cast_precision_loss)]
    let n = requests as f64;
    out.insert("server".into(), sum(&|k| k.starts_with("server")) * 1e6 / n);
    out.insert("load generator".into(), sum(&|k| k == LOADGEN) * 1e6 / n);
    out
}

/// Group name of the load generator's runtime threads.
const LOADGEN: &str = "load generator";

/// CPU seconds the calling thread has used so far (for threads that end before a snapshot).
pub fn this_thread_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    #[allow(clippy::cast_precision_loss)]
    parse_stat(&stat).map(|(_, ticks)| ticks as f64 / TICKS_PER_SEC)
}

/// CPU seconds another process has used so far (`utime + stime` of `/proc/PID/stat`).
pub fn process_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    #[allow(clippy::cast_precision_loss)]
    parse_stat(&stat).map(|(_, ticks)| ticks as f64 / TICKS_PER_SEC)
}

/// Parses the name and `utime + stime` of a `stat` line.
fn parse_stat(s: &str) -> Option<(String, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_owned();
    let mut rest = s.get(close + 1..)?.split_whitespace();
    // After the name: state(3) ppid … utime is field 14, stime field 15.
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

fn group(name: &str) -> &str {
    if name.starts_with("server-worker") {
        "server runtime (workers + blocking pool)"
    } else if name.starts_with("ballast-sqlite") {
        "server sqlite writer"
    } else if name.starts_with("ballast-server") {
        "server accept loop"
    } else if name.starts_with("loadgen") || name.starts_with("pacer") {
        LOADGEN
    } else if name.starts_with("router-worker") || name.starts_with("router-main") {
        "router runtime (in-process)"
    } else if name.starts_with("backend") {
        "backend runtime"
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "42 (server worker) S 1 1 1 0 -1 4194368 100 0 0 0 250 30 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line), Some(("server worker".to_owned(), 280)));
    }
}
