//! Does one daemon keep up with many sources? It follows 52 at once: 50 fake BuildKit servers
//! (the test kit's fake, in this process, each on its own unix socket, each playing the four builds
//! recorded in tests/fixtures/builds.jsonl at their recorded pace and then holding its history
//! stream open) and two real Docker Engines 26.1, on which real multi-step builds run for a few
//! minutes. The daemon is the release binary in a child process, so its memory and CPU are its
//! own.
//!
//! Measured: the time until every `buildkit_exporter_source_up` is 1, the cost of a scrape
//! (over HTTP, back to back) and its size, the daemon's resident memory and CPU time after the
//! builds. Fails unless all 52 sources are up at every check, no source reconnected, each fake
//! counted its four builds, and each engine counted exactly the builds run on it (by an image
//! name unique to the run).
//!
//! Both engines are started here from the dockerd that scripts/engine-up.sh runs (unpacked by
//! scripts/provision.sh), each with its own bridge, data root, exec root and socket, tinybase
//! imported by engine-up.sh, and stopped and removed at the end: an engine shared with other
//! work may be restarted under the benchmark or carry other builds. With `DOCKER_HOST` set,
//! that engine is the first instead. Needs root. Writes `benches/sources.md`.
//!
//! `cargo bench --bench sources` (`-- --quick`: fewer, closer builds, and writes nothing).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::binary::{stop, with_deathsig};
use testkit::fake::{FakeBuildkit, Script};
use testkit::http::Client;
use testkit::measure::{cpu, load, memory, open_fds, threads, wait_quiet};
use testkit::metrics::{self, label, sum};
use testkit::report::{kib, mib, ms, quantile, Report};
use testkit::{exporter_binary, fixture, repo_file, Binary};

/// Fake BuildKit servers followed.
const FAKES: usize = 50;
/// Builds the fake's script plays (the recording), and how many succeed.
const FAKE_BUILDS: f64 = 4.0;
/// Successful real builds per engine, one every `GAP`; plus one failing build each.
const BUILDS: usize = 8;
const GAP: Duration = Duration::from_secs(20);
/// Scrapes timed at the end.
const SCRAPES: usize = 200;
/// Longest wait for a quiet machine (see `measure::QUIET_LOAD`).
const QUIET_WAIT: Duration = Duration::from_secs(600);
/// The bridges of the engines started here (address ranges nothing else here uses).
const BRIDGES: [(&str, &str); 2] = [("srcbench0", "10.250.29.1/24"), ("srcbench1", "10.250.30.1/24")];
/// The daemon's default `--build.name-label`.
const NAME_LABEL: &str = "org.opencontainers.image.title";

const DOCKERFILE: &str = "FROM tinybase:latest
ARG NONCE
RUN echo \"build $NONCE\" > /built && sleep 1
COPY data.txt /data.txt
WORKDIR /app
RUN cat /data.txt /built > out.txt && sleep 1
RUN echo done >> out.txt
";

const FAILING: &str = "FROM tinybase:latest
ARG NONCE
RUN echo \"build $NONCE\"
RUN false
";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// What the daemon counted.

/// Builds counted by the fake sources.
fn fake_count(metrics: &str) -> f64 {
    metrics::all(metrics)
        .filter(|s| s.metric == "buildkit_builds_completed_total" && label(s.labels, "builder").starts_with("fake-"))
        .map(|s| s.value)
        .sum()
}

/// Builds of `name` an engine's source counted with `result`.
fn engine_count(metrics: &str, engine: &str, name: &str, result: &str) -> f64 {
    sum(metrics, "buildkit_builds_completed_total", &[("builder", engine), ("name", name), ("result", result)])
}

/// `buildkit_exporter_source_up` by builder.
fn up(metrics: &str) -> Vec<(String, f64)> {
    metrics::all(metrics)
        .filter(|s| s.metric == "buildkit_exporter_source_up")
        .map(|s| (label(s.labels, "builder").to_string(), s.value))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Engines.

fn docker(host: &str, args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).env("DOCKER_HOST", host).stdin(Stdio::null()).output().expect("docker CLI")
}

fn engine_version(host: &str) -> Option<String> {
    let out = docker(host, &["version", "--format", "{{.Server.Version}}"]);
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !version.is_empty()).then_some(version)
}

