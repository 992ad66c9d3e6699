//! What does a scrape cost, how soon does /metrics show what an engine sent, and how much memory
//! does the daemon hold? The default /metrics was cut from 132 to 25 series per image name; this
//! measures the daemon as it runs, the release binary in a child process on loopback, fed by fake
//! BuildKit servers on unix sockets that run in this process (so the daemon's memory and CPU are
//! its own).
//!
//! - Scrape throughput and latency with `wrk` (one thread, a few connections; `apt-get install -y
//!   wrk`), plain and gzip, with 20 builds running: (a) the default flags at 100 image names,
//!   (b) fewer names, about 1 000 series, the size the p99 ≤ 2 ms target is set for, (c)
//!   `--metrics.step-detail` at 100 names, and (a) again with the binary before the cut (commit
//!   `dac8f9b`, built in a temporary git worktree with its own target dir).
//! - Event → /metrics latency: the test kit's fake, driven message by message, sends a running
//!   build's next step (and later its `COMPLETE`) at an instant taken just before the message is
//!   handed to the gRPC stream; a client scrapes /metrics back to back until the change shows.
//! - The daemon's resident memory, idle and in scenario (a).
//!
//! The builds are the real one recorded in tests/fixtures/builds.jsonl (`ml-base`, 20 steps),
//! cloned with fresh refs and names through the test kit's fake (`tests/support/fake.rs`): per
//! image name one build that succeeded, one that failed and one canceled, played through the
//! fake's live history call; running builds are `STARTED` with the first half of their `Status`
//! stream, and the live call then hangs open. Writes `benches/scrape.md`.
//!
//! `cargo bench --bench scrape` (`-- --no-before` skips the old binary, `-- --quick` makes every
//! run short and writes nothing).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::google::rpc;
use bollard_buildkit_proto::moby::buildkit::v1::*;
use testkit::fake::{self, Connection, Driven, FakeBuildkit, Script};
use testkit::fixture::{self, Line, Recorded};
use testkit::http::Client;
use testkit::measure::{cpu, machine_busy, memory, wait_quiet, QUIET_LOAD};
use testkit::metrics::{self, count, label, sum};
use testkit::report::{kib, mib, ms, quantile, Report};
use testkit::{exporter_binary, repo_file, Binary};
use tokio::runtime::Runtime;

/// Image names in scenarios (a) and (c).
const NAMES: usize = 100;
/// Image names in scenario (b): with 20 running builds, about 1 000 series.
const NAMES_NEAR_1000: usize = 30;
/// Builds running in every scenario.
const RUNNING: usize = 20;
/// `wrk` connections for throughput; latency is also measured with one, as Prometheus scrapes.
const CONNECTIONS: usize = 4;
/// Builds driven through the latency measurement.
const ITERATIONS: usize = 200;
/// The commit before the cut to 25 series per name.
const BEFORE: &str = "dac8f9b";
/// Longest wait for a quiet machine (see `measure::QUIET_LOAD`), before each scenario.
const QUIET_WAIT: Duration = Duration::from_secs(300);
/// Longest wait, before each `wrk` run, for other processes to leave the cores alone.
const IDLE_WAIT: Duration = Duration::from_secs(90);
/// A run during which other processes used more than this many cores is repeated.
const FOREIGN_MAX: f64 = 0.15;
/// The target: p99 at about 1 000 series.
const TARGET_P99_MS: f64 = 2.0;
/// Replay speed of the test kit's fake: recorded gaps shrink to nothing (its timer makes ~1 ms).
const SPEED: f64 = 1e6;

// ---------------------------------------------------------------------------------------------
// Scripts: the recorded build, cloned.

/// The recorded uncached `ml-base` build, which every build here is cloned from.
struct Template {
    name: String,
    /// Its `STARTED` and first `COMPLETE`, at 0 s: clones of them are played back to back.
    started: Line,
    complete: Line,
    status: Vec<Line>,
}

