//! The Grafana dashboard is portable: any Grafana imports it, every datasource is the
//! `$datasource` variable, panels are titled and described on the grid, and every query selects
//! only the exporter's metrics (and its fleet recording rules), filtered by the `$instance`,
//! `$builder` and `$name` variables. That its queries
//! return data is proven on real builds in tests/prometheus.rs.

use std::collections::BTreeSet;

use serde_json::Value;
use testkit::dashboard::{dashboard, panels, queries, DASHBOARD, METRICS};
use testkit::read_repo_file;

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
    let text = read_repo_file(DASHBOARD);
    assert!(!text.contains("${DS_"), "hard-coded datasource input");

    // Variables: a datasource of type prometheus, and builder and name with All and multi-select.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable =
        |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    let ds = variable("datasource");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    for name in ["instance", "builder", "name"] {
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
            assert!(
                matchers.contains(r#"instance=~"$instance""#),
                "{} {}: {metric} not filtered by $instance",
                q.panel,
                q.ref_id
            );
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
    // The fleet's recording rules are filtered by the same variables, and each is on a panel.
    for rule in [
        "instance_builder:buildkit_builds_running:sum",
        "instance_builder:buildkit_builds_failed:increase1h",
        "instance_builder:buildkit_builds_completed:increase1h",
    ] {
        let uses: Vec<&str> = queries.iter().filter(|q| q.expr.contains(rule)).map(|q| q.expr.as_str()).collect();
        assert!(!uses.is_empty(), "{rule} is on no panel");
        for expr in uses {
            let selected = format!(r#"{rule}{{instance=~"$instance", builder=~"$builder"}}"#);
            assert_eq!(expr.matches(rule).count(), expr.matches(&selected).count(), "{expr}");
        }
    }
    // Everything but the start time (elapsed says the same) is on the dashboard.
    for (metric, _) in METRICS {
        assert!(used.contains(*metric) || *metric == "buildkit_build_start_time_seconds", "{metric} is on no panel");
    }
}
