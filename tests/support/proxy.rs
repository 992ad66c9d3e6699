//! A proxy in front of the engine (a unix socket) or a buildkitd's TLS listener (TCP) that
//! injects faults into the exporter's link: cut it (every stream breaks, new dials fail),
//! black-hole it (connections stay open and carry nothing: a half-open link), hold the engine's
//! bytes back (a slow replay) and release them, and break the HTTP/2 stream with garbage or a
//! truncated frame. Over TCP it carries the TLS records as they are: the exporter's handshake
//! is with the buildkitd behind it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixListener, UnixStream};
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

/// Where the proxy listens, or what it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

pub struct Proxy {
    /// Its unix socket (empty for a TCP proxy).
    pub socket: PathBuf,
    /// Where it listens: kept across a cut, so the exporter dials the same address again.
    listen: Address,
    target: Address,
    mode: watch::Sender<Mode>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Connections accepted so far.
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    /// Listens on `socket`, forwarding to the unix socket `target`.
    pub fn start(socket: &Path, target: &Path) -> Proxy {
        Proxy::listen(Address::Unix(socket.to_path_buf()), Address::Unix(target.to_path_buf()))
    }

    /// Listens on a free loopback port, forwarding to `target`, e.g. `127.0.0.1:23770`.
    pub fn start_tcp(target: &str) -> Proxy {
        let target: SocketAddr = target.parse().expect("a TCP target is IP:PORT");
        // A port of its own, found once: the listener is bound again on it after each cut.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Proxy::listen(Address::Tcp(free), Address::Tcp(target))
    }

    fn listen(listen: Address, target: Address) -> Proxy {
        let (mode, _) = watch::channel(Mode::Pass);
        let socket = match &listen {
            Address::Unix(path) => path.clone(),
            Address::Tcp(_) => PathBuf::new(),
        };
        let mut proxy = Proxy { socket, listen, target, mode, task: None, accepted: Default::default() };
        proxy.restore();
        proxy
    }

    /// `IP:PORT` of a TCP proxy.
    pub fn tcp_address(&self) -> String {
        match &self.listen {
            Address::Tcp(address) => address.to_string(),
            Address::Unix(path) => panic!("a unix proxy at {}", path.display()),
        }
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
        if let Address::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Accepts connections again, forwarding in `Pass` mode.
    pub fn restore(&mut self) {
        self.restore_in(Mode::Pass);
    }

    /// Accepts connections again, in `mode` from the first byte.
    pub fn restore_in(&mut self, mode: Mode) {
        self.cut();
        self.mode.send_replace(mode);
        let listener = Listener::bind(&self.listen);
        let (target, mode, accepted) = (self.target.clone(), self.mode.clone(), self.accepted.clone());
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every forwarding task.
            let mut connections = JoinSet::new();
            while let Some(inbound) = listener.accept().await {
                *accepted.lock().unwrap() += 1;
                let (target, mode) = (target.clone(), mode.subscribe());
                connections.spawn(async move {
                    match (inbound, &target) {
                        (Stream::Unix(inbound), Address::Unix(path)) => {
                            let Ok(outbound) = UnixStream::connect(path).await else { return };
                            forward(inbound, outbound, mode).await
                        }
                        (Stream::Tcp(inbound), Address::Tcp(address)) => {
                            let Ok(outbound) = TcpStream::connect(address).await else { return };
                            forward(inbound, outbound, mode).await
                        }
                        _ => unreachable!("a proxy listens and forwards on the same kind of socket"),
                    }
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

/// A listening socket of either kind.
enum Listener {
    Unix(UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// An accepted connection of either kind.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Listener {
    fn bind(address: &Address) -> Listener {
        match address {
            Address::Unix(path) => Listener::Unix(UnixListener::bind(path).expect("bind proxy socket")),
            Address::Tcp(address) => {
                // Bound again on the same port after a cut, while the cut connections may
                // still be in TIME_WAIT.
                let socket = TcpSocket::new_v4().unwrap();
                socket.set_reuseaddr(true).unwrap();
                socket.bind(*address).expect("bind proxy port");
                Listener::Tcp(socket.listen(64).unwrap())
            }
        }
    }

    async fn accept(&self) -> Option<Stream> {
        match self {
            Listener::Unix(listener) => listener.accept().await.ok().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(listener) => listener.accept().await.ok().map(|(s, _)| Stream::Tcp(s)),
        }
    }
}

/// Carries one connection both ways until either side closes or a fault ends it.
async fn forward<S, T>(inbound: S, outbound: T, mode: watch::Receiver<Mode>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (from_client, to_client) = tokio::io::split(inbound);
    let (from_engine, to_engine) = tokio::io::split(outbound);
    tokio::join!(
        pump(from_client, to_engine, mode.clone(), Direction::ToEngine),
        pump(from_engine, to_client, mode, Direction::ToClient),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToEngine,
    ToClient,
}

/// Copies `from` to `to` as `mode` says, until either side closes or a fault ends it.
async fn pump<R, W>(mut from: R, mut to: W, mut mode: watch::Receiver<Mode>, direction: Direction)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
