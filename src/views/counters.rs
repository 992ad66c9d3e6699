//! The series that change when builds start or finish: counters, histograms and the
//! last-completion gauge, fed by the model's effects as they happen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

use crate::builder::Record;
use crate::model::{Effect, Outcome, Reason, StepState};

/// Build durations: one second to four hours.
const BUILD_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];
/// Step durations: a tenth of a second to two hours.
const STEP_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

/// Series that change when builds start or finish.
///
/// Every series here lives as long as the daemon, so each label is paid for by every image
/// name: the default keeps the per-name cost here to 27 series (see README, "What it costs",
/// where a name's last failure, a point-in-time series, adds one), and the step series by name
/// and instruction are opt-in (`step_detail`).
#[derive(Debug)]
pub struct Counters {
    /// Step counters carry `instruction`, and the step histogram `name`, as well.
    step_detail: bool,
    /// Bumped by every change, so that their text can be kept until one comes.
    changes: AtomicU64,
    builds_started: IntCounterVec,
    builds_completed: IntCounterVec,
    build_duration: HistogramVec,
    last_completion: GaugeVec,
    steps: IntCounterVec,
    steps_cached: IntCounterVec,
    steps_failed: IntCounterVec,
    step_duration: HistogramVec,
    warnings: IntCounterVec,
    cache_saved: CounterVec,
    cache_breaks: IntCounterVec,
    reconnects: IntCounterVec,
    restarts: IntCounterVec,
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
    ///
    /// Without `step_detail`, the step counters are `{builder, name}` and the step histogram
    /// `{builder, instruction}`; with it, both are `{builder, name, instruction}`. The label
    /// names are listed so that the lean set is a prefix of the detailed one, which lets
    /// [`Counters::step_counter`] and [`Counters::step_histogram`] cut the values to fit.
    pub fn new(registry: &Registry, step_detail: bool) -> Arc<Counters> {
        let build = &["builder", "name", "result"];
        let (step_count, step_time): (&[&str], &[&str]) = if step_detail {
            (&["builder", "name", "instruction"], &["builder", "instruction", "name"])
        } else {
            (&["builder", "name"], &["builder", "instruction"])
        };
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
            step_detail,
            changes: AtomicU64::new(0),
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
            // Only builds that succeeded: a failure ends early and a cancel at any time, so
            // their durations would only blur the quantiles of how long a build takes.
            build_duration: histogram(
                registry,
                "buildkit_build_duration_seconds",
                "Wall-clock duration of builds that succeeded, from BuildKit's timestamps.",
                &["builder", "name"],
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
                step_count,
            ),
            steps_cached: counter(
                registry,
                "buildkit_steps_cached_total",
                "Steps of finished builds that came from cache.",
                step_count,
            ),
            steps_failed: counter(
                registry,
                "buildkit_steps_failed_total",
                "Steps of finished builds that failed.",
                step_count,
            ),
            step_duration: histogram(
                registry,
                "buildkit_step_duration_seconds",
                "Execution time of steps that ran (not cached) and succeeded.",
                step_time,
                STEP_BUCKETS,
            ),
            warnings: counter(
                registry,
                "buildkit_build_warnings_total",
                "Warnings of finished builds (lint checks and others) as BuildKit recorded them.",
                &["builder", "name"],
            ),
            cache_saved: register(
                registry,
                CounterVec::new(
                    Opts::new(
                        "buildkit_build_cache_saved_seconds_total",
                        "Time the build cache saved finished builds: the usual durations (learned from earlier builds of the name) of the steps they took from cache.",
                    ),
                    &["builder", "name"],
                )
                .expect("valid metric"),
            ),
            // By builder and reason only: a name label would multiply the per-name cost by six.
            cache_breaks: counter(
                registry,
                "buildkit_build_cache_breaks_total",
                "Finished builds that ran a step the previous finished build of their name took from cache, by the reason found for the first such step.",
                &["builder", "reason"],
            ),
            reconnects: counter(
                registry,
                "buildkit_exporter_source_reconnects_total",
                "Connection attempts to a source after it failed.",
                &["builder"],
            ),
            restarts: counter(
                registry,
                "buildkit_exporter_source_restarts_total",
                "Restarts of the process behind a source, told from broken links: the peer process of a unix socket (engine or buildkitd), or a container builder's container.",
                &["builder"],
            ),
        })
    }

    /// Makes the series of builds of `name` exist at zero for every result and for
    /// `instructions`, so that `rate()` and `increase()` see their first increment (a series
    /// that appears at 1 has no earlier sample to differ from).
    pub fn touch<'a>(&self, builder: &str, name: &str, instructions: impl IntoIterator<Item = &'a str>) {
        // A build repeats instructions (a dozen RUNs): one lookup each.
        let mut instructions: Vec<&str> = instructions.into_iter().collect();
        instructions.sort_unstable();
        instructions.dedup();
        for result in ["succeeded", "failed", "canceled"] {
            self.builds_completed.with_label_values(&[builder, name, result]);
        }
        self.build_duration.with_label_values(&[builder, name]);
        self.warnings.with_label_values(&[builder, name]);
        self.cache_saved.with_label_values(&[builder, name]);
        if !self.step_detail {
            self.step_counters(builder, name, "");
        }
        for instruction in instructions {
            if self.step_detail {
                self.step_counters(builder, name, instruction);
            }
            self.step_histogram(builder, name, instruction);
        }
        self.changed();
    }

    /// The three step counters of one label set (`instruction` is ignored without detail).
    fn step_counters(&self, builder: &str, name: &str, instruction: &str) -> [IntCounter; 3] {
        let values = [builder, name, instruction];
        let labels = if self.step_detail { &values[..] } else { &values[..2] };
        [&self.steps, &self.steps_cached, &self.steps_failed].map(|c| c.with_label_values(labels))
    }

    /// The step histogram of one label set (`name` is ignored without detail).
    fn step_histogram(&self, builder: &str, name: &str, instruction: &str) -> Histogram {
        let values = [builder, instruction, name];
        self.step_duration.with_label_values(if self.step_detail { &values[..] } else { &values[..2] })
    }

    /// How many changes so far: the same number means the same text.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Counts a change, once it is made: a render that read the count before it may or may not
    /// show it, and the next render sees a new count and renders again; one that read it after
    /// shows it.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn raise_last_completion(&self, labels: &[&str], at: f64) {
        let gauge = self.last_completion.with_label_values(labels);
        if at > gauge.get() {
            gauge.set(at);
        }
    }
}

