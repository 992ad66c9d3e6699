//! A real Prometheus for tests: started on a loopback port, scraping the daemon under test.
//!
//! Two releases are at hand (scripts/provision.sh installs both), chosen by [`Version`]:
//! Prometheus 2 is the Debian 12 package (2.42) on PATH; Prometheus 3 is Debian sid's 3.5,
//! unpacked into `${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}/prometheus-3.5/usr/bin`.
//! Each binary's `--version` is checked once against the release it stands for, and failures
//! name the release (e.g. `Prometheus 3.5.3`).
//!
//! Every instance gets its own free loopback port, configuration and TSDB in a temporary
//! directory, so a system Prometheus that the package may have started is never touched. The
//! process is killed when the handle is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::http;

/// How long Prometheus may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP request to Prometheus may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The release of `prometheus` and `promtool` to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// The Debian 12 package on PATH (2.42).
    V2,
    /// The 3.5 that scripts/provision.sh unpacks beside it (`BUILDKIT_EXPORTER_TOOLS`).
    V3,
}

impl Version {
    /// Both releases, oldest first.
    pub const ALL: [Version; 2] = [Version::V2, Version::V3];

    fn major(self) -> u32 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// The directory of the Prometheus 3 binaries, as scripts/provision.sh places them.
    pub fn v3_dir() -> PathBuf {
        let prefix = std::env::var_os("BUILDKIT_EXPORTER_TOOLS")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/opt/buildkit-exporter-tools".into());
        PathBuf::from(prefix).join("prometheus-3.5/usr/bin")
    }

    /// Where this release's `prometheus` or `promtool` is.
    fn locate(self, name: &str) -> Result<PathBuf, String> {
        match self {
            Version::V2 => on_path(name).ok_or_else(|| format!("`{name}` is not on PATH")),
            Version::V3 => {
                let path = Version::v3_dir().join(name);
                path.is_file().then_some(path.clone()).ok_or_else(|| format!("no {}", path.display()))
            }
        }
    }

    /// `prometheus` or `promtool` of this release; its `--version` is checked (once per binary).
    pub fn binary(self, name: &str) -> PathBuf {
        let found = self.locate(name).and_then(|path| Ok((version_of(&path)?, path)));
        let (version, path) =
            found.unwrap_or_else(|e| panic!("Prometheus {}: {e} (run scripts/provision.sh)", self.major()));
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        assert_eq!(
            major,
            Some(self.major()),
            "{} is version {version}, not Prometheus {}",
            path.display(),
            self.major()
        );
        path
    }

    /// The full version of this release's `prometheus`, e.g. `3.5.3+ds1`.
    pub fn full(self) -> String {
        version_of(&self.binary("prometheus")).unwrap()
    }
}

/// `Prometheus 2.42.0+ds` or `Prometheus 3.5.3+ds1`: what failures name. Never panics (it is
/// used in panic messages): without a binary, `Prometheus 3`.
impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.locate("prometheus").and_then(|path| version_of(&path)) {
            Ok(version) => write!(f, "Prometheus {version}"),
            Err(_) => write!(f, "Prometheus {}", self.major()),
        }
    }
}

/// The version a `prometheus` or `promtool` binary reports (`prometheus, version 3.5.3+ds1
/// (branch: ...)`), remembered per path.
fn version_of(path: &Path) -> Result<String, String> {
    static SEEN: std::sync::Mutex<BTreeMap<PathBuf, String>> = std::sync::Mutex::new(BTreeMap::new());
    if let Some(version) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return Ok(version.clone());
    }
    let output = std::process::Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", path.display()))?;
    // On stdout or stderr, depending on the build.
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| format!("{} --version says no version: {text}", path.display()))?
        .to_string();
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_path_buf(), version.clone());
    Ok(version)
}

/// Runs `promtool check metrics` of `version` on an exposition: `Err` holds what it found.
pub fn promtool_check_metrics(version: Version, metrics: &str) -> Result<(), String> {
    use std::io::Write;
    let promtool = version.binary("promtool");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/provision.sh)", promtool.display()));
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread: promtool may answer (and fill its pipes) before reading it all.
    let input = metrics.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    let _ = writer.join().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        let promtool = version_of(&promtool).map(|v| format!("promtool {v}")).unwrap_or_else(|_| format!("{version}"));
        Err(format!("`{promtool} check metrics` ({}):\n{findings}", output.status))
    }
}

