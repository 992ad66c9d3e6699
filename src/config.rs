//! The configuration a daemon runs with, as the flags ([`crate::cli`]) make it, or with
//! [`crate::defaults`] for embedding.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::defaults;
use crate::model::Settings;
use crate::source::spec::{DockerTls, Link, SourceSpec};
use crate::source::SourceOptions;
use crate::web::WebConfigFile;

/// The validated configuration of a daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen_addresses: Vec<SocketAddr>,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Sources to watch.
    pub sources: Vec<SourceSpec>,
    /// More sources, from a file re-read when it changes.
    pub source_file: Option<SourceFile>,
    /// How every source is read and its link kept.
    pub source: SourceOptions,
    /// Bounds of the build model.
    pub model: Settings,
    /// Step series by name and instruction (`--metrics.step-detail`).
    pub step_detail: bool,
    /// How the HTTP side is served and guarded.
    pub web: Web,
}

/// The sources file, and what its `tcp://` engines take TLS from.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` at startup.
    pub docker_tls: DockerTls,
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
    /// Where users reach the exporter (`--web.external-url`), without a trailing `/`.
    pub external_url: Option<String>,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            config_file: None,
            max_connections: defaults::MAX_CONNECTIONS as usize,
            header_timeout: defaults::HEADER_TIMEOUT,
            external_url: None,
        }
    }
}

impl Config {
    /// A configuration with defaults for everything but the sources, for embedding and tests.
    pub fn new(sources: Vec<SourceSpec>) -> Config {
        Config {
            listen_addresses: Vec::new(),
            telemetry_path: defaults::TELEMETRY_PATH.to_string(),
            sources,
            source_file: None,
            source: SourceOptions {
                name_label: defaults::NAME_LABEL.to_string(),
                max_message_bytes: defaults::MAX_MESSAGE_BYTES,
                seed_builds: defaults::SEED_BUILDS,
                link: Link::default(),
                usage_interval: defaults::USAGE_INTERVAL,
                container_builders: true,
            },
            model: Settings {
                max_command_chars: defaults::COMMAND_LENGTH,
                max_names: defaults::MAX_NAMES,
                output_lines: defaults::OUTPUT_LINES.into(),
                ..Settings::default()
            },
            step_detail: false,
            web: Web::default(),
        }
    }
}
