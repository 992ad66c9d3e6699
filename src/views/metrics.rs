//! The Prometheus view: counters and histograms updated as builds finish, and point-in-time
//! series built fresh from snapshots at each scrape, so a build's series vanish when it ends.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::builder::Builder;
use crate::model::name::UNKNOWN;
use crate::model::{Effect, StepState};

/// Build durations: one second to four hours.
const BUILD_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];
/// Step durations: a tenth of a second to two hours.
const STEP_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Series that change when builds start or finish.
#[derive(Debug)]
pub struct Counters {
    builds_started: IntCounterVec,
    builds_completed: IntCounterVec,
    build_duration: HistogramVec,
    last_completion: GaugeVec,
    steps: IntCounterVec,
    steps_cached: IntCounterVec,
    steps_failed: IntCounterVec,
    step_duration: HistogramVec,
    reconnects: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry.register(Box::new(collector.clone())).expect("metric names are unique");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, HistogramVec::new(opts, labels).expect("valid metric"))
}

impl Counters {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> Arc<Counters> {
        let build = &["builder", "name", "result"];
        let step = &["builder", "name", "instruction"];
        let info = register(
            registry,
            IntGaugeVec::new(
                Opts::new("buildkit_exporter_build_info", "Version of buildkit-exporter; always 1."),
                &["version"],
            )
            .expect("valid metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Arc::new(Counters {
            builds_started: counter(
                registry,
                "buildkit_builds_started_total",
                "Builds seen starting (or running, when first seen).",
                &["builder"],
            ),
            builds_completed: counter(
                registry,
                "buildkit_builds_completed_total",
                "Builds finished, by result.",
                build,
            ),
            build_duration: histogram(
                registry,
                "buildkit_build_duration_seconds",
                "Wall-clock duration of finished builds, from BuildKit's timestamps.",
                build,
                BUILD_BUCKETS,
            ),
            last_completion: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "buildkit_build_last_completion_time_seconds",
                        "Unix time the last build of this name finished with this result.",
                    ),
                    build,
                )
                .expect("valid metric"),
            ),
            steps: counter(
                registry,
                "buildkit_steps_total",
                "Steps of finished builds that completed, came from cache or failed.",
                step,
            ),
            steps_cached: counter(
                registry,
                "buildkit_steps_cached_total",
                "Steps of finished builds that came from cache.",
                step,
            ),
            steps_failed: counter(
                registry,
                "buildkit_steps_failed_total",
                "Steps of finished builds that failed.",
                step,
            ),
            step_duration: histogram(
                registry,
                "buildkit_step_duration_seconds",
                "Execution time of steps that ran (not cached) and succeeded.",
                step,
                STEP_BUCKETS,
            ),
            reconnects: counter(
                registry,
                "buildkit_exporter_source_reconnects_total",
                "Connection attempts to a source after it failed.",
                &["builder"],
            ),
        })
    }

    /// Makes the per-builder counters exist from the start, at zero.
    pub fn register_builder(&self, builder: &str) {
        self.builds_started.with_label_values(&[builder]);
        self.reconnects.with_label_values(&[builder]);
    }

    /// Makes the series of builds of `name` exist at zero for every result and for
    /// `instructions`, so that `rate()` and `increase()` see their first increment (a series
    /// that appears at 1 has no earlier sample to differ from).
    pub fn touch(&self, builder: &str, name: &str, instructions: &[&str]) {
        for result in ["succeeded", "failed", "canceled"] {
            let labels = [builder, name, result];
            self.builds_completed.with_label_values(&labels);
            self.build_duration.with_label_values(&labels);
        }
        for instruction in instructions {
            let labels = [builder, name, instruction];
            self.steps.with_label_values(&labels);
            self.steps_cached.with_label_values(&labels);
            self.steps_failed.with_label_values(&labels);
            self.step_duration.with_label_values(&labels);
        }
    }

    /// Counts one effect of a model change.
    pub fn record(&self, builder: &str, effect: &Effect) {
        match effect {
            Effect::BuildStarted => self.builds_started.with_label_values(&[builder]).inc(),
            Effect::BuildFinished(build) => {
                // Every step's instruction, run or not: the same set scrapes touched while it ran.
                let instructions: Vec<&str> = build.step_list.iter().map(|s| s.instruction).collect();
                self.touch(builder, &build.name, &instructions);
                let labels = [builder, build.name.as_str(), build.outcome.label()];
                self.builds_completed.with_label_values(&labels).inc();
                self.build_duration.with_label_values(&labels).observe(build.duration());
                self.raise_last_completion(&labels, build.completed_at);
                for step in build.finished_steps() {
                    let labels = [builder, build.name.as_str(), step.instruction];
                    self.steps.with_label_values(&labels).inc();
                    if step.state == StepState::Cached {
                        self.steps_cached.with_label_values(&labels).inc();
                    }
                    if step.state == StepState::Failed {
                        self.steps_failed.with_label_values(&labels).inc();
                    }
                    if let Some(run_time) = step.run_time() {
                        self.step_duration.with_label_values(&labels).observe(run_time);
                    }
                }
            }
            Effect::HistorySeen { name, result, completed_at } => {
                self.raise_last_completion(&[builder, name, result], *completed_at);
            }
            Effect::BuildLost { .. } => {}
        }
    }

    fn raise_last_completion(&self, labels: &[&str], at: f64) {
        let gauge = self.last_completion.with_label_values(labels);
        if at > gauge.get() {
            gauge.set(at);
        }
    }

    /// Counts a reconnection attempt.
    pub fn count_reconnect(&self, builder: &str) {
        self.reconnects.with_label_values(&[builder]).inc();
    }
}