fn template() -> Template {
    let lines = fixture::recorded();
    let label = format!("label:{}", buildkit_exporter::defaults::NAME_LABEL);
    let history = |kind: BuildHistoryEventType, reference: Option<&str>| {
        lines.iter().find_map(|l| match &l.item {
            Recorded::History(e)
                if e.r#type == kind as i32
                    && e.record.as_ref().is_some_and(|r| {
                        r.generation == 0
                            && r.frontend_attrs.contains_key(&label)
                            && reference.is_none_or(|reference| r.r#ref == reference)
                    }) =>
            {
                Some((e.record.clone().unwrap(), Line { at: 0.0, item: l.item.clone() }))
            }
            _ => None,
        })
    };
    let (record, started) = history(BuildHistoryEventType::Started, None).expect("a recorded build with a name label");
    let (_, complete) = history(BuildHistoryEventType::Complete, Some(&record.r#ref)).expect("its completion");
    let name = record.frontend_attrs[&label].clone();
    let status = fake::status_by_ref(&lines).remove(&record.r#ref).expect("its Status stream");
    Template { name, started, complete, status }
}

#[derive(Clone, Copy)]
enum Ending {
    Succeeded,
    Failed,
    Canceled,
}

/// A clone of `t` under `reference` and image name `name`, its engine times `shift` seconds
/// later: its `STARTED`, its `COMPLETE` ending with `result` (`None`: still running, with the
/// first half of its `Status` stream).
fn clone_build(
    t: &Template,
    reference: &str,
    name: &str,
    result: Option<Ending>,
    shift: f64,
) -> (Line, Option<Line>, Vec<Line>) {
    let clone = |line: &Line| line.cloned_as(reference, Some((t.name.as_str(), name))).shifted(shift);
    let complete = result.map(|result| {
        let mut line = clone(&t.complete);
        let Recorded::History(event) = &mut line.item else { unreachable!() };
        let record = event.record.as_mut().unwrap();
        record.error = match result {
            Ending::Succeeded => None,
            Ending::Failed => Some(rpc::Status {
                code: 2,
                message: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2".into(),
                details: Vec::new(),
            }),
            Ending::Canceled => Some(rpc::Status { code: 1, message: "context canceled".into(), details: Vec::new() }),
        };
        line
    });
    let lines = if result.is_some() { &t.status[..] } else { &t.status[..t.status.len() / 2] };
    (clone(&t.started), complete, lines.iter().map(clone).collect())
}

/// A fake engine whose live history has `names` image names with one build of each result, and
/// `running` builds (of the first names) that stay running; then it hangs open.
fn scenario_script(t: &Template, names: usize, running: usize) -> Script {
    let Recorded::History(started) = &t.started.item else { unreachable!("a history line") };
    let created = started.record.as_ref().unwrap().created_at.as_ref().unwrap().seconds as f64;
    // Finished builds ended about a minute ago; the running ones are half-way.
    let shift = now() - created - 60.0;
    let (mut starts, mut completes) = (Vec::new(), Vec::new());
    let mut status = HashMap::new();
    let mut add = |reference: String, name: String, result: Option<Ending>| {
        let (start, complete, lines) = clone_build(t, &reference, &name, result, shift);
        starts.push(start);
        completes.extend(complete);
        status.insert(reference, lines);
    };
    for n in 0..names {
        for (i, result) in [Ending::Succeeded, Ending::Failed, Ending::Canceled].into_iter().enumerate() {
            add(format!("benchdone{:016}", n * 3 + i), format!("{}-{n:03}", t.name), Some(result));
        }
    }
    for n in 0..running {
        add(format!("benchrunning{n:013}"), format!("{}-{n:03}", t.name), None);
    }
    starts.extend(completes);
    Script {
        connections: vec![Connection { live: starts, ..Default::default() }],
        status,
        speed: SPEED,
        ..Default::default()
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// The latency, through a fake driven message by message.

fn timestamp(t: f64) -> Option<Timestamp> {
    Some(Timestamp { seconds: t.floor() as i64, nanos: ((t - t.floor()) * 1e9) as i32 })
}

fn record(reference: &str, created: f64, completed: Option<f64>) -> BuildHistoryRecord {
    let label = format!("label:{}", buildkit_exporter::defaults::NAME_LABEL);
    BuildHistoryRecord {
        r#ref: reference.to_string(),
        frontend: "dockerfile.v0".to_string(),
        frontend_attrs: [(label, "latency".to_string())].into_iter().collect(),
        created_at: timestamp(created),
        completed_at: completed.and_then(timestamp),
        num_total_steps: 3,
        ..Default::default()
    }
}

/// A three-step build's vertexes: step `done` + 1 runs, the ones before it are complete.
fn vertexes(reference: &str, done: usize, started: f64, at: f64) -> StatusResponse {
    let vertexes = (0..=done.min(2))
        .map(|i| Vertex {
            digest: format!("sha256:{reference}-{i}"),
            name: format!("[{}/3] RUN make part-{i}", i + 1),
            started: timestamp(started),
            completed: if i < done { timestamp(at) } else { None },
            ..Default::default()
        })
        .collect();
    StatusResponse { vertexes, ..Default::default() }
}

/// Times from handing a message to the fake until a scrape shows it.
#[derive(Default)]
struct Latency {
    /// A running build's step completing and the next starting, to `steps_completed` moving.
    step: Vec<f64>,
    /// A `COMPLETE`, to `buildkit_builds_completed_total` counting it.
    complete: Vec<f64>,
    /// Every scrape made while waiting: the resolution.
    scrapes: Vec<f64>,
    /// The scrapes that first showed a completion (the counters' text rendered anew).
    complete_scrape: Vec<f64>,
    /// Cores other processes (not the daemon or this bench) used meanwhile.
    foreign: f64,
}

/// Drives `ITERATIONS` builds through `driven` and times each step and completion to /metrics.
fn latency(driven: &Driven, daemon: &Binary, iterations: usize) -> Latency {
    let (pid, me) = (daemon.pid(), std::process::id());
    let (busy, own, theirs, start) = (machine_busy(), cpu(me).0, cpu(pid).0, Instant::now());
    let mut http = Client::new(daemon.addr);
    let mut out = Latency::default();
    // Returns the time from `from` to the scrape that shows `marker`, and how long that took.
    let mut wait = |marker: &str, from: Instant, scrapes: &mut Vec<f64>| -> (f64, f64) {
        let deadline = from + Duration::from_secs(10);
        loop {
            let start = Instant::now();
            let body = http.get("/metrics", false).body;
            let end = Instant::now();
            scrapes.push((end - start).as_secs_f64());
            if memmem(&body, marker.as_bytes()) {
                return ((end - from).as_secs_f64(), (end - start).as_secs_f64());
            }
            assert!(end < deadline, "{marker:?} not shown within 10 s");
        }
    };
    let mut ignored = Vec::new();
    for i in 0..iterations {
        let reference = format!("latency{i:018}");
        let series = |metric: &str| format!("{metric}{{builder=\"latency\",name=\"latency\",ref=\"{reference}\"}}");
        let started = now();
        let at = driven.history(BuildHistoryEvent {
            r#type: BuildHistoryEventType::Started as i32,
            record: Some(record(&reference, started, None)),
        });
        driven.wait_status(&reference);
        driven.status(&reference, vertexes(&reference, 0, started, now()));
        wait(&format!("{} 1\n", series("buildkit_build_current_step")), at, &mut ignored);
        let at = driven.status(&reference, vertexes(&reference, 1, started, now()));
        out.step.push(wait(&format!("{} 1\n", series("buildkit_build_steps_completed")), at, &mut out.scrapes).0);
        // BuildKit ends the Status stream first, then records the completion (13 ms apart in
        // the recording).
        driven.status(&reference, vertexes(&reference, 3, started, now()));
        driven.end_status(&reference);
        std::thread::sleep(Duration::from_millis(10));
        let at = driven.history(BuildHistoryEvent {
            r#type: BuildHistoryEventType::Complete as i32,
            record: Some(record(&reference, started, Some(now()))),
        });
        let counted = format!(
            "buildkit_builds_completed_total{{builder=\"latency\",name=\"latency\",result=\"succeeded\"}} {}\n",
            i + 1
        );
        let (took, scrape) = wait(&counted, at, &mut out.scrapes);
        out.complete.push(took);
        out.complete_scrape.push(scrape);
    }
    let ours = (cpu(me).0 - own) + (cpu(pid).0 - theirs);
    out.foreign = ((machine_busy() - busy - ours) / start.elapsed().as_secs_f64()).max(0.0);
    out
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    let (Ok(haystack), Ok(needle)) = (std::str::from_utf8(haystack), std::str::from_utf8(needle)) else { return false };
    haystack.contains(needle)
}

// ---------------------------------------------------------------------------------------------
// The daemon process and the machine.

/// The daemon binary `binary` in a child process, following `sources`, with `flags`.
fn start_daemon(binary: &Path, sources: &[String], flags: &[&str]) -> Binary {
    let mut args: Vec<&str> = sources.iter().flat_map(|s| ["--source", s.as_str()]).collect();
    args.extend_from_slice(flags);
    Binary::start(binary, &args, &[])
}

/// Waits (at most `IDLE_WAIT`) until the machine, apart from the daemon and this process, uses
/// less than `FOREIGN_MAX` cores over a second.
fn wait_idle(pid: u32, quick: bool) {
    let deadline = Instant::now() + if quick { Duration::ZERO } else { IDLE_WAIT };
    let me = std::process::id();
    loop {
        let (busy, own, theirs) = (machine_busy(), cpu(me).0, cpu(pid).0);
        std::thread::sleep(Duration::from_secs(1));
        let foreign = machine_busy() - busy - (cpu(me).0 - own) - (cpu(pid).0 - theirs);
        if foreign < FOREIGN_MAX || Instant::now() > deadline {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wrk.

#[derive(Clone, Default)]
struct Wrk {
    rps: f64,
    p50: f64,
    p99: f64,
    /// Daemon CPU seconds per request.
    cpu_per_request: f64,
    /// Cores other processes (not the daemon, wrk or this bench) used meanwhile.
    foreign: f64,
}

fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

fn parse_ms(text: &str) -> f64 {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("wrk time {text:?}"));
    number
        * match unit {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 6e4,
            other => panic!("wrk time unit {other:?}"),
        }
}

/// One `wrk` run against /metrics of `daemon`.
fn wrk_once(daemon: &Binary, gzip: bool, connections: usize, seconds: u64) -> Wrk {
    let (pid, me) = (daemon.pid(), std::process::id());
    let (daemon_before, _) = cpu(pid);
    let (self_before, children_before) = cpu(me);
    let busy_before = machine_busy();
    let mut command = Command::new("wrk");
    command.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"]);
    if gzip {
        command.args(["-H", "Accept-Encoding: gzip"]);
    }
    let output = command.arg(format!("http://{}/metrics", daemon.addr)).output().expect("run wrk");
    let busy = machine_busy() - busy_before;
    let (daemon_after, _) = cpu(pid);
    let (self_after, children_after) = cpu(me);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("Non-2xx") && !text.contains("Socket errors"), "wrk saw errors against the daemon:\n{text}");
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(parse_ms))
            .unwrap_or_else(|| panic!("no {p} in wrk's output:\n{text}"))
    };
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let daemon_cpu = daemon_after - daemon_before;
    let ours = daemon_cpu + (self_after - self_before) + (children_after - children_before);
    Wrk {
        rps,
        p50: percentile("50%"),
        p99: percentile("99%"),
        cpu_per_request: daemon_cpu / requests,
        foreign: ((busy - ours) / seconds as f64).max(0.0),
    }
}

/// `opts.runs` runs, each repeated (up to three times) if other processes used the cores meanwhile.
fn wrk(daemon: &Binary, gzip: bool, connections: usize, opts: &Opts) -> Vec<Wrk> {
    (0..opts.runs)
        .map(|_| {
            wait_idle(daemon.pid(), opts.quick);
            let mut run = wrk_once(daemon, gzip, connections, opts.seconds);
            for _ in 0..3 {
                if run.foreign <= FOREIGN_MAX {
                    break;
                }
                eprintln!("  other processes used {:.2} cores meanwhile: once more", run.foreign);
                wait_idle(daemon.pid(), opts.quick);
                run = wrk_once(daemon, gzip, connections, opts.seconds);
            }
            eprintln!(
                "  {} c{connections}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU/req, foreign {:.2}",
                if gzip { "gzip " } else { "plain" },
                run.rps,
                run.p50,
                run.p99,
                run.cpu_per_request * 1e6,
                run.foreign
            );
            run
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// How much is measured.
struct Opts {
    /// `wrk` runs per measurement, and seconds each.
    runs: usize,
    seconds: u64,
    /// No waiting for a quiet machine, and nothing written.
    quick: bool,
}

impl Opts {
    const FULL: Opts = Opts { runs: 3, seconds: 10, quick: false };
    /// `-- --quick`: every run short.
    const QUICK: Opts = Opts { runs: 1, seconds: 3, quick: true };
}

/// What one scenario measured.
struct Measured {
    title: String,
    flags: String,
    names: usize,
    series: usize,
    plain_bytes: usize,
    gzip_bytes: usize,
    /// Started, after setup, after the wrk runs: VmRSS, and VmHWM at the end (KiB).
    rss_setup: u64,
    rss_after: u64,
    hwm: u64,
    /// Load when it started.
    load: f64,
    quiet: bool,
    plain: Vec<Wrk>,
    gzip: Vec<Wrk>,
    /// One connection, plain and gzip.
    plain_one: Vec<Wrk>,
    gzip_one: Vec<Wrk>,
    log: String,
}

/// Polls /metrics until the scenario's builds are all in; returns it.
fn wait_ready(http: &mut Client, sources: usize, finished: usize, running: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let metrics = http.metrics();
        let up = sum(&metrics, "buildkit_exporter_source_up", &[]);
        let counted = sum(&metrics, "buildkit_builds_completed_total", &[]);
        let now_running = sum(&metrics, "buildkit_builds_running", &[]);
        let steps = count(&metrics, "buildkit_build_step_running_info");
        if up == sources as f64 && counted == finished as f64 && now_running == running as f64 && steps == running {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "not ready after 180 s: {up} sources up, {counted} builds counted of {finished}, {now_running} running \
             and {steps} running steps of {running}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a fake with `names` names and `RUNNING` running builds and the daemon on it; runs
/// `f` once every build is in, then stops both.
fn with_scenario<T>(
    runtime: &Runtime,
    t: &Template,
    binary: &Path,
    names: usize,
    flags: &[&str],
    extra_sources: &[String],
    f: impl FnOnce(&Binary, String) -> T,
) -> (T, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = scenario_script(t, names, if names == 0 { 0 } else { RUNNING });
    let fake = runtime.block_on(FakeBuildkit::start(dir.path(), script));
    let mut sources = vec![format!("bench={}", fake.source())];
    sources.extend(extra_sources.iter().cloned());
    let daemon = start_daemon(binary, &sources, flags);
    let mut http = Client::new(daemon.addr);
    let running = if names == 0 { 0 } else { RUNNING };
    let metrics = wait_ready(&mut http, sources.len(), names * 3, running);
    let names_seen: BTreeSet<&str> = metrics::all(&metrics)
        .filter(|s| s.metric == "buildkit_builds_completed_total")
        .map(|s| label(s.labels, "name"))
        .filter(|n| n.starts_with(&t.name))
        .collect();
    assert_eq!(names_seen.len(), names, "image names in /metrics");
    // Settled: the same series twice, a second apart.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = http.metrics();
    std::thread::sleep(Duration::from_secs(1));
    let again = http.metrics();
    assert_eq!(metrics::all(&metrics).count(), metrics::all(&again).count(), "series still changing");
    drop(http);
    let out = f(&daemon, again);
    let log = daemon.stop();
    runtime.block_on(async { fake.stop() });
    (out, log)
}

fn scenario(
    runtime: &Runtime,
    t: &Template,
    binary: &Path,
    title: &str,
    names: usize,
    flags: &[&str],
    opts: &Opts,
) -> Measured {
    eprintln!("{title}: {names} names, {RUNNING} running, flags {flags:?}");
    let (load, quiet) = wait_quiet(if opts.quick { Duration::ZERO } else { QUIET_WAIT });
    let (mut m, log) = with_scenario(runtime, t, binary, names, flags, &[], |daemon, metrics| {
        let mut http = Client::new(daemon.addr);
        let gzip = http.get("/metrics", true);
        assert_eq!(gzip.header("content-encoding"), Some("gzip"), "no gzip answer to Accept-Encoding: gzip");
        drop(http);
        let (rss_setup, _) = memory(daemon.pid());
        let plain = wrk(daemon, false, CONNECTIONS, opts);
        let gzipped = wrk(daemon, true, CONNECTIONS, opts);
        let plain_one = wrk(daemon, false, 1, opts);
        let gzip_one = wrk(daemon, true, 1, opts);
        let (rss_after, hwm) = memory(daemon.pid());
        Measured {
            title: title.to_string(),
            flags: if flags.is_empty() { "default".to_string() } else { flags.join(" ") },
            names,
            series: metrics::all(&metrics).count(),
            plain_bytes: metrics.len(),
            gzip_bytes: gzip.body.len(),
            rss_setup,
            rss_after,
            hwm,
            load,
            quiet,
            plain,
            gzip: gzipped,
            plain_one,
            gzip_one,
            log: String::new(),
        }
    });
    m.log = log;
    m
}

/// Builds the binary of commit `BEFORE` in a temporary worktree, its own target dir kept under
/// target/ for next time; removes the worktree.
fn build_before() -> PathBuf {
    let root = repo_file("");
    let worktree = std::env::temp_dir().join(format!("bk-before-{}", std::process::id()));
    let target = root.join("target/bench-before");
    let git = |args: &[&str]| {
        let status = Command::new("git").arg("-C").arg(&root).args(args).status().expect("git");
        assert!(status.success(), "git {args:?} failed");
    };
    eprintln!("building {BEFORE} in {}", worktree.display());
    git(&["worktree", "add", "--detach", worktree.to_str().unwrap(), BEFORE]);
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "buildkit-exporter"])
        .current_dir(&worktree)
        .env("CARGO_TARGET_DIR", &target)
        .status();
    git(&["worktree", "remove", "--force", worktree.to_str().unwrap()]);
    assert!(built.expect("cargo").success(), "building {BEFORE} failed");
    target.join("release/buildkit-exporter")
}

// ---------------------------------------------------------------------------------------------
// The report.

fn range(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let values: Vec<f64> = values.collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if format!("{min:.digits$}") == format!("{max:.digits$}") {
        format!("{min:.digits$}")
    } else {
        format!("{min:.digits$}–{max:.digits$}")
    }
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::NEG_INFINITY, f64::max)
}

/// Marks figures that include a run disturbed by other processes.
fn mark(runs: &[Wrk]) -> &'static str {
    if runs.iter().any(|r| r.foreign > FOREIGN_MAX) {
        " †"
    } else {
        ""
    }
}

fn wrk_cells(runs: &[Wrk]) -> String {
    format!(
        "{} | {} | {} | {}{}",
        range(runs.iter().map(|r| r.rps), 0),
        range(runs.iter().map(|r| r.p50), 2),
        range(runs.iter().map(|r| r.p99), 2),
        range(runs.iter().map(|r| r.cpu_per_request * 1e6), 0),
        mark(runs),
    )
}

fn median(runs: &[Wrk], f: impl Fn(&Wrk) -> f64) -> f64 {
    quantile(&runs.iter().map(f).collect::<Vec<_>>(), 0.5)
}

fn report(
    scenarios: &[Measured],
    opts: &Opts,
    iterations: usize,
    alone: &Latency,
    beside: &(Latency, usize),
    logs: &[(&str, &str)],
) -> Report {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (idle, a, b, c) = (&scenarios[0], &scenarios[1], &scenarios[2], &scenarios[3]);
    let old = scenarios.get(4);
    let worst = |runs: &[&Vec<Wrk>]| max(runs.iter().flat_map(|r| r.iter()).map(|r| r.p99));
    let b_one = worst(&[&b.plain_one, &b.gzip_one]);
    let b_many = worst(&[&b.plain, &b.gzip]);
    let verdict = |p99: f64| if p99 <= TARGET_P99_MS { "met" } else { "missed" };
    let mut md = Report::new("scrape");
    writeln!(md, "# Scrape cost, event latency and memory\n").unwrap();
    writeln!(
        md,
        "**In short.** At about 1 000 series (scenario (b): {} series) one scraper sees p99 {} ms: the target of \
         p99 ≤ {TARGET_P99_MS} ms is **{}** for a single scraper, as Prometheus scrapes; with {CONNECTIONS} \
         connections at once p99 is {} ms (**{}**), requests queueing on {cores} cores shared with `wrk`. The \
         default at {NAMES} image names and {RUNNING} running builds serves {} series ({}, {} gzipped){}.\n",
        b.series,
        range(b.plain_one.iter().chain(&b.gzip_one).map(|r| r.p99), 2),
        verdict(b_one),
        range(b.plain.iter().chain(&b.gzip).map(|r| r.p99), 2),
        verdict(b_many),
        a.series,
        kib(a.plain_bytes),
        kib(a.gzip_bytes),
        old.map_or(String::new(), |old| format!(
            ": {:.1}× fewer than before the cut, at {:.1}× the requests per second",
            old.series as f64 / a.series as f64,
            median(&a.plain, |r| r.rps) / median(&old.plain, |r| r.rps),
        )),
    )
    .unwrap();
    writeln!(
        md,
        "**Machine:** {}. The daemon \
         (release build), `wrk` and the fake engines share the {cores} cores. **Reproduce:** `apt-get install -y wrk`, then `cargo bench --bench scrape`. It builds \
         `{BEFORE}` (the commit before the cut to 25 series per name) in a temporary git worktree with its own \
         target dir under `target/bench-before` and removes the worktree (`-- --no-before` skips it); waits for a \
         1-minute load below {QUIET_LOAD} before each scenario (at most {} min); and writes this file.\n",
        Report::machine(),
        QUIET_WAIT.as_secs() / 60,
    )
    .unwrap();
    writeln!(
        md,
        "**Method.** The daemon runs as a child process on loopback, following a fake BuildKit (the test kit's \
         fake, in the benchmark's process) on a unix socket. Builds are clones of the recorded 20-step `ml-base` build \
         with fresh refs and image names `ml-base-000`, `-001`, …: per name one that succeeded, one that failed \
         and one canceled (so each name has all its series), played through the live history call with their \
         recorded `Status` streams. {RUNNING} more builds, of the first {RUNNING} names, are `STARTED` with the \
         first half of their `Status` stream and stay running, each at a running step. Once every build is \
         counted and the series stop changing, `wrk -t1 -c{CONNECTIONS} -d{secs}s --latency` scrapes `/metrics` \
         {runs} times plain and {runs} times with `-H 'Accept-Encoding: gzip'`, then the same with `-c1`. Figures \
         are ranges over the {runs} runs. Series are the sample lines of `/metrics`. Daemon CPU per request is \
         its user + system time during a run over the requests served. Before each run the benchmark waits (at \
         most {} s) until other processes leave the cores alone, and repeats a run (up to three times) during \
         which they used more than {FOREIGN_MAX} cores.\n",
        IDLE_WAIT.as_secs(),
        secs = opts.seconds,
        runs = opts.runs,
    )
    .unwrap();
    writeln!(md, "## Scrapes\n").unwrap();
    writeln!(
        md,
        "| scenario | flags | names | series | body plain | body gzip | encoding | req/s (c{CONNECTIONS}) | p50 ms | \
         p99 ms | daemon CPU µs/req | p99 ms (c1) | req/s (c1) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for m in scenarios {
        for (encoding, runs, one) in [("plain", &m.plain, &m.plain_one), ("gzip", &m.gzip, &m.gzip_one)] {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {encoding} | {} | {}{} | {} |",
                m.title,
                m.flags,
                m.names,
                m.series,
                kib(m.plain_bytes),
                kib(m.gzip_bytes),
                wrk_cells(runs),
                range(one.iter().map(|r| r.p99), 2),
                mark(one),
                range(one.iter().map(|r| r.rps), 0),
            )
            .unwrap();
        }
    }
    let disturbed = scenarios.iter().any(|m| {
        [&m.plain, &m.gzip, &m.plain_one, &m.gzip_one].iter().any(|runs| runs.iter().any(|r| r.foreign > FOREIGN_MAX))
    });
    if disturbed {
        writeln!(
            md,
            "\n† includes a run during which other processes used more than {FOREIGN_MAX} cores after three \
             repeats (see Conditions)."
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nScenario (b) is {} names + {RUNNING} running builds. **Target p99 ≤ {TARGET_P99_MS} ms at about 1 000 \
         series:** {} with one connection (worst run {b_one:.2} ms), {} with {CONNECTIONS} (worst run \
         {b_many:.2} ms).\n",
        b.names,
        verdict(b_one),
        verdict(b_many),
    )
    .unwrap();
    if let Some(old) = old {
        writeln!(md, "## Before and after the cut, scenario (a)\n").unwrap();
        writeln!(
            md,
            "| binary | series | body plain | body gzip | req/s plain (c{CONNECTIONS}) | p99 ms plain | req/s gzip | \
             p99 ms gzip | p99 ms plain (c1) | daemon CPU µs/req plain | RSS after the runs |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        )
        .unwrap();
        for (which, m) in [(format!("before (`{BEFORE}`)"), old), ("after".to_string(), a)] {
            writeln!(
                md,
                "| {which} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m.series,
                kib(m.plain_bytes),
                kib(m.gzip_bytes),
                range(m.plain.iter().map(|r| r.rps), 0),
                range(m.plain.iter().map(|r| r.p99), 2),
                range(m.gzip.iter().map(|r| r.rps), 0),
                range(m.gzip.iter().map(|r| r.p99), 2),
                range(m.plain_one.iter().map(|r| r.p99), 2),
                range(m.plain.iter().map(|r| r.cpu_per_request * 1e6), 0),
                mib(m.rss_after),
            )
            .unwrap();
        }
        writeln!(
            md,
            "\nAfter against before (medians): {:.1}× fewer series, {:.1}× smaller plain body, {:.1}× smaller gzip \
             body, {:.1}× the plain req/s, {:.1}× the gzip req/s, {:.1}× less daemon CPU per scrape.\n",
            old.series as f64 / a.series as f64,
            old.plain_bytes as f64 / a.plain_bytes as f64,
            old.gzip_bytes as f64 / a.gzip_bytes as f64,
            median(&a.plain, |r| r.rps) / median(&old.plain, |r| r.rps),
            median(&a.gzip, |r| r.rps) / median(&old.gzip, |r| r.rps),
            median(&old.plain, |r| r.cpu_per_request) / median(&a.plain, |r| r.cpu_per_request),
        )
        .unwrap();
    }
    writeln!(md, "## Event → /metrics latency\n").unwrap();
    writeln!(
        md,
        "The test kit's fake BuildKit is driven message by message. Each of \
         {iterations} builds is `STARTED` and gets a first `Status` message (step 1 of 3 running); once a scrape \
         shows that, the next message (step 1 complete, step 2 started) is handed to the fake's gRPC stream, and \
         the clock starts just before. A client scrapes `/metrics` back to back on one keep-alive connection until \
         the build's `buildkit_build_steps_completed` is 1; the clock stops when that scrape's body has arrived. \
         Then the fake ends the build's `Status` stream, waits 10 ms (BuildKit ends it 13 ms before the record in \
         the recording) and sends `COMPLETE`, timed the same way until `buildkit_builds_completed_total` counts \
         it. Each figure includes tonic's encoding, the unix socket, the daemon's handling and up to one scrape of \
         polling (the resolution, last column).\n"
    )
    .unwrap();
    writeln!(
        md,
        "| daemon | event | median | p99 | max | one scrape while polling, median |\n|---|---|---|---|---|---|"
    )
    .unwrap();
    for (which, l) in [
        ("only the driven source".to_string(), alone),
        (format!("beside scenario (a), {} series", beside.1), &beside.0),
    ] {
        for (event, values) in [("next step", &l.step), ("`COMPLETE` → counted", &l.complete)] {
            writeln!(
                md,
                "| {which} | {event} | {} | {} | {} | {} |",
                ms(quantile(values, 0.5)),
                ms(quantile(values, 0.99)),
                ms(max(values.iter().copied())),
                ms(quantile(&l.scrapes, 0.5)),
            )
            .unwrap();
        }
    }
    writeln!(
        md,
        "\nOther processes used {:.2} and {:.2} cores during the two latency runs.\n",
        alone.foreign, beside.0.foreign
    )
    .unwrap();
    writeln!(md, "## Memory of the daemon\n").unwrap();
    writeln!(md, "| scenario | series | RSS before the wrk runs | RSS after | peak (VmHWM) |\n|---|---|---|---|---|")
        .unwrap();
    for m in scenarios {
        writeln!(md, "| {} | {} | {} | {} | {} |", m.title, m.series, mib(m.rss_setup), mib(m.rss_after), mib(m.hwm))
            .unwrap();
    }
    writeln!(md, "\nFor memory after 10 000 builds see `benches/soak.md`.\n").unwrap();
    writeln!(md, "## What it shows\n").unwrap();
    let per_name = (a.series as f64 - b.series as f64) / (a.names - b.names) as f64;
    let detail = (c.series as f64 - a.series as f64) / a.names as f64;
    let cpu_one =
        |m: &Measured, gzip: bool| median(if gzip { &m.gzip_one } else { &m.plain_one }, |r| r.cpu_per_request) * 1e6;
    writeln!(
        md,
        "- Each image name costs {per_name:.0} series by default and {detail:.0} more with \
         `--metrics.step-detail` (instruction × name); (c) has {:.1}× the series of (a) and takes {:.1}× the \
         daemon CPU per scrape.",
        c.series as f64 / a.series as f64,
        cpu_one(c, false) / cpu_one(a, false),
    )
    .unwrap();
    writeln!(
        md,
        "- Daemon CPU per plain scrape (c1, medians): {:.0} µs with no builds, {:.0} µs at {} series, {:.0} µs at \
         {} series: about {:.0} µs per 1 000 series beyond the fixed cost.",
        cpu_one(idle, false),
        cpu_one(b, false),
        b.series,
        cpu_one(a, false),
        a.series,
        (cpu_one(a, false) - cpu_one(b, false)) / (a.series - b.series) as f64 * 1000.0,
    )
    .unwrap();
    let (gzip_idle, gzip_b) = (cpu_one(idle, true) - cpu_one(idle, false), cpu_one(b, true) - cpu_one(b, false));
    writeln!(
        md,
        "- gzip adds {gzip_idle:.0} µs of daemon CPU to a scrape with no builds (a {} body) and {gzip_b:.0} µs at {} \
         series{}.",
        kib(idle.plain_bytes),
        b.series,
        if gzip_idle >= gzip_b / 2.0 { ": most of it is a fixed cost per response" } else { "" },
    )
    .unwrap();
    let (step, complete) = (quantile(&alone.step, 0.5), quantile(&alone.complete, 0.5));
    writeln!(
        md,
        "- With small scrapes a change shows on `/metrics` {} (medians {} for a step, {} for a completion); beside \
         scenario (a) the medians ({} and {}) are about one scrape, the resolution of the method.\n",
        if step.max(complete) < 1e-3 { "within a millisecond" } else { "within a few milliseconds" },
        ms(step),
        ms(complete),
        ms(quantile(&beside.0.step, 0.5)),
        ms(quantile(&beside.0.complete, 0.5)),
    )
    .unwrap();
    writeln!(
        md,
        "- No build finishes during the `wrk` runs, so the counters' text is rendered once and served again \
         until a counter changes; each scrape renders the running builds' series and the process metrics. Beside \
         scenario (a), the scrape that first shows a completion takes {} (median; max {}) against {} for all \
         scrapes while polling.\n",
        ms(quantile(&beside.0.complete_scrape, 0.5)),
        ms(max(beside.0.complete_scrape.iter().copied())),
        ms(quantile(&beside.0.scrapes, 0.5)),
    )
    .unwrap();
    writeln!(md, "## Conditions\n").unwrap();
    for m in scenarios {
        let foreign = max(m.plain.iter().chain(&m.gzip).chain(&m.plain_one).chain(&m.gzip_one).map(|r| r.foreign));
        writeln!(
            md,
            "- {}: 1-minute load {:.2} at the start{}; other processes used at most {foreign:.2} cores during a run.",
            m.title,
            m.load,
            if m.quiet { "" } else { " (taken under load)" },
        )
        .unwrap();
    }
    writeln!(md).unwrap();
    let logs: Vec<(&str, &str)> =
        logs.iter().copied().chain(scenarios.iter().map(|m| (m.title.as_str(), m.log.as_str()))).collect();
    md.daemon_logs(&logs);
    md
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let quick = flag("--quick");
    let opts = if quick { Opts::QUICK } else { Opts::FULL };
    if !wrk_installed() {
        eprintln!("scrape bench: `wrk` is not installed (Debian: apt-get install -y wrk)");
        std::process::exit(2);
    }
    let binary = exporter_binary!().to_path_buf();
    let t = template();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        // Keeps a scenario up for a profiler: `--hold SECONDS [--names N] [--step-detail]`.
        let seconds: u64 = args[i + 1].parse().expect("--hold SECONDS");
        let names = args.iter().position(|a| a == "--names").map_or(NAMES, |i| args[i + 1].parse().expect("N"));
        let flags: &[&str] = if flag("--step-detail") { &["--metrics.step-detail"] } else { &[] };
        with_scenario(&runtime, &t, &binary, names, flags, &[], |daemon, metrics| {
            println!(
                "daemon pid {} on {} with {} series; holding {seconds} s",
                daemon.pid(),
                daemon.addr,
                metrics::all(&metrics).count()
            );
            std::thread::sleep(Duration::from_secs(seconds));
        });
        return;
    }
    let before = if flag("--no-before") {
        None
    } else if let Some(i) = args.iter().position(|a| a == "--before-bin") {
        Some(PathBuf::from(&args[i + 1]))
    } else {
        Some(build_before())
    };

    let mut scenarios = vec![
        scenario(&runtime, &t, &binary, "idle, no builds", 0, &[], &opts),
        scenario(&runtime, &t, &binary, "(a) default", NAMES, &[], &opts),
        scenario(&runtime, &t, &binary, "(b) ~1 000 series", NAMES_NEAR_1000, &[], &opts),
        scenario(&runtime, &t, &binary, "(c) step detail", NAMES, &["--metrics.step-detail"], &opts),
    ];
    if let Some(before) = &before {
        scenarios.push(scenario(&runtime, &t, before, &format!("(a) before, {BEFORE}"), NAMES, &[], &opts));
    }

    // Latency: the driven fake alone, then beside scenario (a).
    eprintln!("latency");
    wait_quiet(if quick { Duration::ZERO } else { QUIET_WAIT });
    let iterations = if quick { 20 } else { ITERATIONS };
    let (alone_dir, beside_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (fake, driven) = runtime.block_on(FakeBuildkit::start_driven(alone_dir.path()));
    let daemon = start_daemon(&binary, &[format!("latency={}", fake.source())], &[]);
    wait_ready(&mut Client::new(daemon.addr), 1, 0, 0);
    let alone = latency(&driven, &daemon, iterations);
    let alone_log = daemon.stop();
    let (fake, driven) = runtime.block_on(FakeBuildkit::start_driven(beside_dir.path()));
    let sources = [format!("latency={}", fake.source())];
    let (beside, beside_log) = with_scenario(&runtime, &t, &binary, NAMES, &[], &sources, |daemon, metrics| {
        (latency(&driven, daemon, iterations), metrics::all(&metrics).count())
    });

    let logs = [("latency alone", alone_log.as_str()), ("latency beside (a)", beside_log.as_str())];
    report(&scenarios, &opts, iterations, &alone, &beside, &logs).finish(!quick);
}
