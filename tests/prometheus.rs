//! A real Prometheus 3 scraping the real exporter during real builds on a real engine, with the
//! alert rules loaded: every query of the dashboard returns data, the data is the builds', the
//! stalled, slow and failed alerts fire and resolve, no other alert fires, and `promtool check
//! metrics` of both Prometheus releases finds nothing in what the exporter serves meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::buildkitd::{buildkitd, context, BASE, BUILDKITD};
use testkit::dashboard::{dashboard, queries, METRICS};
use testkit::engine::{self, build, Build, Context, ENGINE};
use testkit::metrics::sample;
use testkit::prometheus::{Alert, Prometheus, Sample, Version};
use testkit::{eventually, read_repo_file, Daemon};

const RULES: &str = "deploy/prometheus/rules.yml";
const LABEL: &str = "org.opencontainers.image.title";
/// The job name the rules, the compose stack and the Kubernetes Service agree on.
const JOB: &str = "buildkit-exporter";
/// Where users would reach the exporter, for the links in alerts.
const EXTERNAL_URL: &str = "https://builds.example.com";

/// The rules file with thresholds replaced: `(record name, value)`. Only the thresholds group
/// changes; a name that is not there fails the test.
fn with_thresholds(rules: &str, values: &[(&str, f64)]) -> String {
    let mut lines: Vec<String> = rules.lines().map(str::to_string).collect();
    for (record, value) in values {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("- record: {record}"))
            .unwrap_or_else(|| panic!("{RULES} has no threshold {record}"));
        let expr = &mut lines[at + 1];
        assert!(expr.trim().starts_with("expr: vector("), "{record} is not a constant: {expr}");
        let indent = &expr[..expr.len() - expr.trim_start().len()];
        *expr = format!("{indent}expr: vector({value})");
    }
    lines.join("\n") + "\n"
}

/// Grafana's variables as the test sends them: every builder and name, a few minutes of range.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$instance", ".*")
        .replace("$builder", ".*")
        .replace("$name", ".*")
        .replace("$__rate_interval", "3m")
        .replace("$__interval", "1m")
        .replace("$__range", "10m");
    assert!(!out.contains('$'), "unknown variable left in {out}");
    out
}

/// Thresholds shortened for the test, through the one place they live.
const STALL_SECONDS: f64 = 5.0;
const TEST_THRESHOLDS: &[(&str, f64)] = &[
    ("buildkit:threshold:build_stalled_seconds", STALL_SECONDS),
    ("buildkit:threshold:build_slower_factor", 2.0),
    ("buildkit:threshold:build_slower_min_seconds", 5.0),
];
/// Seconds of the long step of the build that gets an estimate: its second build must still be
/// in that step when the panels are queried, and its first one runs beside the builds before.
const ETA_TICKS: u32 = 20;

fn label_args(name: &str) -> [String; 2] {
    ["--label".to_string(), format!("{LABEL}={name}")]
}

async fn run_build(context: &Context, name: &str, extra: &[&str]) -> engine::BuildReport {
    let [flag, label] = label_args(name);
    let mut args = vec![flag.as_str(), label.as_str()];
    args.extend_from_slice(extra);
    build(context, &format!("{name}:latest"), &args).await
}

