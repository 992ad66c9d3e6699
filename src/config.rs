//! Command-line flags (each also read from a `BUILDKIT_EXPORTER_*` environment variable) and
//! the validated configuration the daemon runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::model::Settings;
use crate::web::{WebConfigError, WebConfigFile};

/// The default `--web.listen-address`.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9817";
/// The engine socket used when neither `--source` nor `DOCKER_HOST` is given.
pub const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// Prometheus exporter for BuildKit image builds.
///
/// Watches every build of one or more Docker Engines (or standalone buildkitd daemons) through
/// BuildKit's Control API and serves their progress, steps, cache use and results on /metrics.
/// It only reads: it never starts, cancels or prunes builds.
#[derive(Debug, Parser)]
#[command(name = "buildkit-exporter", version, about, long_about)]
pub struct Cli {
    /// Build source to watch, repeatable: [NAME=]URL. unix:///var/run/docker.sock and
    /// tcp://HOST:PORT reach a Docker Engine (BuildKit through its /grpc endpoint);
    /// buildkitd+unix://PATH and buildkitd+tcp://HOST:PORT reach a standalone buildkitd.
    /// NAME becomes the `builder` label (default: "default" for a single source, else the
    /// address). A tcp:// engine is reached with TLS when DOCKER_TLS_VERIFY is set (ca.pem,
    /// cert.pem and key.pem in DOCKER_CERT_PATH, else ~/.docker); per source, URL options
    /// override it: ?ca=FILE&cert=FILE&key=FILE&server-name=NAME, or ?tls=off. Default:
    /// $DOCKER_HOST, else unix:///var/run/docker.sock.
    #[arg(long = "source", env = "BUILDKIT_EXPORTER_SOURCE", value_delimiter = ',', value_name = "[NAME=]URL")]
    pub sources: Vec<String>,

