//! Real builds on a real Docker Engine, and what the docker CLI itself saw of them.
//!
//! The engine is the one `DOCKER_HOST` names (scripts/engine-up.sh provisions one: Docker Engine
//! 26.1, or with `BUILDKIT_EXPORTER_ENGINE_VERSION=28.5` Engine 28.5 with the containerd image store,
//! whose client is the buildx 0.29 that its `DOCKER_CONFIG` holds). Builds use
//! `--progress=rawjson`, so each build's vertices as BuildKit reported them to its own client
//! are the ground truth the exporter's numbers are checked against (buildx 0.13 writes that JSON
//! indented, buildx 0.29 one object a line: both are read as a stream of JSON values).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tokio::process::{Child, Command};

/// The image label that names a build from its start (the daemon's default `--build.name-label`).
pub const NAME_LABEL: &str = "org.opencontainers.image.title";

/// Serializes tests that use the engine: its builds and counters are shared.
pub static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `--source` value of the engine under test.
pub fn source() -> String {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
    assert!(
        host.starts_with("unix://"),
        "end-to-end tests need a local engine socket; run scripts/test.sh (DOCKER_HOST={host})"
    );
    let socket = Path::new(host.trim_start_matches("unix://"));
    assert!(socket.exists(), "no Docker engine at {host}; run scripts/test.sh, which starts one");
    host
}

/// The TLS listener of the private engine of scripts/engine-up.sh (`tcp://127.0.0.1:PORT`, client
/// certificate required) and the directory of its client files (`ca.pem`, `cert.pem`,
/// `key.pem`), when the engine under test is that one.
pub fn tls() -> Option<(String, String)> {
    let host = std::env::var("BUILDKIT_EXPORTER_ENGINE_TLS_HOST").ok()?;
    let certs = std::env::var("BUILDKIT_EXPORTER_ENGINE_TLS_CERTS").ok()?;
    Some((host, certs))
}

/// `major.minor` of the engine under test (`docker version`), e.g. `(26, 1)` or `(28, 5)`: for
/// the few observations that differ between engines (say so where it is used).
pub fn engine_version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let output = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .expect("docker version");
        let text = String::from_utf8_lossy(&output.stdout);
        major_minor(&text)
            .unwrap_or_else(|| panic!("engine version {text:?} ({})", String::from_utf8_lossy(&output.stderr)))
    })
}

/// `major.minor` at the start of a version text (`v0.29.1+ds1`, `28.5.2+dfsg4`).
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Makes sure the builds go through the client the engine under test needs: with the 28.5 engine
/// of scripts/engine-up.sh, buildx 0.29 or later (its DOCKER_CONFIG), not the buildx 0.13 of the
/// 26.1 set that `~/.docker/cli-plugins` holds.
fn check_client() {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        if std::env::var("BUILDKIT_EXPORTER_ENGINE_VERSION").as_deref() != Ok("28.5") {
            return;
        }
        let output = std::process::Command::new("docker").args(["buildx", "version"]).output().expect("docker buildx");
        let text = String::from_utf8_lossy(&output.stdout);
        // `github.com/docker/buildx 0.29.1+ds1 0.29.1+ds1-4` or `github.com/docker/buildx v0.29.1 HASH`
        let version = text.split_whitespace().nth(1).and_then(major_minor);
        assert!(
            version.is_some_and(|v| v >= (0, 29)),
            "Engine 28.5 needs buildx 0.29 as its client, got {text:?}: run the tests in the environment \
             `eval \"$(BUILDKIT_EXPORTER_ENGINE_VERSION=28.5 scripts/engine-up.sh)\"` gives (DOCKER_CONFIG)"
        );
    });
}

/// A unique suffix for names and cache-busting, per test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A build context in a temporary directory.
pub struct Context {
    dir: tempfile::TempDir,
}

