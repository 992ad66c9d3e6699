//! The Grafana dashboard (grafana/buildkit-exporter.json) as tests read it: its panels and their
//! queries, and the exporter's metrics it must cover.

use serde_json::Value;

use crate::read_repo_file;

/// Where the dashboard is, from the repository root.
pub const DASHBOARD: &str = "grafana/buildkit-exporter.json";

/// Metrics of the exporter with the labels the dashboard must filter by: (name, has `name`).
/// Every series has `builder` except `buildkit_exporter_build_info`.
pub const METRICS: &[(&str, bool)] = &[
    ("buildkit_build_steps", true),
    ("buildkit_build_steps_completed", true),
    ("buildkit_build_steps_cached", true),
    ("buildkit_build_current_step", true),
    ("buildkit_build_start_time_seconds", true),
    ("buildkit_build_elapsed_seconds", true),
    ("buildkit_build_last_progress_time_seconds", true),
    ("buildkit_build_step_running_info", true),
    ("buildkit_build_step_running_start_time_seconds", true),
    ("buildkit_build_step_running_expected_seconds", true),
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
    ("buildkit_build_cache_saved_seconds_total", true),
    ("buildkit_build_last_failure_info", true),
    ("buildkit_build_cache_breaks_total", false),
    ("buildkit_exporter_source_up", false),
    ("buildkit_exporter_source_reconnects_total", false),
    ("buildkit_exporter_build_info", false),
];

/// A panel's query: the panel's title, the target's refId and its expression.
#[derive(Debug, Clone)]
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// The dashboard's JSON.
pub fn dashboard() -> Value {
    serde_json::from_str(&read_repo_file(DASHBOARD)).expect("dashboard is JSON")
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
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

/// Every query of every panel.
pub fn queries(dashboard: &Value) -> Vec<Query> {
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