    /// Address to serve metrics, the status page and the JSON API on, repeatable.
    #[arg(long = "web.listen-address", env = "BUILDKIT_EXPORTER_WEB_LISTEN_ADDRESS",
          value_delimiter = ',', default_value = DEFAULT_LISTEN_ADDRESS, value_name = "[HOST]:PORT")]
    pub listen_addresses: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "BUILDKIT_EXPORTER_WEB_TELEMETRY_PATH", default_value = "/metrics")]
    pub telemetry_path: String,

    /// Web configuration file (YAML, Prometheus exporter-toolkit format) that turns on TLS,
    /// client certificates, basic auth and extra response headers: tls_server_config
    /// (cert_file, key_file, client_auth_type, client_ca_file, min_version), basic_auth_users
    /// (name: bcrypt hash) and http_server_config.headers. Paths in it are relative to its
    /// directory. Re-read when it, or a file it names, changes; a broken version is logged and
    /// the last good one kept.
    #[arg(long = "web.config.file", env = "BUILDKIT_EXPORTER_WEB_CONFIG_FILE", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Most connections held open at once. When all are taken, the one that has waited longest
    /// for a request (stalled, or idle between scrapes) is closed to make room; only when every
    /// one is being answered do new connections wait.
    #[arg(long = "web.max-connections", env = "BUILDKIT_EXPORTER_WEB_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a client may take to finish the TLS handshake, and to send a request's headers
    /// after connecting or after its previous response (so it also closes idle keep-alive
    /// connections).
    #[arg(long = "web.header-timeout", env = "BUILDKIT_EXPORTER_WEB_HEADER_TIMEOUT", default_value = "10s",
          value_parser = positive_duration, value_name = "DURATION")]
    pub header_timeout: Duration,

    /// Image label whose value names a build (set with `docker build --label` or LABEL).
    #[arg(
        long = "build.name-label",
        env = "BUILDKIT_EXPORTER_BUILD_NAME_LABEL",
        default_value = "org.opencontainers.image.title"
    )]
    pub name_label: String,

    /// Most distinct `name` label values; builds beyond it are named "other".
    #[arg(long = "build.max-names", env = "BUILDKIT_EXPORTER_BUILD_MAX_NAMES", default_value_t = 200)]
    pub max_names: usize,

    /// Last lines of a running step's output shown on the page and in the JSON (0: none, and
    /// build output is not even read). Off by default: output can hold what nobody meant to
    /// publish; build-arg values are masked in it, other secrets a build prints are not.
    #[arg(long = "build.output-lines", env = "BUILDKIT_EXPORTER_BUILD_OUTPUT_LINES", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=20))]
    pub output_lines: u8,

    /// Adds `instruction` to the per-name step counters and `name` to the step-duration
    /// histogram: about 20 more series for each instruction of each image name.
    #[arg(long = "metrics.step-detail", env = "BUILDKIT_EXPORTER_METRICS_STEP_DETAIL")]
    pub step_detail: bool,

    /// Longest command text shown in buildkit_build_step_running_info.
    #[arg(long = "build.command-length", env = "BUILDKIT_EXPORTER_BUILD_COMMAND_LENGTH", default_value_t = 80)]
    pub command_length: usize,

    /// Finished builds read from BuildKit's history at startup to learn names and last
    /// completion times (0 reads none).
    #[arg(long = "history.seed-builds", env = "BUILDKIT_EXPORTER_HISTORY_SEED_BUILDS", default_value_t = 20)]
    pub seed_builds: usize,

    /// Largest gRPC message accepted from a source, in bytes (BuildKit sends a finished build's
    /// whole progress as one message).
    #[arg(long = "source.max-message-bytes", env = "BUILDKIT_EXPORTER_SOURCE_MAX_MESSAGE_BYTES",
          default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// How often the link to a source is checked (an HTTP/2 ping and an Info call), so that a
    /// link that stopped carrying bytes without closing (a dead peer, a hung proxy) is noticed.
    #[arg(long = "source.keepalive", env = "BUILDKIT_EXPORTER_SOURCE_KEEPALIVE", default_value = "10s",
          value_parser = link_duration, value_name = "DURATION")]
    pub keepalive: Duration,

    /// How long connecting, the /grpc upgrade and the answer to a link check may take
    /// before the source is taken as down. A half-open link shows up as down within
    /// --source.keepalive plus this.
    #[arg(long = "source.timeout", env = "BUILDKIT_EXPORTER_SOURCE_TIMEOUT", default_value = "10s",
          value_parser = link_duration, value_name = "DURATION")]
    pub source_timeout: Duration,

    /// Longest wait between attempts to reach a source that is down: the wait doubles from
    /// 0.5 s up to this, with jitter.
    #[arg(long = "source.retry-max", env = "BUILDKIT_EXPORTER_SOURCE_RETRY_MAX", default_value = "30s",
          value_parser = link_duration, value_name = "DURATION")]
    pub retry_max: Duration,

    /// How often each source's versions, workers and build-cache usage are read (in the
    /// background; a scrape never waits for them).
    #[arg(long = "source.usage-interval", env = "BUILDKIT_EXPORTER_SOURCE_USAGE_INTERVAL", default_value = "30s",
          value_parser = link_duration, value_name = "DURATION")]
    pub usage_interval: Duration,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", env = "BUILDKIT_EXPORTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long = "log.format", env = "BUILDKIT_EXPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `ts=... level=info msg="..." key=value`
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// A mistake in the flags, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--source` that cannot be used.
    #[error("invalid --source {0:?}: {1}")]
    Source(String, &'static str),
    /// A `--web.listen-address` that cannot be used.
    #[error("invalid --web.listen-address {0:?}: expected [HOST]:PORT, e.g. :9817 or 127.0.0.1:9817")]
    ListenAddress(String),
    /// A `--web.telemetry-path` that cannot be used.
    #[error("invalid --web.telemetry-path {0:?}: it must start with / and not be / itself")]
    TelemetryPath(String),
    /// Two sources with the same builder name.
    #[error("two sources are named {0:?}: give each a different NAME= prefix")]
    DuplicateName(String),
    /// A `--web.config.file` that cannot be used (the message names the file).
    #[error("invalid --web.config.file {0}")]
    WebConfig(#[from] WebConfigError),
}

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
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (prefix, transport) = match self {
            Endpoint::Docker(t) => ("", t),
            Endpoint::Buildkitd(t) => ("buildkitd+", t),
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
    pub fn parse(text: &str, only_source: bool, docker_tls: &DockerTls) -> Result<SourceSpec, ConfigError> {
        let bad = |why| ConfigError::Source(text.to_string(), why);
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
        let transport = |kind: &str| -> Result<Transport, ConfigError> {
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

/// The validated configuration of a daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen_addresses: Vec<SocketAddr>,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Sources to watch.
    pub sources: Vec<SourceSpec>,
    /// Image label that names a build.
    pub name_label: String,
    /// Bounds of the build model.
    pub model: Settings,
    /// Finished builds read from history at startup.
    pub seed_builds: usize,
    /// Step series by name and instruction (`--metrics.step-detail`).
    pub step_detail: bool,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// How the links to sources are kept and checked.
    pub link: Link,
    /// How often versions, workers and cache usage are read.
    pub usage_interval: Duration,
    /// How the HTTP side is served and guarded.
    pub web: Web,
}

/// How the HTTP side is served and guarded.
#[derive(Debug, Clone)]
pub struct Web {
    /// TLS, basic auth and extra headers, when `--web.config.file` is given.
    pub config_file: Option<WebConfigFile>,
    /// Most connections held open at once.
    pub max_connections: usize,
    /// Longest wait for a TLS handshake, and for a request's headers after connecting or after
    /// the previous response.
    pub header_timeout: Duration,
}

impl Default for Web {
    fn default() -> Self {
        Web { config_file: None, max_connections: 256, header_timeout: Duration::from_secs(10) }
    }
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
        Link {
            keepalive: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// A configuration with defaults for everything but the sources, for embedding and tests.
    pub fn new(sources: Vec<SourceSpec>) -> Config {
        Config {
            listen_addresses: Vec::new(),
            telemetry_path: "/metrics".to_string(),
            sources,
            name_label: "org.opencontainers.image.title".to_string(),
            model: Settings::default(),
            seed_builds: 20,
            step_detail: false,
            max_message_bytes: 64 * 1024 * 1024,
            link: Link::default(),
            usage_interval: Duration::from_secs(30),
            web: Web::default(),
        }
    }
}

impl Cli {
    /// Validates the flags; `docker_host` is the value of `DOCKER_HOST`, if set, and
    /// `docker_tls` what the environment says about TLS.
    pub fn into_config(self, docker_host: Option<String>, docker_tls: &DockerTls) -> Result<Config, ConfigError> {
        let mut raw = self.sources;
        if raw.is_empty() {
            raw.push(docker_host.filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_DOCKER_SOCKET.to_string()));
        }
        let mut sources: Vec<SourceSpec> = Vec::new();
        for text in &raw {
            let spec = SourceSpec::parse(text, raw.len() == 1, docker_tls)?;
            if sources.iter().any(|s| s.name == spec.name) {
                return Err(ConfigError::DuplicateName(spec.name));
            }
            sources.push(spec);
        }
        let listen_addresses = self
            .listen_addresses
            .iter()
            .map(|a| parse_listen_address(a).ok_or_else(|| ConfigError::ListenAddress(a.clone())))
            .collect::<Result<_, _>>()?;
        if !self.telemetry_path.starts_with('/') || self.telemetry_path == "/" {
            return Err(ConfigError::TelemetryPath(self.telemetry_path));
        }
        let web = Web {
            config_file: self.web_config_file.as_deref().map(WebConfigFile::open).transpose()?,
            max_connections: self.max_connections as usize,
            header_timeout: self.header_timeout,
        };
        Ok(Config {
            listen_addresses,
            telemetry_path: self.telemetry_path,
            sources,
            name_label: self.name_label,
            model: Settings {
                max_command_chars: self.command_length.max(8),
                max_names: self.max_names,
                output_lines: self.output_lines.into(),
                ..Settings::default()
            },
            seed_builds: self.seed_builds,
            step_detail: self.step_detail,
            max_message_bytes: self.max_message_bytes,
            link: Link { keepalive: self.keepalive, timeout: self.source_timeout, retry_max: self.retry_max },
            usage_interval: self.usage_interval,
            web,
        })
    }
}

/// A duration above zero (`10s`, `500ms`).
/// A link setting: more than 0s (a zero interval or timeout cannot work) and at most a day (a
/// longer one is a typo, and overflows timers).
fn link_duration(text: &str) -> Result<Duration, String> {
    match positive_duration(text)? {
        duration if duration > Duration::from_secs(86_400) => Err("must be at most 1d".to_string()),
        duration => Ok(duration),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than 0s".to_string()),
        parsed => parsed.map_err(|e| e.to_string()),
    }
}

/// `:9817` listens on every address, IPv6 and IPv4 (`[::]:9817`, which the server binds
/// dual-stack); `HOST:PORT` and `[V6]:PORT` as given.
fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port.parse().ok()?)));
    }
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    if host == "localhost" {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["buildkit-exporter"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn defaults_follow_docker_host() {
        let config = cli(&[]).into_config(None, &DockerTls::default()).unwrap();
        assert_eq!(config.listen_addresses, vec!["[::]:9817".parse().unwrap()]);
        assert!(config.web.config_file.is_none());
        assert_eq!((config.web.max_connections, config.web.header_timeout), (256, Duration::from_secs(10)));
        assert_eq!(config.telemetry_path, "/metrics");
        assert_eq!(
            config.sources,
            vec![SourceSpec {
                name: "default".into(),
                endpoint: Endpoint::Docker(Transport::Unix("/var/run/docker.sock".into()))
            }]
        );
        let config = cli(&[]).into_config(Some("tcp://10.0.0.2:2375".into()), &DockerTls::default()).unwrap();
        assert_eq!(config.sources[0].endpoint, Endpoint::Docker(Transport::Tcp("10.0.0.2:2375".into(), None)));
    }

    #[test]
    fn several_named_sources() {
        let config = cli(&[
            "--source",
            "ci=unix:///run/a.sock",
            "--source",
            "buildkitd+unix:///run/buildkit/buildkitd.sock",
            "--source",
            "remote=buildkitd+tcp://builder:1234",
        ])
        .into_config(None, &DockerTls::default())
        .unwrap();
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ci", "buildkitd+unix:///run/buildkit/buildkitd.sock", "remote"]);
        assert_eq!(config.sources[2].endpoint, Endpoint::Buildkitd(Transport::Tcp("builder:1234".into(), None)));
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
            let err = cli(&["--source", text]).into_config(None, &DockerTls::default()).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        let err = cli(&["--source", "a=unix:///x", "--source", "a=unix:///y"])
            .into_config(None, &DockerTls::default())
            .unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateName(_)));
    }

    #[test]
    fn tls_to_engines_follows_docker_and_the_source_url() {
        let env = DockerTls { verify: true, cert_path: PathBuf::from("/certs") };
        let config = cli(&["--source", "tcp://engine:2376", "--source", "b=tcp://other:2376?tls=off"])
            .into_config(None, &env)
            .unwrap();
        let docker = TlsFiles {
            ca: "/certs/ca.pem".into(),
            cert: Some("/certs/cert.pem".into()),
            key: Some("/certs/key.pem".into()),
            server_name: None,
        };
        assert_eq!(config.sources[0].endpoint, Endpoint::Docker(Transport::Tcp("engine:2376".into(), Some(docker))));
        assert_eq!(config.sources[1].endpoint, Endpoint::Docker(Transport::Tcp("other:2376".into(), None)));
        assert_eq!(config.sources[0].name, "tcp://engine:2376", "the address, never the files");
        let url = "buildkitd+tcp://bk:1234?ca=/p/ca.pem&cert=/p/c.pem&key=/p/k.pem&server-name=buildkitd";
        let config = cli(&["--source", url]).into_config(None, &env).unwrap();
        let mtls = TlsFiles {
            ca: "/p/ca.pem".into(),
            cert: Some("/p/c.pem".into()),
            key: Some("/p/k.pem".into()),
            server_name: Some("buildkitd".into()),
        };
        assert_eq!(config.sources[0].endpoint, Endpoint::Buildkitd(Transport::Tcp("bk:1234".into(), Some(mtls))));
        // DOCKER_TLS_VERIFY is the Docker CLI's: a buildkitd gets TLS only from its own options.
        let config = cli(&["--source", "buildkitd+tcp://bk:1234"]).into_config(None, &env).unwrap();
        assert_eq!(config.sources[0].endpoint, Endpoint::Buildkitd(Transport::Tcp("bk:1234".into(), None)));
    }

    #[test]
    fn listen_addresses_and_paths() {
        assert_eq!(parse_listen_address("127.0.0.1:0"), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_listen_address("[::1]:9817"), Some("[::1]:9817".parse().unwrap()));
        assert_eq!(parse_listen_address("localhost:9817"), Some("127.0.0.1:9817".parse().unwrap()));
        assert_eq!(parse_listen_address("9817"), None);
        assert!(cli(&["--web.telemetry-path", "metrics"]).into_config(None, &DockerTls::default()).is_err());
        assert!(cli(&["--web.listen-address", "nope"]).into_config(None, &DockerTls::default()).is_err());
    }
}
