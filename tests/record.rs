//! Records the fixtures the replay tests use, from real builds on a real engine, with the
//! project's own recorder. Run on purpose only:
//!
//! `BUILDKIT_EXPORTER_RECORD=1 cargo test --test record -- --ignored`

use std::time::Duration;

use testkit::engine::{self, build, ml_dockerfile, Context, ENGINE};
use testkit::{fixture, record};

/// The build-arg value the recorded builds carry; it must never come out of the exporter.
pub const MARKER: &str = "fixture-marker-5e3c7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records fixtures from a real engine: BUILDKIT_EXPORTER_RECORD=1 cargo test --test record -- --ignored"]
async fn record_fixture_builds() {
    assert!(
        std::env::var_os("BUILDKIT_EXPORTER_RECORD").is_some(),
        "set BUILDKIT_EXPORTER_RECORD=1 to overwrite the fixtures"
    );
    let _engine = ENGINE.lock().await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let recorder = tokio::spawn(async move { record::record(&engine::source(), stopped).await });
    tokio::time::sleep(Duration::from_secs(1)).await;

    let token = format!("TOKEN={MARKER}");
    let label = "org.opencontainers.image.title=ml-base";
    let ml = Context::new(&ml_dockerfile(&engine::unique("nonce"), "0.3"));
    assert!(build(&ml, "ml-base:latest", &["--label", label, "--build-arg", &token]).await.success);
    assert!(build(&ml, "ml-base:latest", &["--label", label, "--build-arg", &token]).await.success);
    let failing =
        Context::new(&format!("FROM tinybase:latest\nRUN echo {} && sleep 0.3\nRUN false\n", engine::unique("nonce")));
    assert!(!build(&failing, "failing:dev", &[]).await.success);
    let multi = Context::new(&format!(
        "FROM tinybase:latest AS base\nRUN echo {} && sleep 0.3\nFROM tinybase:latest\nCOPY --from=base /bin/busybox /b\n",
        engine::unique("nonce")
    ));
    assert!(build(&multi, "registry.example.com:5000/team/multi:1.0", &[]).await.success);
    // Let the second COMPLETE of the last build arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.send(()).unwrap();
    let lines = recorder.await.unwrap();
    let path = fixture::recording();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::fs::File::create(&path).unwrap();
    for line in &lines {
        fixture::write(&mut out, line).unwrap();
    }
    eprintln!("recorded {} messages into {}", lines.len(), path.display());
}
