//! The daemon in this process, on a loopback port: `serve` as `main` runs it, with the test's
//! own shutdown signal and configuration, and waits for what tests look for in it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use buildkit_exporter::config::Config;
use buildkit_exporter::source::spec::SourceSpec;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{sample, samples, sum};
use crate::{engine, eventually, http};

/// Sources seen down while [`Daemon::watch_downs`] sampled.
pub struct DownWatch {
    watching: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl DownWatch {
    /// Stops sampling; the builder of every source seen down, once per sample.
    pub async fn stop(self) -> Vec<String> {
        self.watching.store(false, Ordering::SeqCst);
        self.task.await.expect("the sampler ends")
    }
}

/// A daemon running in this process on a loopback port.
pub struct Daemon {
    pub addr: SocketAddr,
    /// The builder of the first source: the engine's, beside the container builders it has.
    builder: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Starts the daemon watching `sources` (`--source` syntax) with `tune` applied to defaults.
    pub async fn start(sources: &[&str], tune: impl FnOnce(&mut Config)) -> Daemon {
        let specs: Vec<SourceSpec> = sources
            .iter()
            .map(|s| SourceSpec::parse(s, sources.len() == 1, &Default::default()).expect("valid source"))
            .collect();
        let builder = specs.first().map(|s| s.name.clone()).unwrap_or_default();
        let mut config = Config::new(specs);
        tune(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(buildkit_exporter::serve(config, vec![listener], shutdown));
        Daemon { addr, builder, stop, task }
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
            if sum(&daemon.metrics().await, "buildkit_builds_running", &[]) == 0.0 {
                return daemon;
            }
            eventually(Duration::from_secs(180), "the builds left running by an earlier test to end", || async {
                (sum(&daemon.metrics().await, "buildkit_builds_running", &[]) == 0.0).then_some(())
            })
            .await;
            daemon.stop().await;
        }
    }

    /// Waits until the first source is up, which it is once its history replay is over.
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

    /// Waits until the first source's `source_up` is `up`, for at most `within`; returns the
    /// metrics then.
    pub async fn source_up(&self, up: bool, within: Duration) -> String {
        let want = if up { 1.0 } else { 0.0 };
        eventually(within, &format!("source_up {want}"), || async {
            let m = self.metrics().await;
            (sample(&m, "buildkit_exporter_source_up", &[("builder", &self.builder)]) == Some(want)).then_some(m)
        })
        .await
    }

    /// GETs `path`; returns status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http::get(self.addr, path).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http::metrics(self.addr).await
    }

    /// Starts sampling `/api/v1/sources` every 20 ms, until [`DownWatch::stop`], to prove that
    /// no source is reported down meanwhile (a builder removed on purpose, for instance).
    pub fn watch_downs(&self) -> DownWatch {
        let watching = Arc::new(AtomicBool::new(true));
        let (still, addr) = (watching.clone(), self.addr);
        let task = tokio::spawn(async move {
            let mut downs = Vec::new();
            while still.load(Ordering::SeqCst) {
                let (_, body) = http::get(addr, "/api/v1/sources").await;
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                let sources = json["sources"].as_array().unwrap();
                downs.extend(sources.iter().filter(|s| s["up"] == false).map(|s| s["builder"].to_string()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            downs
        });
        DownWatch { watching, task }
    }

    /// Stops the daemon and waits until it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("daemon stops").unwrap();
    }
}
