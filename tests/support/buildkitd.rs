//! A real standalone buildkitd (BuildKit v0.32.2, started by scripts/buildkitd-up.sh on a unix
//! socket and on loopback TCP with mutual TLS), and builds driven by its own client, buildctl,
//! or by buildx's remote driver. What each client saw of its build is the ground truth, as for
//! the engine's builds ([`crate::engine::Build`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::engine::{Build, BuildReport, Context};

/// The image label that names a build from its start.
pub const NAME_LABEL: &str = crate::engine::NAME_LABEL;

/// Serializes tests that use the buildkitd: its builds and counters are shared, and some tests
/// stop it.
pub static BUILDKITD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The buildkitd under test, as scripts/buildkitd-up.sh described it in the environment.
#[derive(Debug, Clone)]
pub struct Buildkitd {
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its TLS listener, `127.0.0.1:PORT`.
    pub tcp: String,
    /// `ca.pem`, `client.pem` and `client.key` for the TLS listener.
    pub certs: PathBuf,
    /// Its own client.
    pub buildctl: PathBuf,
}

/// The buildkitd under test; the tests that need one are `#[ignore]`d, and scripts/test.sh runs
/// them with one started.
pub fn buildkitd() -> Buildkitd {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh (or scripts/buildkitd-up.sh)"))
    };
    Buildkitd {
        socket: var("BUILDKIT_EXPORTER_BUILDKITD_SOCK").into(),
        tcp: var("BUILDKIT_EXPORTER_BUILDKITD_TCP"),
        certs: var("BUILDKIT_EXPORTER_BUILDKITD_CERTS").into(),
        buildctl: var("BUILDKIT_EXPORTER_BUILDCTL").into(),
    }
}

impl Buildkitd {
    /// `--source` for its unix socket, as builder `name`.
    pub fn unix_source(&self, name: &str) -> String {
        format!("{name}=buildkitd+unix://{}", self.socket.display())
    }

    /// `--source` for its TLS listener (or a proxy in front of it at `address`), as builder
    /// `name`, with the client certificate.
    pub fn tls_source(&self, name: &str, address: &str) -> String {
        let file = |f: &str| self.certs.join(f).display().to_string();
        format!(
            "{name}=buildkitd+tcp://{address}?ca={}&cert={}&key={}",
            file("ca.pem"),
            file("client.pem"),
            file("client.key")
        )
    }

