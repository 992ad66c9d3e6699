//! Figures of a process and of the machine, read from /proc: what whole-process benchmarks
//! measure the daemon by, and how busy the machine was meanwhile.

use std::time::{Duration, Instant};

/// Clock ticks per second of /proc's CPU times.
const TICKS: f64 = 100.0;

/// Figures are taken once the 1-minute load average is below this (see [`wait_quiet`]).
pub const QUIET_LOAD: f64 = 0.7;

/// VmRSS and VmHWM of process `pid`, KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds of process `pid`: its own (user + system) and its waited-for children's; zero
/// once it is gone.
pub fn cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> =
        stat.rsplit_once(") ").map_or("", |(_, rest)| rest).split(' ').map(|f| f.parse().unwrap_or(0.0)).collect();
    if fields.len() < 15 {
        return (0.0, 0.0);
    }
    ((fields[11] + fields[12]) / TICKS, (fields[13] + fields[14]) / TICKS)
}

/// Busy CPU seconds of the whole machine.
pub fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<f64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    (fields.iter().take(8).sum::<f64>() - fields[3] - fields[4]) / TICKS
}

/// Threads of process `pid`.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Open file descriptors of process `pid` (of this one, the one reading the list included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The 1-minute load average.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// Waits until the 1-minute load is below [`QUIET_LOAD`], for at most `at_most`; returns the load
/// then, and whether it got there.
pub fn wait_quiet(at_most: Duration) -> (f64, bool) {
    let deadline = Instant::now() + at_most;
    let mut said = false;
    loop {
        let load = load();
        if load < QUIET_LOAD {
            return (load, true);
        }
        if Instant::now() > deadline {
            eprintln!("load still {load:.2}: measuring under load");
            return (load, false);
        }
        if !said {
            eprintln!("load {load:.2}: waiting for it to fall below {QUIET_LOAD}");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}
