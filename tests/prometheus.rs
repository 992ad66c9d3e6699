//! The dashboard, alert rules and deploy bundle, proven: promtool checks and unit tests of the
//! rules, the portability rules of the dashboard, the generated Kubernetes PrometheusRule, the
//! compose file, and a real Prometheus scraping the real exporter during real builds on a real
//! engine, where every panel query must return data and the alerts must fire.
//!
//! The promtool checks and the rules Prometheus loads run on both Prometheus releases of
//! scripts/provision.sh (tests `NAME::prometheus_2` and `NAME::prometheus_3`, see
//! [`testkit::prometheus::Version`]); the real builds run on Prometheus 3, and `promtool check
//! metrics` of both releases must find nothing in what the exporter serves during them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::engine::{self, build, Build, Context, ENGINE};
use testkit::metrics::sample;
use testkit::prometheus::{Alert, Prometheus, Sample, Version};
use testkit::{eventually, Daemon};

const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";
const DASHBOARD: &str = "grafana/buildkit-exporter.json";
const COMPOSE: &str = "deploy/docker-compose.yml";
const LABEL: &str = "org.opencontainers.image.title";
/// The job name the rules, the compose stack and the Kubernetes Service agree on.
const JOB: &str = "buildkit-exporter";

/// Metrics of the exporter with the labels the dashboard must filter by: (name, has `name`).
/// Every series has `builder` except `buildkit_exporter_build_info`.
const METRICS: &[(&str, bool)] = &[
    ("buildkit_build_steps", true),
    ("buildkit_build_steps_completed", true),
    ("buildkit_build_steps_cached", true),
    ("buildkit_build_current_step", true),
    ("buildkit_build_start_time_seconds", true),
    ("buildkit_build_elapsed_seconds", true),
    ("buildkit_build_last_progress_time_seconds", true),
    ("buildkit_build_step_running_info", true),
    ("buildkit_build_estimated_duration_seconds", true),
    ("buildkit_build_estimated_remaining_seconds", true),
    ("buildkit_builds_running", false),
    ("buildkit_builds_started_total", false),
    ("buildkit_builds_completed_total", true),
    ("buildkit_build_duration_seconds", true),
    ("buildkit_build_last_completion_time_seconds", true),
    ("buildkit_steps_total", true),
    ("buildkit_steps_cached_total", true),
    ("buildkit_steps_failed_total", true),
    ("buildkit_step_duration_seconds", false),
    ("buildkit_build_warnings_total", true),
    ("buildkit_exporter_source_up", false),
    ("buildkit_exporter_source_reconnects_total", false),
    ("buildkit_exporter_build_info", false),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Tests on each Prometheus release, as `NAME::prometheus_2` and `NAME::prometheus_3` (so the
/// name of a failing test says which), each calling `NAME(version)`; `async` for tokio tests.
macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            fn prometheus_2() {
                super::$name(Version::V2)
            }
            #[test]
            fn prometheus_3() {
                super::$name(Version::V3)
            }
        }
    };
    (async $name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn prometheus_2() {
                super::$name(Version::V2).await
            }
            #[tokio::test]
            async fn prometheus_3() {
                super::$name(Version::V3).await
            }
        }
    };
}

/// Runs `promtool` of `version` from the repository root; panics with its output, naming the
/// release, unless it succeeds.
fn promtool(version: Version, args: &[&str]) -> String {
    let program = version.binary("promtool");
    let output = Command::new(&program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/provision.sh)", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{version}: promtool {args:?} failed ({}):\n{text}", output.status);
    text
}

/// Runs a command from the repository root; panics with its output unless it succeeds.
fn run(program: impl Into<PathBuf>, args: &[&str]) -> String {
    let program = program.into();
    let output = Command::new(&program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/provision.sh)", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} {args:?} failed ({}):\n{text}", program.display(), output.status);
    text
}

// ------------------------------------------------------------------------------------------------
// Rules

