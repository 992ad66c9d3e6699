//! Command-line flags, each also read from a `BUILDKIT_EXPORTER_*` environment variable, and
//! their validation into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{Config, SourceFile, Web};
use crate::defaults;
use crate::logging::LogFormat;
use crate::model::Settings;
use crate::source::spec::{DockerTls, Link, SourceSpec, SpecError};
use crate::source::SourceOptions;
use crate::web::{WebConfigError, WebConfigFile};

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

    /// A file of sources, one `[NAME=]URL` a line (`#` comments), watched beside the --source
    /// ones and re-read when it changes (see README, "Builders, and the --source for each"). With it, no --source
    /// means none: the file is the fleet.
    #[arg(long = "source.file", env = "BUILDKIT_EXPORTER_SOURCE_FILE", value_name = "PATH")]
    pub source_file: Option<PathBuf>,

    /// Address to serve metrics, the status page and the JSON API on, repeatable.
    #[arg(long = "web.listen-address", env = "BUILDKIT_EXPORTER_WEB_LISTEN_ADDRESS",
          value_delimiter = ',', default_value = defaults::LISTEN_ADDRESS, value_name = "[HOST]:PORT")]
    pub listen_addresses: Vec<String>,

    /// The URL users reach this exporter at (through a proxy, say): with it, the series of a
    /// name's last failure carry a link to that build's page, for alerts to show.
    #[arg(long = "web.external-url", env = "BUILDKIT_EXPORTER_WEB_EXTERNAL_URL", value_name = "URL")]
    pub external_url: Option<String>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "BUILDKIT_EXPORTER_WEB_TELEMETRY_PATH", default_value = defaults::TELEMETRY_PATH)]
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
    #[arg(long = "web.max-connections", env = "BUILDKIT_EXPORTER_WEB_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a client may take to finish the TLS handshake, and to send a request's headers
    /// after connecting or after its previous response (so it also closes idle keep-alive
    /// connections).
    #[arg(long = "web.header-timeout", env = "BUILDKIT_EXPORTER_WEB_HEADER_TIMEOUT", default_value_t = defaults::HEADER_TIMEOUT.into(),
          value_parser = positive_duration, value_name = "DURATION")]
    pub header_timeout: humantime::Duration,

    /// Image label whose value names a build (set with `docker build --label` or LABEL).
    #[arg(
        long = "build.name-label",
        env = "BUILDKIT_EXPORTER_BUILD_NAME_LABEL",
        default_value = defaults::NAME_LABEL
    )]
    pub name_label: String,

    /// Most distinct `name` label values; builds beyond it are named "other".
    #[arg(long = "build.max-names", env = "BUILDKIT_EXPORTER_BUILD_MAX_NAMES", default_value_t = defaults::MAX_NAMES)]
    pub max_names: usize,

    /// Last lines of a running step's output shown on the page and in the JSON (0: none, and
    /// build output is not even read). Off by default: output can hold what nobody meant to
    /// publish; build-arg values are masked in it, other secrets a build prints are not.
    #[arg(long = "build.output-lines", env = "BUILDKIT_EXPORTER_BUILD_OUTPUT_LINES", default_value_t = defaults::OUTPUT_LINES,
          value_parser = clap::value_parser!(u8).range(0..=20))]
    pub output_lines: u8,

    /// Adds `instruction` to the per-name step counters and `name` to the step-duration
    /// histogram: about 20 more series for each instruction of each image name.
    #[arg(long = "metrics.step-detail", env = "BUILDKIT_EXPORTER_METRICS_STEP_DETAIL")]
    pub step_detail: bool,

    /// Longest command text shown in buildkit_build_step_running_info.
    #[arg(long = "build.command-length", env = "BUILDKIT_EXPORTER_BUILD_COMMAND_LENGTH", default_value_t = defaults::COMMAND_LENGTH)]
    pub command_length: usize,

    /// Finished builds read from BuildKit's history at startup to learn names and last
    /// completion times (0 reads none).
    #[arg(long = "history.seed-builds", env = "BUILDKIT_EXPORTER_HISTORY_SEED_BUILDS", default_value_t = defaults::SEED_BUILDS)]
    pub seed_builds: usize,

    /// Largest gRPC message accepted from a source, in bytes (BuildKit sends a finished build's
    /// whole progress as one message).
    #[arg(long = "source.max-message-bytes", env = "BUILDKIT_EXPORTER_SOURCE_MAX_MESSAGE_BYTES",
          default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// How often the link to a source is checked (an HTTP/2 ping and an Info call), so that a
    /// link that stopped carrying bytes without closing (a dead peer, a hung proxy) is noticed.
    #[arg(long = "source.keepalive", env = "BUILDKIT_EXPORTER_SOURCE_KEEPALIVE", default_value_t = defaults::KEEPALIVE.into(),
          value_parser = link_duration, value_name = "DURATION")]
    pub keepalive: humantime::Duration,

    /// How long connecting, the /grpc upgrade and the answer to a link check may take
    /// before the source is taken as down. A half-open link shows up as down within
    /// --source.keepalive plus this.
    #[arg(long = "source.timeout", env = "BUILDKIT_EXPORTER_SOURCE_TIMEOUT", default_value_t = defaults::SOURCE_TIMEOUT.into(),
          value_parser = link_duration, value_name = "DURATION")]
    pub source_timeout: humantime::Duration,

    /// Longest wait between attempts to reach a source that is down: the wait doubles from
    /// 0.5 s up to this, with jitter.
    #[arg(long = "source.retry-max", env = "BUILDKIT_EXPORTER_SOURCE_RETRY_MAX", default_value_t = defaults::RETRY_MAX.into(),
          value_parser = link_duration, value_name = "DURATION")]
    pub retry_max: humantime::Duration,

    /// How often each source's versions, workers and build-cache usage are read (in the
    /// background; a scrape never waits for them).
    #[arg(long = "source.usage-interval", env = "BUILDKIT_EXPORTER_SOURCE_USAGE_INTERVAL", default_value_t = defaults::USAGE_INTERVAL.into(),
          value_parser = link_duration, value_name = "DURATION")]
    pub usage_interval: humantime::Duration,

    /// Do not look for the buildx container builders ("docker-container" driver) of the Docker
    /// Engines among the sources. By default each is found through its engine and watched as a
    /// builder named ENGINE/BUILDER, which needs the engine's exec API (see README, "Security model").
    #[arg(long = "no-source.container-builders", env = "BUILDKIT_EXPORTER_NO_SOURCE_CONTAINER_BUILDERS")]
    pub no_container_builders: bool,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", env = "BUILDKIT_EXPORTER_LOG_LEVEL", default_value = defaults::LOG_LEVEL)]
    pub log_level: String,

    /// Log format.
    #[arg(long = "log.format", env = "BUILDKIT_EXPORTER_LOG_FORMAT", value_enum, default_value_t = defaults::LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// A mistake in the flags, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--source` that cannot be used.
    #[error("invalid --source {0}")]
    Source(#[from] SpecError),
    /// A `--web.listen-address` that cannot be used.
    #[error("invalid --web.listen-address {0:?}: expected [HOST]:PORT, e.g. :9817 or 127.0.0.1:9817")]
    ListenAddress(String),
    /// A `--web.telemetry-path` that cannot be used.
    #[error("invalid --web.telemetry-path {0:?}: it must start with / and not be / itself")]
    TelemetryPath(String),
    /// A `--web.external-url` that cannot be used.
    #[error("invalid --web.external-url {0:?}: expected an http:// or https:// URL without credentials, e.g. https://builds.example.com")]
    ExternalUrl(String),
    /// Two sources with the same builder name.
    #[error("two sources are named {0:?}: give each a different NAME= prefix")]
    DuplicateName(String),
    /// A `--source.file` that cannot be read.
    #[error("invalid --source.file {}: {source}", path.display())]
    SourceFile {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// A `--web.config.file` that cannot be used (the message names the file).
    #[error("invalid --web.config.file {0}")]
    WebConfig(#[from] WebConfigError),
}

impl Cli {
    /// Validates the flags; `docker_host` is the value of `DOCKER_HOST`, if set, and
    /// `docker_tls` what the environment says about TLS.
    pub fn into_config(self, docker_host: Option<String>, docker_tls: &DockerTls) -> Result<Config, ConfigError> {
        let mut raw = self.sources;
        if raw.is_empty() && self.source_file.is_none() {
            raw.push(docker_host.filter(|h| !h.is_empty()).unwrap_or_else(|| defaults::DOCKER_SOCKET.to_string()));
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
        let external_url = match self.external_url.filter(|u| !u.is_empty()) {
            Some(url) => Some(external_url(&url).ok_or(ConfigError::ExternalUrl(url))?),
            None => None,
        };
        let source_file = match self.source_file {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(_) => Some(SourceFile { path, docker_tls: docker_tls.clone() }),
                Err(source) => return Err(ConfigError::SourceFile { path, source }),
            },
            None => None,
        };
        let web = Web {
            config_file: self.web_config_file.as_deref().map(WebConfigFile::open).transpose()?,
            max_connections: self.max_connections as usize,
            header_timeout: self.header_timeout.into(),
            external_url,
        };
        Ok(Config {
            listen_addresses,
            telemetry_path: self.telemetry_path,
            sources,
            source_file,
            source: SourceOptions {
                name_label: self.name_label,
                max_message_bytes: self.max_message_bytes,
                seed_builds: self.seed_builds,
                link: Link {
                    keepalive: self.keepalive.into(),
                    timeout: self.source_timeout.into(),
                    retry_max: self.retry_max.into(),
                },
                usage_interval: self.usage_interval.into(),
                container_builders: !self.no_container_builders,
            },
            model: Settings {
                max_command_chars: self.command_length.max(8),
                max_names: self.max_names,
                output_lines: self.output_lines.into(),
                ..Settings::default()
            },
            step_detail: self.step_detail,
            web,
        })
    }
}

/// A link setting: more than 0s (a zero interval or timeout cannot work) and at most a day (a
/// longer one is a typo, and overflows timers).
fn link_duration(text: &str) -> Result<humantime::Duration, String> {
    match positive_duration(text)? {
        duration if *duration > Duration::from_secs(86_400) => Err("must be at most 1d".to_string()),
        duration => Ok(duration),
    }
}

/// A duration above zero (`10s`, `500ms`). Flags hold humantime's `Duration`, whose `Display`
/// is what `--help` shows for a default taken from [`defaults`].
fn positive_duration(text: &str) -> Result<humantime::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than 0s".to_string()),
        parsed => parsed.map(Into::into).map_err(|e| e.to_string()),
    }
}

