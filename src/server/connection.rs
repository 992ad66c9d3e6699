//! One connection: TLS when the web configuration asks for it (as it reads when the connection
//! arrives), with plain HTTP on the TLS port answered as Go answers it and the handshake bounded
//! by the header timeout; then hyper's HTTP/1.1 until the client leaves, stalls or shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::slots::Slot;
use super::{guard, Shared};

/// Go's answer to plain HTTP on a TLS port, so that a misconfigured scraper says what is wrong.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves one accepted connection, holding `slot` until it ends.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    mut stop: watch::Receiver<bool>,
) {
    let tls = shared.web.config_file.as_ref().and_then(|file| file.refreshed().tls.clone());
    let Some(acceptor) = tls else {
        return http(TokioIo::new(stream), shared, slot, stop).await;
    };
    let handshake = tokio::select! {
        done = tokio::time::timeout(shared.web.header_timeout, handshake(stream, acceptor)) => done,
        _ = crate::shutdown::stopped(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(Some(stream))) => http(TokioIo::new(stream), shared, slot, stop).await,
        Ok(Ok(None)) => debug!(%peer, "plain HTTP on the TLS port: answered 400"),
        // A client's X.509 v1 certificate is told as such, not as rustls' opaque refusal.
        Ok(Err(error)) => match crate::certificate::refused_v1(&error) {
            Some(v1) => debug!(%peer, error = %v1, "TLS handshake failed"),
            None => debug!(%peer, %error, "TLS handshake failed"),
        },
        Err(_) => debug!(%peer, timeout = ?shared.web.header_timeout, "TLS handshake timed out"),
    }
}

/// Completes the server side of a TLS handshake; `None` when the client spoke plain HTTP (and
/// was told so).
async fn handshake(
    mut stream: TcpStream,
    acceptor: TlsAcceptor,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
        stream.write_all(PLAIN_HTTP_ON_TLS).await?;
        let _ = stream.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// Serves HTTP/1.1 on `io` until the client leaves, stalls, or shutdown.
async fn http<I>(io: I, shared: Arc<Shared>, slot: Arc<Slot>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let timeout = shared.web.header_timeout;
    let service = service_fn(move |request| {
        let (shared, slot) = (shared.clone(), slot.clone());
        async move { Ok::<_, Infallible>(guard::respond(&shared, &slot, request).await) }
    });
    // hyper starts the header timeout when a connection opens and again each time it goes idle
    // after a response, so it is the keep-alive timeout as well.
    let connection =
        http1::Builder::new().timer(TokioTimer::new()).header_read_timeout(timeout).serve_connection(io, service);
    tokio::pin!(connection);
    let stopping = tokio::select! {
        _ = connection.as_mut() => false,
        _ = crate::shutdown::stopped(&mut stop) => true,
    };
    if stopping {
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}