on_each_version!(rules_pass_promtool_check);
fn rules_pass_promtool_check(version: Version) {
    let out = promtool(version, &["check", "rules", RULES]);
    assert!(out.contains("SUCCESS") && !out.contains("WARNING"), "{version}: {out}");
    // The example configuration loads the rules from beside it.
    let out = promtool(version, &["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(out.contains("SUCCESS") && !out.contains("WARNING"), "{version}: {out}");
}

on_each_version!(rules_unit_tests_pass);
fn rules_unit_tests_pass(version: Version) {
    let out = promtool(version, &["test", "rules", RULES_TEST]);
    assert!(out.contains("SUCCESS"), "{version}: {out}");
}

/// Alert names defined in the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(|n| n.trim().to_string()).collect()
}

#[test]
fn every_alert_is_unit_tested_firing_and_quiet() {
    let alerts = alert_names(&read(RULES));
    assert_eq!(
        alerts,
        [
            "BuildKitBuildStalled",
            "BuildKitBuildFailed",
            "BuildKitBuildSlowerThanUsual",
            "BuildKitSourceDown",
            "BuildKitExporterDown"
        ]
    );
    // Each `alertname:` of an alert_rule_test is followed by its `exp_alerts:`: `[]` expects
    // silence, a list expects alerts.
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in read(RULES_TEST).lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            assert!(alerts.contains(&name.to_string()), "{RULES_TEST} tests an unknown alert {name}");
            current = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after an alertname");
            if rest.trim() == "[]" {
                quiet.insert(name)
            } else {
                firing.insert(name)
            };
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "{alert} has no unit test where it fires");
        assert!(quiet.contains(alert), "{alert} has no unit test where it stays quiet");
    }
}

#[test]
fn prometheusrule_is_generated_from_the_rules() {
    run(repo("scripts/gen-prometheusrule.sh"), &["--check"]);
}

on_each_version!(async rules_follow_mixin_conventions);
/// What Prometheus itself parsed from the rules file: the mixin conventions hold.
async fn rules_follow_mixin_conventions(version: Version) {
    let config = "global: {evaluation_interval: 1m}\nrule_files: [rules.yml]\n";
    let prom = Prometheus::start_on(version, config, &[("rules.yml", &read(RULES))]).await;
    let groups = prom.rules().await;
    prom.stop().await;
    let groups = groups.as_array().expect("rule groups");
    let mut names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["buildkit-exporter-alerts", "buildkit-exporter-recording", "buildkit-exporter-thresholds"]);
    let group = |name: &str| groups.iter().find(|g| g["name"] == name).unwrap()["rules"].as_array().unwrap();

    // Thresholds: constants, and nothing else.
    let thresholds = group("buildkit-exporter-thresholds");
    for rule in thresholds {
        assert_eq!(rule["type"], "recording", "{rule}");
        assert!(rule["name"].as_str().unwrap().starts_with("buildkit:threshold:"), "{rule}");
        assert!(rule["query"].as_str().unwrap().starts_with("vector("), "{rule}");
    }
    let threshold_names: Vec<&str> = thresholds.iter().map(|r| r["name"].as_str().unwrap()).collect();

    let mut seen = Vec::new();
    for rule in group("buildkit-exporter-recording") {
        assert_eq!(rule["type"], "recording", "{rule}");
        assert!(rule["name"].as_str().unwrap().contains(':'), "{rule}");
    }
    for rule in group("buildkit-exporter-alerts") {
        assert_eq!(rule["type"], "alerting", "{rule}");
        let name = rule["name"].as_str().unwrap();
        seen.push(name);
        assert!(
            name.starts_with("BuildKit") && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}: alert names are CamelCase with the BuildKit prefix"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity:?}");
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.contains("{{ $labels."), "{name}: {annotation} names no label value: {text:?}");
        }
        // The only number an alert may hold is the 0 of a 0/1 gauge; thresholds are recorded.
        let query = rule["query"].as_str().unwrap();
        assert!(!query.chars().any(|c| ('1'..='9').contains(&c)), "{name} holds a threshold of its own: {query}");
        if query.contains("buildkit:threshold:") {
            assert!(threshold_names.iter().any(|t| query.contains(t)), "{name}: {query}");
        }
    }
    // Thresholds are all used.
    let alerts_text: String = group("buildkit-exporter-alerts").iter().map(|r| r["query"].as_str().unwrap()).collect();
    for threshold in &threshold_names {
        assert!(alerts_text.contains(threshold), "{threshold} is not used by any alert");
    }
    assert_eq!(seen, alert_names(&read(RULES)));
}

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