/// An external URL as links are built from it (without a trailing `/`), if it is an absolute
/// http(s) URL with a host and no query.
fn external_url(text: &str) -> Option<String> {
    let uri: hyper::Uri = text.parse().ok()?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    // Credentials would be copied into every link.
    let no_user = uri.authority().is_some_and(|a| !a.as_str().contains('@'));
    (scheme_ok && host_ok && no_user && uri.query().is_none() && !text.contains('#'))
        .then(|| text.trim_end_matches('/').to_string())
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
    use crate::source::spec::{Endpoint, Transport};

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

    /// What `--help` documents, and what embedding with [`Config::new`] gets.
    #[test]
    fn a_bare_command_line_gives_the_documented_defaults() {
        let bare = cli(&[]);
        assert_eq!((bare.log_level.as_str(), bare.log_format), ("info", LogFormat::Logfmt));
        let config = bare.into_config(None, &DockerTls::default()).unwrap();
        let source = &config.source;
        assert_eq!(source.name_label, "org.opencontainers.image.title");
        assert_eq!((source.seed_builds, source.max_message_bytes), (20, 64 * 1024 * 1024));
        let (ten, thirty) = (Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(source.link, Link { keepalive: ten, timeout: ten, retry_max: thirty });
        assert_eq!(source.usage_interval, thirty);
        let model = &config.model;
        assert_eq!((model.max_names, model.max_command_chars, model.output_lines), (200, 80, 0));
        assert!(!config.step_detail);
        // Embedding binds its own listeners. Compared through Debug, which shows every field,
        // because some of the runtime structs hold types without PartialEq.
        let embedded =
            Config { listen_addresses: config.listen_addresses.clone(), ..Config::new(config.sources.clone()) };
        assert_eq!(format!("{embedded:?}"), format!("{config:?}"));
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
    fn bad_sources_name_the_flag_and_clash_by_name() {
        let err = cli(&["--source", "ftp://x"]).into_config(None, &DockerTls::default()).unwrap_err();
        assert!(err.to_string().starts_with("invalid --source \"ftp://x\": unknown scheme"), "{err}");
        let err = cli(&["--source", "a=unix:///x", "--source", "a=unix:///y"])
            .into_config(None, &DockerTls::default())
            .unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateName(_)));
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

    #[test]
    fn the_external_url_is_an_http_url_kept_without_its_last_slash() {
        let url = |flag: &str| {
            cli(&["--web.external-url", flag]).into_config(None, &DockerTls::default()).map(|c| c.web.external_url)
        };
        assert_eq!(
            url("https://ci.example.com/buildkit/").unwrap().as_deref(),
            Some("https://ci.example.com/buildkit")
        );
        assert_eq!(url("http://10.0.0.5:9817").unwrap().as_deref(), Some("http://10.0.0.5:9817"));
        assert_eq!(url("").unwrap(), None);
        for bad in
            ["ci.example.com", "ftp://ci.example.com", "https://ci.example.com/?a=1", "https://x/#top", "/builds"]
        {
            let err = url(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid --web.external-url"), "{bad}: {err}");
        }
    }
}
