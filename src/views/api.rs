//! The JSON API: `/api/v1/builds` (running builds, then recent ones, and the sources),
//! `/api/v1/builds/{ref}` (one build with its step list) and `/api/v1/sources`. The schema is in the README.

use std::sync::Arc;

use serde::Serialize;

use crate::builder::Builder;
use crate::facts::Facts;
use crate::fleet::Fleet;
use crate::model::{
    BuildContext, BuildView, CacheBreak, Estimate, Failure, FinishedBuild, Outcome, RunningBuild, StepCounts, StepView,
    Time, Warnings,
};

/// A build as the API shows it.
#[derive(Debug, Serialize)]
pub struct BuildJson {
    #[serde(rename = "ref")]
    reference: String,
    builder: String,
    name: String,
    tag: Option<String>,
    /// `running`, `succeeded`, `failed` or `canceled`.
    state: &'static str,
    started_at: Time,
    completed_at: Option<Time>,
    /// Elapsed so far for a running build.
    duration_seconds: f64,
    steps: StepCounts,
    /// What the cache saved: the usual durations of the steps taken from cache, learned from
    /// earlier builds of the same name.
    cache_saved_seconds: f64,
    /// Where it ran a step that the previous finished build of its name took from cache, and
    /// why: `step`, `instruction`, `reason` (`no-cache`, `instruction`, `build-arg`,
    /// `base-image`, `files`, `unknown`) and `detail`; null for a first build and for one that
    /// kept to the cache.
    cache_break: Option<Box<CacheBreak>>,
    /// The "3" of "3/15".
    current_step: u32,
    /// Steps executing now.
    current: Vec<CurrentStep>,
    estimate: Option<EstimateJson>,
    error: Option<ErrorJson>,
    /// Where and how it was asked for: context, Dockerfile, target, platforms, VCS source and
    /// revision, and the names (never the values) of its build-args.
    context: Arc<BuildContext>,
    /// How many warnings, and their titles.
    warnings: Warnings,
    /// How often BuildKit updated a finished build's record (it attaches the trace ~3 s later).
    record_generation: Option<i32>,
    /// Every step: only in `/api/v1/builds/{ref}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_list: Option<Vec<StepJson>>,
}

#[derive(Debug, Serialize)]
struct CurrentStep {
    step: String,
    instruction: &'static str,
    command: String,
    started_at: Option<Time>,
    /// How long it usually takes when it runs; null when never seen running.
    usual_seconds: Option<f64>,
    /// It has been running past twice its usual duration and 10 s more.
    slower_than_usual: bool,
    /// Its last lines of output, with `--build.output-lines`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    output: Vec<String>,
}

#[derive(Debug, Serialize)]
struct EstimateJson {
    total_seconds: f64,
    remaining_seconds: f64,
}

#[derive(Debug, Serialize)]
struct ErrorJson {
    step: Option<String>,
    message: String,
    /// The failing Dockerfile lines (`file`, `line`, `end_line` when several, `text`), and the
    /// failing process's `exit_code`, when BuildKit said; absent otherwise.
    #[serde(flatten)]
    failure: Option<Failure>,
}

#[derive(Debug, Serialize)]
struct StepJson {
    step: String,
    instruction: &'static str,
    command: String,
    /// `pending`, `running`, `done`, `cached` or `failed`.
    state: &'static str,
    started_at: Option<Time>,
    completed_at: Option<Time>,
    duration_seconds: Option<f64>,
    /// Learned from earlier builds of the same name; null when never seen.
    expected_seconds: Option<f64>,
    /// How long it usually takes when it runs (not from cache); null when never seen running.
    usual_seconds: Option<f64>,
    /// It ran, or has been running, past twice its usual duration and 10 s more.
    slower_than_usual: bool,
    /// BuildKit ran it once for this build and one that started earlier (deduplication): this
    /// build reused its result, as from cache.
    shared: bool,
    /// Why it failed.
    error: Option<String>,
    /// Its last lines of output while it runs, or if it failed, with `--build.output-lines`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    output: Vec<String>,
}

fn steps_json(steps: &[StepView], now: Time) -> Vec<StepJson> {
    steps
        .iter()
        .map(|s| StepJson {
            step: s.label.clone(),
            instruction: s.instruction,
            command: s.command.clone(),
            state: s.state.as_str(),
            started_at: s.started,
            completed_at: s.completed,
            duration_seconds: s.duration(),
            expected_seconds: s.expected,
            usual_seconds: s.usual,
            slower_than_usual: s.slower_than_usual(now),
            shared: s.shared,
            error: s.error.clone(),
            output: s.output.clone(),
        })
        .collect()
}

