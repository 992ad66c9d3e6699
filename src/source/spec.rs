//! What a source is and how it is reached: the `--source` URL grammar (`[NAME=]URL[?TLS
//! options]`), the TLS files the Docker CLI's environment names, and how a link is kept and
//! checked.

use std::path::PathBuf;
use std::time::Duration;

use crate::defaults;

/// How a source is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address, `host:port`, in plaintext or TLS.
    Tcp(String, Option<TlsFiles>),
}

/// The files a TLS connection to a source is made with, in PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates the source's certificate must chain to.
    pub ca: PathBuf,
    /// The client certificate, for sources that ask for one (mTLS).
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    pub key: Option<PathBuf>,
    /// The name the source's certificate must carry; default: the host of the address.
    pub server_name: Option<String>,
}

/// What the Docker CLI's environment says about TLS to `tcp://` engines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerTls {
    /// `DOCKER_TLS_VERIFY` is set (to anything but an empty string, as the CLI reads it).
    pub verify: bool,
    /// `DOCKER_CERT_PATH`, else `~/.docker`: where `ca.pem`, `cert.pem` and `key.pem` are.
    pub cert_path: PathBuf,
}

impl DockerTls {
    /// From the process environment.
    pub fn from_env() -> DockerTls {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        DockerTls {
            verify: std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()),
            cert_path: std::env::var_os("DOCKER_CERT_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".docker")),
        }
    }

    /// The files `DOCKER_TLS_VERIFY` asks for, if it does.
    fn files(&self) -> Option<TlsFiles> {
        self.verify.then(|| TlsFiles {
            ca: self.cert_path.join("ca.pem"),
            cert: Some(self.cert_path.join("cert.pem")),
            key: Some(self.cert_path.join("key.pem")),
            server_name: None,
        })
    }
}

/// What answers at a source's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Docker Engine: BuildKit is reached by upgrading `POST /grpc` to h2c.
    Docker(Transport),
    /// A standalone buildkitd serving gRPC directly.
    Buildkitd(Transport),
    /// A buildx container builder: BuildKit in a container of the engine at `engine`, reached
    /// by running `buildctl dial-stdio` in it. Found by the engine's source, never named.
    Container { engine: Transport, container: String },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (prefix, transport) = match self {
            Endpoint::Docker(t) => ("", t),
            Endpoint::Buildkitd(t) => ("buildkitd+", t),
            // How buildx itself names the node's endpoint.
            Endpoint::Container { container, .. } => return write!(f, "docker-container://{container}"),
        };
        // The address only: it names the source in labels and logs, which must not change
        // with TLS settings nor show their files.
        match transport {
            Transport::Unix(path) => write!(f, "{prefix}unix://{}", path.display()),
            Transport::Tcp(addr, _) => write!(f, "{prefix}tcp://{addr}"),
        }
    }
}

/// One source to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The `builder` label value.
    pub name: String,
    /// Where it is.
    pub endpoint: Endpoint,
}

impl SourceSpec {
    /// Parses `[NAME=]URL[?TLS options]`. Without a NAME, the builder is called "default" when
    /// it is the only source, else by its address. A `tcp://` Docker Engine is reached with TLS
    /// when `docker_tls` says so (`DOCKER_TLS_VERIFY`), unless the URL's own options say
    /// otherwise: `ca=`, `cert=`, `key=`, `server-name=` (any of them turns TLS on) or `tls=off`.
    pub fn parse(text: &str, only_source: bool, docker_tls: &DockerTls) -> Result<SourceSpec, SpecError> {
        let bad = |why| SpecError { text: text.to_string(), why };
        let (name, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.trim().to_string()), url.trim()),
            _ => (None, text.trim()),
        };
        if name.as_deref() == Some("") {
            return Err(bad("NAME= must not be empty"));
        }
        let (url, options) = url.split_once('?').unwrap_or((url, ""));
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("expected a URL like unix:///var/run/docker.sock"))?;
        let docker = !scheme.starts_with("buildkitd+");
        let tls = tls_options(options, if docker { docker_tls.files() } else { None }).map_err(bad)?;
        let transport = |kind: &str| -> Result<Transport, SpecError> {
            match kind {
                "unix" if tls.is_some() && !options.is_empty() => Err(bad("TLS options need a tcp:// address")),
                "unix" if rest.starts_with('/') => Ok(Transport::Unix(PathBuf::from(rest))),
                "unix" => Err(bad("a unix socket path must be absolute")),
                "tcp" if rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) => {
                    Ok(Transport::Tcp(rest.trim_end_matches('/').to_string(), tls.clone()))
                }
                "tcp" => Err(bad("expected tcp://HOST:PORT")),
                "https" => Err(bad("use tcp://HOST:PORT with DOCKER_TLS_VERIFY, or with ?ca=...&cert=...&key=...")),
                "ssh" | "npipe" => Err(bad("only unix:// and tcp:// are supported (no ssh)")),
                _ => Err(bad("unknown scheme: use unix://, tcp://, buildkitd+unix:// or buildkitd+tcp://")),
            }
        };
        let endpoint = match scheme.strip_prefix("buildkitd+") {
            Some(kind) => Endpoint::Buildkitd(transport(kind)?),
            None => Endpoint::Docker(transport(scheme)?),
        };
        let name = name.unwrap_or_else(|| if only_source { "default".to_string() } else { endpoint.to_string() });
        Ok(SourceSpec { name, endpoint })
    }
}

