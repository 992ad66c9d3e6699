//! The real `buildkit-exporter` binary in a child process, its log in a file: for tests of what
//! users run, and for benchmarks whose figures must be the daemon's own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{eventually, http};

/// The `buildkit-exporter` binary cargo built for the calling test or benchmark. Cargo tells its
/// path only to the main package's tests and benchmarks, so this expands there.
#[macro_export]
macro_rules! exporter_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_buildkit-exporter"))
    };
}

/// How long the binary may take to say where it listens, and to exit after SIGTERM.
const WITHIN: Duration = Duration::from_secs(10);

/// util-linux's `setpriv`, which execs a program with a parent-death signal.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A command running `program` that gets SIGTERM should this process die first (a test killed
/// by a timeout, a benchmark interrupted), where `setpriv` is at hand.
pub fn with_deathsig(program: &Path) -> Command {
    if Path::new(SETPRIV).exists() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "TERM", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The binary running; stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct Binary {
    child: Child,
    /// Where it listens (the first address it logs).
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts `binary` with `args` on a free loopback port (unless `args` name another), without
    /// `DOCKER_HOST`, and waits until it says where it listens; `wrap` runs it under another
    /// command (e.g. `setpriv ...`).
    pub fn start(binary: &Path, args: &[&str], wrap: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = match wrap.split_first() {
            Some((program, rest)) => {
                let mut command = with_deathsig(Path::new(program));
                command.args(rest).arg(binary);
                command
            }
            None => with_deathsig(binary),
        };
        let child = command
            .args(["--web.listen-address", "127.0.0.1:0"])
            .args(args)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut binary = Binary { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)), log, _dir: dir };
        let deadline = Instant::now() + WITHIN;
        binary.addr = loop {
            let log = binary.log();
            if let Some(addr) = log.lines().find_map(|l| l.split("msg=listening address=").nth(1)) {
                break addr.trim().parse().expect("listening address");
            }
            let running = matches!(binary.child.try_wait(), Ok(None));
            assert!(running && Instant::now() < deadline, "no listening line in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        };
        binary
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `text`; returns that line.
    pub async fn wait_for_log(&self, text: &str) -> String {
        eventually(Duration::from_secs(15), &format!("log line with {text:?}"), || async {
            self.log().lines().find(|l| l.contains(text)).map(str::to_string)
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        http::metrics(self.addr).await
    }

    /// Sends SIGTERM and waits for the exit status; panics unless it exits within 10 s.
    pub async fn terminate(mut self) -> ExitStatus {
        tokio::task::spawn_blocking(move || sigterm(&mut self.child, WITHIN).expect("exits after SIGTERM"))
            .await
            .unwrap()
    }

    /// Stops it; returns its log.
    pub fn stop(mut self) -> String {
        stop(&mut self.child, WITHIN);
        self.log()
    }
}

impl Drop for Binary {
    /// A failed assertion leaves no daemon behind.
    fn drop(&mut self) {
        stop(&mut self.child, WITHIN);
    }
}

/// Sends `child` SIGTERM, unless it has exited, and waits for it at most `within`.
fn sigterm(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            _ if Instant::now() > deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Stops `child`: SIGTERM, and SIGKILL if it is still running after `within`.
pub fn stop(child: &mut Child, within: Duration) {
    if sigterm(child, within).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
