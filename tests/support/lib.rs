//! The test kit: what the tests and benchmarks share. The daemon in-process, HTTP, metric
//! parsing, golden files, a real engine and the fixture recorder.

pub mod binary;
pub mod browser;
pub mod engine;
pub mod fake;
pub mod fixture;
pub mod pki;
pub mod prometheus;
pub mod proxy;
pub mod record;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildkit_exporter::config::{Config, SourceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A daemon running in this process on a loopback port.
pub struct Daemon {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Starts the daemon watching `sources` (`--source` syntax) with `tune` applied to defaults.
    pub async fn start(sources: &[&str], tune: impl FnOnce(&mut Config)) -> Daemon {
        let specs = sources
            .iter()
            .map(|s| SourceSpec::parse(s, sources.len() == 1, &Default::default()).expect("valid source"))
            .collect();
        let mut config = Config::new(specs);
        tune(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(buildkit_exporter::serve(config, vec![listener], shutdown));
        Daemon { addr, stop, task }
    }

    /// Starts a daemon on the engine under test and waits until its source is up and the
    /// opening history replay is over, so that builds started next are live.
    pub async fn on_engine() -> Daemon {
        Daemon::on_engine_with(|_| {}).await
    }

    /// [`Daemon::on_engine`], with `tune` applied to the configuration.
    ///
    /// A build an earlier test left running (a cancel the engine lost while it set up the
    /// step's container) would be counted as started by this daemon: it is waited out, and the
    /// daemon started afresh, so that the counts a test asserts are its own builds'.
    pub async fn on_engine_with(tune: impl Fn(&mut Config)) -> Daemon {
        loop {
            let daemon = Daemon::start(&[&engine::source()], &tune).await;
            daemon.wait_up().await;
            if sample(&daemon.metrics().await, "buildkit_builds_running", &[]) == Some(0.0) {
                return daemon;
            }
            eventually(Duration::from_secs(180), "the builds left running by an earlier test to end", || async {
                (sample(&daemon.metrics().await, "buildkit_builds_running", &[]) == Some(0.0)).then_some(())
            })
            .await;
            daemon.stop().await;
        }
    }

    /// Waits until the (only) source is up, which it is once its history replay is over.
    pub async fn wait_up(&self) {
        self.source_up(true, Duration::from_secs(30)).await;
    }

    /// Waits until `name` has `count` completed builds with `result`; returns the metrics then.
    pub async fn counted(&self, name: &str, result: &str, count: f64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.metrics().await;
            if sample(&m, "buildkit_builds_completed_total", &[("name", name), ("result", result)]) == Some(count) {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                let (_, builds) = self.get("/api/v1/builds").await;
                panic!("timed out waiting for {name} counted {result} {count} times:\n{m}\n{builds}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the daemon has seen BuildKit's second `COMPLETE` of the (latest) build of
    /// `name`: after it, nothing more is sent for that build, so an absence is final.
    pub async fn second_complete(&self, name: &str) {
        eventually(Duration::from_secs(30), &format!("second COMPLETE of {name}"), || async {
            let (_, list) = self.get("/api/v1/builds").await;
            let list: serde_json::Value = serde_json::from_str(&list).unwrap();
            let build = list["builds"].as_array().unwrap().iter().find(|b| b["name"] == name)?.clone();
            (build["record_generation"].as_i64()? >= 1).then_some(())
        })
        .await;
    }

    /// Waits until build `name` is running at step `step` or later.
    pub async fn running_at(&self, name: &str, step: f64) -> String {
        eventually(Duration::from_secs(60), &format!("{name} at step {step}"), || async {
            let m = self.metrics().await;
            sample(&m, "buildkit_build_current_step", &[("name", name)]).is_some_and(|s| s >= step).then_some(m)
        })
        .await
    }

    /// Waits until a step whose running-info labels include `labels` is executing.
    pub async fn step_running(&self, labels: &[(&str, &str)]) {
        eventually(Duration::from_secs(30), &format!("a step {labels:?} running"), || async {
            let m = self.metrics().await;
            (!samples(&m, "buildkit_build_step_running_info", labels).is_empty()).then_some(())
        })
        .await;
    }

    /// Waits until the (only) source's `source_up` is `up`, for at most `within`; returns the
    /// metrics then.
    pub async fn source_up(&self, up: bool, within: Duration) -> String {
        let want = if up { 1.0 } else { 0.0 };
        eventually(within, &format!("source_up {want}"), || async {
            let m = self.metrics().await;
            (sample(&m, "buildkit_exporter_source_up", &[]) == Some(want)).then_some(m)
        })
        .await
    }

    /// GETs `path`; returns status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// Stops the daemon and waits until it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("daemon stops").unwrap();
    }
}

/// A plain HTTP/1.1 GET.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to daemon");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    (status, body.to_string())
}

/// The value of the sample `name{labels}` whose labels include every pair in `labels`; `None`
/// when there is no such sample, panics when several match.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = samples(metrics, name, labels);
    assert!(found.len() <= 1, "{name} {labels:?} matches {} samples:\n{found:?}", found.len());
    found.first().map(|(_, v)| *v)
}

/// Every sample `name{...}` whose labels include every pair in `labels`.
pub fn samples(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| (series.to_string(), value.parse().expect("sample value")))
        })
        .collect()
}

/// Builds of `name` counted as finished, whatever their result.
pub fn finished_builds(metrics: &str, name: &str) -> f64 {
    samples(metrics, "buildkit_builds_completed_total", &[("name", name)]).iter().map(|(_, v)| v).sum()
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path of a file under `tests/` (the kit lives in tests/support).
pub fn test_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/").join(relative)
}

/// Compares `actual` with `tests/golden/NAME`; `BUILDKIT_EXPORTER_UPDATE_GOLDEN=1` rewrites it.
pub fn assert_golden(name: &str, actual: &str) {
    let path = test_file(&format!("golden/{name}"));
    if std::env::var_os("BUILDKIT_EXPORTER_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set BUILDKIT_EXPORTER_UPDATE_GOLDEN=1 to create it)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(10)
            .map(|(e, a)| format!("- {e}\n+ {a}"))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines); first differences:\n{}\n(set BUILDKIT_EXPORTER_UPDATE_GOLDEN=1 to accept)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// Unix time now.
pub fn metrics_now() -> f64 {
    buildkit_exporter::now()
}
