//! Command-line flags (each also read from a `BUILDKIT_EXPORTER_*` environment variable) and
//! the validated configuration the daemon runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::model::Settings;

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
    /// address). TLS and ssh connections are not supported yet. Default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock.
    #[arg(long = "source", env = "BUILDKIT_EXPORTER_SOURCE", value_delimiter = ',', value_name = "[NAME=]URL")]
    pub sources: Vec<String>,

    /// Address to serve metrics, the status page and the JSON API on, repeatable.
    #[arg(long = "web.listen-address", env = "BUILDKIT_EXPORTER_WEB_LISTEN_ADDRESS",
          value_delimiter = ',', default_value = DEFAULT_LISTEN_ADDRESS, value_name = "[HOST]:PORT")]
    pub listen_addresses: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "BUILDKIT_EXPORTER_WEB_TELEMETRY_PATH", default_value = "/metrics")]
    pub telemetry_path: String,

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

    /// How often the link to a source is probed with an HTTP/2 ping, so that a link that
    /// stopped carrying bytes without closing (a dead peer, a hung proxy) is noticed.
    #[arg(long = "source.keepalive", env = "BUILDKIT_EXPORTER_SOURCE_KEEPALIVE", default_value = "10s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub keepalive: Duration,

    /// How long connecting, the /grpc upgrade and the answer to a keepalive ping may take
    /// before the source is taken as down. A half-open link shows up as down within
    /// --source.keepalive plus this.
    #[arg(long = "source.timeout", env = "BUILDKIT_EXPORTER_SOURCE_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub source_timeout: Duration,

    /// Longest wait between attempts to reach a source that is down: the wait doubles from
    /// 0.5 s up to this, with jitter.
    #[arg(long = "source.retry-max", env = "BUILDKIT_EXPORTER_SOURCE_RETRY_MAX", default_value = "30s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retry_max: Duration,

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
}

/// How a source is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket.
    Unix(PathBuf),
    /// A plain TCP address, `host:port`.
    Tcp(String),
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
        match transport {
            Transport::Unix(path) => write!(f, "{prefix}unix://{}", path.display()),
            Transport::Tcp(addr) => write!(f, "{prefix}tcp://{addr}"),
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
    /// Parses `[NAME=]URL`. Without a NAME, the builder is called "default" when it is the
    /// only source, else by its address.
    pub fn parse(text: &str, only_source: bool) -> Result<SourceSpec, ConfigError> {
        let bad = |why| ConfigError::Source(text.to_string(), why);
        let (name, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.trim().to_string()), url.trim()),
            _ => (None, text.trim()),
        };
        if name.as_deref() == Some("") {
            return Err(bad("NAME= must not be empty"));
        }
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("expected a URL like unix:///var/run/docker.sock"))?;
        let transport = |kind: &str| -> Result<Transport, ConfigError> {
            match kind {
                "unix" if rest.starts_with('/') => Ok(Transport::Unix(PathBuf::from(rest))),
                "unix" => Err(bad("a unix socket path must be absolute")),
                "tcp" if rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) => {
                    Ok(Transport::Tcp(rest.trim_end_matches('/').to_string()))
                }
                "tcp" => Err(bad("expected tcp://HOST:PORT")),
                "https" | "ssh" | "npipe" => Err(bad("only unix:// and tcp:// are supported (no TLS or ssh yet)")),
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
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// How the links to sources are kept and checked.
    pub link: Link,
}

/// How the link to a source is kept and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Interval between HTTP/2 keepalive pings.
    pub keepalive: Duration,
    /// Longest wait for a connection, the `/grpc` upgrade, or a ping's answer.
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
            max_message_bytes: 64 * 1024 * 1024,
            link: Link::default(),
        }
    }
}

impl Cli {
    /// Validates the flags; `docker_host` is the value of `DOCKER_HOST`, if set.
    pub fn into_config(self, docker_host: Option<String>) -> Result<Config, ConfigError> {
        let mut raw = self.sources;
        if raw.is_empty() {
            raw.push(docker_host.filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_DOCKER_SOCKET.to_string()));
        }
        let mut sources: Vec<SourceSpec> = Vec::new();
        for text in &raw {
            let spec = SourceSpec::parse(text, raw.len() == 1)?;
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
        Ok(Config {
            listen_addresses,
            telemetry_path: self.telemetry_path,
            sources,
            name_label: self.name_label,
            model: Settings {
                max_command_chars: self.command_length.max(8),
                max_names: self.max_names,
                ..Settings::default()
            },
            seed_builds: self.seed_builds,
            max_message_bytes: self.max_message_bytes,
            link: Link { keepalive: self.keepalive, timeout: self.source_timeout, retry_max: self.retry_max },
        })
    }
}

/// `:9817` listens on every IPv4 address; `HOST:PORT` and `[V6]:PORT` as given.
fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
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
        let config = cli(&[]).into_config(None).unwrap();
        assert_eq!(config.listen_addresses, vec!["0.0.0.0:9817".parse().unwrap()]);
        assert_eq!(config.telemetry_path, "/metrics");
        assert_eq!(
            config.sources,
            vec![SourceSpec {
                name: "default".into(),
                endpoint: Endpoint::Docker(Transport::Unix("/var/run/docker.sock".into()))
            }]
        );
        let config = cli(&[]).into_config(Some("tcp://10.0.0.2:2375".into())).unwrap();
        assert_eq!(config.sources[0].endpoint, Endpoint::Docker(Transport::Tcp("10.0.0.2:2375".into())));
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
        .into_config(None)
        .unwrap();
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ci", "buildkitd+unix:///run/buildkit/buildkitd.sock", "remote"]);
        assert_eq!(config.sources[2].endpoint, Endpoint::Buildkitd(Transport::Tcp("builder:1234".into())));
    }

    #[test]
    fn bad_sources_say_why() {
        for (text, why) in [
            ("ssh://me@host", "no TLS or ssh"),
            ("unix://relative.sock", "absolute"),
            ("tcp://host", "HOST:PORT"),
            ("=unix:///a", "NAME="),
            ("/var/run/docker.sock", "expected a URL"),
            ("ftp://x", "unknown scheme"),
        ] {
            let err = cli(&["--source", text]).into_config(None).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        let err = cli(&["--source", "a=unix:///x", "--source", "a=unix:///y"]).into_config(None).unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateName(_)));
    }

    #[test]
    fn listen_addresses_and_paths() {
        assert_eq!(parse_listen_address("127.0.0.1:0"), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_listen_address("[::1]:9817"), Some("[::1]:9817".parse().unwrap()));
        assert_eq!(parse_listen_address("localhost:9817"), Some("127.0.0.1:9817".parse().unwrap()));
        assert_eq!(parse_listen_address("9817"), None);
        assert!(cli(&["--web.telemetry-path", "metrics"]).into_config(None).is_err());
        assert!(cli(&["--web.listen-address", "nope"]).into_config(None).is_err());
    }
}