/// Waits until Prometheus has scraped `count` completed builds of `name` with `result`.
async fn scraped(prom: &Prometheus, name: &str, result: &str, count: f64) {
    let expr = format!(r#"buildkit_builds_completed_total{{name="{name}",result="{result}"}}"#);
    eventually(Duration::from_secs(20), &format!("Prometheus sees {count} {result} build(s) of {name}"), || async {
        prom.query(&expr).await.first().is_some_and(|s| s.value == count).then_some(())
    })
    .await;
}

/// Waits until `alertname` fires for build `name`.
async fn firing(prom: &Prometheus, alertname: &str, name: &str, timeout: Duration) -> Alert {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let alerts = prom.alerts().await;
        let found = alerts.iter().find(|a| {
            a.name() == alertname && a.state == "firing" && a.labels.get("name").map(String::as_str) == Some(name)
        });
        if let Some(alert) = found {
            return alert.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {alertname} firing for {name}; alerts now: {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn finite(samples: &[Sample]) -> bool {
    samples.iter().any(|s| s.value.is_finite())
}

/// The one sample of `name`'s build in a query's result.
fn of<'a>(samples: &'a [Sample], name: &str) -> &'a Sample {
    let found: Vec<&Sample> =
        samples.iter().filter(|s| s.labels.get("name").map(String::as_str) == Some(name)).collect();
    assert_eq!(found.len(), 1, "one sample of {name} expected in {samples:#?}");
    found[0]
}

/// On Prometheus 3 only: real builds are the slow part, and Prometheus 2 has the cheap tests.
mod dashboard_and_alerts_on_real_builds {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Docker engine and Prometheus 3: run scripts/test.sh"]
    async fn prometheus_3() {
        super::dashboard_and_alerts_on_real_builds(Version::V3).await
    }
}

async fn dashboard_and_alerts_on_real_builds(version: Version) {
    let _engine = ENGINE.lock().await;
    let started = Instant::now();

    // Alerts link to builds' pages under the URL users reach the exporter at.
    let daemon = Daemon::start(&[&engine::source()], |c| c.web.external_url = Some(EXTERNAL_URL.to_string())).await;
    eventually(Duration::from_secs(20), "source up", || async {
        (sample(&daemon.metrics().await, "buildkit_exporter_source_up", &[]) == Some(1.0)).then_some(())
    })
    .await;

    // A build runs to the end beside the builds below, so that the same Dockerfile built again
    // later has an estimate (steps match by stage and instruction text). Its long step prints
    // every second: it is neither stalled nor, while it keeps to its first duration, slow.
    let eta = engine::unique("dash-eta");
    let eta_context = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 1\n\
         RUN for i in $(seq 1 {ETA_TICKS}); do echo tick $i; sleep 1; done\nRUN echo packaged && sleep 1\n",
        engine::unique("nonce")
    ));
    let [flag, label] = label_args(&eta);
    let learning = Build::start(&eta_context, &format!("{eta}:latest"), &[&flag, &label]);

    let rules = with_thresholds(&read_repo_file(RULES), TEST_THRESHOLDS);
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
         rule_files: [rules.yml]\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs: [{{targets: ['{}']}}]\n",
        daemon.addr
    );
    let prom = Prometheus::start_on(version, &config, &[("rules.yml", &rules)]).await;
    eventually(Duration::from_secs(20), "Prometheus scrapes the exporter", || async {
        let up = prom.query(&format!(r#"up{{job="{JOB}"}} == 1"#)).await;
        let source = prom.query("buildkit_exporter_source_up == 1").await;
        (!up.is_empty() && !source.is_empty()).then_some(())
    })
    .await;
    let stall = prom.query("buildkit:threshold:build_stalled_seconds").await;
    assert_eq!(stall.first().map(|s| s.value), Some(STALL_SECONDS), "shortened thresholds loaded: {}", prom.log());

    let app = engine::unique("dash-app");
    let broken = engine::unique("dash-broken");
    let silent = engine::unique("dash-silent");
    let chatty = engine::unique("dash-chatty");

    // A multi-step build, its cached rebuild, and a rebuild after a change (its last step runs
    // again, the rest comes from cache).
    let context = Context::new(&format!(
        "FROM tinybase:latest\nWORKDIR /app\nRUN echo {} dependencies && sleep 1\nCOPY requirements.txt /app/\n\
         RUN echo compile && sleep 1\nARG VERSION=1\nRUN echo test $VERSION && sleep 1\n",
        engine::unique("nonce")
    ));
    // Each is scraped before the next starts, as builds minutes apart would be.
    let first = run_build(&context, &app, &["--build-arg", "VERSION=1"]).await;
    assert!(first.success, "{}", first.raw);
    assert_eq!(first.steps().len(), 6, "{}", first.raw);
    scraped(&prom, &app, "succeeded", 1.0).await;
    let cached = run_build(&context, &app, &["--build-arg", "VERSION=1"]).await;
    assert!(cached.success && cached.cached_steps() >= 5, "{}", cached.raw);
    scraped(&prom, &app, "succeeded", 2.0).await;
    let changed = run_build(&context, &app, &["--build-arg", "VERSION=2"]).await;
    let ran: Vec<&str> = changed.steps().into_iter().filter(|v| !v.cached).map(|v| v.name.as_str()).collect();
    assert!(
        changed.success && changed.cached_steps() >= 4 && ran.contains(&"[6/6] RUN echo test 2 && sleep 1"),
        "{ran:?}"
    );
    scraped(&prom, &app, "succeeded", 3.0).await;
    // The rebuild after the change left the cache where the changed build-arg shows.
    let (_, builds) = daemon.get("/api/v1/builds").await;
    let builds: serde_json::Value = serde_json::from_str(&builds).unwrap();
    let rebuilt = builds["builds"].as_array().unwrap().iter().find(|b| b["name"] == app.as_str()).unwrap();
    assert_eq!(
        rebuilt["cache_break"],
        serde_json::json!({"step": "[6/6]", "instruction": "RUN", "reason": "build-arg", "detail": "VERSION"}),
        "{rebuilt}"
    );
    let breaks = prom.query(r#"buildkit_build_cache_breaks_total{reason="build-arg"}"#).await;
    assert_eq!(breaks.iter().map(|s| s.value).collect::<Vec<_>>(), [1.0], "{breaks:?}");

    // A failing build, retried once as a CI job would be, after the failure was seen.
    let failing = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 1\nRUN echo failing now && false\n",
        engine::unique("nonce")
    ));
    for count in [1.0, 2.0] {
        let report = run_build(&failing, &broken, &[]).await;
        assert!(!report.success, "{}", report.raw);
        scraped(&prom, &broken, "failed", count).await;
    }
    let failed = firing(&prom, "BuildKitBuildFailed", &broken, Duration::from_secs(15)).await;
    assert_eq!(failed.labels["severity"], "warning");
    assert!(failed.annotations["summary"].contains(&broken), "{failed:?}");
    // It says where the build failed, and links to the page of the name's last failure (a link
    // of the name, not of the build: no ref in a label).
    let page = format!("{EXTERNAL_URL}/builds/last-failed?builder=default&name={broken}");
    assert_eq!(failed.annotations["build_page"], page, "{failed:?}");
    assert_eq!(
        failed.annotations["failure"],
        "[3/3] RUN echo failing now && false failed at Dockerfile:3 with exit code 1: \
         process \"/bin/sh -c echo failing now && false\" did not complete successfully: exit code: 1",
        "{failed:?}"
    );

    let learned = learning.finish().await;
    assert!(learned.success, "{}", learned.raw);
    scraped(&prom, &eta, "succeeded", 1.0).await;

    // A quick build sets the usual duration of `silent` and of its sleeping step (1 s); then a
    // build of the same Dockerfile sleeps silently in that step. Only the file the step reads
    // differs, so the step's text, which it is known by, stays the same.
    let silence = format!(
        "FROM tinybase:latest\nRUN echo {} before the silence\nCOPY seconds /seconds\nRUN sleep $(cat /seconds)\n",
        engine::unique("nonce")
    );
    let sleeping_for = |seconds: &str| Context::with_file(&silence, "seconds", seconds);
    let quick = run_build(&sleeping_for("1"), &silent, &[]).await;
    assert!(quick.success, "{}", quick.raw);
    scraped(&prom, &silent, "succeeded", 1.0).await;
    let context = sleeping_for("120");
    // The Dockerfile of `eta` again, every step run anew: it has an estimate while it runs.
    let [flag, label] = label_args(&eta);
    let estimated = Build::start(&eta_context, &format!("{eta}:latest"), &[&flag, &label, "--no-cache"]);
    let [flag, label] = label_args(&silent);
    let sleeping = Build::start(&context, &format!("{silent}:latest"), &[&flag, &label]);
    // Meanwhile a step runs longer than the stall threshold, printing a line every second.
    let context = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {}; for i in $(seq 1 15); do echo tick $i; sleep 1; done\n",
        engine::unique("nonce")
    ));
    let [flag, label] = label_args(&chatty);
    let ticking = Build::start(&context, &format!("{chatty}:latest"), &[&flag, &label]);

    let stalled = firing(&prom, "BuildKitBuildStalled", &silent, Duration::from_secs(40)).await;
    assert_eq!(stalled.labels["severity"], "warning");
    let description = &stalled.annotations["description"];
    assert!(description.contains("while running [4/4] RUN sleep $(cat /seconds)"), "{description}");
    let slower = firing(&prom, "BuildKitBuildSlowerThanUsual", &silent, Duration::from_secs(20)).await;
    assert!(slower.annotations["description"].contains("its builds usually take"), "{slower:?}");
    // The step that usually takes a second has run past twice that and 10 s more.
    let step = firing(&prom, "BuildKitStepSlowerThanUsual", &silent, Duration::from_secs(30)).await;
    assert_eq!((step.labels["step"].as_str(), step.labels["severity"].as_str()), ("[4/4]", "info"), "{step:?}");
    let description = &step.annotations["description"];
    assert!(
        description.contains("(RUN sleep $(cat /seconds))") && description.contains("it usually takes 1"),
        "{description}"
    );

    // The metric list the dashboard is checked against is the exporter's, and promtool of
    // every release finds nothing in it (running builds, estimates and histograms included).
    let exposed = daemon.metrics().await;
    for (metric, _) in METRICS {
        assert!(exposed.contains(&format!("\n# TYPE {metric} ")), "the exporter has no {metric}:\n{exposed}");
    }
    testkit::prometheus::assert_promtool_finds_nothing(&exposed);

    // While it runs: every query of every panel returns data.
    let dashboard = dashboard();
    let mut results: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
    let mut problems = Vec::new();
    for q in queries(&dashboard) {
        let expr = substitute(&q.expr);
        match prom.try_query(&expr).await {
            Ok(samples) if finite(&samples) => {
                println!("{} / {}: {} series, e.g. {:?}", q.panel, q.ref_id, samples.len(), samples[0]);
                results.insert((q.panel.clone(), q.ref_id.clone()), samples);
            }
            Ok(samples) => problems.push(format!("{} / {}: no data ({samples:?})\n    {expr}", q.panel, q.ref_id)),
            Err(error) => problems.push(format!("{} / {}: {error}\n    {expr}", q.panel, q.ref_id)),
        }
    }
    // The variables' own queries.
    let builders = prom.label_values("builder", "buildkit_exporter_source_up").await;
    if !builders.contains(&"default".to_string()) {
        problems.push(format!("$builder offers {builders:?}"));
    }
    let names = prom
        .label_values(
            "name",
            r#"{__name__=~"buildkit_build_last_completion_time_seconds|buildkit_build_steps", builder=~".*"}"#,
        )
        .await;
    for name in [&app, &broken, &silent, &eta] {
        if !names.contains(name) {
            problems.push(format!("$name does not offer {name}: {names:?}"));
        }
    }
    assert!(problems.is_empty(), "{} panel queries failed:\n{}", problems.len(), problems.join("\n"));

    // And the data is the builds': the running table shows the silent step...
    let panel = |title: &str, ref_id: &str| &results[&(title.to_string(), ref_id.to_string())];
    let running = of(panel("Running builds", "G"), &silent);
    assert_eq!(
        (running.labels["step"].as_str(), running.labels["instruction"].as_str(), running.labels["command"].as_str()),
        ("[4/4]", "RUN", "sleep $(cat /seconds)"),
        "{running:?}"
    );
    assert_eq!(of(panel("Running builds", "A"), &silent).value, 4.0);
    assert_eq!(of(panel("Running builds", "B"), &silent).value, 4.0);
    // ...against its usual second...
    let against = of(panel("Running steps against their usual time", "A"), &silent).value;
    assert!(against > 2.0, "the sleeping step at {against} times its usual second");
    assert!(of(panel("Running builds", "F"), &silent).value >= STALL_SECONDS);
    let chatty_quiet = of(panel("Running builds", "F"), &chatty).value;
    assert!(chatty_quiet < STALL_SECONDS, "{chatty} printed {chatty_quiet} s ago");
    assert!(of(panel("Progress per running build", "A"), &silent).value > 0.5);
    // ...the build built before has an estimate, on pace with its first build; a build with a
    // step never seen before has none...
    let left = of(panel("Running builds", "H"), &eta).value;
    let total = of(panel("Running builds", "I"), &eta).value;
    assert!(left > 0.0 && left < total, "{eta}: {left} s left of {total} s");
    let first_build = format!(r#"buildkit_build_duration_seconds_sum{{name="{eta}"}}"#);
    let took = of(&prom.query(&first_build).await, &eta).value;
    assert!((total - took).abs() < took / 2.0, "{eta}: expected {total} s, its first build took {took} s");
    let bar = of(panel("Estimated time left", "A"), &eta).value;
    assert!(bar > 0.0 && bar < total, "{eta}: {bar} s left of {total} s");
    // The silent build has run past its estimate: nothing is left of it but the export.
    let overrun = of(panel("Running builds", "H"), &silent).value;
    assert!(overrun < 2.0, "{silent}: {overrun} s left");
    for (panel_title, ref_id) in [("Running builds", "H"), ("Running builds", "I"), ("Estimated time left", "A")] {
        let samples = panel(panel_title, ref_id);
        assert!(
            !samples.iter().any(|s| s.labels.get("name") == Some(&chatty)),
            "{panel_title} / {ref_id}: {chatty} has an estimate: {samples:?}"
        );
    }
    // ...the last results and cache use are those of the builds above.
    let last = panel("Last build by name", "A");
    assert_eq!(of(last, &broken).labels["result"], "failed");
    let why = panel("Why the cache broke", "A");
    assert!(why.iter().any(|s| s.labels["reason"] == "build-arg" && s.value > 0.0), "{why:?}");
    let failure = of(panel("Where the last build failed, by name", "A"), &broken);
    assert_eq!((failure.labels["location"].as_str(), failure.labels["exit_code"].as_str()), ("Dockerfile:3", "1"));
    assert!(
        !panel("Where the last build failed, by name", "A").iter().any(|s| s.labels["name"] == app),
        "{app} succeeded"
    );
    assert_eq!(of(last, &app).labels["result"], "succeeded");
    assert!(of(panel("Time since last successful build by name", "A"), &app).value < 120.0);
    assert!(of(panel("Failure ratio by name", "A"), &broken).value > 0.9);
    let ratio = of(panel("Cache hit ratio by name (range)", "A"), &app).value;
    assert!(ratio > 0.0 && ratio <= 1.0, "cache hit ratio of {app}: {ratio}");
    let mean = of(panel("Build duration by name", "C"), &app).value;
    assert!(mean > 0.0 && mean < first.wall_seconds, "mean duration of {app}: {mean}");

    // The silent build is canceled; its alerts resolve with its series.
    sleeping.interrupt();
    estimated.interrupt();
    let report = sleeping.finish().await;
    assert!(!report.success);
    scraped(&prom, &silent, "canceled", 1.0).await;
    let report = estimated.finish().await;
    assert!(!report.success, "{eta} ran to the end before its estimate was checked: {}", report.raw);
    scraped(&prom, &eta, "canceled", 1.0).await;
    eventually(Duration::from_secs(15), "stall alerts resolve", || async {
        let alerts = prom.alerts().await;
        (!alerts.iter().any(|a| a.labels.get("name") == Some(&silent))).then_some(())
    })
    .await;

    let report = ticking.finish().await;
    assert!(report.success && report.wall_seconds > 2.0 * STALL_SECONDS, "{}", report.raw);
    scraped(&prom, &chatty, "succeeded", 1.0).await;

    // No alert fired for what did not deserve one: Prometheus keeps every pending or firing
    // state in ALERTS.
    let history = |selector: String| {
        let prom = &prom;
        async move { prom.query(&format!("count_over_time(ALERTS{{{selector}}}[10m])")).await }
    };
    let quiet = history(format!(
        r#"alertname=~"BuildKitBuildStalled|BuildKitBuildSlowerThanUsual|BuildKitStepSlowerThanUsual",name=~"{app}|{broken}|{chatty}|{eta}""#
    ))
    .await;
    assert!(quiet.is_empty(), "{quiet:?}");
    let quiet = history(format!(r#"alertname="BuildKitBuildFailed",name=~"{app}|{silent}|{eta}""#)).await;
    assert!(quiet.is_empty(), "{quiet:?}");
    let quiet = history(format!(r#"alertname=~"BuildKitSourceDown|BuildKitExporterDown",job="{JOB}""#)).await;
    assert!(quiet.is_empty(), "{quiet:?}");

    prom.stop().await;
    daemon.stop().await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(180), "took {elapsed:?}");
}

/// One sample's value of `expr`, if there is exactly one.
async fn one(prom: &Prometheus, expr: &str) -> Option<f64> {
    let samples = prom.query(expr).await;
    (samples.len() == 1).then(|| samples[0].value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker Engine, a standalone buildkitd and Prometheus: run scripts/test.sh"]
async fn two_exporters_found_through_file_sd_give_the_fleet_views() {
    let _engine = ENGINE.lock().await;
    let _buildkitd = BUILDKITD.lock().await;
    let bk = buildkitd();
    // Two hosts' exporters: one on the engine, one on a build farm's buildkitd.
    let host = Daemon::on_engine().await;
    let farm = Daemon::start(&[&bk.unix_source("farm-1")], |_| {}).await;
    farm.wait_up().await;
    let (a, b) = (host.addr.to_string(), farm.addr.to_string());
    let targets = format!(r#"[{{"targets": ["{a}", "{b}"]}}]"#);
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
         rule_files: [rules.yml]\n\
         scrape_configs:\n  - job_name: {JOB}\n    file_sd_configs: [{{files: [targets.json]}}]\n"
    );
    let rules = read_repo_file(RULES);
    let prom = Prometheus::start_on(Version::V3, &config, &[("rules.yml", &rules), ("targets.json", &targets)]).await;
    eventually(Duration::from_secs(30), "both exporters scraped through file SD", || async {
        (prom.query(&format!(r#"up{{job="{JOB}"}} == 1"#)).await.len() == 2).then_some(())
    })
    .await;

    // The dashboard's variables: both exporters, and the builders of each.
    let mut instances = prom.label_values("instance", "buildkit_exporter_source_up").await;
    instances.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(instances, want);
    let builders = |instance: &str| format!(r#"buildkit_exporter_source_up{{instance=~"{instance}"}}"#);
    assert_eq!(prom.label_values("builder", &builders(".*")).await, ["default", "farm-1"]);
    assert_eq!(prom.label_values("builder", &builders(&b)).await, ["farm-1"]);

    // A long build on the farm and a failing one on the host, at once.
    let failed_name = engine::unique("fleet-broken");
    let failing = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 6\nRUN echo failing now && false\n",
        engine::unique("nonce")
    ));
    let [flag, label] = label_args(&failed_name);
    let broken = Build::start(&failing, "", &[&flag, &label]);
    let long_name = engine::unique("fleet-long");
    let long = context(&format!("{BASE}RUN echo {} && sleep 8\n", engine::unique("nonce")));
    let running = bk.build(&long, &long_name, &[&format!("label:{LABEL}={long_name}")]);

    // Builds running per builder: one on each, two in the fleet (the two overlap by seconds).
    let per_builder = |instance: &str, builder: &str| {
        format!(r#"instance_builder:buildkit_builds_running:sum{{instance="{instance}", builder="{builder}"}}"#)
    };
    eventually(Duration::from_secs(30), "both builds running, seen by the fleet rules", || async {
        let farm_running = one(&prom, &per_builder(&b, "farm-1")).await == Some(1.0);
        let host_running = one(&prom, &per_builder(&a, "default")).await == Some(1.0);
        let total = one(&prom, "buildkit:builds_running:sum").await == Some(2.0);
        (farm_running && host_running && total).then_some(())
    })
    .await;
    // The failing build's counter was scraped at 0 before it failed, so the hour's increase is
    // exactly one failure, once rounded (increase extrapolates to the window's edges).
    eventually(Duration::from_secs(30), "the failing build's counter scraped at 0", || async {
        let expr = format!(r#"buildkit_builds_completed_total{{name="{failed_name}", result="failed"}}"#);
        (one(&prom, &expr).await == Some(0.0)).then_some(())
    })
    .await;
    assert!(!broken.finish().await.success);
    assert!(running.finish().await.success);

    // Failures across builders: one, on the host's engine; none on the farm.
    let failed = |instance: &str, builder: &str| {
        format!(
            r#"round(instance_builder:buildkit_builds_failed:increase1h{{instance="{instance}", builder="{builder}"}})"#
        )
    };
    eventually(Duration::from_secs(30), "the failure in the fleet rules", || async {
        let host_failed = one(&prom, &failed(&a, "default")).await == Some(1.0);
        let farm_clean = one(&prom, &failed(&b, "farm-1")).await == Some(0.0);
        let total = one(&prom, "round(buildkit:builds_failed:increase1h)").await == Some(1.0);
        let idle = one(&prom, "buildkit:builds_running:sum").await == Some(0.0);
        (host_failed && farm_clean && total && idle).then_some(())
    })
    .await;

    // The dashboard's fleet panels read these, for every exporter and builder.
    for q in queries(&dashboard()).iter().filter(|q| q.expr.contains("instance_builder:")) {
        let samples = prom.query(&substitute(&q.expr)).await;
        assert_eq!(samples.len(), 2, "{}: {} gives {samples:?}", q.panel, q.expr);
    }
    prom.stop().await;
    host.stop().await;
    farm.stop().await;
}
