//! One builder's observed state, shared by its source (the only writer) and the views.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::{Effect, Event, FinishedBuild, Model, RunningBuild, Settings, Time};
use crate::views::metrics::Counters;

/// What is known of one builder.
#[derive(Debug)]
pub struct Builder {
    /// The `builder` label value.
    pub name: String,
    /// Builds of this builder. A std `Mutex` is enough: it is held only for one `apply` or one
    /// snapshot, never across an `.await`.
    model: Mutex<Model>,
    /// Whether the build-history stream is open.
    up: AtomicBool,
    /// Where effects are counted.
    metrics: Arc<Counters>,
}

impl Builder {
    /// A builder with no builds, not connected.
    pub fn new(name: &str, settings: Settings, metrics: Arc<Counters>) -> Arc<Builder> {
        metrics.register_builder(name);
        Arc::new(Builder {
            name: name.to_string(),
            model: Mutex::new(Model::new(settings)),
            up: AtomicBool::new(false),
            metrics,
        })
    }

    /// Folds an event into the model and counts what it changed.
    pub fn apply(&self, event: Event) -> Vec<Effect> {
        let effects = self.model.lock().expect("model lock").apply(event);
        for effect in &effects {
            self.metrics.record(&self.name, effect);
            if let Effect::BuildLost { reference } = effect {
                tracing::warn!(%reference, "running build vanished from the source without a result: counted as failed");
            }
        }
        effects
    }

    /// Whether `reference` is held as running.
    pub fn is_running(&self, reference: &str) -> bool {
        self.model.lock().expect("model lock").is_running(reference)
    }

    /// The running builds at `now`.
    pub fn snapshot(&self, now: Time) -> Vec<RunningBuild> {
        self.model.lock().expect("model lock").snapshot(now)
    }

    /// The latest finished builds, newest first.
    pub fn recent(&self) -> Vec<FinishedBuild> {
        self.model.lock().expect("model lock").recent()
    }

    /// Marks the source connected or not.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Whether the source is connected.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts a reconnection attempt after a failure.
    pub fn count_reconnect(&self) {
        self.metrics.count_reconnect(&self.name);
    }
}
