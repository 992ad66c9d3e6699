//! End to end on a real Docker Engine: real builds, the exporter watching them, every value
//! checked against what the docker client itself saw of the same build.

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::engine::{self, build, ml_dockerfile, Build, Context, ENGINE};
use testkit::metrics::{finished_builds, sample, samples, sum};
use testkit::{eventually, Daemon};

const LABEL: &str = engine::NAME_LABEL;

async fn daemon() -> Daemon {
    Daemon::on_engine().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
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
            // No step is known until BuildKit has parsed the Dockerfile; then all 15 at once.
            let steps = sample(&m, "buildkit_build_steps", &[("name", &name)]);
            assert!(steps == Some(0.0) || steps == Some(15.0), "{m}");
            assert_eq!(sample(&m, "buildkit_builds_running", &[]), Some(1.0));
            if steps == Some(15.0) && seen_steps.last() != Some(&step) {
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
        seen_commands.iter().any(|s| s.contains(r#"step="[11/15]""#)
            && s.contains(r#"instruction="RUN""#)
            && s.contains("pytorch: torch torchvision")),
        "{seen_commands:#?}"
    );

    let m = eventually(Duration::from_secs(10), "build counted", || async {
        let m = daemon.metrics().await;
        (finished_builds(&m, &name) > 0.0).then_some(m)
    })
    .await;
    let labels = [("name", name.as_str()), ("result", "succeeded")];
    assert_eq!(sample(&m, "buildkit_builds_completed_total", &labels), Some(1.0));
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0));
    // The default series: step counters by name, step durations by instruction only. This
    // daemon saw no other build finish, so the builder's step histogram is this build's.
    assert_eq!(sample(&m, "buildkit_steps_total", &[("name", &name)]), Some(15.0));
    assert_eq!(sample(&m, "buildkit_steps_cached_total", &[("name", &name)]), Some(report.cached_steps() as f64));
    assert!(!m.contains(r#"buildkit_steps_total{builder="default",instruction"#), "instruction is opt-in");
    assert!(samples(&m, "buildkit_step_duration_seconds_count", &[("name", &name)]).is_empty(), "name is opt-in");
    // Step durations are BuildKit's own timestamps: the same numbers the client saw.
    let executed = report.executed_durations();
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[]), executed.len() as f64);
    let expected: f64 = executed.iter().sum();
    let got = sum(&m, "buildkit_step_duration_seconds_sum", &[]);
    assert!((got - expected).abs() < 0.01, "step time {got} vs client {expected}");
    let duration = sample(&m, "buildkit_build_duration_seconds_sum", &[("name", name.as_str())]).unwrap();
    assert!(
        duration <= report.wall_seconds && duration > report.wall_seconds - 2.0,
        "{duration} vs wall {}",
        report.wall_seconds
    );
    assert!(duration > 11.0, "eleven steps sleep 1 s: {duration}");
    let last = sample(&m, "buildkit_build_last_completion_time_seconds", &labels).unwrap();
    assert!((testkit::metrics_now() - last).abs() < 15.0);

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
    assert_eq!(
        sum(&m, "buildkit_steps_cached_total", &[("name", &name)]),
        (report.cached_steps() + again.cached_steps()) as f64
    );
    let executed_again = again.executed_durations().len();
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[]), (executed.len() + executed_again) as f64);
    assert_eq!(sample(&m, "buildkit_build_duration_seconds_count", &[("name", name.as_str())]), Some(2.0));
    // What the cache saved the rebuild: what its cached steps took when the first build ran
    // them, to the millisecond (BuildKit's timestamps, as the client saw them).
    let ran: std::collections::BTreeMap<String, f64> = report
        .steps()
        .iter()
        .filter(|v| !v.cached)
        .filter_map(|v| Some((v.name.clone(), v.completed? - v.started?)))
        .collect();
    let saved: f64 = again.steps().iter().filter(|v| v.cached).filter_map(|v| ran.get(&v.name)).sum();
    assert!(saved > 11.0, "eleven steps that sleep 1 s came from cache: {saved}");
    let counted = sample(&m, "buildkit_build_cache_saved_seconds_total", &[("name", name.as_str())]).unwrap();
    assert!((counted - saved).abs() < 0.01, "cache saved {counted} s, the client saw {saved} s");
    let (_, list) = daemon.get("/api/v1/builds").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rebuilt = &list["builds"].as_array().unwrap().iter().find(|b| b["name"] == name.as_str()).unwrap();
    assert!((rebuilt["cache_saved_seconds"].as_f64().unwrap() - saved).abs() < 0.01, "{rebuilt}");

    outputs.push(m);
    for output in &outputs {
        assert!(!output.contains(&marker), "build-arg value leaked into /metrics");
    }
    daemon.stop().await;
}

fn labelled(name: &str) -> String {
    format!("{LABEL}={name}")
}

