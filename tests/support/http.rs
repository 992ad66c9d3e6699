//! HTTP/1.1 as the tests and benchmarks speak it, to the daemon, Prometheus and chromedriver:
//! a request as text, a response read until it is complete (by `Content-Length`, chunked framing
//! or the server closing), over TCP or TLS on a runtime, and a keep-alive client on a blocking
//! socket for benchmarks that time requests back to back.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How much is read at a time: a scrape of a busy daemon is a few hundred KiB.
const CHUNK: usize = 64 * 1024;

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The response `raw` holds once it is complete: its head, then a body of `Content-Length`
    /// bytes or in chunks; with neither, all that came before the server closed (`closed`).
    fn complete(raw: &[u8], closed: bool) -> Option<Reply> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut reply = Reply { status, headers, body: Vec::new() };
        let rest = &raw[end + 4..];
        reply.body = match (reply.header("content-length"), reply.header("transfer-encoding")) {
            (Some(length), _) => rest.get(..length.parse().ok()?)?.to_vec(),
            (None, Some("chunked")) => dechunk(rest)?,
            _ if closed => rest.to_vec(),
            _ => return None,
        };
        Some(reply)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The body of chunked framing, once its last chunk has come.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(line + 2..line + 2 + size)?);
        rest = rest.get(line + 2 + size + 2..)?;
    }
}

/// `GET path` with `headers` added, `Connection: close`.
pub fn request(path: &str, headers: &[(&str, &str)]) -> String {
    request_with("GET", path, headers, "")
}

/// `method path` with `headers` and `body` (and its `Content-Length`), `Connection: close`.
pub fn request_with(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text + "\r\n" + body
}

/// Sends `request` on `stream` and reads the response; a read that fails once the response is
/// complete (a TLS peer closing without `close_notify`) still gives it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> std::io::Result<Reply> {
    stream.write_all(request.as_bytes()).await?;
    let (mut raw, mut chunk) = (Vec::new(), vec![0; CHUNK]);
    loop {
        let read = stream.read(&mut chunk).await;
        let n = *read.as_ref().unwrap_or(&0);
        raw.extend_from_slice(&chunk[..n]);
        if let Some(reply) = Reply::complete(&raw, n == 0) {
            return Ok(reply);
        }
        if n == 0 {
            let raw = String::from_utf8_lossy(&raw);
            return Err(read.err().unwrap_or_else(|| std::io::Error::other(format!("no HTTP response: {raw:?}"))));
        }
    }
}

/// `request` over plain TCP.
pub async fn plain(addr: SocketAddr, request: &str) -> std::io::Result<Reply> {
    exchange(TcpStream::connect(addr).await?, request).await
}

/// A TLS client trusting `ca`, presenting `identity` (cert, key PEM) if given: as it is, as Go
/// presents one (rustls' own checks would refuse an X.509 v1 certificate before any server did).
pub fn tls_client(ca: CertificateDer<'static>, identity: Option<(&str, &str)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified(cert, key)))),
        None => builder.with_no_client_auth(),
    })
}

/// `cert` (a PEM chain) and its `key`, unchecked.
pub fn certified(cert: &str, key: &str) -> CertifiedKey {
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let key = rustls::crypto::ring::default_provider().key_provider.load_private_key(key).unwrap();
    CertifiedKey::new(chain, key)
}

/// `request` over TLS to `localhost`: handshake, request and the whole response, within 10 s.
pub async fn tls(addr: SocketAddr, client: &Arc<ClientConfig>, request: &str) -> std::io::Result<Reply> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let stream =
            TlsConnector::from(client.clone()).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        exchange(stream, request).await
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timeout")))
}

/// A plain GET; returns status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = plain(addr, &request(path, &[])).await.unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    (reply.status, String::from_utf8(reply.body).expect("UTF-8 body"))
}

/// The `/metrics` text of the daemon at `addr`.
pub async fn metrics(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics answered {status}");
    body
}

/// A keep-alive HTTP/1.1 client for GETs on a blocking socket: no runtime between the request
/// and the clock of a benchmark.
pub struct Client {
    addr: SocketAddr,
    conn: Option<std::net::TcpStream>,
    chunk: Vec<u8>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None, chunk: vec![0; CHUNK] }
    }

    /// GETs `path`, gzip asked for when `gzip`; once more on a new connection when the server
    /// closed the kept one.
    pub fn get(&mut self, path: &str, gzip: bool) -> Reply {
        self.try_get(path, gzip)
            .or_else(|_| {
                self.conn = None;
                self.try_get(path, gzip)
            })
            .unwrap_or_else(|e| panic!("GET {path} from {}: {e}", self.addr))
    }

    fn try_get(&mut self, path: &str, gzip: bool) -> std::io::Result<Reply> {
        if self.conn.is_none() {
            let stream = std::net::TcpStream::connect(self.addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(stream);
        }
        let stream = self.conn.as_mut().unwrap();
        let encoding = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{encoding}\r\n")?;
        let mut raw = Vec::with_capacity(CHUNK);
        loop {
            let n = stream.read(&mut self.chunk)?;
            raw.extend_from_slice(&self.chunk[..n]);
            match Reply::complete(&raw, n == 0) {
                Some(reply) => return Ok(reply),
                None if n == 0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                None => {}
            }
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&mut self) -> String {
        let reply = self.get("/metrics", false);
        assert_eq!(reply.status, 200, "/metrics answered {}", reply.status);
        String::from_utf8(reply.body).expect("UTF-8 metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_by_its_length_its_chunks_or_the_close() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(Reply::complete(&sized[..sized.len() - 1], false).map(|r| r.body), None);
        let reply = Reply::complete(sized, false).unwrap();
        assert_eq!((reply.status, reply.text(), reply.header("content-length")), (200, "hello".into(), Some("5")));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        assert!(Reply::complete(&chunked[..chunked.len() - 7], false).is_none());
        assert_eq!(Reply::complete(chunked, false).unwrap().text(), "hello");
        let unframed = b"HTTP/1.1 400 Bad Request\r\n\r\nsent to an HTTPS server\n";
        assert!(Reply::complete(unframed, false).is_none());
        assert_eq!(Reply::complete(unframed, true).unwrap().status, 400);
        assert!(Reply::complete(b"HTTP/1.1 200 OK\r\n", true).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_keep_alive_client_scrapes_again_on_its_connection() {
        let daemon = crate::Daemon::start(&["unix:///nonexistent.sock"], |_| {}).await;
        let addr = daemon.addr;
        let (plain, gzip) = tokio::task::spawn_blocking(move || {
            let mut client = Client::new(addr);
            (client.metrics(), client.get("/metrics", true))
        })
        .await
        .unwrap();
        assert!(plain.contains("buildkit_exporter_build_info"), "{plain}");
        assert_eq!(gzip.header("content-encoding"), Some("gzip"));
        daemon.stop().await;
    }
}
