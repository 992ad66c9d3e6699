//! End to end on a real Docker Engine: real builds, the exporter watching them, every value
//! checked against what the docker client itself saw of the same build.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::engine::{self, build, ml_dockerfile, Build, Context, ENGINE};
use support::{eventually, sample, samples, Daemon};

const LABEL: &str = "org.opencontainers.image.title";

/// Starts a daemon on the engine and waits until its source is up and the replay is over.
async fn daemon() -> Daemon {
    let daemon = Daemon::start(&[&engine::source()], |_| {}).await;
    wait_up(&daemon).await;
    daemon
}

async fn wait_up(daemon: &Daemon) {
    eventually(Duration::from_secs(20), "source up", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_exporter_source_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    // Let the opening history replay finish so builds below are live.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(metrics, name, labels).iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_step_build_then_cached_rebuild() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("ml-base");
    let marker = engine::unique("marker-s3cr3t");
    let context = Context::new(&ml_dockerfile(&engine::unique("nonce"), "1"));
    let label = format!("{LABEL}={name}");
    let args = ["--label", &label, "--build-arg", &format!("TOKEN={marker}")];
    let running = Build::start(&context, &format!("{name}:latest"), &args);

    // Follow the running build: the current step must walk up to 15.
    let mut seen_steps = Vec::new();
    let mut seen_commands = BTreeSet::new();
    let mut outputs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let m = daemon.metrics().await;
        if let Some(step) = sample(&m, "buildkit_build_current_step", &[("name", &name)]) {
            assert_eq!(sample(&m, "buildkit_build_steps", &[("name", &name)]), Some(15.0), "{m}");
            assert_eq!(sample(&m, "buildkit_builds_running", &[]), Some(1.0));
            if seen_steps.last() != Some(&step) {
                seen_steps.push(step);
            }
            for (series, _) in samples(&m, "buildkit_build_step_running_info", &[("name", &name)]) {
                seen_commands.insert(series);
            }
        } else if !seen_steps.is_empty() {
            break;
        }
        outputs.push(m);
        assert!(tokio::time::Instant::now() < deadline, "build did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running.finish().await;
    assert!(report.success, "{}", report.raw);
    assert_eq!(report.steps().len(), 15);

    // Monotonic, from the first steps to the last.
    assert!(seen_steps.windows(2).all(|w| w[0] <= w[1]), "{seen_steps:?}");
    assert!(seen_steps[0] <= 3.0, "{seen_steps:?}");
    assert_eq!(*seen_steps.last().unwrap(), 15.0, "{seen_steps:?}");
    assert!(seen_steps.len() >= 10, "saw too few steps: {seen_steps:?}");
    assert!(
        seen_commands.iter().any(|s| s.contains(r#"step="[11/15]""#) && s.contains(r#"instruction="RUN""#) && s.contains("pytorch: torch torchvision")),
        "{seen_commands:#?}"
    );

    let m = eventually(Duration::from_secs(10), "build counted", || async {
        let m = daemon.metrics().await;
        sample(&m, "buildkit_builds_completed_total", &[("name", &name)]).is_some().then_some(m)
    })
    .await;
    let labels = [("name", name.as_str()), ("result", "succeeded")];
    assert_eq!(sample(&m, "buildkit_builds_completed_total", &labels), Some(1.0));
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0));
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &name)]), 15.0);
    assert_eq!(sample(&m, "buildkit_steps_total", &[("name", &name), ("instruction", "RUN")]), Some(12.0));
    assert_eq!(sum(&m, "buildkit_steps_cached_total", &[("name", &name)]), report.cached_steps() as f64);
    // Step durations are BuildKit's own timestamps: the same numbers the client saw.
    let executed = report.executed_durations();
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[("name", &name)]), executed.len() as f64);
    let expected: f64 = executed.iter().sum();
    let got = sum(&m, "buildkit_step_duration_seconds_sum", &[("name", &name)]);
    assert!((got - expected).abs() < 0.01, "step time {got} vs client {expected}");
    let duration = sample(&m, "buildkit_build_duration_seconds_sum", &labels).unwrap();
    assert!(duration <= report.wall_seconds && duration > report.wall_seconds - 2.0, "{duration} vs wall {}", report.wall_seconds);
    assert!(duration > 11.0, "eleven steps sleep 1 s: {duration}");
    let last = sample(&m, "buildkit_build_last_completion_time_seconds", &labels).unwrap();
    assert!((support::metrics_now() - last).abs() < 15.0);

    // The cached rebuild: same Dockerfile, everything from cache.
    let again = build(&context, &format!("{name}:latest"), &args).await;
    assert!(again.success);
    let m = eventually(Duration::from_secs(10), "rebuild counted", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_builds_completed_total", &labels) == Some(2.0)).then_some(m)
    })
    .await;
    // Every step comes from cache, but FROM (a source) is not always marked so.
    assert!(again.cached_steps() >= 14, "{}", again.raw);
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &name)]), 30.0);
    assert_eq!(sum(&m, "buildkit_steps_cached_total", &[("name", &name)]), (report.cached_steps() + again.cached_steps()) as f64);
    let executed_again = again.executed_durations().len();
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[("name", &name)]), (executed.len() + executed_again) as f64);

    outputs.push(m);
    for output in &outputs {
        assert!(!output.contains(&marker), "build-arg value leaked into /metrics");
    }
    daemon.stop().await;
}
