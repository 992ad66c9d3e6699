//! The real `buildkit-exporter` binary as a child process, with its log captured.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `buildkit-exporter` binary cargo built for the calling test or benchmark. Cargo tells its
/// path only to the main package's tests and benchmarks, so this expands there.
#[macro_export]
macro_rules! exporter_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_buildkit-exporter"))
    };
}

pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Binary {
    /// Starts `binary` on a free loopback port with `args`; `wrap` runs it under another
    /// command (e.g. `setpriv ...`).
    pub async fn start(binary: &Path, args: &[&str], wrap: &[&str]) -> Binary {
        let mut command = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--web.listen-address", "127.0.0.1:0"])
            .args(args)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start buildkit-exporter");
        let log: Arc<Mutex<String>> = Arc::default();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("msg=listening address=").nth(1) {
                    if let (Some(tx), Ok(addr)) = (addr_tx.take(), addr.trim().parse::<SocketAddr>()) {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(10), addr_rx)
            .await
            .unwrap_or_else(|_| panic!("no listening line in the log:\n{}", log.lock().unwrap()))
            .expect("log reader");
        Binary { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing `text`; returns that line.
    pub async fn wait_for_log(&self, text: &str) -> String {
        crate::eventually(Duration::from_secs(15), &format!("log line with {text:?}"), || async {
            self.log().lines().find(|l| l.contains(text)).map(str::to_string)
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = crate::get(self.addr, "/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("exits after SIGTERM").unwrap()
    }
}