/// `promtool check metrics` of every [`Version`] finds nothing in `metrics`; panics with the
/// findings of each release that does.
pub fn assert_promtool_finds_nothing(metrics: &str) {
    let findings: Vec<String> = Version::ALL.iter().filter_map(|&v| promtool_check_metrics(v, metrics).err()).collect();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

/// A Prometheus process owned by a test.
pub struct Prometheus {
    pub addr: SocketAddr,
    pub version: Version,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// One sample of an instant query's result.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One alert from `/api/v1/alerts`.
#[derive(Debug, Clone)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or_default()
    }
}

/// A program on PATH, e.g. `prometheus` or `promtool` (the Debian package puts them in /usr/bin).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

impl Prometheus {
    /// [`Prometheus::start_on`] Prometheus 2, the one on PATH.
    pub async fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        Prometheus::start_on(Version::V2, config, files).await
    }

    /// Starts Prometheus of `version` with `config` as its configuration file and `files`
    /// (name, content) beside it, so `rule_files` may name them relatively; waits until it is
    /// ready.
    pub async fn start_on(version: Version, config: &str, files: &[(&str, &str)]) -> Prometheus {
        let binary = version.binary("prometheus");
        let mut dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        // The port is found by binding and releasing it; another process may take it in between,
        // so a start that fails on the port is retried with a new one.
        for _ in 0..3 {
            let addr = free_port();
            let log = dir.path().join(format!("prometheus-{}.log", addr.port()));
            let output = std::fs::File::create(&log).unwrap();
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=info")
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start {version}: {e}"));
            let mut prometheus = Prometheus { addr, version, child, log, dir };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(log) if log.contains("address already in use") => {
                    dir = prometheus.into_dir().await;
                }
                Err(log) => panic!("{version} did not start:\n{log}"),
            }
        }
        panic!("{version} found no free port in three attempts");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}; log:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops a failed start and hands back its directory for the next attempt.
    async fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        self.dir
    }

    /// The directory holding the configuration and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Evaluates `expr` now; `Err` carries Prometheus's error for a query it rejects.
    pub async fn try_query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr))).await?;
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(result.as_array().unwrap().iter().map(sample).collect()),
            Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: number(&result[1]) }]),
            other => Err(format!("unexpected result type {other:?} for {expr}")),
        }
    }

    /// Evaluates `expr` now; panics when Prometheus rejects it.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        self.try_query(expr).await.unwrap_or_else(|e| panic!("{}: query {expr}: {e}", self.version))
    }

    /// Alerts pending or firing now.
    pub async fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts").await.unwrap_or_else(|e| panic!("{}: alerts: {e}", self.version));
        data["alerts"]
            .as_array()
            .expect("alerts array")
            .iter()
            .map(|a| Alert {
                labels: strings(&a["labels"]),
                annotations: strings(&a["annotations"]),
                state: a["state"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The rule groups Prometheus loaded, as `/api/v1/rules` returns them.
    pub async fn rules(&self) -> serde_json::Value {
        self.api("/api/v1/rules").await.unwrap_or_else(|e| panic!("{}: rules: {e}", self.version))["groups"].clone()
    }

    /// Values of `label` on the series `selector` matches.
    pub async fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let path = format!("/api/v1/label/{label}/values?match[]={}", encode(selector));
        let data = self
            .api(&path)
            .await
            .unwrap_or_else(|e| panic!("{}: label values {label} of {selector}: {e}", self.version));
        data.as_array().expect("values").iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    /// GETs an API path; `data` on success, the error text otherwise.
    async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (status, body) = http_get(self.addr, path).await.map_err(|e| format!("GET {path}: {e}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))?;
        if value["status"] != "success" {
            return Err(format!("HTTP {status}: {} {}", value["errorType"], value["error"]));
        }
        Ok(value["data"].clone())
    }

    /// Stops Prometheus (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap()
}

fn sample(value: &serde_json::Value) -> Sample {
    Sample { labels: strings(&value["metric"]), value: number(&value["value"][1]) }
}

/// Prometheus sends sample values as strings: "1.5", "NaN", "+Inf".
fn number(value: &serde_json::Value) -> f64 {
    let text = value.as_str().expect("sample value");
    text.parse().unwrap_or_else(|_| panic!("sample value {text}"))
}

fn strings(object: &serde_json::Value) -> BTreeMap<String, String> {
    object
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Percent-encodes a query parameter value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET, bounded by [`REQUEST_TIMEOUT`].
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, http::plain(addr, &http::request(path, &[])))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")))?;
    Ok((reply.status, reply.text()))
}
