//! Listening: binding an address the way Go's listeners do (a bare port takes IPv6 and IPv4
//! alike), and one listener's accept loop, which gives every connection a slot and, at shutdown,
//! lets the open ones finish for a moment.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{connection, Shared};

/// Longest time open connections get to finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the kernel queues before the daemon accepts them.
const LISTEN_BACKLOG: i32 = 1024;
/// Waits after a failed `accept` (mostly: out of file descriptors), doubling up to the second.
const ACCEPT_RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// Binds `address` for listening. The unspecified IPv6 address (what `:PORT` means) takes IPv4
/// connections too, as Go's listeners do; on a host without IPv6 it becomes `0.0.0.0`.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    if address.ip() == Ipv6Addr::UNSPECIFIED {
        let ipv4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, address.port()));
        // A kernel without IPv6 refuses the socket itself, or the address; any other error (the
        // port is taken, no permission) is the answer.
        let socket = match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None) {
            Ok(socket) => socket,
            Err(error) => return ipv4_only(error, ipv4),
        };
        match listen(socket, address, Some(false)) {
            Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => ipv4_only(error, ipv4),
            bound => bound,
        }
    } else {
        let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
        listen(socket, address, None)
    }
}

fn ipv4_only(error: std::io::Error, address: SocketAddr) -> std::io::Result<TcpListener> {
    info!(%error, "no IPv6 here: listening on IPv4 only");
    listen(socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?, address, None)
}

fn listen(socket: socket2::Socket, address: SocketAddr, only_v6: Option<bool>) -> std::io::Result<TcpListener> {
    if let Some(only_v6) = only_v6 {
        socket.set_only_v6(only_v6)?;
    }
    // As std and tokio do on unix: a restarted daemon may bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on one listener until shutdown, then waits for them to finish.
pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut retry = ACCEPT_RETRY.0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, retry_in = ?retry, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = crate::shutdown::stopped(&mut shutdown) => break,
                    }
                    retry = (retry * 2).min(ACCEPT_RETRY.1);
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        retry = ACCEPT_RETRY.0;
        let stop = shutdown.clone();
        let spawn = |slot| connections.spawn(connection::serve(stream, peer, shared.clone(), slot, stop));
        if !shared.slots.admit(&mut shutdown, spawn).await {
            break;
        }
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
}
