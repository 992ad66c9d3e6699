//! Faults injected between the exporter and a real engine while real builds run: cuts,
//! half-open links, held-back replays, garbage and truncated frames, a frozen engine, a link
//! that flaps. After each, every count is exact: each build counted once, with the result its
//! own client saw, and nothing counted that did not happen.

use std::collections::BTreeMap;
use std::time::Duration;

use buildkit_exporter::source::spec::Link;
use testkit::engine::{self, Build, Context, ENGINE};
use testkit::metrics::{sample, samples};
use testkit::proxy::{Mode, Proxy};
use testkit::Daemon;

const LABEL: &str = engine::NAME_LABEL;

/// What is done to the link (or the engine) while a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The connection breaks and new ones are refused.
    Cut,
    /// The connection stays open and carries nothing.
    BlackHole,
    /// Bytes that are not HTTP/2 arrive.
    Garbage,
    /// Half a frame arrives, then the connection closes.
    Truncate,
    /// Cut, then the replay of the new connection is held back while the build ends.
    HeldReplay,
    /// The engine stops answering (SIGSTOP), then goes on.
    Freeze,
    /// Cut and restored three times in a row, faster than a replay.
    Flap,
}

/// How the build of a round ends, as its own client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Succeeds,
    Fails,
    Canceled,
}

/// Rounds: each injects its fault into one running build (or two), which then ends behind it.
const ROUNDS: &[(Fault, Ending)] = &[
    (Fault::Cut, Ending::Succeeds),
    (Fault::BlackHole, Ending::Succeeds),
    (Fault::Garbage, Ending::Succeeds),
    (Fault::Truncate, Ending::Succeeds),
    (Fault::HeldReplay, Ending::Succeeds),
    (Fault::Freeze, Ending::Succeeds),
    (Fault::Flap, Ending::Succeeds),
    (Fault::Cut, Ending::Fails),
    (Fault::BlackHole, Ending::Fails),
    (Fault::Garbage, Ending::Fails),
    (Fault::Truncate, Ending::Fails),
    (Fault::HeldReplay, Ending::Fails),
    (Fault::Cut, Ending::Canceled),
    (Fault::BlackHole, Ending::Canceled),
    (Fault::Freeze, Ending::Fails),
    (Fault::Flap, Ending::Fails),
    (Fault::Garbage, Ending::Canceled),
    (Fault::Truncate, Ending::Canceled),
];

fn dockerfile(nonce: &str, ending: Ending) -> String {
    let last = match ending {
        Ending::Succeeds => "RUN echo done",
        Ending::Fails => "RUN echo failing && false",
        Ending::Canceled => "RUN sleep 60",
    };
    format!("FROM tinybase:latest\nRUN echo {nonce} && sleep 1\nRUN echo middle && sleep 2\n{last}\n")
}

/// The builds of a test and how each ended: what the exporter must show, exactly.
#[derive(Default)]
struct Ledger {
    results: BTreeMap<String, &'static str>,
}

impl Ledger {
    fn add(&mut self, name: &str, success: bool, ending: Ending) {
        let result = match (success, ending) {
            (true, _) => "succeeded",
            (false, Ending::Canceled) => "canceled",
            (false, _) => "failed",
        };
        self.results.insert(name.to_string(), result);
    }

    /// Checks every count against the ledger.
    async fn check(&self, daemon: &Daemon, context: &str) {
        for (name, result) in &self.results {
            daemon.counted(name, result, 1.0).await;
        }
        let m = daemon.metrics().await;
        let n = self.results.len() as f64;
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(n), "{context}: started\n{m}");
        let counted: f64 = samples(&m, "buildkit_builds_completed_total", &[]).iter().map(|(_, v)| v).sum();
        assert_eq!(counted, n, "{context}: 0 lost, 0 doubled\n{m}");
        for (name, result) in &self.results {
            let all: f64 =
                samples(&m, "buildkit_builds_completed_total", &[("name", name)]).iter().map(|(_, v)| v).sum();
            assert_eq!(all, 1.0, "{context}: {name} counted once, as {result}\n{m}");
        }
        let (_, list) = daemon.get("/api/v1/builds").await;
        assert!(!list.contains("vanished from the engine"), "{context}: no build was lost: {list}");
    }
}

/// A daemon behind a proxy that notices a dead link within about 3 s and retries every second.
async fn daemon_behind(proxy: &Proxy) -> Daemon {
    let daemon = Daemon::start(&[&proxy.source()], |config| {
        config.source.link = Link {
            keepalive: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            retry_max: Duration::from_secs(1),
        };
    })
    .await;
    daemon.wait_up().await;
    daemon
}

fn proxy_in(dir: &tempfile::TempDir) -> Proxy {
    let engine_socket = engine::source().trim_start_matches("unix://").to_string();
    Proxy::start(&dir.path().join("engine.sock"), std::path::Path::new(&engine_socket))
}