impl Context {
    /// A context holding `dockerfile` and a small file to COPY.
    pub fn new(dockerfile: &str) -> Context {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "numpy\ntorch\n").unwrap();
        Context { dir }
    }

    /// A context holding `dockerfile` and a file `name` with `content` beside it.
    pub fn with_file(dockerfile: &str, name: &str, content: &str) -> Context {
        let context = Context::new(dockerfile);
        std::fs::write(context.path().join(name), content).unwrap();
        context
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A `docker build` in progress.
pub struct Build {
    child: Child,
    started: Instant,
    output: PathBuf,
    _output_dir: tempfile::TempDir,
}

/// How a finished `docker build` went, as its client saw it.
#[derive(Debug)]
pub struct BuildReport {
    pub success: bool,
    pub wall_seconds: f64,
    pub vertices: BTreeMap<String, Vertex>,
    pub raw: String,
}

/// A vertex's final state in the client's progress stream.
#[derive(Debug, Clone, Default)]
pub struct Vertex {
    pub name: String,
    pub started: Option<f64>,
    pub completed: Option<f64>,
    pub cached: bool,
    pub error: bool,
}

impl BuildReport {
    /// Dockerfile step vertices (`[i/n] ...`, `[stage i/n] ...`).
    pub fn steps(&self) -> Vec<&Vertex> {
        self.vertices
            .values()
            .filter(|v| v.name.starts_with('[') && !v.name.starts_with("[internal]") && !v.name.starts_with("[auth]"))
            .collect()
    }

    pub fn cached_steps(&self) -> usize {
        self.steps().iter().filter(|v| v.cached && v.completed.is_some()).count()
    }

    /// Finished (completed or failed) steps.
    pub fn finished_steps(&self) -> usize {
        self.steps().iter().filter(|v| v.completed.is_some() || v.error).count()
    }

    /// Execution times of steps that ran (not cached) and succeeded.
    pub fn executed_durations(&self) -> Vec<f64> {
        self.steps().iter().filter(|v| !v.cached && !v.error).filter_map(|v| Some(v.completed? - v.started?)).collect()
    }
}

impl Build {
    /// Starts `docker build` of `context` tagged `tag` with extra `args`.
    /// An empty `tag` builds without `-t`.
    pub fn start(context: &Context, tag: &str, args: &[&str]) -> Build {
        check_client();
        let tag_args: &[&str] = if tag.is_empty() { &[] } else { &["-t", tag] };
        let mut command = Command::new("docker");
        command.args(["build", "--progress=rawjson"]).args(tag_args).args(args).arg(context.path());
        Build::spawn(command)
    }

    /// Starts a build client `command` that writes its progress as rawjson to stderr (`docker
    /// build`, `buildctl build`).
    pub fn spawn(mut command: Command) -> Build {
        let output_dir = tempfile::tempdir().unwrap();
        let output = output_dir.path().join("progress.json");
        let file = std::fs::File::create(&output).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            // Its own process group, so that interrupting it reaches the buildx plugin too.
            .process_group(0)
            .spawn()
            .expect("start the build client");
        Build { child, started: Instant::now(), output, _output_dir: output_dir }
    }

    /// Waits until the build's own output (as its client received it) holds `text`: its step
    /// process really runs, past BuildKit's container setup.
    pub async fn wait_printed(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let raw = std::fs::read_to_string(&self.output).unwrap_or_default();
            if printed(&raw).contains(text) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the build never printed {text:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the client mid-build, the docker CLI and the buildx plugin it runs alike, which
    /// cancels the build as Ctrl-C does. SIGTERM, because buildx cancels on it as on SIGINT,
    /// and a shell that starts a job in the background makes it (and its children) ignore
    /// SIGINT; not SIGKILL, because a client that vanishes without canceling leaves the engine
    /// building on.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("build still running");
        assert!(terminate_group(pid), "terminate build {pid}");
    }

    /// Waits for the build and reads what the client saw.
    pub async fn finish(mut self) -> BuildReport {
        let status = self.child.wait().await.expect("docker build");
        let wall_seconds = self.started.elapsed().as_secs_f64();
        let raw = std::fs::read_to_string(&self.output).unwrap();
        BuildReport { success: status.success(), wall_seconds, vertices: parse_progress(&raw), raw }
    }
}

impl Drop for Build {
    /// A build a failed test leaves behind must not go on and show up in the next test.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            terminate_group(pid);
        }
    }
}

/// Sends SIGTERM to process group `pid`.
fn terminate_group(pid: u32) -> bool {
    std::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status().is_ok_and(|s| s.success())
}

/// Runs a build to the end.
pub async fn build(context: &Context, tag: &str, args: &[&str]) -> BuildReport {
    Build::start(context, tag, args).finish().await
}

/// Everything the build's steps printed, from the client's rawjson progress.
fn printed(raw: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for value in serde_json::Deserializer::from_str(raw).into_iter::<serde_json::Value>() {
        let Ok(value) = value else { break };
        for log in value["logs"].as_array().into_iter().flatten() {
            let data = base64::engine::general_purpose::STANDARD.decode(log["data"].as_str().unwrap_or_default());
            out.push_str(&String::from_utf8_lossy(&data.unwrap_or_default()));
        }
    }
    out
}

/// Folds the client's rawjson progress into final vertex states (later updates win).
fn parse_progress(raw: &str) -> BTreeMap<String, Vertex> {
    let mut vertices: BTreeMap<String, Vertex> = BTreeMap::new();
    for value in serde_json::Deserializer::from_str(raw).into_iter::<serde_json::Value>() {
        let Ok(value) = value else { break };
        for v in value["vertexes"].as_array().into_iter().flatten() {
            let digest = v["digest"].as_str().unwrap_or_default().to_string();
            let entry = vertices.entry(digest).or_default();
            entry.name = v["name"].as_str().unwrap_or_default().to_string();
            let started = v["started"].as_str().map(rfc3339);
            entry.started = entry.started.or(started);
            entry.completed = v["completed"].as_str().map(rfc3339);
            entry.cached = v["cached"].as_bool().unwrap_or(false);
            entry.error = v["error"].as_str().is_some_and(|e| !e.is_empty());
        }
    }
    vertices
}

