//! The test kit: what the tests and the benchmarks share, once.
//!
//! - the daemon under test: in this process ([`daemon`]) or as the real binary in a child
//!   process ([`binary`]), and an HTTP/TLS client to it ([`http`]) that reads its metrics
//!   ([`metrics`]);
//! - fake engines: a fake BuildKit that replays recorded real streams or is driven message by
//!   message ([`fake`]), the recordings ([`fixture`]) and their recorder ([`record`]);
//! - a real one: a Docker Engine and its builds ([`engine`]), its buildx container builders
//!   ([`container_builder`]), and a fault-injecting proxy in
//!   front of it ([`proxy`]);
//! - the tools around: Prometheus ([`prometheus`]), Chromium ([`browser`]), the Grafana
//!   dashboard as tests read it ([`dashboard`]), certificates made for a test ([`pki`]);
//! - for whole-process benchmarks: figures from /proc ([`measure`]) and their report
//!   ([`report`]).
//!
//! Below them: waiting for a condition ([`eventually`]), the repository's files and golden files.

pub mod binary;
pub mod browser;
pub mod buildkitd;
pub mod container_builder;
pub mod daemon;
pub mod dashboard;
pub mod engine;
pub mod fake;
pub mod fixture;
pub mod http;
pub mod measure;
pub mod metrics;
pub mod pki;
pub mod prometheus;
pub mod proxy;
pub mod record;
pub mod report;

pub use binary::Binary;
pub use daemon::Daemon;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Path of a file of the repository.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("the kit is tests/support").join(relative)
}

/// The text of a file of the repository; panics naming it when it cannot be read.
pub fn read_repo_file(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Path of a file under `tests/`.
pub fn test_file(relative: &str) -> PathBuf {
    repo_file("tests").join(relative)
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
    buildkit_exporter::clock::now()
}
