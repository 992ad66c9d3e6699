//! The HTTP side: `/metrics` (or the configured path), the status page at `/`, the JSON API
//! under `/api/v1/`, and `/healthz` — over TLS and behind basic auth when the web configuration
//! file asks for them, and guarded so that stalled or hostile clients cannot keep Prometheus
//! out: every connection must finish its TLS handshake and send each request's headers within
//! `--web.header-timeout`, and at most `--web.max-connections` are held, the one waiting longest
//! for a request giving way to a newcomer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, VARY, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::builder::Builder;
use crate::config::Web;
use crate::views::metrics::{Exposition, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::views::{api, page};
use crate::web::auth::Gate;

/// Longest time open connections get to finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the kernel queues before the daemon accepts them.
const LISTEN_BACKLOG: i32 = 1024;
/// Waits after a failed `accept` (mostly: out of file descriptors), doubling up to the second.
const ACCEPT_RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));
/// What a response other than the page may do in a browser: nothing.
const DATA_POLICY: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Go's answer to plain HTTP on a TLS port, so that a misconfigured scraper says what is wrong.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// What the handlers read.
pub struct Views {
    /// Every metric the daemon exposes.
    pub exposition: Exposition,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Every builder, for the JSON API.
    pub builders: Vec<Arc<Builder>>,
    /// The status page, linking to `telemetry_path`.
    page: Bytes,
    /// The page's Content-Security-Policy: its own inline script and style, by hash, and
    /// nothing else.
    page_policy: HeaderValue,
}

impl Views {
    /// The views of `builders` and `exposition`, with the page prepared once.
    pub fn new(exposition: Exposition, telemetry_path: String, builders: Vec<Arc<Builder>>) -> Views {
        let page = page::HTML.replace("/metrics\"", &format!("{telemetry_path}\""));
        let page_policy = HeaderValue::from_str(&page_policy(&page)).expect("hashes are header-safe");
        Views { exposition, telemetry_path, builders, page: Bytes::from(page), page_policy }
    }
}

/// The Content-Security-Policy of a self-contained page: its inline `<script>` and `<style>`
/// blocks are allowed by their SHA-256 (so nothing injected into it could run), it may fetch
/// from its own origin (the JSON API) and nothing else, and no other site may frame it.
fn page_policy(html: &str) -> String {
    let sources = |tag: &str| {
        let hashes: Vec<String> = inline_blocks(html, tag)
            .into_iter()
            .map(|block| {
                let digest = ring::digest::digest(&ring::digest::SHA256, block.as_bytes());
                format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
            })
            .collect();
        if hashes.is_empty() {
            "'none'".to_string()
        } else {
            hashes.join(" ")
        }
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sources("script"),
        sources("style")
    )
}

/// The text of every `<tag ...>...</tag>` block, exactly as browsers hash it.
fn inline_blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut blocks = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        // `<scripts>` or `<styled>` are other tags.
        if !after.starts_with(['>', ' ', '\t', '\n', '\r']) {
            rest = after;
            continue;
        }
        let Some(body) = after.find('>').map(|end| &after[end + 1..]) else { break };
        let Some(end) = body.find(&close) else { break };
        blocks.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    blocks
}

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

/// What every connection shares.
struct Shared {
    views: Arc<Views>,
    web: Web,
    gate: Gate,
    slots: Arc<Slots>,
}

/// Serves `listeners` until `shutdown` turns true, then lets open connections finish.
pub async fn serve(listeners: Vec<TcpListener>, views: Arc<Views>, web: Web, shutdown: watch::Receiver<bool>) {
    if let Some(file) = &web.config_file {
        let config = file.current();
        if !config.users.is_empty() && config.tls.is_none() {
            warn!(file = %file.path().display(), "basic auth without TLS: passwords cross the network in clear text");
        }
    }
    let slots = Slots::new(web.max_connections);
    let shared = Arc::new(Shared { views, web, gate: Gate::default(), slots });
    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(accept(listener, shared.clone(), shutdown.clone()));
    }
    while loops.join_next().await.is_some() {}
}

/// Accepts connections on one listener until shutdown, then waits for them to finish.
async fn accept(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
        let spawn = |slot| connections.spawn(connection(stream, peer, shared.clone(), slot, stop));
        if !shared.slots.admit(&mut shutdown, spawn).await {
            break;
        }
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
}

/// The open connections, for `--web.max-connections`.
///
/// A connection is *serving* while it answers an authorized request, and waiting otherwise:
/// in its TLS handshake, sending headers, being authenticated, or idle between requests. When
/// the table is full, a newcomer closes the connection that has been waiting the longest, so
/// clients that connect and send nothing (or trickle bytes, or hammer wrong passwords) cannot
/// keep a scraper out, and the daemon holds no more than the limit. Only when every connection
/// is serving does a newcomer wait, unread, until one has answered; accepting stops meanwhile,
/// so later ones wait in the kernel's accept queue.
struct Slots {
    max: usize,
    table: Mutex<Table>,
    /// Signalled when a connection closes or stops serving.
    freed: Notify,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
}