/// An RFC 3339 time as unix seconds.
pub fn rfc3339(text: &str) -> f64 {
    let time =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("RFC 3339 time");
    time.unix_timestamp_nanos() as f64 / 1e9
}

/// The 15-step single-stage Dockerfile shaped like a real ML base image; `nonce` makes it
/// miss the cache, `sleep` is each step's run time in seconds.
pub fn ml_dockerfile(nonce: &str, sleep: &str) -> String {
    let mut text = format!(
        "FROM tinybase:latest\nARG TOKEN=none\nWORKDIR /workspace\nRUN echo {nonce} system packages: python3 python3-dev python3-pip && sleep {sleep}\n"
    );
    for step in [
        "build tools: build-essential cmake ninja-build git",
        "graphics: libgl1-mesa-dev libglib2.0-0 libsm6 libxext6",
        "math: libopenblas-dev liblapack-dev",
        "media: ffmpeg libavcodec-dev",
        "pip upgrade: pip setuptools wheel",
    ] {
        text.push_str(&format!("RUN echo {step} && sleep {sleep}\n"));
    }
    text.push_str("COPY requirements.txt /workspace/\n");
    for step in
        ["ml deps: numpy scipy opencv-python", "pytorch: torch torchvision", "fvcore iopath", "pytorch3d", "detectron2"]
    {
        text.push_str(&format!("RUN echo {step} && sleep {sleep}\n"));
    }
    text.push_str("RUN echo token is $TOKEN > /dev/null\n");
    text
}

/// The pid of the private engine of scripts/engine-up.sh.
fn engine_pid() -> String {
    let host = source();
    let pidfile = Path::new(host.trim_start_matches("unix://")).parent().unwrap().join("docker.pid");
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_else(|_| {
        panic!("signalling the engine needs the private engine of scripts/engine-up.sh (no {})", pidfile.display())
    });
    pid.trim().to_string()
}

/// Freezes the engine (SIGSTOP): its sockets still accept, nothing answers. Its builds' own
/// processes run on; its BuildKit does not.
pub fn freeze() {
    assert!(std::process::Command::new("kill").args(["-STOP", &engine_pid()]).status().unwrap().success());
}

/// Lets a frozen engine go on (SIGCONT).
pub fn thaw() {
    assert!(std::process::Command::new("kill").args(["-CONT", &engine_pid()]).status().unwrap().success());
}

/// Restarts the engine under test the way an operator would (SIGTERM, then the same command
/// line, same data root), and waits until it answers again. Only the private engine of
/// scripts/engine-up.sh can be restarted.
pub async fn restart() {
    let host = source();
    let socket = Path::new(host.trim_start_matches("unix://"));
    let pid = engine_pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("engine process");
    let argv: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).to_string()).collect();
    assert!(argv[0].ends_with("dockerd"), "{argv:?}");
    // Its own environment too: the PATH it finds containerd and runc on (scripts/engine-up.sh
    // gives the 28.5 engine its own) is not this test's.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("engine environment");
    let env: Vec<(String, String)> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let gone = async {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), gone).await.expect("engine stops");
    let log = socket.parent().unwrap().join("dockerd.log");
    let log = std::fs::OpenOptions::new().append(true).create(true).open(log).unwrap();
    use std::os::unix::process::CommandExt;
    // Its own process group, so that it outlives this test process like the one it replaces;
    // never waited for, on purpose (scripts/engine-down.sh stops it by its pidfile).
    #[allow(clippy::zombie_processes)]
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start the engine again");
    let up = async {
        loop {
            let status = Command::new("docker")
                .args(["-H", &host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if status.is_ok_and(|s| s.success()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), up).await.expect("engine answers again");
}

#[cfg(test)]
mod tests {
    #[test]
    fn major_minor_of_versions() {
        assert_eq!(super::major_minor("0.29.1+ds1"), Some((0, 29)));
        assert_eq!(super::major_minor("v0.13.1"), Some((0, 13)));
        assert_eq!(super::major_minor("28.5.2+dfsg4\n"), Some((28, 5)));
        assert_eq!(super::major_minor("dev"), None);
    }

    #[test]
    fn rfc3339_parses_nanoseconds() {
        assert_eq!(super::rfc3339("1970-01-01T00:00:01.5Z"), 1.5);
        assert_eq!(super::rfc3339("2026-11-23T23:52:35Z"), 1795477955.0);
    }
}