    /// Starts `buildctl build` of `context` over the unix socket, exporting the image
    /// `docker.io/library/{image}`; `options` are `--opt` values (`build-arg:K=V`, `label:K=V`).
    pub fn build(&self, context: &Context, image: &str, options: &[&str]) -> Build {
        let mut command = Command::new(&self.buildctl);
        command
            .arg("--addr")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["build", "--progress=rawjson", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", context.path().display()))
            .arg(format!("--local=dockerfile={}", context.path().display()))
            .arg(format!("--output=type=image,name=docker.io/library/{image}"));
        for option in options {
            command.arg(format!("--opt={option}"));
        }
        Build::spawn(command)
    }

    /// Builds `context` and pushes it to `reference` (an image in a [`Registry`]); panics if
    /// that fails.
    pub async fn push(&self, context: &Context, reference: &str) {
        let mut command = Command::new(&self.buildctl);
        command
            .arg("--addr")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["build", "--progress=rawjson", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", context.path().display()))
            .arg(format!("--local=dockerfile={}", context.path().display()))
            .arg(format!("--output=type=image,name={reference},push=true"));
        let report = Build::spawn(command).finish().await;
        assert!(report.success, "push of {reference}: {}", report.raw);
    }

    /// Runs a `buildctl build` to the end.
    pub async fn run(&self, context: &Context, image: &str, options: &[&str]) -> BuildReport {
        self.build(context, image, options).finish().await
    }

    /// Starts `docker buildx build` of `context` through buildx builder `builder` (of the
    /// remote driver, see [`Buildkitd::remote_builder`]), with extra `args`.
    pub fn buildx(&self, builder: &str, context: &Context, args: &[&str]) -> Build {
        let mut command = Command::new("docker");
        command.args(["buildx", "build", "--builder", builder, "--progress=rawjson"]).args(args).arg(context.path());
        Build::spawn(command)
    }

    /// Creates buildx builder `name` of the remote driver, reaching this buildkitd on its unix
    /// socket; it is removed when the returned guard is dropped.
    pub fn remote_builder(&self, name: &str) -> RemoteBuilder {
        let status = std::process::Command::new("docker")
            .args(["buildx", "create", "--name", name, "--driver", "remote"])
            .arg(format!("unix://{}", self.socket.display()))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker buildx create");
        assert!(status.success(), "docker buildx create --driver remote");
        RemoteBuilder(name.to_string())
    }

    /// Kills it (SIGKILL, as an OOM kill or a node failure would) and starts it again on the same
    /// state, sockets and port, as scripts/buildkitd-up.sh does; returns once it answers.
    pub async fn kill_and_restart(&self) {
        let state = self.socket.parent().expect("the socket is in the state dir");
        let pid = std::fs::read_to_string(state.join("buildkitd.pid")).expect("buildkitd's PID file");
        let status = Command::new("kill").args(["-KILL", pid.trim()]).status().await.expect("kill");
        assert!(status.success(), "kill -KILL {pid}");
        crate::eventually(Duration::from_secs(10), "buildkitd to die", || async {
            (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
        })
        .await;
        let up = Command::new(crate::repo_file("scripts/buildkitd-up.sh"))
            .env("BUILDKIT_EXPORTER_BUILDKITD_DIR", state)
            .env("BUILDKIT_EXPORTER_BUILDKITD_PORT", self.tcp.rsplit_once(':').expect("host:port").1)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("scripts/buildkitd-up.sh");
        assert!(up.success(), "buildkitd started again");
    }
}

/// A buildx builder of the remote driver, removed on drop.
pub struct RemoteBuilder(pub String);

impl Drop for RemoteBuilder {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["buildx", "rm", &self.0]).output();
    }
}

/// A build context holding `dockerfile` and a static busybox to build a base from: there is no
/// registry, so a Dockerfile starts with [`BASE`].
pub fn context(dockerfile: &str) -> Context {
    let context = Context::new(dockerfile);
    std::fs::copy("/bin/busybox", context.path().join("busybox")).expect("busybox-static (scripts/provision.sh)");
    context
}

/// The first lines of every Dockerfile here: a busybox base made in the build itself.
pub const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nSHELL [\"/bin/busybox\", \"sh\", \"-c\"]\nRUN /bin/busybox --install -s /bin\n";

/// An image registry of the test's own (Debian's `docker-registry`, on a free loopback port,
/// storing in a temporary directory), for builds to start `FROM` images that can change: a
/// buildkitd pulls and pushes plain HTTP from 127.0.0.1 without being told. Stopped when
/// dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts it; returns once it answers.
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("data");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n", storage.display()),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry (scripts/provision.sh installs it)");
        let registry = Registry { address, child, _dir: dir };
        crate::eventually(Duration::from_secs(20), "the registry answers", || async {
            tokio::net::TcpStream::connect(&registry.address).await.ok().map(|_| ())
        })
        .await;
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A second buildkitd of its own, started by scripts/buildkitd-up.sh in a state dir of its own
/// on a free port, and stopped (its state removed) by scripts/buildkitd-down.sh when dropped.
pub struct OtherBuildkitd {
    pub buildkitd: Buildkitd,
    state: tempfile::TempDir,
}

impl OtherBuildkitd {
    /// Starts it; returns once it answers.
    pub async fn start() -> OtherBuildkitd {
        let state = tempfile::Builder::new().prefix("bk-other-").tempdir_in("/tmp").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = Command::new(crate::repo_file("scripts/buildkitd-up.sh"))
            .env("BUILDKIT_EXPORTER_BUILDKITD_DIR", state.path())
            .env("BUILDKIT_EXPORTER_BUILDKITD_PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("scripts/buildkitd-up.sh");
        assert!(out.status.success(), "second buildkitd: {}", String::from_utf8_lossy(&out.stderr));
        // `export NAME=VALUE` lines, with values that need no shell quoting here.
        let exported = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            exported
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in {exported}"))
                .to_string()
        };
        let buildkitd = Buildkitd {
            socket: var("BUILDKIT_EXPORTER_BUILDKITD_SOCK").into(),
            tcp: var("BUILDKIT_EXPORTER_BUILDKITD_TCP"),
            certs: var("BUILDKIT_EXPORTER_BUILDKITD_CERTS").into(),
            buildctl: var("BUILDKIT_EXPORTER_BUILDCTL").into(),
        };
        OtherBuildkitd { buildkitd, state }
    }
}

impl Drop for OtherBuildkitd {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::repo_file("scripts/buildkitd-down.sh"))
            .env("BUILDKIT_EXPORTER_BUILDKITD_DIR", self.state.path())
            .output();
    }
}