/// Runs `promtool check metrics` of Prometheus 2 and 3 on a real scrape: neither may find
/// anything.
fn promtool_check(metrics: &str) {
    testkit::prometheus::assert_promtool_finds_nothing(metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Prometheus: run scripts/test.sh"]
async fn failing_and_multi_stage_builds() {
    let _engine = ENGINE.lock().await;
    // With the opt-in detail: step counters by instruction too, step durations by name too.
    let daemon = Daemon::on_engine_with(|config| config.step_detail = true).await;

    let failing = engine::unique("failing");
    let context = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 1\nRUN echo about to fail && false\nRUN echo never\n",
        engine::unique("nonce")
    ));
    let report = build(&context, &failing, &["--label", &labelled(&failing)]).await;
    assert!(!report.success);
    let m = daemon.counted(&failing, "failed", 1.0).await;
    assert_eq!(sample(&m, "buildkit_steps_failed_total", &[("name", &failing), ("instruction", "RUN")]), Some(1.0));
    assert_eq!(sum(&m, "buildkit_steps_failed_total", &[("name", &failing)]), 1.0);
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &failing)]), report.finished_steps() as f64);
    assert_eq!(report.finished_steps(), 3, "FROM, the first RUN and the failing RUN");
    // A failure's duration would blur how long the name takes: only successes are timed.
    assert_eq!(sample(&m, "buildkit_build_duration_seconds_count", &[("name", &failing)]), Some(0.0));
    let ran = report.executed_durations().len() as f64;
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[("name", &failing)]), ran);

    // Multi-stage, named only by the `naming to` status at export (no label).
    let multi = engine::unique("multi");
    let context = Context::new(&format!(
        "FROM tinybase:latest AS base\nRUN echo {} && sleep 1\nRUN echo built > /out.txt && sleep 1\n\
         FROM tinybase:latest AS tools\nRUN echo {} tools && sleep 2\n\
         FROM tinybase:latest\nCOPY --from=base /out.txt /out.txt\nCOPY --from=tools /bin/busybox /tools-busybox\n",
        engine::unique("nonce"),
        engine::unique("nonce")
    ));
    let running = Build::start(&context, &format!("{multi}:v1"), &[]);
    let mut labels_seen = BTreeSet::new();
    let mut max_steps = 0.0f64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let m = daemon.metrics().await;
        for (series, _) in samples(&m, "buildkit_build_step_running_info", &[]) {
            if let Some(step) = series.split("step=\"").nth(1).and_then(|s| s.split('"').next()) {
                labels_seen.insert(step.to_string());
            }
        }
        max_steps = max_steps.max(sum(&m, "buildkit_build_steps", &[]));
        if finished_builds(&m, &multi) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running.finish().await;
    assert!(report.success, "{}", report.raw);
    let m = daemon.counted(&multi, "succeeded", 1.0).await;
    assert_eq!(max_steps, report.steps().len() as f64, "steps across stages");
    assert!(labels_seen.iter().any(|l| l.starts_with("[base ")), "{labels_seen:?}");
    assert!(labels_seen.iter().any(|l| l.starts_with("[tools ")), "{labels_seen:?}");
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &multi)]), report.finished_steps() as f64);
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &multi), ("instruction", "COPY")]), 2.0);
    promtool_check(&m);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn concurrent_and_canceled_builds() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let (a, b) = (engine::unique("left"), engine::unique("right"));
    let dockerfile =
        |nonce: String| format!("FROM tinybase:latest\nRUN echo {nonce} && sleep 3\nRUN echo second && sleep 1\n");
    let (ca, cb) = (Context::new(&dockerfile(engine::unique("n"))), Context::new(&dockerfile(engine::unique("n"))));
    let (ra, rb) =
        (Build::start(&ca, &a, &["--label", &labelled(&a)]), Build::start(&cb, &b, &["--label", &labelled(&b)]));
    eventually(Duration::from_secs(20), "both running", || async {
        let m = daemon.metrics().await;
        let both = sample(&m, "buildkit_build_current_step", &[("name", &a)]).is_some()
            && sample(&m, "buildkit_build_current_step", &[("name", &b)]).is_some();
        (both && sample(&m, "buildkit_builds_running", &[]) == Some(2.0)).then_some(())
    })
    .await;
    let m = daemon.metrics().await;
    let refs: BTreeSet<String> = samples(&m, "buildkit_build_start_time_seconds", &[])
        .into_iter()
        .map(|(s, _)| s.split("ref=\"").nth(1).unwrap().split('"').next().unwrap().to_string())
        .collect();
    assert_eq!(refs.len(), 2, "two builds, two refs");
    let (rep_a, rep_b) = (ra.finish().await, rb.finish().await);
    assert!(rep_a.success && rep_b.success);
    daemon.counted(&a, "succeeded", 1.0).await;
    let m = daemon.counted(&b, "succeeded", 1.0).await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(2.0));

    // The client going away (as on Ctrl-C) cancels the build.
    let canceled = engine::unique("canceled");
    let nonce = engine::unique("n");
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {nonce} && sleep 60\n"));
    let running = Build::start(&context, &canceled, &["--label", &labelled(&canceled)]);
    daemon.step_running(&[("name", &canceled), ("instruction", "RUN")]).await;
    // Canceled while BuildKit still sets up the step's container, a build may run on: the
    // engine's race, not the exporter's; so cancel once the step's process has printed.
    running.wait_printed(&nonce).await;
    running.interrupt();
    let report = running.finish().await;
    assert!(!report.success);
    let m = daemon.counted(&canceled, "canceled", 1.0).await;
    assert_eq!(sample(&m, "buildkit_builds_running", &[]), Some(0.0));
    assert!(samples(&m, "buildkit_build_current_step", &[]).is_empty(), "no running series left");
    assert_eq!(finished_builds(&m, &canceled), 1.0, "counted once, as canceled");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn exporter_restart_during_a_build() {
    let _engine = ENGINE.lock().await;
    let name = engine::unique("restart");
    let context = Context::new(&ml_dockerfile(&engine::unique("nonce"), "0.5"));
    let first = daemon().await;
    let running = Build::start(&context, &name, &["--label", &labelled(&name)]);
    first.running_at(&name, 4.0).await;
    first.stop().await;

    let second = Daemon::start(&[&engine::source()], |_| {}).await;
    // The late Status subscription replays what the new daemon missed.
    let m = second.running_at(&name, 5.0).await;
    assert_eq!(sample(&m, "buildkit_build_steps", &[("name", &name)]), Some(15.0));
    assert!(sample(&m, "buildkit_build_steps_completed", &[("name", &name)]).unwrap() >= 4.0);
    let report = running.finish().await;
    assert!(report.success);
    let m = second.counted(&name, "succeeded", 1.0).await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0));
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &name)]), 15.0);
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[]), report.executed_durations().len() as f64);
    // BuildKit sends the record again (generation 1, with the trace) ~3 s later: still one.
    second.second_complete(&name).await;
    let m = second.metrics().await;
    assert_eq!(finished_builds(&m, &name), 1.0);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn connection_cut_during_a_build() {
    let _engine = ENGINE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let engine_socket = engine::source().trim_start_matches("unix://").to_string();
    let mut proxy = testkit::proxy::Proxy::start(&dir.path().join("engine.sock"), std::path::Path::new(&engine_socket));
    let daemon = Daemon::start(&[&proxy.source()], |_| {}).await;
    daemon.wait_up().await;

    let name = engine::unique("cut");
    let context = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 1\nRUN echo middle && sleep 4\nRUN echo end\n",
        engine::unique("nonce")
    ));
    let running = Build::start(&context, &name, &["--label", &labelled(&name)]);
    daemon.running_at(&name, 3.0).await;
    proxy.cut();
    let m = daemon.source_up(false, Duration::from_secs(10)).await;
    // What was observed stays while the source is down.
    assert!(sample(&m, "buildkit_build_current_step", &[("name", &name)]).is_some(), "{m}");
    let report = running.finish().await;
    assert!(report.success);
    proxy.restore();
    // Counted from the replay, which source_up waits for.
    daemon.counted(&name, "succeeded", 1.0).await;
    let m = daemon.source_up(true, Duration::from_secs(30)).await;
    assert!(sample(&m, "buildkit_exporter_source_reconnects_total", &[]).unwrap() >= 1.0);
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0), "{m}");
    // Later replays (another cut) do not count it again.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    // Back up after the (capped, jittered) backoff, and through the replay.
    daemon.source_up(true, Duration::from_secs(40)).await;
    // Up again means the replay has been applied.
    let m = daemon.metrics().await;
    assert_eq!(finished_builds(&m, &name), 1.0);
    assert_eq!(sample(&m, "buildkit_builds_running", &[]), Some(0.0));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn engine_restart_during_a_build() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("engine-restart");
    let context =
        Context::new(&format!("FROM tinybase:latest\nRUN echo {} && sleep 1\nRUN sleep 60\n", engine::unique("nonce")));
    let running = Build::start(&context, &name, &["--label", &labelled(&name)]);
    daemon.step_running(&[("name", &name), ("command", "sleep 60")]).await;
    engine::restart().await;
    let report = running.finish().await;
    assert!(!report.success, "the client sees its build fail");
    // BuildKit keeps no record of a build its engine stopped under: it is counted as failed.
    let m = daemon.counted(&name, "failed", 1.0).await;
    assert_eq!(sample(&m, "buildkit_exporter_source_up", &[]), Some(1.0));
    assert!(sample(&m, "buildkit_exporter_source_reconnects_total", &[]).unwrap() >= 1.0);
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(1.0));
    assert_eq!(sample(&m, "buildkit_builds_running", &[]), Some(0.0));
    let (_, list) = daemon.get("/api/v1/builds").await;
    assert!(list.contains("vanished from the engine's history"), "{list}");
    // The engine's event stream ended and the engine answered again: one restart seen.
    eventually(Duration::from_secs(30), "the restart seen", || async {
        let (_, sources) = daemon.get("/api/v1/sources").await;
        let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
        (sources["sources"][0]["engine"]["restarts"] == 1).then_some(())
    })
    .await;
    // And the socket's peer, another dockerd process, names it a restart, not a broken link.
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_restarts_total", &[]), Some(1.0), "{m}");
    let (_, sources) = daemon.get("/api/v1/sources").await;
    let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
    assert_eq!(sources["sources"][0]["restarts"], 1, "{sources}");
    // The engine works again, and its replays count nothing twice.
    let after = engine::unique("after-restart");
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {}\n", engine::unique("nonce")));
    assert!(build(&context, &after, &["--label", &labelled(&after)]).await.success);
    let m = daemon.counted(&after, "succeeded", 1.0).await;
    assert_eq!(finished_builds(&m, &name), 1.0);
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(2.0));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn a_retagged_dockerfile_is_counted_under_each_tag() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let (first, second) = (engine::unique("first"), engine::unique("second"));
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {} && sleep 1\n", engine::unique("nonce")));
    // No label: on this engine the tag is known only from the export, after the steps.
    assert!(build(&context, &format!("{first}:v1"), &[]).await.success);
    daemon.counted(&first, "succeeded", 1.0).await;
    // The same Dockerfile again, under another tag: its own tag wins over the learned name.
    assert!(build(&context, &format!("{second}:v1"), &[]).await.success);
    let m = daemon.counted(&second, "succeeded", 1.0).await;
    assert_eq!(finished_builds(&m, &first), 1.0, "{m}");
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(2.0));
    assert_eq!(sum(&m, "buildkit_steps_total", &[("name", &second)]), 2.0);
    daemon.second_complete(&second).await;
    let m = daemon.metrics().await;
    assert_eq!((finished_builds(&m, &first), finished_builds(&m, &second)), (1.0, 1.0));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn an_untagged_rebuild_takes_the_learned_name() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("learned");
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {} && sleep 1\n", engine::unique("nonce")));
    assert!(build(&context, &format!("{name}:v1"), &[]).await.success);
    daemon.counted(&name, "succeeded", 1.0).await;
    // Without -t: Docker 26.1 names nothing, 28.5's containerd store names it
    // "moby-dangling@sha256:…", which is no name either. The step list is the same: the name
    // learned from the first build.
    assert!(build(&context, "", &["--no-cache"]).await.success);
    let m = daemon.counted(&name, "succeeded", 2.0).await;
    assert!(!m.contains("moby-dangling"), "{m}");
    assert!(samples(&m, "buildkit_builds_completed_total", &[("name", "unknown")]).is_empty(), "{m}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn nested_build_arg_values_never_leak() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("nested");
    let secret = engine::unique("s3cr3t");
    let (user, password) = ("bob".to_string(), format!("bob-{secret}"));
    let context = Context::new(&format!(
        "FROM tinybase:latest\nARG USERNAME\nARG PASSWORD\nRUN echo {} $USERNAME:$PASSWORD && sleep 2\n",
        engine::unique("nonce")
    ));
    let args = [
        "--label",
        &labelled(&name),
        "--build-arg",
        &format!("USERNAME={user}"),
        "--build-arg",
        &format!("PASSWORD={password}"),
    ];
    let running = Build::start(&context, &name, &args);
    daemon.step_running(&[("name", &name), ("instruction", "RUN")]).await;
    let mut seen = vec![daemon.metrics().await, daemon.get("/api/v1/builds").await.1];
    let m = daemon.metrics().await;
    let (series, _) = samples(&m, "buildkit_build_step_running_info", &[("name", &name)]).remove(0);
    // This engine expands build-arg values into step names: both are masked, the longer whole.
    assert!(series.contains(r#"command="echo "#) && series.contains("***:***"), "{series}");
    let reference = series.split("ref=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    seen.push(daemon.get(&format!("/api/v1/builds/{reference}")).await.1);
    assert!(running.finish().await.success);
    seen.push(daemon.counted(&name, "succeeded", 1.0).await);
    seen.push(daemon.get(&format!("/api/v1/builds/{reference}")).await.1);
    for text in &seen {
        assert!(!text.contains(&secret) && !text.contains("bob"), "a build-arg value leaked:\n{text}");
    }
    daemon.stop().await;
}

/// Warnings the client printed, each (vertex, title) once: what BuildKit's progress carried.
fn client_warnings(raw: &str) -> BTreeSet<(String, String)> {
    use base64::Engine as _;
    let mut seen = BTreeSet::new();
    for value in serde_json::Deserializer::from_str(raw).into_iter::<serde_json::Value>() {
        let Ok(value) = value else { break };
        for w in value["warnings"].as_array().into_iter().flatten() {
            let short = w["short"].as_str().unwrap_or_default();
            let title = base64::engine::general_purpose::STANDARD.decode(short).unwrap_or_default();
            let vertex = w["vertex"].as_str().unwrap_or_default().to_string();
            seen.insert((vertex, String::from_utf8_lossy(&title).trim().to_string()));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn build_context_and_warnings_are_shown_never_as_labels() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("context");
    let secret = engine::unique("ctx-s3cret");
    // Lowercase `as` after an uppercase FROM is a lint warning on engines whose Dockerfile
    // frontend checks (BuildKit 0.14+); older engines print none. Either way the count must be
    // the one the client saw.
    let context = Context::new(&format!(
        "FROM tinybase:latest as base\nARG NOTE\nRUN echo {} $NOTE > /dev/null\n\
         FROM base AS final\nRUN echo final\n",
        engine::unique("nonce")
    ));
    let args = [
        "--label",
        &labelled(&name),
        "--target",
        "final",
        "--platform",
        "linux/amd64",
        "--build-arg",
        &format!("NOTE={secret}"),
    ];
    let report = build(&context, &name, &args).await;
    assert!(report.success, "{}", report.raw);
    let m = daemon.counted(&name, "succeeded", 1.0).await;
    let (_, list) = daemon.get("/api/v1/builds").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let shown = list["builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .clone();
    let context = &shown["context"];
    assert_eq!(context["dockerfile"], "Dockerfile", "{shown}");
    assert_eq!(context["target"], "final", "{shown}");
    assert_eq!(context["platforms"], serde_json::json!(["linux/amd64"]), "{shown}");
    assert_eq!(context["build_args"], serde_json::json!(["NOTE"]), "{shown}");
    let warnings = client_warnings(&report.raw);
    assert_eq!(shown["warnings"]["count"], warnings.len(), "{shown}\nclient: {warnings:?}");
    let titles: BTreeSet<String> = warnings.into_iter().map(|(_, title)| title).collect();
    let shown_titles: BTreeSet<String> =
        shown["warnings"]["titles"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    assert_eq!(shown_titles, titles);
    assert_eq!(sample(&m, "buildkit_build_warnings_total", &[("name", &name)]), Some(shown_titles.len() as f64));
    // None of it is a label; the build-arg value is nowhere.
    for line in m.lines().filter(|l| l.contains(name.as_str())) {
        for word in ["final", "platform", "amd64", "Dockerfile", "NOTE"] {
            assert!(!line.contains(word), "{word} in a series of the build: {line}");
        }
    }
    assert!(!m.contains(&secret) && !list.to_string().contains(&secret));
    daemon.stop().await;
}

/// `docker version --format FORMAT` of the engine under test.
fn docker_version(format: &str) -> String {
    let out = std::process::Command::new("docker").args(["version", "--format", format]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn engine_versions_workers_and_cache_are_shown() {
    let _engine = ENGINE.lock().await;
    let daemon = Daemon::on_engine_with(|config| config.source.usage_interval = Duration::from_secs(1)).await;
    let name = engine::unique("usage");
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {} > /built\n", engine::unique("nonce")));
    assert!(build(&context, &name, &[]).await.success);
    daemon.counted(&name, "succeeded", 1.0).await;
    let (engine_version, api_version) =
        (docker_version("{{.Server.Version}}"), docker_version("{{.Server.APIVersion}}"));
    // What the engine says of itself, through bollard; BuildKit's version from its Info call.
    // BuildKit sizes new cache records lazily: wait until the build's are counted.
    let m = eventually(Duration::from_secs(60), "versions and cache read", || async {
        let m = daemon.metrics().await;
        let info = samples(&m, "buildkit_exporter_source_info", &[("engine_version", &engine_version)]);
        let cached = sum(&m, "buildkit_cache_bytes", &[]);
        (info.len() == 1 && sample(&m, "buildkit_cache_records", &[]).is_some_and(|r| r > 0.0) && cached > 0.0)
            .then_some(m)
    })
    .await;
    let (series, _) = samples(&m, "buildkit_exporter_source_info", &[]).remove(0);
    assert!(series.contains(&format!(r#"api_version="{api_version}""#)), "{series}");
    assert!(!series.contains(r#"buildkit_version="""#), "{series}");
    // The build just made left cache behind, all of it free once the build ended.
    let cache = samples(&m, "buildkit_cache_bytes", &[]);
    assert_eq!(cache.len(), 8, "one series per record type: {cache:?}");
    assert!(sample(&m, "buildkit_cache_reclaimable_bytes", &[]).unwrap() > 0.0, "{cache:?}");
    let workers = samples(&m, "buildkit_worker_info", &[]);
    assert!(!workers.is_empty() && workers.iter().all(|(s, _)| s.contains("linux/amd64")), "{workers:?}");
    let (_, sources) = daemon.get("/api/v1/sources").await;
    let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
    let engine = &sources["sources"][0]["engine"];
    assert_eq!(engine["version"], engine_version.as_str(), "{sources}");
    assert_eq!(engine["restarts"], 0, "{sources}");
    assert_eq!(sources["sources"][0]["restarts"], 0, "{sources}");
    assert_eq!(sources["sources"][0]["up"], true);
    daemon.stop().await;
}

/// Runs `program args` in `dir` to the end while the daemon's build list is read every 100 ms;
/// returns whether it succeeded, its output, and the most builds of `Dockerfile.a` and
/// `Dockerfile.b` seen running at once (other builds may run on a shared engine).
async fn run_watching(daemon: &Daemon, dir: &std::path::Path, program: &str, args: &[&str]) -> (bool, String, f64) {
    let child =
        tokio::process::Command::new(program).args(args).current_dir(dir).stdin(std::process::Stdio::null()).output();
    tokio::pin!(child);
    let mut most = 0.0f64;
    loop {
        tokio::select! {
            out = &mut child => {
                let out = out.unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                return (out.status.success(), text, most);
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let (_, list) = daemon.get("/api/v1/builds").await;
                let list: serde_json::Value = serde_json::from_str(&list).unwrap();
                let ours = list["builds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["state"] == "running")
                    .filter(|b| matches!(b["context"]["dockerfile"].as_str(), Some("Dockerfile.a" | "Dockerfile.b")))
                    .count();
                most = most.max(ours as f64);
            }
        }
    }
}

/// Two Dockerfiles in one directory, each with a step long enough to be seen running.
fn two_targets(nonce: &str) -> Context {
    let context = Context::new("FROM tinybase:latest\n");
    for which in ["a", "b"] {
        let dockerfile = format!("FROM tinybase:latest\nRUN echo {nonce} {which} && sleep 4\nRUN echo done {which}\n");
        std::fs::write(context.path().join(format!("Dockerfile.{which}")), dockerfile).unwrap();
    }
    context
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn bake_and_compose_builds_are_told_apart() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;

    // `docker buildx bake` with two targets: two builds at once, each under its own tag.
    let (a, b) = (engine::unique("bake-a"), engine::unique("bake-b"));
    let context = two_targets(&engine::unique("nonce"));
    let bake = format!(
        "group \"default\" {{ targets = [\"a\", \"b\"] }}\n\
         target \"a\" {{\n  dockerfile = \"Dockerfile.a\"\n  tags = [\"{a}:v1\"]\n}}\n\
         target \"b\" {{\n  dockerfile = \"Dockerfile.b\"\n  tags = [\"{b}:v1\"]\n}}\n"
    );
    std::fs::write(context.path().join("docker-bake.hcl"), bake).unwrap();
    let (ok, output, most) =
        run_watching(&daemon, context.path(), "docker", &["buildx", "bake", "--progress=plain"]).await;
    assert!(ok, "{output}");
    daemon.counted(&a, "succeeded", 1.0).await;
    let m = daemon.counted(&b, "succeeded", 1.0).await;
    assert_eq!(most, 2.0, "both targets were seen running at once");
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(2.0));
    assert_eq!(
        (sum(&m, "buildkit_steps_total", &[("name", &a)]), sum(&m, "buildkit_steps_total", &[("name", &b)])),
        (3.0, 3.0)
    );

    // `docker compose build` with two services: the same, named by each service's image.
    let (c, d) = (engine::unique("compose-c"), engine::unique("compose-d"));
    let context = two_targets(&engine::unique("nonce"));
    let compose = format!(
        "services:\n  c:\n    image: {c}:v1\n    build:\n      context: .\n      dockerfile: Dockerfile.a\n\
         \x20 d:\n    image: {d}:v1\n    build:\n      context: .\n      dockerfile: Dockerfile.b\n"
    );
    std::fs::write(context.path().join("compose.yaml"), compose).unwrap();
    let (ok, output, most) = run_watching(&daemon, context.path(), "docker", &["compose", "build"]).await;
    assert!(ok, "{output}");
    daemon.counted(&c, "succeeded", 1.0).await;
    let m = daemon.counted(&d, "succeeded", 1.0).await;
    assert_eq!(most, 2.0, "both services were seen building at once");
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[]), Some(4.0));
    assert_eq!(
        (sum(&m, "buildkit_steps_total", &[("name", &c)]), sum(&m, "buildkit_steps_total", &[("name", &d)])),
        (3.0, 3.0)
    );
    daemon.stop().await;
}

/// The newest finished build of `name` in `/api/v1/builds/{ref}`, once `count` of its builds
/// have finished.
async fn newest_finished(daemon: &Daemon, name: &str, count: usize) -> serde_json::Value {
    let reference = eventually(Duration::from_secs(60), &format!("{count} builds of {name} finished"), || async {
        let (_, list) = daemon.get("/api/v1/builds").await;
        let list: serde_json::Value = serde_json::from_str(&list).ok()?;
        let builds: Vec<&serde_json::Value> =
            list["builds"].as_array()?.iter().filter(|b| b["name"] == name && b["state"] != "running").collect();
        (builds.len() == count).then(|| builds[0]["ref"].as_str().map(str::to_string))?
    })
    .await;
    let (_, one) = daemon.get(&format!("/api/v1/builds/{reference}")).await;
    serde_json::from_str(&one).unwrap()
}

/// `(step, instruction, reason, detail)` of a build's `cache_break`, or `None` when it is null.
fn cache_break(build: &serde_json::Value) -> Option<(String, String, String, Option<String>)> {
    let b = build.get("cache_break").filter(|b| !b.is_null())?;
    let text = |key: &str| b[key].as_str().unwrap_or_default().to_string();
    Some((text("step"), text("instruction"), text("reason"), b["detail"].as_str().map(str::to_string)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn each_reason_a_rebuild_left_the_cache_is_told() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("why");
    let base = engine::unique("why-base");
    let secret = engine::unique("s3cr3t-arg");
    let other = engine::unique("s3cr3t-other");
    // The base is a tag of this test's own, so that the image behind it can change.
    testkit::container_builder::docker(&["tag", "tinybase:latest", &format!("{base}:latest")]);
    let nonce = engine::unique("nonce");
    let dockerfile = |greeting: &str| {
        format!("FROM {base}:latest\nARG V\nCOPY f /f\nRUN echo {nonce} {greeting}\nRUN echo uses $V\n")
    };
    let context = Context::with_file(&dockerfile("hi"), "f", "one");
    let label = format!("{LABEL}={name}");
    let mut count = 0;
    let mut rebuild = |args: Vec<String>| {
        count += 1;
        let (context, label, tag, count) = (&context, &label, format!("{name}:latest"), count);
        let daemon = &daemon;
        let name = &name;
        async move {
            let mut all = vec!["--label".to_string(), label.clone()];
            all.extend(args);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let report = build(context, &tag, &all).await;
            assert!(report.success, "{}", report.raw);
            (newest_finished(daemon, name, count).await, report)
        }
    };
    let arg = |value: &str| vec!["--build-arg".to_string(), format!("V={value}")];
    // Each change is made after a build that kept to the cache: a break is a step that the
    // previous build took from cache.

    // A first build, and one that keeps to the cache: nothing to say.
    let (first, _) = rebuild(arg(&secret)).await;
    assert_eq!(cache_break(&first), None, "a first build: {first}");
    let (cached, report) = rebuild(arg(&secret)).await;
    assert_eq!(report.cached_steps(), 3, "{}", report.raw);
    assert_eq!(cache_break(&cached), None, "fully cached: {cached}");

    // The file the COPY reads changed (in size too: BuildKit's context transfer skips a file
    // whose size and time look unchanged).
    std::fs::write(context.path().join("f"), "two, longer").unwrap();
    let (files, _) = rebuild(arg(&secret)).await;
    // The COPY runs again; or BuildKit (0.13) calls it cached and runs the step after it.
    let copy_ran = Some(("[2/4]".into(), "COPY".into(), "files".into(), None));
    let after_copy = Some(("[3/4]".into(), "RUN".into(), "files".into(), Some("[2/4] COPY f /f".into())));
    let said = cache_break(&files);
    assert!(said == copy_ran || said == after_copy, "{files}");
    let (again, _) = rebuild(arg(&secret)).await;
    assert_eq!(cache_break(&again), None, "cached again: {again}");

    // A build-arg's value changed: the first RUN after its ARG ran, though it does not use it.
    let (changed, _) = rebuild(arg(&other)).await;
    assert_eq!(
        cache_break(&changed),
        Some(("[3/4]".into(), "RUN".into(), "build-arg".into(), Some("V".into()))),
        "{changed}"
    );
    rebuild(arg(&other)).await;

    // The step's text changed.
    std::fs::write(context.path().join("Dockerfile"), dockerfile("hello")).unwrap();
    let (edited, _) = rebuild(arg(&other)).await;
    let was = format!("was: RUN echo {nonce} hi");
    assert_eq!(cache_break(&edited), Some(("[3/4]".into(), "RUN".into(), "instruction".into(), Some(was))), "{edited}");
    rebuild(arg(&other)).await;

    // The build asked for no cache.
    let mut no_cache = arg(&other);
    no_cache.push("--no-cache".into());
    let (uncached, _) = rebuild(no_cache).await;
    assert_eq!(cache_break(&uncached), Some(("[2/4]".into(), "COPY".into(), "no-cache".into(), None)), "{uncached}");
    rebuild(arg(&other)).await;

    // The image behind the base's tag changed: another image, with a layer of its own (one
    // that differs only in its config keeps the cache), made by a build of its own.
    let relabeled = Context::new(&format!("FROM tinybase:latest\nRUN echo {nonce} > /variant\n"));
    let variant = engine::unique("why-variant");
    assert!(build(&relabeled, &format!("{variant}:latest"), &[]).await.success);
    testkit::container_builder::docker(&["tag", &format!("{variant}:latest"), &format!("{base}:latest")]);
    let (based, _) = rebuild(arg(&other)).await;
    let (step, instruction, reason, detail) = cache_break(&based).unwrap_or_else(|| panic!("{based}"));
    assert_eq!((step.as_str(), instruction.as_str(), reason.as_str()), ("[2/4]", "COPY", "base-image"), "{based}");
    assert!(detail.as_deref().unwrap_or_default().contains(&base), "the image as FROM names it: {based}");
    rebuild(arg(&other)).await;

    // The cache is gone (pruned by hand): nothing the builds say explains it. (With a COPY
    // first, it would look like changed files.)
    let pruned_name = engine::unique("why-pruned");
    let runs_only = Context::new(&format!("FROM {base}:latest\nRUN echo {nonce} pruned\nRUN echo after\n"));
    let pruned_label = format!("{LABEL}={pruned_name}");
    for count in [1, 2] {
        assert!(build(&runs_only, &format!("{pruned_name}:latest"), &["--label", &pruned_label]).await.success);
        assert_eq!(cache_break(&newest_finished(&daemon, &pruned_name, count).await), None);
    }
    testkit::container_builder::docker(&["builder", "prune", "--all", "--force"]);
    assert!(build(&runs_only, &format!("{pruned_name}:latest"), &["--label", &pruned_label]).await.success);
    let pruned = newest_finished(&daemon, &pruned_name, 3).await;
    assert_eq!(cache_break(&pruned), Some(("[2/3]".into(), "RUN".into(), "unknown".into(), None)), "{pruned}");

    // Counted once each, by reason; no value of a build-arg anywhere.
    let m = daemon.metrics().await;
    for reason in ["files", "build-arg", "instruction", "no-cache", "base-image", "unknown"] {
        let labels = [("builder", "default"), ("reason", reason)];
        assert_eq!(sample(&m, "buildkit_build_cache_breaks_total", &labels), Some(1.0), "{reason}: {m}");
    }
    let (_, list) = daemon.get("/api/v1/builds").await;
    for body in [&list, &m] {
        assert!(!body.contains(&secret) && !body.contains(&other), "a build-arg value leaked: {body}");
    }
    testkit::container_builder::docker(&["rmi", &format!("{base}:latest"), &format!("{variant}:latest")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn a_step_two_concurrent_builds_share_is_each_builds_own_and_runs_once() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let nonce = engine::unique("nonce");
    let (three, four) = (engine::unique("shares-three"), engine::unique("shares-four"));
    // The same first steps, so the same vertices: BuildKit runs them once for both.
    let shared = format!("FROM tinybase:latest\nRUN echo {nonce} shared && sleep 20\n");
    let first = Context::new(&format!("{shared}RUN echo three\n"));
    let second = Context::new(&format!("{shared}RUN echo four\nRUN echo four again\n"));
    let step_list = |name: String| {
        let daemon = &daemon;
        async move {
            let (_, list) = daemon.get("/api/v1/builds").await;
            let list: serde_json::Value = serde_json::from_str(&list).ok()?;
            let build = list["builds"].as_array()?.iter().find(|b| b["name"] == name.as_str())?.clone();
            Some(build)
        }
    };
    let running_a = Build::start(&first, &format!("{three}:latest"), &["--label", &format!("{LABEL}={three}")]);
    eventually(Duration::from_secs(60), "the shared step running for the first build", || async {
        let build = step_list(three.clone()).await?;
        (build["step_list"][1]["state"] == "running").then_some(())
    })
    .await;
    let running_b = Build::start(&second, &format!("{four}:latest"), &["--label", &format!("{LABEL}={four}")]);
    // While it runs: the second build's own position, marked shared, running.
    let live = eventually(Duration::from_secs(60), "the second build at the shared step", || async {
        let build = step_list(four.clone()).await?;
        (build["step_list"].as_array()?.len() == 4 && build["step_list"][1]["state"] == "running").then_some(build)
    })
    .await;
    let labels = |build: &serde_json::Value| -> Vec<String> {
        build["step_list"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(labels(&live), ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], "never another build's numbering: {live}");
    assert_eq!(live["step_list"][1]["shared"], true, "{live}");
    assert_eq!(live["current"][0]["step"], "[2/4]", "{live}");
    let (a, b) = (running_a.finish().await, running_b.finish().await);
    assert!(a.success && b.success, "{}\n{}", a.raw, b.raw);

    let m = eventually(Duration::from_secs(60), "both counted", || async {
        let m = daemon.metrics().await;
        (sum(&m, "buildkit_builds_completed_total", &[("result", "succeeded")]) == 2.0).then_some(m)
    })
    .await;
    let (one, two) = (step_list(three.clone()).await.unwrap(), step_list(four.clone()).await.unwrap());
    let (one, two) = (
        serde_json::from_str::<serde_json::Value>(
            &daemon.get(&format!("/api/v1/builds/{}", one["ref"].as_str().unwrap())).await.1,
        )
        .unwrap(),
        serde_json::from_str::<serde_json::Value>(
            &daemon.get(&format!("/api/v1/builds/{}", two["ref"].as_str().unwrap())).await.1,
        )
        .unwrap(),
    );
    assert_eq!(labels(&one), ["[1/3]", "[2/3]", "[3/3]"], "{one}");
    assert_eq!(labels(&two), ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], "{two}");
    let shared_flags = |build: &serde_json::Value| -> Vec<bool> {
        build["step_list"].as_array().unwrap().iter().map(|s| s["shared"].as_bool().unwrap()).collect()
    };
    assert!(shared_flags(&one).iter().all(|s| !s), "the first build ran them: {one}");
    assert_eq!(shared_flags(&two)[1..], [true, false, false], "{two}");
    // The shared step ran once: four RUNs timed, not five; for the second build it was reused.
    assert_eq!(sum(&m, "buildkit_step_duration_seconds_count", &[("instruction", "RUN")]), 4.0, "{m}");
    let cached = sample(&m, "buildkit_steps_cached_total", &[("name", &four)]);
    assert_eq!(cached, two["steps"]["cached"].as_f64(), "{m}");
    assert!(cached >= Some(1.0), "the shared step reused: {m}");
}