struct Entry {
    serving: bool,
    /// When it started waiting.
    since: Instant,
    /// Closes it; unset for the moment between its registration and its task's start, during
    /// which it cannot be chosen to make room.
    abort: Option<AbortHandle>,
}

/// A connection's place in [`Slots`], given up when its task ends (or is aborted).
struct Slot {
    id: u64,
    slots: Arc<Slots>,
}

/// Marks a connection as serving until dropped.
struct Serving(Arc<Slot>);

impl Slots {
    fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), table: Mutex::default(), freed: Notify::new() })
    }

    /// Registers a new connection and starts it with `spawn`, making room first if the table
    /// is full; false if shutdown came first.
    async fn admit(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
        spawn: impl FnOnce(Arc<Slot>) -> AbortHandle,
    ) -> bool {
        let slot = loop {
            if let Some(slot) = self.register() {
                break slot;
            }
            tokio::select! {
                _ = self.freed.notified() => {}
                _ = crate::shutdown::stopped(shutdown) => return false,
            }
        };
        let id = slot.id;
        let abort = spawn(slot);
        // The task may already be over (and its entry gone); then there is nothing to set.
        if let Some(entry) = self.table.lock().expect("connection table lock").open.get_mut(&id) {
            entry.abort = Some(abort);
        }
        true
    }

    fn register(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let mut table = self.table.lock().expect("connection table lock");
        if table.open.len() >= self.max {
            let longest_waiting = table
                .open
                .iter()
                .filter(|(_, entry)| !entry.serving && entry.abort.is_some())
                .min_by_key(|(_, entry)| entry.since)
                .map(|(id, _)| *id)?;
            let entry = table.open.remove(&longest_waiting).expect("just found");
            entry.abort.expect("only started connections are chosen").abort();
            debug!(limit = self.max, "connection limit reached: closed the one waiting longest");
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(id, Entry { serving: false, since: Instant::now(), abort: None });
        Some(Arc::new(Slot { id, slots: self.clone() }))
    }

    fn set_serving(&self, id: u64, serving: bool) {
        if let Some(entry) = self.table.lock().expect("connection table lock").open.get_mut(&id) {
            entry.serving = serving;
            entry.since = Instant::now();
        }
        if !serving {
            self.freed.notify_one();
        }
    }
}

impl Slot {
    fn serving(self: &Arc<Self>) -> Serving {
        self.slots.set_serving(self.id, true);
        Serving(self.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.slots.set_serving(self.0.id, false);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table.lock().expect("connection table lock").open.remove(&self.id);
        self.slots.freed.notify_one();
    }
}

/// One connection: TLS if the web configuration asks for it (as it reads when the connection
/// arrives), then HTTP/1.1 until the client leaves, stalls or shutdown.
async fn connection(
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
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
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
        async move { Ok::<_, Infallible>(respond(&shared, &slot, request).await) }
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

/// Answers one request: authentication, then the view, then the headers every response gets.
async fn respond(shared: &Shared, slot: &Arc<Slot>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    // Re-read here too, not only per connection: a scraper's keep-alive connection may never
    // close, and a removed user must not keep working on it.
    let config = shared.web.config_file.as_ref().map(|file| file.refreshed());
    let extra = config.as_deref().map(|c| c.headers.as_slice()).unwrap_or_default();
    if let Some(config) = &config {
        if !config.users.is_empty() && !shared.gate.admits(&config.users, request.headers().get(AUTHORIZATION)).await {
            let response = Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(WWW_AUTHENTICATE, "Basic realm=\"buildkit-exporter\", charset=\"UTF-8\"")
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from_static(b"unauthorized\n")))
                .expect("static response");
            return secure(response, extra);
        }
    }
    let _serving = slot.serving();
    secure(handle(&shared.views, &request), extra)
}

