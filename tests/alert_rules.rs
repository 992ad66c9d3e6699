//! The alert and recording rules (deploy/prometheus/rules.yml), proven: `promtool check rules`
//! and `promtool test rules` on both Prometheus releases of scripts/provision.sh (tests
//! `NAME::prometheus_2` and `NAME::prometheus_3`, see [`testkit::prometheus::Version`]), every
//! alert unit-tested firing and quiet, the mixin conventions as Prometheus itself parsed them, and
//! the generated Kubernetes PrometheusRule in sync.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use testkit::prometheus::{Prometheus, Version};
use testkit::{read_repo_file, repo_file};

const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";

/// Tests on each Prometheus release, as `NAME::prometheus_2` and `NAME::prometheus_3` (so the
/// name of a failing test says which), each calling `NAME(version)`; `async` for tokio tests.
/// Without that release (scripts/provision.sh installs both) they are ignored.
macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            #[ignore = "needs Prometheus 2: run scripts/test.sh"]
            fn prometheus_2() {
                super::$name(Version::V2)
            }
            #[test]
            #[ignore = "needs Prometheus 3: run scripts/test.sh"]
            fn prometheus_3() {
                super::$name(Version::V3)
            }
        }
    };
    (async $name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            #[ignore = "needs Prometheus 2: run scripts/test.sh"]
            async fn prometheus_2() {
                super::$name(Version::V2).await
            }
            #[tokio::test]
            #[ignore = "needs Prometheus 3: run scripts/test.sh"]
            async fn prometheus_3() {
                super::$name(Version::V3).await
            }
        }
    };
}

/// Runs `program` with `args` from the repository root; panics with its output, naming it
/// `what`, unless it succeeds.
fn run(program: &Path, args: &[&str], what: &str) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(repo_file(""))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/provision.sh)", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} {args:?} failed ({}):\n{text}", output.status);
    text
}

/// Runs `promtool` of `version` as [`run`] does, naming the release.
fn promtool(version: Version, args: &[&str]) -> String {
    run(&version.binary("promtool"), args, &format!("{version}: promtool"))
}

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
    let alerts = alert_names(&read_repo_file(RULES));
    assert_eq!(
        alerts,
        [
            "BuildKitBuildStalled",
            "BuildKitBuildFailed",
            "BuildKitBuildSlowerThanUsual",
            "BuildKitStepSlowerThanUsual",
            "BuildKitSourceDown",
            "BuildKitExporterDown"
        ]
    );
    // Each `alertname:` of an alert_rule_test is followed by its `exp_alerts:`: `[]` expects
    // silence, a list expects alerts.
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in read_repo_file(RULES_TEST).lines().map(str::trim) {
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
    let script = "scripts/gen-prometheusrule.sh";
    run(&repo_file(script), &["--check"], &repo_file(script).display().to_string());
}

on_each_version!(async rules_follow_mixin_conventions);
/// What Prometheus itself parsed from the rules file: the mixin conventions hold.
async fn rules_follow_mixin_conventions(version: Version) {
    let config = "global: {evaluation_interval: 1m}\nrule_files: [rules.yml]\n";
    let prom = Prometheus::start_on(version, config, &[("rules.yml", &read_repo_file(RULES))]).await;
    let groups = prom.rules().await;
    prom.stop().await;
    let groups = groups.as_array().expect("rule groups");
    let mut names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "buildkit-exporter-alerts",
            "buildkit-exporter-fleet",
            "buildkit-exporter-recording",
            "buildkit-exporter-thresholds"
        ]
    );
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
    // Fleet rules: `level:metric:operations`, the level being the labels they keep.
    for rule in group("buildkit-exporter-fleet") {
        assert_eq!(rule["type"], "recording", "{rule}");
        let name = rule["name"].as_str().unwrap();
        let query = rule["query"].as_str().unwrap();
        match name.split(':').collect::<Vec<_>>()[..] {
            ["instance_builder", metric, _] => {
                assert!(metric.starts_with("buildkit_") && query.starts_with("sum by (instance, builder) ("), "{rule}")
            }
            ["buildkit", _, _] => assert!(query.starts_with("sum(instance_builder:"), "{rule}"),
            _ => panic!("{name} is not level:metric:operations"),
        }
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
    assert_eq!(seen, alert_names(&read_repo_file(RULES)));
}