// ------------------------------------------------------------------------------------------------
// Dashboard

/// A panel's query: the panel title, the target's refId and expression, whether it is instant.
#[derive(Debug, Clone)]
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            p["targets"].as_array().into_iter().flatten().map(move |t| Query {
                panel: p["title"].as_str().unwrap_or_default().to_string(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// Every `"datasource"` object in the dashboard, with where it is.
fn datasources<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                if key == "datasource" {
                    out.push((here.clone(), child));
                }
                datasources(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasources(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The exporter metrics an expression selects, with each selector's matchers (empty without
/// braces). Histogram series map to their family.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(found) = expr[i..].find("buildkit_") {
        let start = i + found;
        let before = start.checked_sub(1).map(|b| bytes[b] as char);
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        i = end;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') || expr[start..end].contains(':') {
            continue; // part of another name, or a recording rule
        }
        let mut metric = &expr[start..end];
        if !METRICS.iter().any(|(m, _)| *m == metric) {
            for suffix in ["_bucket", "_sum", "_count"] {
                metric = metric.strip_suffix(suffix).unwrap_or(metric);
            }
        }
        let matchers = if expr[end..].starts_with('{') {
            let close = expr[end..].find('}').expect("closing brace") + end;
            expr[end + 1..close].to_string()
        } else {
            String::new()
        };
        out.push((metric.to_string(), matchers));
    }
    out
}

#[test]
fn dashboard_is_portable() {
    let dashboard = dashboard();
    assert!(dashboard["id"].is_null(), "id must be null so any Grafana can import it");
    assert_eq!(dashboard["uid"], "buildkit-exporter", "a fixed uid keeps links stable");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39, "schemaVersion {}", dashboard["schemaVersion"]);
    assert!(
        dashboard.get("__inputs").is_none() && dashboard.get("__requires").is_none(),
        "export-for-sharing leftovers"
    );
    let text = read(DASHBOARD);
    assert!(!text.contains("${DS_"), "hard-coded datasource input");

    // Variables: a datasource of type prometheus, and builder and name with All and multi-select.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable =
        |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    let ds = variable("datasource");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    for name in ["builder", "name"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "${name}");
        assert_eq!(v["includeAll"], true, "${name} has All");
        assert_eq!(v["multi"], true, "${name} is multi-select");
        assert_eq!(v["allValue"], ".*", "${name}");
    }

    // Every datasource reference is the variable (the built-in annotation is Grafana's own).
    let mut refs = Vec::new();
    datasources(&dashboard, "", &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for (path, ds) in refs {
        if ds["type"] == "grafana" && path.starts_with(".annotations") {
            continue;
        }
        assert_eq!(ds["uid"], "${datasource}", "{path}: {ds}");
        assert_eq!(ds["type"], "prometheus", "{path}: {ds}");
    }

    // Panels: unique ids, on the 24-column grid, titled, described, with queries.
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "untitled panel {panel}");
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "{title}: duplicate id");
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{title}: {grid}");
        if panel["type"] == "row" {
            continue;
        }
        assert!(!panel["description"].as_str().unwrap_or_default().is_empty(), "{title}: no description");
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "{title}: no query");
    }

    // Every selector of an exporter metric is one of its metrics, filtered by the variables.
    let queries = queries(&dashboard);
    assert!(queries.len() >= 30, "{}", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        assert!(!q.expr.is_empty(), "{} {}: empty expr", q.panel, q.ref_id);
        for (metric, matchers) in selectors(&q.expr) {
            let (_, has_name) = METRICS
                .iter()
                .find(|(m, _)| *m == metric)
                .unwrap_or_else(|| panic!("{} {}: {metric} is not a metric of the exporter", q.panel, q.ref_id));
            used.insert(metric.clone());
            if metric != "buildkit_exporter_build_info" {
                assert!(
                    matchers.contains(r#"builder=~"$builder""#),
                    "{} {}: {metric} not filtered by $builder",
                    q.panel,
                    q.ref_id
                );
            }
            if *has_name {
                assert!(
                    matchers.contains(r#"name=~"$name""#),
                    "{} {}: {metric} not filtered by $name",
                    q.panel,
                    q.ref_id
                );
            }
        }
    }
    // Everything but the start time (elapsed says the same) is on the dashboard.
    for (metric, _) in METRICS {
        assert!(used.contains(*metric) || *metric == "buildkit_build_start_time_seconds", "{metric} is on no panel");
    }
}

/// Grafana's variables as the test sends them: every builder and name, a few minutes of range.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$builder", ".*")
        .replace("$name", ".*")
        .replace("$__rate_interval", "3m")
        .replace("$__interval", "1m")
        .replace("$__range", "10m");
    assert!(!out.contains('$'), "unknown variable left in {out}");
    out
}