/// Adds the headers every response carries, then the configured ones (which may replace them).
fn secure(mut response: Response<Full<Bytes>>, extra: &[(HeaderName, HeaderValue)]) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.entry(CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(DATA_POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // For browsers older than CSP's frame-ancestors.
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    response
}

fn handle(views: &Views, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::from_static(b"method not allowed\n")))
            .expect("static response");
    }
    const JSON: &str = "application/json";
    let path = request.uri().path();
    // (status, content type, body, whether it is worth compressing)
    let (status, content_type, body, compressible) = if path == views.telemetry_path {
        (StatusCode::OK, METRICS_CONTENT_TYPE, Bytes::from(views.exposition.render()), true)
    } else if path == "/healthz" {
        (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n"), false)
    } else if is_page(path) {
        (StatusCode::OK, "text/html; charset=utf-8", views.page.clone(), true)
    } else if path == "/api/v1/sources" {
        (StatusCode::OK, JSON, Bytes::from(api::sources(&views.builders, crate::clock::now())), true)
    } else if path == "/api/v1/builds" {
        (StatusCode::OK, JSON, Bytes::from(api::list(&views.builders, crate::clock::now())), true)
    } else if let Some(reference) = path.strip_prefix("/api/v1/builds/") {
        match api::one(&views.builders, reference, crate::clock::now()) {
            Some(body) => (StatusCode::OK, JSON, Bytes::from(body), true),
            None => (StatusCode::NOT_FOUND, JSON, Bytes::from_static(b"{\"error\":\"no such build\"}"), false),
        }
    } else {
        (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n"), false)
    };
    let mut response = Response::builder().status(status).header(CONTENT_TYPE, content_type);
    if is_page(path) {
        response = response.header(CONTENT_SECURITY_POLICY, views.page_policy.clone());
    }
    let body = if compressible {
        response = response.header(VARY, "Accept-Encoding");
        if accepts_gzip(request.headers()) {
            response = response.header(CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        }
    } else {
        body
    };
    response.body(Full::new(body)).expect("static response")
}

/// Whether `path` is the status page: `/`, or a build's own address `/builds/{ref}` (the same
/// page, which then draws that build).
fn is_page(path: &str) -> bool {
    path == "/" || path.strip_prefix("/builds/").is_some_and(|r| !r.is_empty() && !r.contains('/'))
}

/// Whether `Accept-Encoding` allows gzip: named (or `*`) with a quality above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(quality > 0.0),
                "*" => any = Some(quality > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Gzips a body rendered in memory. The fastest level: a build host's cores are busy building,
/// and the exposition text shrinks several-fold even so.
fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to memory");
    Bytes::from(encoder.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_allows_exactly_its_inline_blocks() {
        let html = "<style>a{}</style><script>go()</script><scripts>x</scripts><script type=\"module\">m()</script>";
        assert_eq!(inline_blocks(html, "script"), ["go()", "m()"]);
        assert_eq!(inline_blocks(html, "style"), ["a{}"]);
        let policy = page_policy(html);
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 3, "{policy}");
        // The digest of "go()" as browsers compute it (`echo -n 'go()' | sha256sum`, base64).
        let digest = ring::digest::digest(&ring::digest::SHA256, b"go()");
        assert!(policy.contains(&base64::engine::general_purpose::STANDARD.encode(digest.as_ref())));
        assert!(page_policy("<p>no script</p>").contains("script-src 'none'; style-src 'none'"));
    }

    #[test]
    fn the_status_page_runs_under_its_policy() {
        // The policy allows inline blocks by hash, not inline attributes: an event handler or a
        // style attribute added to the page would be blocked by browsers, so none may be there.
        let policy = page_policy(page::HTML);
        assert_eq!(policy.matches("'sha256-").count(), 2, "one script and one style block: {policy}");
        for attribute in [" style=", " onclick=", " onload=", " onerror=", "javascript:"] {
            assert!(!page::HTML.contains(attribute), "the page has {attribute}");
        }
    }

    #[test]
    fn accept_encoding() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(accepts("*"));
        assert!(accepts("GZIP"));
        assert!(!accepts("identity"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("*;q=0.5, gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_round_trips() {
        let text = "buildkit_builds_running{builder=\"default\"} 0\n".repeat(100);
        let packed = gzip(text.as_bytes());
        assert!(packed.len() < text.len() / 5);
        let mut unpacked = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut unpacked).unwrap();
        assert_eq!(unpacked, text);
    }

    #[tokio::test]
    async fn a_full_table_closes_the_connection_waiting_longest() {
        let slots = Slots::new(2);
        let (_stop, mut shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut given = None;
            let spawn = |slot: Arc<Slot>| {
                given = Some(slot.clone());
                tasks.spawn(async move {
                    let _slot = slot;
                    std::future::pending::<()>().await
                })
            };
            assert!(slots.admit(&mut shutdown, spawn).await);
            held.push(given.unwrap());
        }
        let open = || slots.table.lock().unwrap().open.keys().copied().collect::<Vec<_>>();
        let _serving = held[1].serving();
        // Full: the first connection, waiting since it was opened, makes room; the second, which
        // is answering a request, stays.
        assert!(slots.admit(&mut shutdown, |slot| tasks.spawn(async move { drop(slot) })).await);
        let open = open();
        assert!(!open.contains(&held[0].id) && open.contains(&held[1].id), "{open:?}");
        let (first, second) = (tasks.join_next().await.unwrap(), tasks.join_next().await.unwrap());
        let cancelled = [first, second].iter().filter(|r| r.as_ref().is_err_and(|e| e.is_cancelled())).count();
        assert_eq!(cancelled, 1, "the newcomer ran, the waiting one was closed");
    }
}
