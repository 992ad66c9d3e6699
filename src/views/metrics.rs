//! The point-in-time series: built fresh from the builders' snapshots at each scrape, so a
//! build's series vanish when it ends; and the text exposition of every series.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

use crate::builder::Builder;
use crate::model::name::UNKNOWN;
use crate::views::counters::Counters;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
            up: gauge("buildkit_exporter_source_up", "Whether the build history of a source is watched (1: connected, and the replay that opens the connection received) or not (0).", &["builder"]),
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
                if build.view.name != UNKNOWN {
                    // A build still unnamed may yet be named: no series for a name it will not keep.
                    self.counters.touch(name, &build.view.name, build.view.steps.iter().map(|s| s.instruction));
                }
                let labels = [name, build.view.reference.as_str(), build.view.name.as_str()];
                vecs.steps.with_label_values(&labels).set(build.view.counts.total.into());
                vecs.steps_completed.with_label_values(&labels).set(build.view.counts.completed.into());
                vecs.steps_cached.with_label_values(&labels).set(build.view.counts.cached.into());
                vecs.current_step.with_label_values(&labels).set(build.current_step().into());
                vecs.start_time.with_label_values(&labels).set(build.view.started_at);
                vecs.elapsed.with_label_values(&labels).set((now - build.view.started_at).max(0.0));
                vecs.last_progress.with_label_values(&labels).set(build.last_progress);
                if let Some(estimate) = build.estimate {
                    vecs.estimated_duration.with_label_values(&labels).set(estimate.total);
                    vecs.estimated_remaining.with_label_values(&labels).set(estimate.remaining);
                }
                for step in build.running_steps() {
                    vecs.running_info
                        .with_label_values(&[
                            name,
                            &build.view.reference,
                            &build.view.name,
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
