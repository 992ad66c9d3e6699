//! End to end on a real buildx container builder ("docker-container" driver, BuildKit v0.32.2 in
//! a container of the engine under test), made by the engine's own buildx: 0.13 beside Engine
//! 26.1, 0.29 beside 28.5. The daemon is pointed at the engine only: it must find the builder,
//! follow a live build in it with exact counts, say when its container is stopped, count its
//! restart, and let it leave without a trace when it is removed. With discovery turned off, the
//! same builder is not watched.

use std::time::{Duration, Instant};

use testkit::buildkitd::{context, BASE};
use testkit::container_builder::ContainerBuilder;
use testkit::engine::{unique, ENGINE, NAME_LABEL};
use testkit::metrics::{sample, samples, sum};
use testkit::{eventually, Daemon};

/// Each source in `/api/v1/sources`.
async fn sources(daemon: &Daemon) -> Vec<serde_json::Value> {
    let (status, body) = daemon.get("/api/v1/sources").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["sources"].as_array().unwrap().clone()
}

/// The source of builder `label`, if the daemon has it.
async fn source(daemon: &Daemon, label: &str) -> Option<serde_json::Value> {
    sources(daemon).await.into_iter().find(|s| s["builder"] == label)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker Engine and buildx: run scripts/test.sh"]
async fn a_container_builder_is_found_followed_stopped_restarted_and_removed() {
    let _engine = ENGINE.lock().await;
    let daemon = Daemon::on_engine().await;
    let engine_started = sample(&daemon.metrics().await, "buildkit_builds_started_total", &[("builder", "default")]);

    // Found through the engine, within 10 s of `buildx create` returning.
    let builder = ContainerBuilder::create(&unique("bx"));
    let created = Instant::now();
    let label = format!("default/{}", builder.name);
    let found = eventually(Duration::from_secs(10), &format!("{label} up"), || async {
        source(&daemon, &label).await.filter(|s| s["up"] == true)
    })
    .await;
    assert!(created.elapsed() <= Duration::from_secs(10));
    assert_eq!(found["address"], format!("docker-container://{}", builder.container()));
    // What its BuildKit says of itself is read once it is up.
    eventually(Duration::from_secs(30), "its BuildKit's version", || async {
        source(&daemon, &label).await.filter(|s| s["buildkit"]["version"] == "v0.32.2")
    })
    .await;

    // A live build in it, sampled while it runs.
    let name = unique("bx-build");
    let nonce = unique("nonce");
    let dockerfile = format!("{BASE}RUN echo {nonce} && sleep 1\nRUN echo compiling && sleep 4\nRUN echo done\n");
    let ctx = context(&dockerfile);
    let title = format!("{NAME_LABEL}={name}");
    let running = builder.build(&ctx, &["--label", &title]);
    let m = eventually(Duration::from_secs(60), "the compiling step running", || async {
        let m = daemon.metrics().await;
        let step = [("builder", label.as_str()), ("name", name.as_str()), ("command", "echo compiling && sleep 4")];
        (!samples(&m, "buildkit_build_step_running_info", &step).is_empty()).then_some(m)
    })
    .await;
    let labels = [("builder", label.as_str()), ("name", name.as_str())];
    assert_eq!(sample(&m, "buildkit_build_current_step", &labels), Some(4.0), "{m}");
    assert_eq!(sample(&m, "buildkit_build_steps", &labels), Some(5.0), "{m}");
    assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", label.as_str())]), Some(1.0));
    let report = running.finish().await;
    assert!(report.success, "{}", report.raw);

    // Counted once, under its own builder, and nothing under the engine's.
    let m = eventually(Duration::from_secs(60), "the build counted", || async {
        let m = daemon.metrics().await;
        let done = [("builder", label.as_str()), ("name", name.as_str()), ("result", "succeeded")];
        (sample(&m, "buildkit_builds_completed_total", &done) == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", label.as_str())]), Some(1.0));
    assert_eq!(sum(&m, "buildkit_steps_total", &labels), report.finished_steps() as f64, "{m}");
    assert_eq!(sum(&m, "buildkit_steps_cached_total", &labels), report.cached_steps() as f64, "{m}");
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", "default")]), engine_started);
    let info = [("builder", label.as_str()), ("buildkit_version", "v0.32.2")];
    assert_eq!(sample(&m, "buildkit_exporter_source_info", &info), Some(1.0), "{m}");

    // A failing build: where it failed is read from the builder's content store, through the
    // same exec link.
    let failing = unique("bx-fails");
    let ctx = context(&format!("{BASE}RUN echo {nonce} fails\nRUN exit 4\n"));
    let report = builder.build(&ctx, &["--label", &format!("{NAME_LABEL}={failing}")]).finish().await;
    assert!(!report.success, "{}", report.raw);
    eventually(Duration::from_secs(60), "where the build failed", || async {
        let m = daemon.metrics().await;
        let at =
            [("builder", label.as_str()), ("name", failing.as_str()), ("location", "Dockerfile:6"), ("exit_code", "4")];
        (sample(&m, "buildkit_build_last_failure_info", &at) == Some(1.0)).then_some(())
    })
    .await;

    // Its container stopped: down, saying so.
    builder.stop();
    let down = eventually(Duration::from_secs(30), &format!("{label} down"), || async {
        source(&daemon, &label).await.filter(|s| s["up"] == false)
    })
    .await;
    let reason = down["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("the builder's container is exited"), "{reason}");
    let up = [("builder", label.as_str())];
    assert_eq!(sample(&daemon.metrics().await, "buildkit_exporter_source_up", &up), Some(0.0));

    // Started again: up, and counted as a restart (another process), not a broken link.
    builder.start();
    eventually(Duration::from_secs(30), &format!("{label} up again"), || async {
        source(&daemon, &label).await.filter(|s| s["up"] == true)
    })
    .await;
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_restarts_total", &up), Some(1.0), "{m}");

    // Removed: gone from every view, and never down on the way out (sampled all along).
    let watch = daemon.watch_downs();
    builder.remove();
    eventually(Duration::from_secs(10), &format!("{label} gone"), || async {
        let m = daemon.metrics().await;
        (source(&daemon, &label).await.is_none() && !m.contains(&format!("builder=\"{label}\""))).then_some(())
    })
    .await;
    let downs = watch.stop().await;
    assert!(downs.is_empty(), "reported down while the builder was removed: {downs:?}");
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_up", &[("builder", "default")]), Some(1.0));
    assert_eq!(sum(&m, "buildkit_exporter_source_up", &[]), 1.0, "only the engine is left:\n{m}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker Engine and buildx: run scripts/test.sh"]
async fn with_discovery_off_a_container_builder_is_not_watched() {
    let _engine = ENGINE.lock().await;
    let builder = ContainerBuilder::create(&unique("bx-off"));
    let label = format!("default/{}", builder.name);
    // Off first, on second: by the time the second has found the builder, the first would have
    // too, had it looked.
    let off = Daemon::on_engine_with(|config| config.source.container_builders = false).await;
    let on = Daemon::on_engine().await;
    eventually(Duration::from_secs(10), &format!("{label} found with discovery on"), || async {
        source(&on, &label).await
    })
    .await;
    let all = sources(&off).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["builder"], "default");
    let m = off.metrics().await;
    assert!(!m.contains(&builder.name), "{m}");
    off.stop().await;
    on.stop().await;
    builder.remove();
}