/// Runs scripts/engine-up.sh with `host` as DOCKER_HOST: it finds the engine answering there and
/// imports tinybase into it.
fn import_tinybase(host: &str) {
    let script = repo_file("scripts/engine-up.sh");
    let out = Command::new(&script)
        .env("DOCKER_HOST", host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run scripts/engine-up.sh");
    assert!(out.success(), "scripts/engine-up.sh failed");
}

/// The dockerd that scripts/engine-up.sh runs: that of its running engine, else the one
/// scripts/provision.sh unpacked.
fn dockerd_binary() -> PathBuf {
    let state =
        std::env::var("BUILDKIT_EXPORTER_ENGINE_DIR").unwrap_or_else(|_| "/tmp/buildkit-exporter-engine".into());
    let pid = std::fs::read_to_string(Path::new(&state).join("docker.pid")).unwrap_or_default();
    if let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", pid.trim())) {
        return exe;
    }
    let prefix = std::env::var("BUILDKIT_EXPORTER_TOOLS").unwrap_or_else(|_| "/opt/buildkit-exporter-tools".into());
    Path::new(&prefix).join("usr/sbin/dockerd")
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A Docker Engine started here, on its own bridge, stopped and removed on drop. Its directory
/// is laid out as that of the engine scripts/engine-up.sh starts (data and exec roots, socket,
/// pidfile, and the bridge made for it), so that scripts/engine-down.sh takes it down.
struct Engine {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
    version: String,
}

impl Engine {
    fn start(dockerd: &Path, (bridge, address): (&'static str, &str)) -> Engine {
        // Short: containerd's sockets live below the exec root.
        let dir = tempfile::Builder::new().prefix("srcbench-").tempdir_in("/tmp").unwrap();
        let d = dir.path();
        if Path::new("/sys/class/net").join(bridge).exists() {
            ip(&["link", "delete", bridge]);
        }
        assert!(ip(&["link", "add", bridge, "type", "bridge"]), "ip link add {bridge} (root needed)");
        assert!(ip(&["addr", "add", address, "dev", bridge]));
        assert!(ip(&["link", "set", bridge, "up"]));
        std::fs::write(d.join("created-bridge"), format!("{bridge}\n")).unwrap();
        std::fs::write(d.join(".buildkit-exporter-engine"), "").unwrap();
        std::fs::write(d.join("daemon.json"), "{}\n").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let sbin = dockerd.parent().unwrap();
        let path = format!("{}:{}", sbin.display(), std::env::var("PATH").unwrap_or_default());
        let host = format!("unix://{}", d.join("docker.sock").display());
        let child = with_deathsig(dockerd)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["-H", &host, "-b", bridge, "--iptables=false", "--ip6tables=false", "--ip-forward=false"])
            .arg("--userland-proxy-path")
            .arg(sbin.join("docker-proxy"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", dockerd.display()));
        let mut engine = Engine { dir, child, host, version: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(version) = engine_version(&engine.host) {
                engine.version = version;
                break;
            }
            let log = std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default();
            assert!(
                matches!(engine.child.try_wait(), Ok(None)) && Instant::now() < deadline,
                "dockerd on {bridge} did not come up:\n{}",
                log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        import_tinybase(&engine.host);
        engine
    }
}

impl Drop for Engine {
    /// Its dockerd, a child of this process, is stopped and reaped here; what it leaves (its
    /// containerd and shims, by their pidfiles, its mounts, its bridge, its directory) goes as
    /// scripts/engine-down.sh takes down its own engine.
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(40));
        let down = Command::new(repo_file("scripts/engine-down.sh"))
            .env("BUILDKIT_EXPORTER_ENGINE_DIR", self.dir.path())
            .env_remove("BUILDKIT_EXPORTER_ENGINE_VERSION")
            .stdin(Stdio::null())
            .status();
        if !down.is_ok_and(|s| s.success()) {
            eprintln!("scripts/engine-down.sh could not take down the engine in {}", self.dir.path().display());
        }
    }
}

/// Runs `BUILDS` successful builds and one failing one on the engine at `host`, `gap` apart,
/// all named `name`; returns how many succeeded and failed as the client saw it.
fn builds(host: &str, name: &str, count: usize, gap: Duration) -> (usize, usize) {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(context.path().join("failing.Dockerfile"), FAILING).unwrap();
    std::fs::write(context.path().join("data.txt"), "some data\n").unwrap();
    let (mut ok, mut failed) = (0, 0);
    for i in 0..=count {
        let failing = i == count / 2;
        let nonce = format!("{}-{i}", std::process::id());
        let tag = format!("{name}:{i}");
        let mut args = vec!["build", "--progress=plain", "-t", &tag];
        let label = format!("{NAME_LABEL}={name}");
        let nonce_arg = format!("NONCE={nonce}");
        args.extend(["--label", &label, "--build-arg", &nonce_arg]);
        if failing {
            args.extend(["-f", "failing.Dockerfile"]);
        }
        let context = context.path().to_str().unwrap();
        args.push(context);
        let out = docker(host, &args);
        eprintln!("{name} build {i} on {host}: {}", if out.status.success() { "ok" } else { "failed" });
        match (failing, out.status.success()) {
            (false, true) => ok += 1,
            (true, false) => failed += 1,
            _ => panic!(
                "build {i} on {host} {}:\n{}",
                if failing { "did not fail" } else { "failed" },
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        if i < count {
            std::thread::sleep(gap);
        }
    }
    let _ = docker(host, &["image", "rm", "-f", &format!("{name}:latest")]);
    let tags: Vec<String> = (0..=count).map(|i| format!("{name}:{i}")).collect();
    let mut rm = vec!["image", "rm", "-f"];
    rm.extend(tags.iter().map(String::as_str));
    let _ = docker(host, &rm);
    (ok, failed)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (count, gap) = if quick { (2, Duration::from_secs(2)) } else { (BUILDS, GAP) };
    for tool in ["docker", "ip"] {
        if Command::new(tool).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            eprintln!("sources bench: `{tool}` not found");
            std::process::exit(2);
        }
    }
    // Two engines started here from the same dockerd; with DOCKER_HOST set, that engine is the
    // first instead.
    let dockerd = dockerd_binary();
    assert!(dockerd.exists(), "{} missing (run scripts/provision.sh)", dockerd.display());
    let given = std::env::var("DOCKER_HOST").ok().filter(|host| engine_version(host).is_some());
    let first_engine = match &given {
        Some(_) => None,
        None => Some(Engine::start(&dockerd, BRIDGES[0])),
    };
    let first = given.clone().unwrap_or_else(|| first_engine.as_ref().unwrap().host.clone());
    assert!(first.starts_with("unix://"), "the first engine must be on a unix socket: {first}");
    let first_version = engine_version(&first).expect("the first engine answers");
    let second = Engine::start(&dockerd, BRIDGES[1]);
    eprintln!(
        "engines {first_version} at {first} and {} at {}, from {}",
        second.version,
        second.host,
        dockerd.display()
    );
    let (load_start, quiet) = wait_quiet(if quick { Duration::ZERO } else { QUIET_WAIT });

    // The fakes.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let lines = fixture::recorded();
    let dirs: Vec<tempfile::TempDir> = (0..FAKES).map(|_| tempfile::tempdir().unwrap()).collect();
    let fakes: Vec<FakeBuildkit> = dirs
        .iter()
        .map(|d| runtime.block_on(FakeBuildkit::start(d.path(), Script::from_recording(&lines, 1.0))))
        .collect();
    let mut sources: Vec<String> =
        fakes.iter().enumerate().map(|(i, f)| format!("fake-{i:02}={}", f.source())).collect();
    sources.push(format!("engine-a={first}"));
    sources.push(format!("engine-b={}", second.host));

    // The daemon, until every source is up.
    let started = Instant::now();
    let args: Vec<&str> = sources.iter().flat_map(|s| ["--source", s.as_str()]).collect();
    let daemon = Binary::start(exporter_binary!(), &args, &[]);
    let pid = daemon.pid();
    let mut http = Client::new(daemon.addr);
    let all_up = loop {
        let metrics = http.metrics();
        let up = up(&metrics);
        if up.len() == sources.len() && up.iter().all(|(_, v)| *v == 1.0) {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not all sources up after 120 s: {:?}\n{}",
            up.iter().filter(|(_, v)| *v != 1.0).collect::<Vec<_>>(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("all {} sources up after {all_up:.2} s", sources.len());
    let (rss_up, _) = memory(pid);
    let cpu_up = cpu(pid).0;

    // Real builds on both engines at once, the sources checked every second meanwhile.
    let run = format!("{}", now() as u64 % 100_000);
    let names = [format!("bench/sources-a-{run}"), format!("bench/sources-b-{run}")];
    let building = Instant::now();
    // When the fakes' builds were all counted, and the RSS then.
    let mut fakes_done: Option<(f64, u64)> = None;
    let (done_a, done_b) = std::thread::scope(|s| {
        let a = s.spawn(|| builds(&first, &names[0], count, gap));
        let b = s.spawn(|| builds(&second.host, &names[1], count, gap));
        let mut down = Vec::new();
        while !a.is_finished() || !b.is_finished() {
            let metrics = http.metrics();
            down.extend(up(&metrics).into_iter().filter(|(_, v)| *v != 1.0).map(|(b, _)| b));
            if fakes_done.is_none() && fake_count(&metrics) == FAKES as f64 * FAKE_BUILDS {
                fakes_done = Some((started.elapsed().as_secs_f64(), memory(pid).0));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(down.is_empty(), "sources down during the builds: {down:?}");
        (a.join().unwrap(), b.join().unwrap())
    });
    let build_seconds = building.elapsed().as_secs_f64();
    eprintln!("builds done after {build_seconds:.0} s: {done_a:?} on the first engine, {done_b:?} on the second");

    // Counted exactly: each engine its builds under the run's name, each fake its four.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = Vec::new();
    let metrics = loop {
        let metrics = http.metrics();
        failures.clear();
        for (engine, name, (ok, failed)) in [("engine-a", &names[0], done_a), ("engine-b", &names[1], done_b)] {
            for (result, expected) in [("succeeded", ok), ("failed", failed)] {
                let counted = engine_count(&metrics, engine, name, result);
                if counted != expected as f64 {
                    failures.push(format!("{engine}: {counted} builds of {name} counted as {result}, ran {expected}"));
                }
            }
        }
        for i in 0..FAKES {
            let builder = format!("fake-{i:02}");
            let counted = sum(&metrics, "buildkit_builds_completed_total", &[("builder", &builder)]);
            if counted != FAKE_BUILDS {
                failures.push(format!("{builder}: {counted} builds counted, played {FAKE_BUILDS}"));
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let running = sum(&metrics, "buildkit_builds_running", &[]);
    let fake_counted = fake_count(&metrics);
    let reconnects = sum(&metrics, "buildkit_exporter_source_reconnects_total", &[]);
    if reconnects != 0.0 {
        failures.push(format!("{reconnects} reconnects"));
    }
    let up_end = up(&metrics);
    if up_end.len() != sources.len() || up_end.iter().any(|(_, v)| *v != 1.0) {
        failures.push(format!("not all up at the end: {up_end:?}"));
    }
    let lasted = started.elapsed().as_secs_f64();
    let cpu_end = cpu(pid).0;
    let (rss_end, hwm) = memory(pid);
    let (thread_count, fds) = (threads(pid), open_fds(pid));

    // Scrapes, back to back: their times, and the size of the last.
    let mut scrapes = |gzip: bool| {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..SCRAPES {
            let t = Instant::now();
            size = http.get("/metrics", gzip).body.len();
            times.push(t.elapsed().as_secs_f64());
        }
        (times, size)
    };
    let (plain, size) = scrapes(false);
    let (gzip, gzip_size) = scrapes(true);
    let series = metrics::all(&metrics).count();
    let load_end = load();
    let log = daemon.log();
    drop(http);
    drop(daemon);
    runtime.block_on(async { fakes.into_iter().for_each(FakeBuildkit::stop) });
    drop(second);
    drop(first_engine);

    let mut md = Report::new("sources");
    md.failures = failures;
    writeln!(md, "# Many sources: 50 fake BuildKit servers and 2 real engines\n").unwrap();
    writeln!(
        md,
        "**Machine:** {}. The daemon, both engines and the fakes share the cores. \
         **Reproduce:** as root, after `scripts/provision.sh`, `cargo bench --bench sources` (with \
         `DOCKER_HOST` unset, so that it starts both engines). Writes this file.\n",
        Report::machine()
    )
    .unwrap();
    writeln!(
        md,
        "**Method.** One daemon (release build, default flags, a child process) follows {} sources: 50 fake \
         BuildKit servers on unix sockets (`buildkitd+unix://`), in the benchmark's process, each playing the four \
         builds recorded from a real engine at their recorded pace (about 10 s) and then holding its history \
         stream open; and two Docker Engines {first_version} on unix sockets (`unix://`), {engines}. On each \
         engine, both at the same time, {} builds run {} s apart: {count} of a 6-step Dockerfile (`FROM`, `RUN`, \
         `COPY`, `WORKDIR`, `RUN`, `RUN`, with a fresh `ARG` value each time) and, half-way, one of a Dockerfile \
         whose `RUN false` fails; all are named by a label unique to the run. `/metrics` is read once a second \
         meanwhile. Then: memory and CPU time of the daemon, and {SCRAPES} scrapes back to back on one \
         keep-alive connection, plain and gzip.\n",
        sources.len(),
        count + 1,
        gap.as_secs(),
        engines = if given.is_some() {
            "the first the one `DOCKER_HOST` names, the second started by the benchmark from the same `dockerd` \
             with its own bridge, data root, exec root and socket"
        } else {
            "both started by the benchmark from the `dockerd` that `scripts/engine-up.sh` runs, each with its own \
             bridge, data root, exec root and socket, so that no one else's builds or restarts reach them"
        },
    )
    .unwrap();
    writeln!(md, "| measure | value |\n|---|---|").unwrap();
    let ups = up_end.iter().filter(|(_, v)| *v == 1.0).count();
    let engine_row = |which: &str, engine: &str, name: &str, (ok, failed): (usize, usize)| {
        let counted = |result| engine_count(&metrics, engine, name, result);
        let counts = format!("{} succeeded, {} failed (ran {ok}, {failed})", counted("succeeded"), counted("failed"));
        (format!("builds of the run counted, {which} engine"), counts)
    };
    let not_up: Vec<String> = up_end.iter().filter(|(_, v)| *v != 1.0).map(|(b, v)| format!("{b}={v}")).collect();
    let rows = [
        (
            "`buildkit_exporter_source_up` per builder at the end".to_string(),
            if not_up.is_empty() {
                format!("1 for each of the {} builders: `fake-00` … `fake-49`, `engine-a`, `engine-b`", up_end.len())
            } else {
                format!("not 1: {}", not_up.join(", "))
            },
        ),
        (
            "sources up at every check (start, once a second during the builds, end)".to_string(),
            format!("{ups} of {}", sources.len()),
        ),
        ("time from start to all sources up".into(), format!("{all_up:.2} s")),
        ("source reconnects".into(), format!("{reconnects}")),
        ("builds counted, fakes".into(), format!("{fake_counted} ({FAKE_BUILDS} per fake: 3 succeeded, 1 failed)")),
        engine_row("first", "engine-a", &names[0], done_a),
        engine_row("second", "engine-b", &names[1], done_b),
        ("builds running at the end".into(), format!("{running}")),
        ("series in /metrics".into(), format!("{series}")),
        ("/metrics size, plain / gzip".into(), format!("{} / {}", kib(size), kib(gzip_size))),
        (
            "scrape time plain, median / p99 / max".into(),
            format!("{} / {} / {}", ms(quantile(&plain, 0.5)), ms(quantile(&plain, 0.99)), ms(quantile(&plain, 1.0))),
        ),
        (
            "scrape time gzip, median / p99 / max".into(),
            format!("{} / {} / {}", ms(quantile(&gzip, 0.5)), ms(quantile(&gzip, 0.99)), ms(quantile(&gzip, 1.0))),
        ),
        ("RSS once all were up".into(), mib(rss_up)),
        (
            "RSS once the fakes' 200 builds were counted".into(),
            fakes_done.map_or("not seen".into(), |(t, rss)| format!("{} (after {t:.0} s)", mib(rss))),
        ),
        (format!("RSS after {:.1} min (peak)", lasted / 60.0), format!("{} ({})", mib(rss_end), mib(hwm))),
        ("CPU time until all up".into(), format!("{cpu_up:.2} s")),
        (
            format!("CPU time over {:.1} min, of which {:.1} min of builds", lasted / 60.0, build_seconds / 60.0),
            format!("{cpu_end:.2} s ({:.2} % of one core)", cpu_end / lasted * 100.0),
        ),
        ("threads, open fds".into(), format!("{thread_count}, {fds}")),
    ];
    for (k, v) in rows {
        writeln!(md, "| {k} | {v} |").unwrap();
    }
    writeln!(md, "\n**Conditions.** 1-minute load {load_start:.2} when the daemon started{}, {load_end:.2} at the end (the builds' own load included).", if quiet { "" } else { " (taken under load)" }).unwrap();
    md.daemon_logs(&[("", &log)]);
    md.verdict();
    md.finish(!quick);
}
