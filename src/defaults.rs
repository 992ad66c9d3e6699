//! The documented defaults, written once: the flags take them (and `--help` shows them), and the
//! runtime structs' `Default` and [`crate::config::Config::new`] build with them, so that what a
//! bare command line runs with and what an embedder gets cannot drift apart.

use std::time::Duration;

use crate::logging::LogFormat;

/// `--web.listen-address`.
pub const LISTEN_ADDRESS: &str = ":9817";
/// The engine socket used when neither `--source` nor `DOCKER_HOST` is given.
pub const DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";
/// `--web.telemetry-path`.
pub const TELEMETRY_PATH: &str = "/metrics";
/// `--web.max-connections`.
pub const MAX_CONNECTIONS: u32 = 256;
/// `--web.header-timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `--build.name-label`.
pub const NAME_LABEL: &str = "org.opencontainers.image.title";
/// `--build.max-names`.
pub const MAX_NAMES: usize = 200;
/// `--build.output-lines`.
pub const OUTPUT_LINES: u8 = 0;
/// `--build.command-length`.
pub const COMMAND_LENGTH: usize = 80;
/// `--history.seed-builds`.
pub const SEED_BUILDS: usize = 20;
/// `--source.max-message-bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// `--source.keepalive`.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// `--source.timeout`.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--source.retry-max`.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// `--source.usage-interval`.
pub const USAGE_INTERVAL: Duration = Duration::from_secs(30);
/// `--log.level`.
pub const LOG_LEVEL: &str = "info";
/// `--log.format`.
pub const LOG_FORMAT: LogFormat = LogFormat::Logfmt;