/// A source URL that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct SpecError {
    text: String,
    why: &'static str,
}

/// The TLS files a source URL's `options` (`key=value&...`) ask for, over `default`.
fn tls_options(options: &str, default: Option<TlsFiles>) -> Result<Option<TlsFiles>, &'static str> {
    if options.is_empty() {
        return Ok(default);
    }
    let mut files = default.unwrap_or_default();
    let mut on = true;
    for pair in options.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or("TLS options are KEY=VALUE, joined by &")?;
        match key {
            "ca" => files.ca = PathBuf::from(value),
            "cert" => files.cert = Some(PathBuf::from(value)),
            "key" => files.key = Some(PathBuf::from(value)),
            "server-name" => files.server_name = Some(value.to_string()),
            "tls" if value == "off" => on = false,
            _ => return Err("unknown option: use ca=, cert=, key=, server-name= or tls=off"),
        }
    }
    if !on {
        return Ok(None);
    }
    if files.ca.as_os_str().is_empty() {
        return Err("TLS needs ca=FILE (the CA that signed the source's certificate)");
    }
    if files.cert.is_some() != files.key.is_some() {
        return Err("a client certificate needs both cert= and key=");
    }
    Ok(Some(files))
}

/// How the link to a source is kept and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Interval between link checks (an HTTP/2 ping and an `Info` call).
    pub keepalive: Duration,
    /// Longest wait for a connection, the `/grpc` upgrade, or the answer to a link check.
    pub timeout: Duration,
    /// Longest wait between attempts to reach a source that is down.
    pub retry_max: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link { keepalive: defaults::KEEPALIVE, timeout: defaults::SOURCE_TIMEOUT, retry_max: defaults::RETRY_MAX }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_default_when_alone_else_by_address_unless_named() {
        let parse = |text, only| SourceSpec::parse(text, only, &DockerTls::default()).unwrap();
        let socket = Endpoint::Docker(Transport::Unix("/var/run/docker.sock".into()));
        assert_eq!(parse("unix:///var/run/docker.sock", true), SourceSpec { name: "default".into(), endpoint: socket });
        assert_eq!(parse("unix:///var/run/docker.sock", false).name, "unix:///var/run/docker.sock");
        let named = parse("ci=buildkitd+tcp://builder:1234", true);
        let builder = Endpoint::Buildkitd(Transport::Tcp("builder:1234".into(), None));
        assert_eq!(named, SourceSpec { name: "ci".into(), endpoint: builder });
    }

    #[test]
    fn bad_sources_say_why() {
        for (text, why) in [
            ("ssh://me@host", "no ssh"),
            ("https://host:2376", "DOCKER_TLS_VERIFY"),
            ("tcp://host:2376?cert=/c.pem", "ca="),
            ("tcp://host:2376?ca=/ca.pem&cert=/c.pem", "both cert= and key="),
            ("tcp://host:2376?verify=yes", "unknown option"),
            ("unix:///x.sock?ca=/ca.pem", "tcp://"),
            ("unix://relative.sock", "absolute"),
            ("tcp://host", "HOST:PORT"),
            ("=unix:///a", "NAME="),
            ("/var/run/docker.sock", "expected a URL"),
            ("ftp://x", "unknown scheme"),
        ] {
            let err = SourceSpec::parse(text, true, &DockerTls::default()).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn tls_to_engines_follows_docker_and_the_source_url() {
        let env = DockerTls { verify: true, cert_path: PathBuf::from("/certs") };
        let engine = SourceSpec::parse("tcp://engine:2376", false, &env).unwrap();
        let off = SourceSpec::parse("b=tcp://other:2376?tls=off", false, &env).unwrap();
        let docker = TlsFiles {
            ca: "/certs/ca.pem".into(),
            cert: Some("/certs/cert.pem".into()),
            key: Some("/certs/key.pem".into()),
            server_name: None,
        };
        assert_eq!(engine.endpoint, Endpoint::Docker(Transport::Tcp("engine:2376".into(), Some(docker))));
        assert_eq!(off.endpoint, Endpoint::Docker(Transport::Tcp("other:2376".into(), None)));
        assert_eq!(engine.name, "tcp://engine:2376", "the address, never the files");
        let url = "buildkitd+tcp://bk:1234?ca=/p/ca.pem&cert=/p/c.pem&key=/p/k.pem&server-name=buildkitd";
        let mtls = TlsFiles {
            ca: "/p/ca.pem".into(),
            cert: Some("/p/c.pem".into()),
            key: Some("/p/k.pem".into()),
            server_name: Some("buildkitd".into()),
        };
        let spec = SourceSpec::parse(url, true, &env).unwrap();
        assert_eq!(spec.endpoint, Endpoint::Buildkitd(Transport::Tcp("bk:1234".into(), Some(mtls))));
        // DOCKER_TLS_VERIFY is the Docker CLI's: a buildkitd gets TLS only from its own options.
        let spec = SourceSpec::parse("buildkitd+tcp://bk:1234", true, &env).unwrap();
        assert_eq!(spec.endpoint, Endpoint::Buildkitd(Transport::Tcp("bk:1234".into(), None)));
    }
}
