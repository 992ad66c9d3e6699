//! End to end on a real standalone buildkitd (BuildKit v0.32.2): the exporter watching it over
//! its unix socket and over TCP with mutual TLS at once, while buildctl drives real builds;
//! every value checked against what buildctl itself saw of the same build.

use std::time::Duration;

use buildkit_exporter::source::spec::Link;
use testkit::buildkitd::{buildkitd, context, Registry, BASE, BUILDKITD, NAME_LABEL};
use testkit::engine::unique;
use testkit::metrics::{finished_builds, sample, samples, sum};
use testkit::proxy::Proxy;
use testkit::{eventually, Daemon};

const UNIX: &str = "bk-unix";
const TLS: &str = "bk-tls";

/// A daemon following the buildkitd twice, as `bk-unix` and `bk-tls`, once both are up.
async fn daemon() -> Daemon {
    let bk = buildkitd();
    let daemon = Daemon::start(&[&bk.unix_source(UNIX), &bk.tls_source(TLS, &bk.tcp)], |config| {
        config.source.usage_interval = Duration::from_secs(1);
    })
    .await;
    eventually(Duration::from_secs(30), "both sources up", || async {
        let m = daemon.metrics().await;
        (sum(&m, "buildkit_exporter_source_up", &[]) == 2.0).then_some(())
    })
    .await;
    daemon
}