/// Removes from `vec` every label set whose `builder` is `builder`. The crate removes only
/// whole label sets, so they are found in what the vector collects.
fn forget<T: MetricVecBuilder>(vec: &MetricVec<T>, builder: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> =
                metric.get_label().iter().map(|pair| (pair.name(), pair.value())).collect();
            if labels.get("builder") == Some(&builder) {
                // Cannot fail: the label set was just collected from this vector.
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Record for Counters {
    /// Makes the per-builder counters exist from the start, at zero.
    fn builder_added(&self, builder: &str) {
        self.builds_started.with_label_values(&[builder]);
        self.reconnects.with_label_values(&[builder]);
        self.restarts.with_label_values(&[builder]);
        for reason in Reason::ALL {
            self.cache_breaks.with_label_values(&[builder, reason.label()]);
        }
        self.changed();
    }

    /// Removes every series that carries the builder, whatever its other labels.
    fn builder_removed(&self, builder: &str) {
        forget(&self.builds_started, builder);
        forget(&self.builds_completed, builder);
        forget(&self.build_duration, builder);
        forget(&self.last_completion, builder);
        forget(&self.steps, builder);
        forget(&self.steps_cached, builder);
        forget(&self.steps_failed, builder);
        forget(&self.step_duration, builder);
        forget(&self.warnings, builder);
        forget(&self.cache_saved, builder);
        forget(&self.cache_breaks, builder);
        forget(&self.reconnects, builder);
        forget(&self.restarts, builder);
        self.changed();
    }

    fn record(&self, builder: &str, effect: &Effect) {
        match effect {
            Effect::BuildStarted => self.builds_started.with_label_values(&[builder]).inc(),
            Effect::BuildNamed { name, instructions } => self.touch(builder, name, instructions.iter().copied()),
            Effect::BuildFinished(build) => {
                // Every step's instruction, run or not: the same set touched while it ran.
                self.touch(builder, &build.view.name, build.view.steps.iter().map(|s| s.instruction));
                let name = build.view.name.as_str();
                let labels = [builder, name, build.outcome.label()];
                self.builds_completed.with_label_values(&labels).inc();
                if matches!(build.outcome, Outcome::Succeeded) {
                    self.build_duration.with_label_values(&[builder, name]).observe(build.duration());
                }
                self.raise_last_completion(&labels, build.completed_at);
                self.warnings.with_label_values(&[builder, name]).inc_by(build.view.warnings.count.into());
                self.cache_saved.with_label_values(&[builder, name]).inc_by(build.view.cache_saved());
                if let Some(broke) = &build.view.cache_break {
                    self.cache_breaks.with_label_values(&[builder, broke.reason.label()]).inc();
                }
                for step in build.finished_steps() {
                    let [steps, cached, failed] = self.step_counters(builder, name, step.instruction);
                    steps.inc();
                    // A shared step's result was reused, as from cache: it ran once, for the
                    // build that asked first.
                    if step.from_cache() {
                        cached.inc();
                    }
                    if step.state == StepState::Failed {
                        failed.inc();
                    }
                    if let Some(run_time) = step.run_time() {
                        self.step_histogram(builder, name, step.instruction).observe(run_time);
                    }
                }
            }
            Effect::HistorySeen { name, result, completed_at } => {
                self.raise_last_completion(&[builder, name, result], *completed_at);
            }
            Effect::BuildLost { .. } => {}
        }
        self.changed();
    }

    fn reconnect(&self, builder: &str) {
        self.reconnects.with_label_values(&[builder]).inc();
        self.changed();
    }

    fn restart(&self, builder: &str) {
        self.restarts.with_label_values(&[builder]).inc();
        self.changed();
    }
}