/// Injects `fault`; returns how many faults that was, once the daemon has noticed.
async fn inject(fault: Fault, proxy: &mut Proxy, daemon: &Daemon) -> usize {
    let down = Duration::from_secs(15);
    match fault {
        Fault::Cut | Fault::HeldReplay => proxy.cut(),
        Fault::BlackHole => proxy.set(Mode::BlackHole),
        Fault::Garbage => proxy.set(Mode::Garbage),
        Fault::Truncate => proxy.set(Mode::Truncate),
        Fault::Freeze => engine::freeze(),
        Fault::Flap => {
            for _ in 0..2 {
                proxy.cut();
                daemon.source_up(false, down).await;
                proxy.restore();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            proxy.cut();
            daemon.source_up(false, down).await;
            return 3;
        }
    }
    let m = daemon.source_up(false, down).await;
    if fault == Fault::Freeze {
        engine::thaw();
    }
    if fault == Fault::HeldReplay {
        proxy.restore_in(Mode::Hold);
        // Each new connection's replay is held back: the source cannot come up meanwhile.
        assert_eq!(sample(&m, "buildkit_exporter_source_up", &[]), Some(0.0));
        return 2;
    }
    1
}

/// Undoes `fault` (the engine is already thawed).
fn heal(fault: Fault, proxy: &mut Proxy) {
    match fault {
        Fault::Cut | Fault::Flap => proxy.restore(),
        Fault::BlackHole | Fault::Garbage | Fault::Truncate | Fault::HeldReplay => proxy.set(Mode::Pass),
        Fault::Freeze => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn faults_on_the_link_lose_and_double_nothing() {
    let _engine = ENGINE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = proxy_in(&dir);
    let daemon = daemon_behind(&proxy).await;
    let mut ledger = Ledger::default();
    let mut faults = 0;
    for (round, &(fault, ending)) in ROUNDS.iter().enumerate() {
        let context = format!("round {round}: {fault:?}, build {ending:?}");
        let name = engine::unique("fault");
        let nonce = engine::unique("nonce");
        let dir = Context::new(&dockerfile(&nonce, ending));
        let label = format!("{LABEL}={name}");
        let running = Build::start(&dir, &name, &["--label", &label]);
        daemon.running_at(&name, 2.0).await;
        running.wait_printed(&nonce).await;
        faults += inject(fault, &mut proxy, &daemon).await;
        if ending == Ending::Canceled {
            running.wait_printed("middle").await;
            running.interrupt();
        }
        // The build ends behind the fault.
        let report = running.finish().await;
        assert_eq!(report.success, ending == Ending::Succeeds, "{context}: {}", report.raw);
        ledger.add(&name, report.success, ending);
        if fault == Fault::HeldReplay {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        heal(fault, &mut proxy);
        daemon.source_up(true, Duration::from_secs(30)).await;
        ledger.check(&daemon, &context).await;
    }
    assert!(faults >= 20, "{faults} faults injected");
    // Nothing is counted late either: BuildKit's last word on the last build changes nothing.
    let last = ledger.results.keys().last().unwrap().clone();
    daemon.second_complete(&last).await;
    ledger.check(&daemon, "after the last build's second COMPLETE").await;
    let m = daemon.metrics().await;
    assert!(sample(&m, "buildkit_exporter_source_reconnects_total", &[]).unwrap() >= faults as f64);
    // The process behind the socket (the proxy) never changed: broken links, not restarts.
    assert_eq!(sample(&m, "buildkit_exporter_source_restarts_total", &[]), Some(0.0), "{m}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn a_half_open_link_shows_down_within_30_seconds_by_default() {
    let _engine = ENGINE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_in(&dir);
    let daemon = Daemon::start(&[&proxy.source()], |_| {}).await;
    daemon.wait_up().await;
    let name = engine::unique("half-open");
    let nonce = engine::unique("nonce");
    let context = Context::new(&dockerfile(&nonce, Ending::Succeeds));
    let running = Build::start(&context, &name, &["--label", &format!("{LABEL}={name}")]);
    daemon.running_at(&name, 2.0).await;
    proxy.set(Mode::BlackHole);
    let dead = tokio::time::Instant::now();
    let m = daemon.source_up(false, Duration::from_secs(30)).await;
    let noticed = dead.elapsed();
    // What was observed stays while the source is down.
    assert!(sample(&m, "buildkit_build_current_step", &[("name", &name)]).is_some(), "{m}");
    assert!(running.finish().await.success);
    proxy.set(Mode::Pass);
    let m = daemon.counted(&name, "succeeded", 1.0).await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0));
    eprintln!("a half-open link was noticed after {noticed:?}");
    daemon.stop().await;
}
