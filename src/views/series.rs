//! The point-in-time series' names, help texts and labels: what a scrape of the live state can
//! show, before any label set is made.

use prometheus::{GaugeVec, Opts};

/// The point-in-time series, filled afresh at each scrape.
pub(super) struct LiveVecs {
    pub(super) steps: GaugeVec,
    pub(super) steps_completed: GaugeVec,
    pub(super) steps_cached: GaugeVec,
    pub(super) current_step: GaugeVec,
    pub(super) running_info: GaugeVec,
    pub(super) start_time: GaugeVec,
    pub(super) elapsed: GaugeVec,
    pub(super) last_progress: GaugeVec,
    pub(super) estimated_duration: GaugeVec,
    pub(super) estimated_remaining: GaugeVec,
    pub(super) running: GaugeVec,
    pub(super) up: GaugeVec,
    pub(super) source_info: GaugeVec,
    pub(super) cache_bytes: GaugeVec,
    pub(super) cache_reclaimable: GaugeVec,
    pub(super) cache_records: GaugeVec,
    pub(super) worker_info: GaugeVec,
}

impl LiveVecs {
    pub(super) fn new() -> LiveVecs {
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
            source_info: gauge(
                "buildkit_exporter_source_info",
                "Versions of a source's Docker Engine (empty for a standalone buildkitd), its API and its BuildKit; always 1.",
                &["builder", "engine_version", "buildkit_version", "api_version"],
            ),
            cache_bytes: gauge("buildkit_cache_bytes", "Size of a builder's build cache by record type, read in the background.", &["builder", "type"]),
            cache_reclaimable: gauge("buildkit_cache_reclaimable_bytes", "Build cache not in use, which a prune could free.", &["builder"]),
            cache_records: gauge("buildkit_cache_records", "Records in a builder's build cache.", &["builder"]),
            worker_info: gauge(
                "buildkit_worker_info",
                "A BuildKit worker and the platforms it builds for (comma-separated, native first); always 1.",
                &["builder", "worker", "platforms"],
            ),
        }
    }

    /// The vectors labelled `{builder, ref, name}`.
    pub(super) fn per_build(&self) -> [&GaugeVec; 9] {
        [
            &self.steps,
            &self.steps_completed,
            &self.steps_cached,
            &self.current_step,
            &self.start_time,
            &self.elapsed,
            &self.last_progress,
            &self.estimated_duration,
            &self.estimated_remaining,
        ]
    }

    pub(super) fn all(&self) -> [&GaugeVec; 17] {
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
            &self.source_info,
            &self.cache_bytes,
            &self.cache_reclaimable,
            &self.cache_records,
            &self.worker_info,
        ]
    }
}