/// The fields every build has; `current_step` and the rest are filled in by the caller.
/// `now` is when a step still running is judged (a finished build's end).
fn common(
    builder: &str,
    view: BuildView,
    state: &'static str,
    duration_seconds: f64,
    detail: bool,
    now: Time,
) -> BuildJson {
    let cache_saved_seconds = view.cache_saved();
    BuildJson {
        step_list: detail.then(|| steps_json(&view.steps, now)),
        reference: view.reference,
        builder: builder.to_string(),
        name: view.name,
        tag: view.tag,
        state,
        started_at: view.started_at,
        completed_at: None,
        duration_seconds,
        current_step: view.counts.completed.min(view.counts.total),
        steps: view.counts,
        cache_saved_seconds,
        cache_break: view.cache_break,
        current: Vec::new(),
        estimate: None,
        error: None,
        record_generation: None,
        context: view.context,
        warnings: view.warnings,
    }
}

fn running(builder: &str, build: RunningBuild, now: Time, detail: bool) -> BuildJson {
    let current = build
        .running_steps()
        .map(|s| CurrentStep {
            step: s.label.clone(),
            instruction: s.instruction,
            command: s.command.clone(),
            started_at: s.started,
            usual_seconds: s.usual,
            slower_than_usual: s.slower_than_usual(now),
            output: s.output.clone(),
        })
        .collect();
    let current_step = build.current_step();
    let elapsed = (now - build.view.started_at).max(0.0);
    BuildJson {
        current_step,
        current,
        estimate: build
            .estimate
            .map(|Estimate { total, remaining }| EstimateJson { total_seconds: total, remaining_seconds: remaining }),
        ..common(builder, Arc::unwrap_or_clone(build.view), "running", elapsed, detail, now)
    }
}

fn finished(builder: &str, build: FinishedBuild, detail: bool) -> BuildJson {
    let error = match build.outcome {
        Outcome::Failed(ref message) => Some(ErrorJson {
            step: build.failed_step.clone(),
            message: message.clone(),
            failure: build.failure.clone(),
        }),
        _ => None,
    };
    let duration = build.duration();
    BuildJson {
        completed_at: Some(build.completed_at),
        error,
        record_generation: Some(build.generation),
        ..common(builder, build.view, build.outcome.label(), duration, detail, build.completed_at)
    }
}

/// Running builds (newest first), then finished ones (newest first), of every builder.
fn all(builders: &[Arc<Builder>], now: Time) -> Vec<BuildJson> {
    let mut running_builds = Vec::new();
    let mut finished_builds = Vec::new();
    for builder in builders {
        // Running builds with their steps: the page draws them from this one request.
        running_builds.extend(builder.snapshot(now).into_iter().map(|b| running(&builder.name, b, now, true)));
        finished_builds.extend(builder.recent().into_iter().map(|b| finished(&builder.name, b, false)));
    }
    running_builds.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
    finished_builds.sort_by(|a, b| b.completed_at.unwrap_or_default().total_cmp(&a.completed_at.unwrap_or_default()));
    running_builds.extend(finished_builds);
    running_builds
}

/// A source as the API shows it.
#[derive(Debug, Serialize)]
struct SourceJson {
    builder: String,
    #[serde(flatten)]
    facts: Facts,
}

fn sources_json(builders: &[Arc<Builder>]) -> Vec<SourceJson> {
    builders.iter().map(|b| SourceJson { builder: b.name.clone(), facts: b.facts() }).collect()
}

/// The body of `/api/v1/builds`: the builds, and the sources, so that one request tells
/// whether "no build is running" is true or only what a down source looks like.
pub fn list(builders: &[Arc<Builder>], now: Time) -> String {
    let builds = all(builders, now);
    serde_json::json!({ "generated_at": now, "sources": sources_json(builders), "builds": builds }).to_string()
}

/// The body of `/api/v1/sources`: every builder of `fleet`, and with a sources file, its lines
/// that are not watched and why.
pub fn sources(fleet: &Fleet, now: Time) -> String {
    let mut body = serde_json::json!({ "generated_at": now, "sources": sources_json(&fleet.builders()) });
    if let Some(errors) = fleet.file_errors() {
        body["file_errors"] = errors.into();
    }
    body.to_string()
}

/// The body of `/api/v1/builds/{ref}`, if that build is known.
pub fn one(builders: &[Arc<Builder>], reference: &str, now: Time) -> Option<String> {
    let build = builders.iter().find_map(|builder| {
        let live = builder.snapshot(now).into_iter().find(|b| b.view.reference == reference);
        live.map(|b| running(&builder.name, b, now, true)).or_else(|| {
            let done = builder.recent().into_iter().find(|b| b.view.reference == reference);
            done.map(|b| finished(&builder.name, b, true))
        })
    })?;
    Some(serde_json::to_string(&build).expect("serializable"))
}