/// Waits until builder `builder` counted `count` builds of `name` with `result`.
async fn counted(daemon: &Daemon, builder: &str, name: &str, result: &str, count: f64) -> String {
    eventually(Duration::from_secs(60), &format!("{builder}: {name} {result} x{count}"), || async {
        let m = daemon.metrics().await;
        let labels = [("builder", builder), ("name", name), ("result", result)];
        (sample(&m, "buildkit_builds_completed_total", &labels) == Some(count)).then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn a_live_build_then_its_cached_rebuild_seen_over_unix_and_mtls() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let daemon = daemon().await;
    let name = unique("bk-live");
    let secret = unique("s3cr3t-value");
    let dockerfile = format!(
        "{BASE}ARG TOKEN\nRUN echo {nonce} && sleep 1\nRUN echo compiling && sleep 4\nRUN echo uses $TOKEN > /token\nRUN echo done\n",
        nonce = unique("nonce")
    );
    let context = context(&dockerfile);
    let (label, arg) = (format!("label:{NAME_LABEL}={name}"), format!("build-arg:TOKEN={secret}"));
    let running = bk.build(&context, &format!("{name}:1"), &[&label, &arg]);

    // Sampled while it runs, through both links: the step it is at, what runs, for how long.
    for builder in [UNIX, TLS] {
        let m = eventually(Duration::from_secs(60), &format!("{builder}: the compiling step running"), || async {
            let m = daemon.metrics().await;
            let running = [("builder", builder), ("name", name.as_str()), ("command", "echo compiling && sleep 4")];
            (!samples(&m, "buildkit_build_step_running_info", &running).is_empty()).then_some(m)
        })
        .await;
        let labels = [("builder", builder), ("name", name.as_str())];
        assert_eq!(sample(&m, "buildkit_build_current_step", &labels), Some(4.0), "{m}");
        assert_eq!(sample(&m, "buildkit_build_steps", &labels), Some(6.0), "{m}");
        assert!(sample(&m, "buildkit_build_elapsed_seconds", &labels).unwrap() > 0.0);
        assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", builder)]), Some(1.0));
    }
    let report = running.finish().await;
    assert!(report.success, "{}", report.raw);
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &name, "succeeded", 1.0).await;
        let labels = [("builder", builder), ("name", name.as_str())];
        assert_eq!(sum(&m, "buildkit_steps_total", &labels), report.finished_steps() as f64, "{m}");
        assert_eq!(sum(&m, "buildkit_steps_cached_total", &labels), report.cached_steps() as f64);
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(1.0));
        assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", builder)]), Some(0.0));
        let info = [("builder", builder), ("buildkit_version", "v0.32.2"), ("engine_version", "")];
        assert_eq!(sample(&m, "buildkit_exporter_source_info", &info), Some(1.0), "{m}");
        assert!(!samples(&m, "buildkit_worker_info", &[("builder", builder)]).is_empty(), "{m}");
    }
    // Cache usage is read in the background: it shows the build's layers.
    eventually(Duration::from_secs(30), "cache usage read", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_cache_records", &[("builder", UNIX)]).is_some_and(|n| n > 0.0)
            && sum(&m, "buildkit_cache_bytes", &[("builder", TLS)]) > 0.0)
            .then_some(())
    })
    .await;

    // The cached rebuild: every step the client saw cached is counted as cached.
    let rebuilt = bk.run(&context, &format!("{name}:2"), &[&label, &arg]).await;
    assert!(rebuilt.success, "{}", rebuilt.raw);
    assert!(rebuilt.cached_steps() >= 5, "{}", rebuilt.raw);
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &name, "succeeded", 2.0).await;
        let labels = [("builder", builder), ("name", name.as_str())];
        let cached = (report.cached_steps() + rebuilt.cached_steps()) as f64;
        assert_eq!(sum(&m, "buildkit_steps_cached_total", &labels), cached, "{m}");
        // What the cache saved the rebuild: what its cached steps took when they first ran.
        let ran: std::collections::BTreeMap<&str, f64> = report
            .steps()
            .into_iter()
            .filter(|v| !v.cached)
            .filter_map(|v| Some((v.name.as_str(), v.completed? - v.started?)))
            .collect();
        let saved: f64 = rebuilt.steps().iter().filter(|v| v.cached).filter_map(|v| ran.get(v.name.as_str())).sum();
        assert!(saved > 5.0, "the steps that sleep came from cache: {saved}");
        let counted = sample(&m, "buildkit_build_cache_saved_seconds_total", &labels).unwrap();
        assert!((counted - saved).abs() < 0.01, "{builder}: cache saved {counted} s, buildctl saw {saved} s");
    }

    // The build-arg's value is nowhere: not in metrics, the JSON, the sources or the page.
    let m = daemon.metrics().await;
    assert!(!m.contains(&secret), "the secret leaked into /metrics");
    for path in ["/api/v1/builds", "/api/v1/sources", "/"] {
        let (status, body) = daemon.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains(&secret), "the secret leaked into {path}");
    }
    let (_, list) = daemon.get("/api/v1/builds").await;
    assert!(list.contains("\"TOKEN\""), "the build-arg's name is shown: {list}");
    let (_, sources) = daemon.get("/api/v1/sources").await;
    let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
    let sources = sources["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{sources:?}");
    for source in sources {
        assert_eq!(source["up"], true, "{source}");
        assert_eq!(source["buildkit"]["version"], "v0.32.2", "{source}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn failed_canceled_and_concurrent_builds_counted_exactly() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let daemon = daemon().await;
    let nonce = unique("nonce");

    // Named from the image it exports, no label: the record carries the name from the start.
    let failing = unique("bk-fails");
    let report = bk.run(&context(&format!("{BASE}RUN echo {nonce}\nRUN false\n")), &format!("{failing}:1"), &[]).await;
    assert!(!report.success);
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &failing, "failed", 1.0).await;
        assert_eq!(sum(&m, "buildkit_steps_failed_total", &[("builder", builder), ("name", &failing)]), 1.0, "{m}");
    }
    // Where it failed: buildkitd keeps that in the record's error blob, read from its content
    // store, over each link.
    for builder in [UNIX, TLS] {
        let error = eventually(Duration::from_secs(15), &format!("{builder}: where {failing} failed"), || async {
            let (_, list) = daemon.get("/api/v1/builds").await;
            let list: serde_json::Value = serde_json::from_str(&list).ok()?;
            let build =
                list["builds"].as_array()?.iter().find(|b| b["name"] == failing.as_str() && b["builder"] == builder)?;
            build["error"].get("location").map(|_| build["error"].clone())
        })
        .await;
        assert_eq!(
            error["location"],
            serde_json::json!({"file": "Dockerfile", "line": 6, "text": "RUN false"}),
            "{error}"
        );
        assert_eq!(error["exit_code"], 1, "{error}");
        let m = daemon.metrics().await;
        let labels =
            [("builder", builder), ("name", failing.as_str()), ("location", "Dockerfile:6"), ("exit_code", "1")];
        assert_eq!(sample(&m, "buildkit_build_last_failure_info", &labels), Some(1.0), "{m}");
    }

    let canceled = unique("bk-canceled");
    // The context is read while the build runs: it must outlive the client.
    let long = context(&format!("{BASE}RUN echo {nonce} started && sleep 60\n"));
    let running = bk.build(&long, &format!("{canceled}:1"), &[]);
    running.wait_printed(&format!("{nonce} started")).await;
    running.interrupt();
    assert!(!running.finish().await.success);
    for builder in [UNIX, TLS] {
        counted(&daemon, builder, &canceled, "canceled", 1.0).await;
    }

    let (first, second) = (unique("bk-first"), unique("bk-second"));
    let one = context(&format!("{BASE}RUN echo {nonce} one && sleep 2\n"));
    let two = context(&format!("{BASE}RUN echo {nonce} two && sleep 2\nRUN echo more\n"));
    let (a, b) = (bk.build(&one, &format!("{first}:1"), &[]), bk.build(&two, &format!("{second}:1"), &[]));
    let (a, b) = tokio::join!(a.finish(), b.finish());
    assert!(a.success && b.success, "{}\n{}", a.raw, b.raw);
    for builder in [UNIX, TLS] {
        counted(&daemon, builder, &first, "succeeded", 1.0).await;
        let m = counted(&daemon, builder, &second, "succeeded", 1.0).await;
        assert_eq!(
            sum(&m, "buildkit_steps_total", &[("builder", builder), ("name", &second)]),
            b.finished_steps() as f64
        );
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(4.0), "{m}");
        for name in [&failing, &canceled, &first, &second] {
            assert_eq!(finished_builds(&m, name), 2.0, "{name} once per builder:\n{m}");
        }
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn buildkitd_killed_mid_build_and_started_again() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let daemon = daemon().await;
    let name = unique("bk-killed");
    let nonce = unique("nonce");
    let long = context(&format!("{BASE}RUN echo {nonce} && sleep 60\n"));
    let running = bk.build(&long, &format!("{name}:1"), &[]);
    running.wait_printed(&nonce).await;
    bk.kill_and_restart().await;
    assert!(!running.finish().await.success, "the client sees its build fail");
    // No record of a build its buildkitd died under: it is counted as failed, once per builder,
    // as a build an engine restart took.
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &name, "failed", 1.0).await;
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(1.0), "{m}");
        assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", builder)]), Some(0.0));
        assert!(sample(&m, "buildkit_exporter_source_reconnects_total", &[("builder", builder)]).unwrap() >= 1.0);
    }
    let (_, list) = daemon.get("/api/v1/builds").await;
    assert!(list.contains("vanished from the engine's history"), "{list}");
    eventually(Duration::from_secs(30), "both sources up again", || async {
        (sum(&daemon.metrics().await, "buildkit_exporter_source_up", &[]) == 2.0).then_some(())
    })
    .await;
    // Over the unix socket the kernel names another buildkitd process: a restart. Over TCP
    // nothing tells a restart from a broken link, so none is claimed.
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_restarts_total", &[("builder", UNIX)]), Some(1.0), "{m}");
    assert_eq!(sample(&m, "buildkit_exporter_source_restarts_total", &[("builder", TLS)]), Some(0.0), "{m}");
    // It builds again, and the replays after the restart count nothing twice.
    let after = unique("bk-after");
    assert!(bk.run(&context(&format!("{BASE}RUN echo {nonce} after\n")), &format!("{after}:1"), &[]).await.success);
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &after, "succeeded", 1.0).await;
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(2.0), "{m}");
        assert_eq!(finished_builds(&m, &name), 2.0, "{m}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn a_build_through_buildx_remote_driver() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let daemon = daemon().await;
    let name = unique("bk-buildx");
    let builder = bk.remote_builder(&unique("remote"));
    let context = context(&format!("{BASE}RUN echo {} && sleep 1\nRUN echo two\n", unique("nonce")));
    let label = format!("{NAME_LABEL}={name}");
    // No output: the result stays in buildkitd's cache, as buildx warns.
    let report = bk.buildx(&builder.0, &context, &["--label", &label]).finish().await;
    assert!(report.success, "{}", report.raw);
    for builder in [UNIX, TLS] {
        let m = counted(&daemon, builder, &name, "succeeded", 1.0).await;
        let labels = [("builder", builder), ("name", name.as_str())];
        assert_eq!(sum(&m, "buildkit_steps_total", &labels), report.finished_steps() as f64, "{m}");
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(1.0), "{m}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn the_tls_link_cut_and_restored_loses_and_doubles_nothing() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    // The proxy carries the TLS records as they are: the handshake is with buildkitd.
    let mut proxy = Proxy::start_tcp(&bk.tcp);
    let daemon = Daemon::start(&[&bk.tls_source(TLS, &proxy.tcp_address())], |config| {
        // A dead link noticed within about 3 s, and tried again every second.
        config.source.link = Link {
            keepalive: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            retry_max: Duration::from_secs(1),
        };
    })
    .await;
    daemon.source_up(true, Duration::from_secs(30)).await;
    let nonce = unique("nonce");

    // One build runs across the cut: seen running through the link, it ends while the link is
    // down...
    let across = unique("bk-across");
    let long = context(&format!("{BASE}RUN echo {nonce} across && sleep 6\nRUN echo after\n"));
    let running = bk.build(&long, &format!("{across}:1"), &[]);
    daemon.running_at(&across, 2.0).await;
    let accepted = proxy.accepted();
    proxy.cut();
    daemon.source_up(false, Duration::from_secs(30)).await;
    let (_, sources) = daemon.get("/api/v1/sources").await;
    let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
    assert!(sources["sources"][0]["reason"].is_string(), "a down source says why: {sources}");
    // ...and another starts and ends while it is down.
    let during = unique("bk-during");
    let short = context(&format!("{BASE}RUN echo {nonce} during\n"));
    assert!(bk.run(&short, &format!("{during}:1"), &[]).await.success);
    assert!(running.finish().await.success);

    proxy.restore();
    daemon.source_up(true, Duration::from_secs(30)).await;
    assert!(proxy.accepted() > accepted, "the daemon dialled through the proxy again");
    for name in [&across, &during] {
        daemon.counted(name, "succeeded", 1.0).await;
    }
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", TLS)]), Some(2.0), "{m}");
    assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", TLS)]), Some(0.0), "{m}");
    for name in [&across, &during] {
        assert_eq!(finished_builds(&m, name), 1.0, "{name} counted once:\n{m}");
    }
    assert!(sample(&m, "buildkit_exporter_source_reconnects_total", &[("builder", TLS)]).unwrap() >= 1.0, "{m}");
    let (_, list) = daemon.get("/api/v1/builds").await;
    assert!(!list.contains("vanished from the engine"), "no build was lost: {list}");

    // Live again: the next build is seen as it happens, and nothing is counted twice.
    let after = unique("bk-after");
    assert!(bk.run(&context(&format!("{BASE}RUN echo {nonce} next\n")), &format!("{after}:1"), &[]).await.success);
    let m = daemon.counted(&after, "succeeded", 1.0).await;
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", TLS)]), Some(3.0), "{m}");
    assert_eq!(finished_builds(&m, &across), 1.0, "{m}");
    daemon.stop().await;
}

/// `(step, instruction, reason, detail)` of the cache break of the newest finished build of
/// `name` on `builder`, once `count` of its builds have finished there.
async fn cache_break(
    daemon: &Daemon,
    builder: &str,
    name: &str,
    count: usize,
) -> Option<(String, String, String, Option<String>)> {
    let build = eventually(Duration::from_secs(60), &format!("{builder}: {count} builds of {name}"), || async {
        let (_, list) = daemon.get("/api/v1/builds").await;
        let list: serde_json::Value = serde_json::from_str(&list).ok()?;
        let builds: Vec<&serde_json::Value> = list["builds"]
            .as_array()?
            .iter()
            .filter(|b| b["name"] == name && b["builder"] == builder && b["state"] != "running")
            .collect();
        (builds.len() == count).then(|| builds[0].clone())
    })
    .await;
    let b = build.get("cache_break").filter(|b| !b.is_null())?;
    let text = |key: &str| b[key].as_str().unwrap_or_default().to_string();
    Some((text("step"), text("instruction"), text("reason"), b["detail"].as_str().map(str::to_string)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn each_reason_a_rebuild_left_the_cache_is_told() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let registry = Registry::start().await;
    let daemon = daemon().await;
    let name = unique("bk-why");
    let nonce = unique("nonce");
    let (secret, other) = (unique("s3cr3t-arg"), unique("s3cr3t-other"));
    // The base comes from a registry, so that the image behind its tag can change.
    let base = format!("{}/{}:latest", registry.address, unique("bk-why-base"));
    bk.push(&context("FROM scratch\nCOPY busybox /bin/busybox\n"), &base).await;
    let dockerfile = |greeting: &str| {
        format!(
            "FROM {base}\nSHELL [\"/bin/busybox\", \"sh\", \"-c\"]\nARG V\nCOPY f /f\n\
             RUN /bin/busybox echo {nonce} {greeting}\nRUN /bin/busybox echo uses $V\n"
        )
    };
    let build_context = context(&dockerfile("hi"));
    std::fs::write(build_context.path().join("f"), "one").unwrap();
    let mut count = 0;
    // Builds once more; returns the cache break each link saw, which must be the same.
    let mut rebuild = |options: Vec<String>| {
        count += 1;
        let (bk, daemon, name, build_context, count) = (&bk, &daemon, &name, &build_context, count);
        async move {
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            let report = bk.run(build_context, &format!("{name}:1"), &options).await;
            assert!(report.success, "{}", report.raw);
            let unix = cache_break(daemon, UNIX, name, count).await;
            assert_eq!(cache_break(daemon, TLS, name, count).await, unix, "both links say the same");
            unix
        }
    };
    let arg = |value: &str| vec![format!("build-arg:V={value}")];

    assert_eq!(rebuild(arg(&secret)).await, None, "a first build");
    assert_eq!(rebuild(arg(&secret)).await, None, "fully cached");

    std::fs::write(build_context.path().join("f"), "two, longer").unwrap();
    let files = rebuild(arg(&secret)).await;
    let after_copy = Some(("[3/4]".into(), "RUN".into(), "files".into(), Some("[2/4] COPY f /f".into())));
    assert!(files == Some(("[2/4]".into(), "COPY".into(), "files".into(), None)) || files == after_copy, "{files:?}");
    assert_eq!(rebuild(arg(&secret)).await, None);

    let changed = rebuild(arg(&other)).await;
    assert_eq!(changed, Some(("[3/4]".into(), "RUN".into(), "build-arg".into(), Some("V".into()))));
    assert_eq!(rebuild(arg(&other)).await, None);

    std::fs::write(build_context.path().join("Dockerfile"), dockerfile("hello")).unwrap();
    let was = format!("was: RUN /bin/busybox echo {nonce} hi");
    assert_eq!(rebuild(arg(&other)).await, Some(("[3/4]".into(), "RUN".into(), "instruction".into(), Some(was))));
    assert_eq!(rebuild(arg(&other)).await, None);

    // `buildctl build --no-cache` sets this attribute.
    let mut no_cache = arg(&other);
    no_cache.push("no-cache=".into());
    assert_eq!(rebuild(no_cache).await, Some(("[2/4]".into(), "COPY".into(), "no-cache".into(), None)));
    assert_eq!(rebuild(arg(&other)).await, None);

    // Another image pushed behind the base's tag: FROM now names another digest.
    bk.push(&context(&format!("FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /{nonce}\n")), &base).await;
    let (step, instruction, reason, detail) = rebuild(arg(&other)).await.expect("a break");
    assert_eq!((step.as_str(), instruction.as_str(), reason.as_str()), ("[2/4]", "COPY", "base-image"));
    let detail = detail.unwrap_or_default();
    assert!(detail.starts_with(&format!("{base}@sha256:")), "the image as FROM names it now: {detail}");

    // The cache pruned (by hand): nothing the builds say explains it. A Dockerfile without a
    // COPY, whose rerun would look like changed files.
    let pruned = unique("bk-why-pruned");
    let runs_only = context(&format!(
        "FROM {base}\nSHELL [\"/bin/busybox\", \"sh\", \"-c\"]\nRUN /bin/busybox echo {nonce} pruned\nRUN /bin/busybox echo after\n"
    ));
    for count in [1, 2] {
        assert!(bk.run(&runs_only, &format!("{pruned}:1"), &[]).await.success);
        assert_eq!(cache_break(&daemon, UNIX, &pruned, count).await, None);
    }
    let status = std::process::Command::new(&bk.buildctl)
        .arg("--addr")
        .arg(format!("unix://{}", bk.socket.display()))
        .args(["prune", "--all"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "buildctl prune");
    assert!(bk.run(&runs_only, &format!("{pruned}:1"), &[]).await.success);
    assert_eq!(
        cache_break(&daemon, UNIX, &pruned, 3).await,
        Some(("[2/3]".into(), "RUN".into(), "unknown".into(), None))
    );

    // Every reason once on each link.
    let m = daemon.metrics().await;
    for builder in [UNIX, TLS] {
        for (reason, count) in [
            ("files", 1.0),
            ("build-arg", 1.0),
            ("instruction", 1.0),
            ("no-cache", 1.0),
            ("base-image", 1.0),
            ("unknown", 1.0),
        ] {
            let labels = [("builder", builder), ("reason", reason)];
            assert_eq!(
                sample(&m, "buildkit_build_cache_breaks_total", &labels),
                Some(count),
                "{builder} {reason}: {m}"
            );
        }
    }
    let (_, list) = daemon.get("/api/v1/builds").await;
    for body in [&list, &m] {
        assert!(!body.contains(&secret) && !body.contains(&other), "a build-arg value leaked: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn a_step_two_concurrent_builds_share_is_each_builds_own_and_runs_once() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let registry = Registry::start().await;
    let daemon = daemon().await;
    let nonce = unique("nonce");
    // From a registry's image, not the build context: a context's vertices differ per build.
    let base = format!("{}/{}:latest", registry.address, unique("bk-shared-base"));
    bk.push(&context("FROM scratch\nCOPY busybox /bin/busybox\n"), &base).await;
    let shared = format!(
        "FROM {base}\nSHELL [\"/bin/busybox\", \"sh\", \"-c\"]\nRUN /bin/busybox echo {nonce} shared && /bin/busybox sleep 20\n"
    );
    let (three, four) = (unique("bk-shares-three"), unique("bk-shares-four"));
    let first = context(&format!("{shared}RUN /bin/busybox echo three\n"));
    let second = context(&format!("{shared}RUN /bin/busybox echo four\nRUN /bin/busybox echo four again\n"));
    let build_of = |name: String| {
        let daemon = &daemon;
        async move {
            let (_, list) = daemon.get("/api/v1/builds").await;
            let list: serde_json::Value = serde_json::from_str(&list).ok()?;
            list["builds"].as_array()?.iter().find(|b| b["name"] == name.as_str() && b["builder"] == UNIX).cloned()
        }
    };
    let running_a = bk.build(&first, &format!("{three}:1"), &[]);
    eventually(Duration::from_secs(60), "the shared step running for the first build", || async {
        (build_of(three.clone()).await?["step_list"][1]["state"] == "running").then_some(())
    })
    .await;
    let running_b = bk.build(&second, &format!("{four}:1"), &[]);
    let live = eventually(Duration::from_secs(60), "the second build at the shared step", || async {
        let build = build_of(four.clone()).await?;
        (build["step_list"].as_array()?.len() == 4 && build["step_list"][1]["state"] == "running").then_some(build)
    })
    .await;
    let labels = |build: &serde_json::Value| -> Vec<String> {
        build["step_list"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(labels(&live), ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], "{live}");
    assert_eq!(live["step_list"][1]["shared"], true, "{live}");
    let (a, b) = (running_a.finish().await, running_b.finish().await);
    assert!(a.success && b.success, "{}\n{}", a.raw, b.raw);
    for builder in [UNIX, TLS] {
        counted(&daemon, builder, &three, "succeeded", 1.0).await;
        counted(&daemon, builder, &four, "succeeded", 1.0).await;
    }
    let m = daemon.metrics().await;
    for builder in [UNIX, TLS] {
        // Four RUNs timed, not five: the shared one ran once.
        let runs = sum(&m, "buildkit_step_duration_seconds_count", &[("builder", builder), ("instruction", "RUN")]);
        assert_eq!(runs, 4.0, "{builder}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a standalone buildkitd: run scripts/test.sh"]
async fn a_step_slower_than_usual_is_said_while_it_runs_and_after() {
    let _bk = BUILDKITD.lock().await;
    let bk = buildkitd();
    let daemon = daemon().await;
    let name = unique("bk-slow-step");
    let label = format!("label:{NAME_LABEL}={name}");
    // The same step text both times: only the file it reads differs (1 s, then 22 s).
    let dockerfile = format!("{BASE}RUN echo {}\nCOPY seconds /seconds\nRUN sleep $(cat /seconds)\n", unique("nonce"));
    let sleeping_for = |seconds: &str| {
        let context = context(&dockerfile);
        std::fs::write(context.path().join("seconds"), seconds).unwrap();
        context
    };
    let quick = bk.run(&sleeping_for("1"), &format!("{name}:1"), &[&label]).await;
    assert!(quick.success, "{}", quick.raw);
    let usual =
        quick.steps().iter().find(|v| v.name.contains("RUN sleep")).and_then(|v| Some(v.completed? - v.started?));
    let usual = usual.expect("the quick build ran its sleeping step");
    counted(&daemon, UNIX, &name, "succeeded", 1.0).await;
    let slow_context = sleeping_for("22");
    let slow = bk.build(&slow_context, &format!("{name}:1"), &[&label]);

    // While it runs: its usual time exported, then, past twice that and 10 s more, said.
    let build_of = || async {
        let (_, list) = daemon.get("/api/v1/builds").await;
        let list: serde_json::Value = serde_json::from_str(&list).ok()?;
        list["builds"].as_array()?.iter().find(|b| b["name"] == name.as_str() && b["builder"] == UNIX).cloned()
    };
    let said = eventually(Duration::from_secs(60), "the sleeping step slower than usual", || async {
        let build = build_of().await.filter(|b| b["state"] == "running")?;
        let current = build["current"].as_array()?.first()?.clone();
        (current["slower_than_usual"] == true).then_some((build, current))
    })
    .await;
    let (running, current) = said;
    assert!((current["usual_seconds"].as_f64().unwrap() - usual).abs() < 0.001, "{current}, the client saw {usual} s");
    let m = daemon.metrics().await;
    let reference = running["ref"].as_str().unwrap();
    let exported = sample(&m, "buildkit_build_step_running_expected_seconds", &[("builder", UNIX), ("ref", reference)]);
    assert!((exported.unwrap() - usual).abs() < 0.001, "{m}");
    let report = slow.finish().await;
    assert!(report.success, "{}", report.raw);

    // Finished: still slower than usual, that step only.
    let done = eventually(Duration::from_secs(60), "the slow build finished", || async {
        build_of().await.filter(|b| b["state"] == "succeeded" && b["ref"] == reference)
    })
    .await;
    let (_, detail) = daemon.get(&format!("/api/v1/builds/{}", done["ref"].as_str().unwrap())).await;
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    let slower: Vec<&str> = detail["step_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["slower_than_usual"] == true)
        .map(|s| s["command"].as_str().unwrap())
        .collect();
    assert_eq!(slower, ["sleep $(cat /seconds)"], "{detail}");
}
