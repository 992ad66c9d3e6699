//! A fleet, end to end: one daemon follows at once a real Docker Engine, a buildx container
//! builder on it, and two real standalone buildkitds (v0.32.2) named in a sources file that
//! changes while it runs. A build on each at the same time is counted once, under its own
//! builder; a bad line is an error for that line alone; a line added is watched, and a line
//! removed leaves without ever being down.

use std::path::Path;
use std::time::Duration;

use buildkit_exporter::config::SourceFile;
use testkit::buildkitd::{buildkitd, context, OtherBuildkitd, BASE, BUILDKITD};
use testkit::container_builder::ContainerBuilder;
use testkit::engine::{self, unique, Context, ENGINE, NAME_LABEL};
use testkit::metrics::sample;
use testkit::{eventually, Daemon};

/// Replaces `file` with `text` at once, as config management and ConfigMaps do (a rename).
fn replace(file: &Path, text: &str) {
    let next = file.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, file).unwrap();
}

/// `/api/v1/sources` as JSON.
async fn sources(daemon: &Daemon) -> serde_json::Value {
    let (status, body) = daemon.get("/api/v1/sources").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Whether `builders`, and only they, are the daemon's sources, all up.
fn all_up(sources: &serde_json::Value, builders: &[&str]) -> bool {
    let list = sources["sources"].as_array().unwrap();
    let mut names: Vec<&str> = list.iter().filter(|s| s["up"] == true).filter_map(|s| s["builder"].as_str()).collect();
    names.sort_unstable();
    let mut want = builders.to_vec();
    want.sort_unstable();
    list.len() == builders.len() && names == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker Engine, buildx and a standalone buildkitd: run scripts/test.sh"]
async fn one_daemon_follows_an_engine_its_container_builder_and_two_buildkitds_from_a_changing_file() {
    let _engine = ENGINE.lock().await;
    let _buildkitd = BUILDKITD.lock().await;
    let (farm1, farm2) = (buildkitd(), OtherBuildkitd::start().await);
    let farm2 = &farm2.buildkitd;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sources");
    let farm1_line = farm1.unix_source("farm-1");
    replace(&file, &format!("# the build farm\n{farm1_line}\nfarm-x=ftp://nowhere\n"));
    let builder = ContainerBuilder::create(&unique("fleet"));
    let container_builder = format!("default/{}", builder.name);
    let daemon = Daemon::start(&[&engine::source()], |config| {
        config.source_file = Some(SourceFile { path: file.clone(), docker_tls: Default::default() });
    })
    .await;

    // The engine, its container builder and the file's good line; the bad line said, alone.
    let first = eventually(Duration::from_secs(30), "engine, container builder and farm-1 up", || async {
        let s = sources(&daemon).await;
        all_up(&s, &["default", &container_builder, "farm-1"]).then_some(s)
    })
    .await;
    let errors = first["file_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{first}");
    let error = errors[0].as_str().unwrap();
    assert!(error.starts_with(&format!("{}:3: ", file.display())) && error.contains("unknown scheme"), "{error}");
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_file_errors", &[]), Some(1.0), "{m}");

    // The file changes: the second buildkitd over mutual TLS, the bad line gone.
    let farm2_line = farm2.tls_source("farm-2", &farm2.tcp);
    replace(&file, &format!("{farm1_line}\n{farm2_line}\n"));
    eventually(Duration::from_secs(30), "farm-2 up and no bad line", || async {
        let s = sources(&daemon).await;
        (all_up(&s, &["default", &container_builder, "farm-1", "farm-2"]) && s["file_errors"] == serde_json::json!([]))
            .then_some(())
    })
    .await;
    let m = daemon.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_file_errors", &[]), Some(0.0), "{m}");
    let engine_started = sample(&m, "buildkit_builds_started_total", &[("builder", "default")]).unwrap();

    // A build on each of the four at the same time: each counted once, under its own builder.
    let names: Vec<String> = (0..4).map(|i| unique(&format!("fleet-{i}"))).collect();
    let nonce = unique("nonce");
    let engine_context = Context::new(&format!("FROM tinybase:latest\nRUN echo {nonce} && sleep 2\n"));
    let bare_context = context(&format!("{BASE}RUN echo {nonce} && sleep 2\n"));
    let label = |name: &str| format!("{NAME_LABEL}={name}");
    let (l0, l1, l2, l3) = (label(&names[0]), label(&names[1]), label(&names[2]), label(&names[3]));
    let builds = [
        engine::Build::start(&engine_context, "", &["--label", &l0]),
        builder.build(&bare_context, &["--label", &l1]),
        farm1.build(&bare_context, &names[2], &[&format!("label:{l2}")]),
        farm2.build(&bare_context, &names[3], &[&format!("label:{l3}")]),
    ];
    for build in builds {
        let report = build.finish().await;
        assert!(report.success, "{}", report.raw);
    }
    let m = eventually(Duration::from_secs(60), "the four builds counted", || async {
        let m = daemon.metrics().await;
        let done = |name: &str| testkit::metrics::finished_builds(&m, name) == 1.0;
        names.iter().all(|n| done(n)).then_some(m)
    })
    .await;
    let builders = ["default", container_builder.as_str(), "farm-1", "farm-2"];
    for (name, builder) in names.iter().zip(builders) {
        let done = [("builder", builder), ("name", name.as_str()), ("result", "succeeded")];
        assert_eq!(sample(&m, "buildkit_builds_completed_total", &done), Some(1.0), "{builder}: {m}");
        assert_eq!(sample(&m, "buildkit_builds_running", &[("builder", builder)]), Some(0.0));
    }
    for builder in &builders[1..] {
        assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", builder)]), Some(1.0), "{builder}");
    }
    assert_eq!(sample(&m, "buildkit_builds_started_total", &[("builder", "default")]), Some(engine_started + 1.0));

    // farm-1 taken out of the file: gone from every view, never down on the way.
    let watch = daemon.watch_downs();
    replace(&file, &format!("{farm2_line}\n"));
    eventually(Duration::from_secs(10), "farm-1 gone", || async {
        let m = daemon.metrics().await;
        (all_up(&sources(&daemon).await, &["default", &container_builder, "farm-2"])
            && !m.contains("builder=\"farm-1\""))
        .then_some(())
    })
    .await;
    let downs = watch.stop().await;
    assert!(downs.is_empty(), "reported down while farm-1 left: {downs:?}");
    daemon.stop().await;
    builder.remove();
}