/// Series built from snapshots at scrape time.
pub struct Live {
    builders: Vec<Arc<Builder>>,
    /// Touched for running builds, so their counters exist at zero before they finish.
    counters: Arc<Counters>,
    /// Empty vectors whose descriptors describe what `collect` returns.
    prototypes: LiveVecs,
}

/// The point-in-time series, filled afresh at each scrape.
struct LiveVecs {
    steps: GaugeVec,
    steps_completed: GaugeVec,
    steps_cached: GaugeVec,
    current_step: GaugeVec,
    running_info: GaugeVec,
    start_time: GaugeVec,
    elapsed: GaugeVec,
    last_progress: GaugeVec,
    estimated_duration: GaugeVec,
    estimated_remaining: GaugeVec,
    running: GaugeVec,
    up: GaugeVec,
}

impl LiveVecs {
    fn new() -> LiveVecs {
        let per_build = &["builder", "ref", "name"];
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        LiveVecs {
            steps: gauge("buildkit_build_steps", "Steps of a running build known so far, all stages.", per_build),
            steps_completed: gauge("buildkit_build_steps_completed", "Steps of a running build completed (executed or cached).", per_build),
            steps_cached: gauge("buildkit_build_steps_cached", "Steps of a running build that came from cache.", per_build),
            current_step: gauge("buildkit_build_current_step", "Step a running build is at: completed steps + 1, at most the number of steps.", per_build),
            running_info: gauge(
                "buildkit_build_step_running_info",
                "A step executing now in a running build; always 1.",
                &["builder", "ref", "name", "step", "instruction", "command"],
            ),
            start_time: gauge("buildkit_build_start_time_seconds", "Unix time a running build started.", per_build),
            elapsed: gauge("buildkit_build_elapsed_seconds", "Seconds a running build has been running, computed at scrape.", per_build),
            last_progress: gauge(
                "buildkit_build_last_progress_time_seconds",
                "Unix time of a running build's last progress (vertex, status or log); BuildKit sends no heartbeat.",
                per_build,
            ),
            estimated_duration: gauge(
                "buildkit_build_estimated_duration_seconds",
                "Expected total duration of a running build, learned from earlier builds of the same name; absent without an estimate.",
                per_build,
            ),
            estimated_remaining: gauge(
                "buildkit_build_estimated_remaining_seconds",
                "Expected seconds until a running build finishes, computed at scrape; absent without an estimate.",
                per_build,
            ),
            running: gauge("buildkit_builds_running", "Builds running now.", &["builder"]),
            up: gauge("buildkit_exporter_source_up", "Whether the build-history stream of a source is open (1) or not (0).", &["builder"]),
        }
    }

    fn all(&self) -> [&GaugeVec; 12] {
        [
            &self.steps,
            &self.steps_completed,
            &self.steps_cached,
            &self.current_step,
            &self.running_info,
            &self.start_time,
            &self.elapsed,
            &self.last_progress,
            &self.estimated_duration,
            &self.estimated_remaining,
            &self.running,
            &self.up,
        ]
    }
}

impl Live {
    /// Point-in-time series for `builders`.
    pub fn new(builders: Vec<Arc<Builder>>, counters: Arc<Counters>) -> Live {
        Live { builders, counters, prototypes: LiveVecs::new() }
    }
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        self.prototypes.all().into_iter().flat_map(|v| v.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let vecs = LiveVecs::new();
        let now = crate::now();
        for builder in &self.builders {
            let name = builder.name.as_str();
            vecs.up.with_label_values(&[name]).set(if builder.is_up() { 1.0 } else { 0.0 });
            let builds = builder.snapshot(now);
            vecs.running.with_label_values(&[name]).set(builds.len() as f64);
            for build in &builds {
                if build.name != UNKNOWN {
                    // A build still unnamed may yet be named: no series for a name it will not keep.
                    let instructions: Vec<&str> = build.step_list.iter().map(|s| s.instruction).collect();
                    self.counters.touch(name, &build.name, &instructions);
                }
                let labels = [name, build.reference.as_str(), build.name.as_str()];
                vecs.steps.with_label_values(&labels).set(build.steps.into());
                vecs.steps_completed.with_label_values(&labels).set(build.completed.into());
                vecs.steps_cached.with_label_values(&labels).set(build.cached.into());
                vecs.current_step.with_label_values(&labels).set(build.current_step.into());
                vecs.start_time.with_label_values(&labels).set(build.started_at);
                vecs.elapsed.with_label_values(&labels).set((now - build.started_at).max(0.0));
                vecs.last_progress.with_label_values(&labels).set(build.last_progress);
                if let Some(estimate) = build.estimate {
                    vecs.estimated_duration.with_label_values(&labels).set(estimate.total);
                    vecs.estimated_remaining.with_label_values(&labels).set(estimate.remaining);
                }
                for step in &build.in_progress {
                    vecs.running_info
                        .with_label_values(&[
                            name,
                            &build.reference,
                            &build.name,
                            &step.label,
                            step.instruction,
                            &step.command,
                        ])
                        .set(1.0);
                }
            }
        }
        vecs.all().into_iter().flat_map(|v| v.collect()).collect()
    }
}

/// Renders every metric of `registry` in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("text exposition is UTF-8")
}
