//! The web configuration file (`--web.config.file`, in the Prometheus exporter-toolkit format):
//! TLS with optional client certificates, basic-auth users and extra response headers. It is
//! read once at startup, where a mistake stops the daemon, then looked at again as connections
//! arrive (at most once a second) and re-read when it, or a file it names, has changed: a
//! certificate renewed on disk, or a user added, takes effect without a restart, and a broken
//! edit is logged and ignored so that the daemon keeps serving with the last good version.

pub mod auth;
mod file;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use auth::Users;

use crate::stamp::Stamp;

/// How often, at most, the file and the files it names are looked at for changes.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One version of the web configuration, ready to serve with.
pub struct WebConfig {
    /// Present when connections must speak TLS.
    pub tls: Option<TlsAcceptor>,
    /// Who may connect, when basic auth is on (empty: anyone).
    pub users: Users,
    /// Added to every response, after the daemon's own headers (so they may replace them).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a web configuration file cannot be used. Every message names the file; none is worth
/// retrying until the file changes.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file itself cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The web configuration file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// It is not YAML of the expected shape (unknown keys included).
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The web configuration file.
        path: PathBuf,
        /// The parser's message, with the key and line.
        message: String,
    },
    /// It is well formed but says something that cannot be served: a missing or broken
    /// certificate or key, a hash that is not bcrypt, a header that may not be set.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The web configuration file.
        path: PathBuf,
        /// What is wrong, naming the key (and the file it points to, if any).
        message: String,
    },
}

/// A web configuration file and its current version; cheap to clone, shared by every listener.
#[derive(Clone)]
pub struct WebConfigFile(Arc<Watched>);

struct Watched {
    path: PathBuf,
    /// The version in force. A std mutex is enough: it is held only to clone or swap the `Arc`.
    current: Mutex<Arc<WebConfig>>,
    /// When the files were last looked at, and what they were then. `try_lock`ed, so that one
    /// connection does the looking while the others go on with the current version.
    check: Mutex<Check>,
}

struct Check {
    at: Instant,
    seen: Seen,
}

/// What the files read for one version looked like just before they were read: a change to any
/// of them (content, or a new file put in place by a rename) means the version is outdated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen(Vec<(PathBuf, Option<Stamp>)>);

impl Seen {
    fn changed(&self) -> bool {
        self.0.iter().any(|(path, stamp)| Stamp::of(path) != *stamp)
    }
}

impl std::fmt::Debug for WebConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WebConfigFile").field(&self.0.path).finish()
    }
}

impl WebConfigFile {
    /// Reads `path` and everything it names; any problem is an error, for the daemon to stop
    /// on before it serves anything.
    pub fn open(path: &Path) -> Result<WebConfigFile, WebConfigError> {
        let mut seen = Seen::default();
        let config = load(path, &mut seen)?;
        Ok(WebConfigFile(Arc::new(Watched {
            path: path.to_path_buf(),
            current: Mutex::new(Arc::new(config)),
            check: Mutex::new(Check { at: Instant::now(), seen }),
        })))
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The version in force, without looking at the disk.
    pub fn current(&self) -> Arc<WebConfig> {
        self.0.current.lock().expect("web config lock").clone()
    }

    /// The version in force, after re-reading the files if a second has passed since they were
    /// last looked at and any of them changed. A version that fails to load is logged once and
    /// left aside: the last good one stays in force until the files change again.
    pub fn refreshed(&self) -> Arc<WebConfig> {
        let watched = &self.0;
        if let Ok(mut check) = watched.check.try_lock() {
            if check.at.elapsed() >= RECHECK_INTERVAL {
                check.at = Instant::now();
                if check.seen.changed() {
                    let mut seen = Seen::default();
                    match load(&watched.path, &mut seen) {
                        Ok(config) => {
                            *watched.current.lock().expect("web config lock") = Arc::new(config);
                            info!(file = %watched.path.display(), "web config reloaded");
                        }
                        Err(error) => warn!(%error, "web config not reloaded: serving with the last good one"),
                    }
                    check.seen = seen;
                }
            }
        }
        self.current()
    }
}

/// Reads `path` into a version, recording in `seen` every file it reads (also on failure, so
/// that a fix to any of them is noticed).
fn load(path: &Path, seen: &mut Seen) -> Result<WebConfig, WebConfigError> {
    let mut files = Files { dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(), seen };
    let text = files.read(path).map_err(|source| WebConfigError::Read { path: path.to_path_buf(), source })?;
    let text = String::from_utf8(text)
        .map_err(|_| WebConfigError::Syntax { path: path.to_path_buf(), message: "not UTF-8 text".to_string() })?;
    let parsed = file::parse(&text)
        .map_err(|message| WebConfigError::Syntax { path: path.to_path_buf(), message: one_line(&message) })?;
    build(parsed, &mut files).map_err(|message| WebConfigError::Invalid { path: path.to_path_buf(), message })
}

/// Checks everything `file` says and reads the files it names.
fn build(mut file: file::File, files: &mut Files<'_>) -> Result<WebConfig, String> {
    let tls = match &file.tls_server_config {
        Some(config) => Some(tls::acceptor(config, files)?),
        None => None,
    };
    let users = Users::new(std::mem::take(&mut file.basic_auth_users))?;
    let headers = file.headers()?;
    Ok(WebConfig { tls, users, headers })
}

/// Reads the files a web configuration names, relative to its directory (as exporter-toolkit
/// resolves them), noting what each looked like before it was read.
struct Files<'a> {
    dir: PathBuf,
    seen: &'a mut Seen,
}

impl Files<'_> {
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.seen.0.push((path.to_path_buf(), Stamp::of(path)));
        std::fs::read(path)
    }

    /// Reads the file named under `key` (relative to the configuration's directory), with an
    /// error message naming the key and the file.
    fn read_named(&mut self, key: &str, path: &Path) -> Result<Vec<u8>, String> {
        let path = self.dir.join(path);
        self.read(&path).map_err(|e| format!("{key} {}: {e}", path.display()))
    }
}

/// Parser messages may span lines; the daemon reports a broken file in one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
