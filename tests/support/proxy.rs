//! A unix-socket proxy in front of the engine that injects faults into the exporter's link:
//! cut it (every stream breaks, new dials fail), black-hole it (connections stay open and carry
//! nothing: a half-open link), hold the engine's bytes back (a slow replay) and release them,
//! and break the HTTP/2 stream with garbage or a truncated frame.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Reads and drops everything, both ways, and never closes: a dead peer.
    BlackHole,
    /// Keeps the engine's bytes back (the exporter's still go through) until `Pass` again.
    Hold,
    /// Sends the exporter bytes that are not HTTP/2, then closes.
    Garbage,
    /// Sends the exporter the first half of the engine's next chunk, then closes.
    Truncate,
}

pub struct Proxy {
    pub socket: PathBuf,
    target: PathBuf,
    mode: watch::Sender<Mode>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Connections accepted so far.
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    /// Listens on `socket`, forwarding to the unix socket `target`.
    pub fn start(socket: &Path, target: &Path) -> Proxy {
        let (mode, _) = watch::channel(Mode::Pass);
        let mut proxy = Proxy {
            socket: socket.to_path_buf(),
            target: target.to_path_buf(),
            mode,
            task: None,
            accepted: Default::default(),
        };
        proxy.restore();
        proxy
    }

    /// The `--source` value reaching the engine through the proxy.
    pub fn source(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }

    /// Breaks every open connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Accepts connections again, forwarding in `Pass` mode.
    pub fn restore(&mut self) {
        self.restore_in(Mode::Pass);
    }

    /// Accepts connections again, in `mode` from the first byte.
    pub fn restore_in(&mut self, mode: Mode) {
        self.cut();
        self.mode.send_replace(mode);
        let listener = UnixListener::bind(&self.socket).expect("bind proxy socket");
        let (target, mode, accepted) = (self.target.clone(), self.mode.clone(), self.accepted.clone());
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every forwarding task.
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                *accepted.lock().unwrap() += 1;
                let (target, mode) = (target.clone(), mode.subscribe());
                connections.spawn(async move {
                    let Ok(outbound) = UnixStream::connect(&target).await else { return };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_engine, to_engine) = outbound.into_split();
                    tokio::join!(
                        pump(from_client, to_engine, mode.clone(), Direction::ToEngine),
                        pump(from_engine, to_client, mode, Direction::ToClient),
                    );
                });
            }
        }));
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToEngine,
    ToClient,
}

/// Copies `from` to `to` as `mode` says, until either side closes or a fault ends it.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>, direction: Direction) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        let current = *mode.borrow_and_update();
        match (current, direction) {
            (Mode::Pass, _) | (Mode::Hold, Direction::ToEngine)
                if !held.is_empty() && to.write_all(&std::mem::take(&mut held)).await.is_err() =>
            {
                return;
            }
            (Mode::Garbage, Direction::ToClient) => {
                let _ = to.write_all(b"\x00\x00\x08\x07\xff\xff\xffGARBAGE NOT HTTP/2 \x13\x37").await;
                let _ = to.shutdown().await;
                return;
            }
            _ => {}
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.changed() => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let current = *mode.borrow();
        match (current, direction) {
            (Mode::BlackHole, _) => {}
            (Mode::Hold, Direction::ToClient) => held.extend_from_slice(&buffer[..n]),
            (Mode::Truncate, Direction::ToClient) => {
                let _ = to.write_all(&buffer[..n.div_ceil(2)]).await;
                let _ = to.shutdown().await;
                return;
            }
            _ => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
