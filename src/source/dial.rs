//! Opening a gRPC channel to BuildKit: directly on a buildkitd socket, or through a Docker
//! Engine's `POST /grpc` endpoint upgraded to h2c (what buildx's "docker" driver does), or through
//! an exec in a container builder (what its "docker-container" driver does, `exec.rs`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use tower::service_fn;

use super::peer::Peer;
use super::spec::{Endpoint, Link, Transport};
use super::SourceError;

/// A byte stream to BuildKit, whatever carries it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxedIo = Pin<Box<dyn Io>>;

/// Opens a channel to the BuildKit Control service at `endpoint`. Reaching it (dial and
/// upgrade) may take `link.timeout`; once open, the channel pings every `link.keepalive` and
/// fails every open stream when a ping goes unanswered for `link.timeout`, so a link that
/// silently stopped carrying bytes does not look alive. Over a unix socket, the process that
/// answered comes with it.
pub async fn connect(endpoint: &Endpoint, link: Link) -> Result<(Channel, Option<Peer>), SourceError> {
    let target = endpoint.clone();
    let peer: Arc<Mutex<Option<Peer>>> = Arc::default();
    let answered = peer.clone();
    let connector = service_fn(move |_: Uri| {
        let (target, answered) = (target.clone(), answered.clone());
        async move {
            match tokio::time::timeout(link.timeout, dial(&target, &answered, link.timeout)).await {
                Ok(io) => io.map(TokioIo::new),
                Err(_) => Err(SourceError::Timeout { endpoint: target.to_string(), after: link.timeout }),
            }
        }
    });
    // The URI is required by tonic but never resolved: the connector decides where to go.
    TonicEndpoint::from_static("http://buildkit.invalid")
        .http2_keep_alive_interval(link.keepalive)
        .keep_alive_timeout(link.timeout)
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map(|channel| (channel, *peer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
        .map_err(|error| {
            find_source_error(&error).unwrap_or_else(|| SourceError::Protocol {
                endpoint: endpoint.to_string(),
                detail: error_chain(&error),
            })
        })
}

/// Reaches `endpoint`, noting in `peer` the process behind a unix socket or in a container.
async fn dial(endpoint: &Endpoint, peer: &Mutex<Option<Peer>>, timeout: Duration) -> Result<BoxedIo, SourceError> {
    match endpoint {
        // buildkitd speaks gRPC over TLS directly, negotiated as h2.
        Endpoint::Buildkitd(transport) => open(endpoint, transport, &[b"h2"], peer).await,
        // An engine speaks HTTP/1.1 until the upgrade.
        Endpoint::Docker(transport) => {
            let stream = open(endpoint, transport, &[b"http/1.1"], peer).await?;
            upgrade(endpoint, stream).await
        }
        // The engine carries an exec's stdin and stdout.
        Endpoint::Container { engine, container } => {
            let address = endpoint.to_string();
            let docker = super::engine::client(engine, timeout)
                .map_err(|detail| SourceError::Unreachable { endpoint: address.clone(), detail })?;
            let (io, process) = super::exec::dial(&docker, container, &address).await?;
            *peer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(process);
            Ok(Box::pin(io))
        }
    }
}

async fn open(
    endpoint: &Endpoint,
    transport: &Transport,
    alpn: &[&[u8]],
    peer: &Mutex<Option<Peer>>,
) -> Result<BoxedIo, SourceError> {
    let io = |error| SourceError::from_io(endpoint, error);
    match transport {
        Transport::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(io)?;
            *peer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Peer::of(&stream);
            Ok(Box::pin(stream))
        }
        Transport::Tcp(address, None) => Ok(Box::pin(TcpStream::connect(address).await.map_err(io)?)),
        Transport::Tcp(address, Some(files)) => {
            let tcp = TcpStream::connect(address).await.map_err(io)?;
            Ok(Box::pin(super::tls::connect(endpoint, address, files, alpn, tcp).await?))
        }
    }
}

/// Performs the HTTP/1.1 `POST /grpc` upgrade to h2c on an engine connection.
async fn upgrade(endpoint: &Endpoint, stream: BoxedIo) -> Result<BoxedIo, SourceError> {
    let protocol = |detail: String| SourceError::Protocol { endpoint: endpoint.to_string(), detail };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(format!("HTTP handshake failed: {e}")))?;
    // Without `with_upgrades` the upgraded stream is never handed over.
    tokio::spawn(connection.with_upgrades());
    let request = Request::post("/grpc")
        .header(header::HOST, "docker")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "h2c")
        .body(Empty::<Bytes>::new())
        .expect("static request is valid");
    let response = sender.send_request(request).await.map_err(|e| {
        let detail = error_chain(&e);
        // TLS 1.3 finishes the handshake before the server checks our certificate: a refusal
        // arrives as an alert on the first read.
        if detail.contains("alert") {
            SourceError::Tls {
                endpoint: endpoint.to_string(),
                detail: format!("refused after the handshake: {detail}"),
            }
        } else {
            protocol(format!("no answer to the /grpc upgrade: {detail}"))
        }
    })?;
    if response.status() == StatusCode::BAD_REQUEST {
        // What Go's TLS server answers to plain HTTP: "Client sent an HTTP request to an HTTPS
        // server."
        let body = http_body_util::Limited::new(response.into_body(), 4096);
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if String::from_utf8_lossy(&body).contains("HTTPS server") {
            return Err(SourceError::NeedsTls { endpoint: endpoint.to_string() });
        }
        return Err(SourceError::Upgrade { endpoint: endpoint.to_string(), status: 400 });
    }
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(SourceError::Upgrade { endpoint: endpoint.to_string(), status: response.status().as_u16() });
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| protocol(format!("upgrade to h2c failed: {e}")))?;
    Ok(Box::pin(TokioIo::new(upgraded)))
}

/// The [`SourceError`] a connector returned, from inside tonic's error.
fn find_source_error(error: &(dyn std::error::Error + 'static)) -> Option<SourceError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<SourceError>() {
            return Some(found.clone());
        }
        current = e.source();
    }
    None
}

/// An error with its causes, on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = e.source();
    }
    text
}
