//! A unix-socket proxy in front of the engine, so a test can cut the exporter's connection
//! mid-build (every open stream breaks and new dials fail) and later restore it.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

pub struct Proxy {
    pub socket: PathBuf,
    target: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `socket`, forwarding to the unix socket `target`.
    pub fn start(socket: &Path, target: &Path) -> Proxy {
        let mut proxy = Proxy { socket: socket.to_path_buf(), target: target.to_path_buf(), task: None };
        proxy.restore();
        proxy
    }

    /// The `--source` value reaching the engine through the proxy.
    pub fn source(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Breaks every open connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Accepts connections again.
    pub fn restore(&mut self) {
        self.cut();
        let listener = UnixListener::bind(&self.socket).expect("bind proxy socket");
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every forwarding task.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
