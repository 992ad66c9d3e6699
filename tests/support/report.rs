//! The report of a benchmark: Markdown that says on what machine and from which commit it ran,
//! what the daemon logged and whether its checks passed; printed, and kept in `benches/NAME.md`
//! when the run is a full one.

use std::process::Command;

use crate::repo_file;

/// A report being written (with `write!`, as to a `String`).
pub struct Report {
    /// `NAME` of `benches/NAME.md`.
    name: &'static str,
    text: String,
    /// Checks that failed: the verdict lists them, and the benchmark then exits with status 1.
    pub failures: Vec<String>,
}

impl std::fmt::Write for Report {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

impl Report {
    /// An empty report, for `benches/NAME.md`.
    pub fn new(name: &'static str) -> Report {
        Report { name, text: String::new(), failures: Vec::new() }
    }

    /// What ran it: `2 cores (CPU model), DATE; the daemon built from `COMMIT``, and whether
    /// `src/` had changes not committed.
    pub fn machine() -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let date = time::OffsetDateTime::now_utc().date();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(repo_file(""))
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        let dirty =
            if git(&["status", "--porcelain", "src"]).is_empty() { "" } else { " with uncommitted changes in `src/`" };
        format!("{cores} cores ({cpu}), {date}; the daemon built from `{commit}`{dirty}")
    }

    /// Says what the daemon logged at warn or error level: `logs` are (the run, its log).
    pub fn daemon_logs(&mut self, logs: &[(&str, &str)]) {
        let lines: Vec<String> = logs
            .iter()
            .flat_map(|(run, log)| {
                log.lines().filter(|l| l.contains("level=warn") || l.contains("level=error")).map(move |l| {
                    if run.is_empty() {
                        format!("- `{l}`")
                    } else {
                        format!("- {run}: `{l}`")
                    }
                })
            })
            .collect();
        if lines.is_empty() {
            self.text.push_str("The daemon logged no warnings or errors.\n");
        } else {
            self.text.push_str(&format!("The daemon logged:\n\n{}\n", lines.join("\n")));
        }
    }

    /// The verdict: pass, or FAIL with every failed check.
    pub fn verdict(&mut self) {
        if self.failures.is_empty() {
            self.text.push_str("\n**Result: pass.**\n");
        } else {
            let failures: String = self.failures.iter().map(|f| format!("- {f}\n")).collect();
            self.text.push_str(&format!("\n**Result: FAIL.**\n\n{failures}"));
        }
    }

    /// Prints the report, keeps it in `benches/NAME.md` when `keep`, and exits with status 1
    /// after a failed check.
    pub fn finish(self, keep: bool) {
        print!("{}", self.text);
        if keep {
            let path = repo_file(&format!("benches/{}.md", self.name));
            std::fs::write(&path, &self.text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        if !self.failures.is_empty() {
            eprintln!("\n{} FAILED:\n- {}", self.name.to_uppercase(), self.failures.join("\n- "));
            std::process::exit(1);
        }
    }
}

/// The `q` quantile of `values` (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Seconds as milliseconds, `1.23 ms`.
pub fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

/// Bytes as `12 KiB`.
pub fn kib(bytes: usize) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

/// KiB as `9.2 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