// ------------------------------------------------------------------------------------------------
// Deploy bundle

#[test]
fn compose_file_is_valid() {
    let out = Command::new("docker")
        .args(["compose", "--file", COMPOSE, "config", "--format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("docker CLI");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "docker compose config (compose v2 comes from scripts/provision.sh):\n{stderr}");
    let config: Value = serde_json::from_slice(&out.stdout).expect("compose config as JSON");
    let services = &config["services"];
    for service in ["exporter", "prometheus", "grafana"] {
        assert!(services[service].is_object(), "no service {service}: {config}");
    }
    let exporter = &services["exporter"];
    assert!(exporter["build"]["dockerfile"].as_str().unwrap().ends_with("Dockerfile"), "{exporter}");
    let ports: Vec<&Value> = exporter["ports"].as_array().unwrap().iter().collect();
    assert!(ports.iter().any(|p| p["target"] == 9817 && p["published"] == "9817"), "{ports:?}");
    let socket = exporter["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["target"] == "/var/run/docker.sock")
        .expect("engine socket");
    assert_eq!(socket["read_only"], true, "{socket}");
    assert!(exporter["user"].as_str().is_some_and(|u| !u.starts_with('0') && u != "root"), "runs as root: {exporter}");

    let mounts = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{} -> {}", v["source"], v["target"]))
            .collect()
    };
    let prometheus = mounts("prometheus").join("\n");
    assert!(prometheus.contains("deploy/prometheus\" -> \"/etc/prometheus\""), "{prometheus}");
    let grafana = mounts("grafana").join("\n");
    assert!(grafana.contains("deploy/grafana/provisioning\" -> \"/etc/grafana/provisioning\""), "{grafana}");
    assert!(
        grafana.contains("grafana/buildkit-exporter.json\" -> \"/etc/grafana/dashboards/buildkit-exporter.json\""),
        "{grafana}"
    );
    // Everything mounted exists.
    for service in ["prometheus", "grafana"] {
        for volume in services[service]["volumes"].as_array().unwrap() {
            if volume["type"] == "bind" {
                let source = PathBuf::from(volume["source"].as_str().unwrap());
                assert!(source.exists(), "{service} mounts missing {}", source.display());
            }
        }
    }
}

#[test]
fn deploy_files_use_port_9817() {
    for path in [
        COMPOSE,
        "deploy/Dockerfile",
        "deploy/prometheus/prometheus.yml",
        "deploy/kubernetes/daemonset.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/systemd/buildkit-exporter.service",
        "deploy/README.md",
    ] {
        assert!(read(path).contains("9817"), "{path} does not use port 9817");
    }
}

// ------------------------------------------------------------------------------------------------
// End to end: a real Prometheus scraping the real exporter during real builds

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
    async fn prometheus_3() {
        super::dashboard_and_alerts_on_real_builds(Version::V3).await
    }
}

async fn dashboard_and_alerts_on_real_builds(version: Version) {
    let _engine = ENGINE.lock().await;
    let started = Instant::now();

    let daemon = Daemon::start(&[&engine::source()], |_| {}).await;
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

    let rules = with_thresholds(&read(RULES), TEST_THRESHOLDS);
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

    let learned = learning.finish().await;
    assert!(learned.success, "{}", learned.raw);
    scraped(&prom, &eta, "succeeded", 1.0).await;

    // A quick build sets the usual duration of `silent`; then a build of it sleeps silently.
    let quick = run_build(
        &Context::new(&format!("FROM tinybase:latest\nRUN echo {} quick\n", engine::unique("nonce"))),
        &silent,
        &[],
    )
    .await;
    assert!(quick.success, "{}", quick.raw);
    scraped(&prom, &silent, "succeeded", 1.0).await;
    let context = Context::new(&format!(
        "FROM tinybase:latest\nRUN echo {} before the silence\nRUN sleep 120\n",
        engine::unique("nonce")
    ));
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
    assert!(description.contains("while running [3/3] RUN sleep 120"), "{description}");
    let slower = firing(&prom, "BuildKitBuildSlowerThanUsual", &silent, Duration::from_secs(20)).await;
    assert!(slower.annotations["description"].contains("its builds usually take"), "{slower:?}");

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
        ("[3/3]", "RUN", "sleep 120"),
        "{running:?}"
    );
    assert_eq!(of(panel("Running builds", "A"), &silent).value, 3.0);
    assert_eq!(of(panel("Running builds", "B"), &silent).value, 3.0);
    assert!(of(panel("Running builds", "F"), &silent).value >= STALL_SECONDS);
    let chatty_quiet = of(panel("Running builds", "F"), &chatty).value;
    assert!(chatty_quiet < STALL_SECONDS, "{chatty} printed {chatty_quiet} s ago");
    assert!(of(panel("Progress per running build", "A"), &silent).value > 0.5);
    // ...the build built before has an estimate, on pace with its first build; builds with a
    // step never seen before have none...
    let left = of(panel("Running builds", "H"), &eta).value;
    let total = of(panel("Running builds", "I"), &eta).value;
    assert!(left > 0.0 && left < total, "{eta}: {left} s left of {total} s");
    let first_build = format!(r#"buildkit_build_duration_seconds_sum{{name="{eta}"}}"#);
    let took = of(&prom.query(&first_build).await, &eta).value;
    assert!((total - took).abs() < took / 2.0, "{eta}: expected {total} s, its first build took {took} s");
    let bar = of(panel("Estimated time left", "A"), &eta).value;
    assert!(bar > 0.0 && bar < total, "{eta}: {bar} s left of {total} s");
    for (panel_title, ref_id) in [("Running builds", "H"), ("Running builds", "I"), ("Estimated time left", "A")] {
        let samples = panel(panel_title, ref_id);
        for name in [&silent, &chatty] {
            assert!(
                !samples.iter().any(|s| s.labels.get("name") == Some(name)),
                "{panel_title} / {ref_id}: {name} has an estimate: {samples:?}"
            );
        }
    }
    // ...the last results and cache use are those of the builds above.
    let last = panel("Last build by name", "A");
    assert_eq!(of(last, &broken).labels["result"], "failed");
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
        r#"alertname=~"BuildKitBuildStalled|BuildKitBuildSlowerThanUsual",name=~"{app}|{broken}|{chatty}|{eta}""#
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

/// The image's build context (what deploy/Dockerfile.dockerignore lets through) holds all that
/// cargo needs to load the manifest and build the binary.
#[test]
fn docker_build_context_is_complete() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignore = std::fs::read_to_string(root.join("deploy/Dockerfile.dockerignore")).unwrap();
    let kept: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    let context = tempfile::tempdir().unwrap();
    for path in &kept {
        // Through a shell, so that patterns like `benches/*.rs` expand as in the ignore file.
        let copy = format!("cp -r --parents {} '{}'", path.trim_end_matches('/'), context.path().display());
        let status = std::process::Command::new("sh").args(["-c", &copy]).current_dir(root).status().unwrap();
        assert!(status.success(), "copy {path}");
    }
    // `check` loads every target of the manifest (metadata alone does not) and compiles the
    // binary; the shared target directory keeps it to the crate itself.
    let output = std::process::Command::new("cargo")
        .args(["check", "--locked", "--offline", "--bin", "buildkit-exporter"])
        .env("CARGO_TARGET_DIR", root.join("target/docker-context"))
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    for path in kept.iter().filter(|p| !p.starts_with("Cargo")) {
        assert!(
            dockerfile.contains(&format!("COPY {}", path.trim_end_matches('/'))),
            "deploy/Dockerfile copies {path}"
        );
    }
}
