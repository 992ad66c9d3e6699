//! One builder's observed state: its model, written by its source (the only writer) and read
//! by the views as snapshots; the effects of each write go on to a [`Record`].

use std::sync::{Arc, Mutex, MutexGuard};

use crate::facts::{Buildkit, Engine, Facts};
use crate::model::{Effect, Event, FinishedBuild, Model, RunningBuild, Settings, Time};

/// Where a builder's effects are recorded: the counters of the metrics view.
pub trait Record: Send + Sync {
    /// Makes the builder's own series exist from the start.
    fn builder_added(&self, builder: &str);
    /// Forgets every series of a builder that is no longer watched.
    fn builder_removed(&self, builder: &str);
    /// Records what one model change did.
    fn record(&self, builder: &str, effect: &Effect);
    /// Records a reconnection attempt after a failure.
    fn reconnect(&self, builder: &str);
    /// Records a restart of the process behind the source.
    fn restart(&self, builder: &str);
}

/// What is known of one builder.
pub struct Builder {
    /// The `builder` label value.
    pub name: String,
    /// Builds of this builder. A std `Mutex` is enough: it is held only for one `apply` or one
    /// snapshot, never across an `.await`.
    model: Mutex<Model>,
    /// Whether the source is watched, why not, and what it runs.
    facts: Mutex<Facts>,
    /// Where effects are recorded.
    record: Arc<dyn Record>,
    /// Whether steps' output is kept (`--build.output-lines` above 0).
    keeps_output: bool,
}

impl Builder {
    /// A builder with no builds, not connected.
    pub fn new(name: &str, settings: Settings, record: Arc<dyn Record>) -> Arc<Builder> {
        record.builder_added(name);
        Arc::new(Builder {
            keeps_output: settings.output_lines > 0,
            name: name.to_string(),
            model: Mutex::new(Model::new(settings)),
            facts: Mutex::new(Facts { since: crate::clock::now(), ..Facts::default() }),
            record,
        })
    }

    /// Folds an event into the model and records what it changed.
    pub fn apply(&self, event: Event) -> Vec<Effect> {
        let effects = self.model().apply(event);
        for effect in &effects {
            self.record.record(&self.name, effect);
            if let Effect::BuildLost { reference } = effect {
                tracing::warn!(%reference, "running build vanished from the source without a result: counted as failed");
            }
        }
        effects
    }

    /// Whether steps' output is to be read at all.
    pub fn keeps_output(&self) -> bool {
        self.keeps_output
    }

    /// Whether `reference` is held as running.
    pub fn is_running(&self, reference: &str) -> bool {
        self.model().is_running(reference)
    }

    /// Refs of the builds held as running.
    pub fn running_refs(&self) -> Vec<String> {
        self.model().running_refs()
    }

    /// The running builds at `now`.
    pub fn snapshot(&self, now: Time) -> Vec<RunningBuild> {
        self.model().snapshot(now)
    }

    /// The latest finished builds, newest first.
    pub fn recent(&self) -> Vec<FinishedBuild> {
        self.model().recent()
    }

    /// The names whose last build failed, with that failure.
    pub fn last_failures(&self) -> Vec<crate::model::LastFailure> {
        self.model().last_failures()
    }

    /// The model, locked. A panic in an earlier update poisons the lock; the state it left may
    /// miss that one update, but it is still the best there is, so the daemon says so and goes
    /// on rather than failing every scrape from then on.
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|poisoned| {
            tracing::error!(builder = %self.name, "an update of the build state panicked: going on with the state it left");
            self.model.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Marks the source watched (connected, its replay received) or not.
    pub fn set_up(&self, up: bool) {
        let mut facts = self.facts_mut();
        if facts.up != up {
            facts.up = up;
            facts.since = crate::clock::now();
        }
        if up {
            facts.reason = None;
        }
    }

    /// Marks the source down for `reason` (one line).
    pub fn set_down(&self, reason: String) {
        self.set_up(false);
        self.facts_mut().reason = Some(reason);
    }

    /// Whether the source is watched: connected, and its replay received.
    pub fn is_up(&self) -> bool {
        self.facts_mut().up
    }

    /// Records the source's address, as shown (see [`Facts::address`]).
    pub fn set_address(&self, address: String) {
        self.facts_mut().address = address;
    }

    /// Records what the engine said of itself.
    pub fn set_engine(&self, engine: Engine) {
        self.facts_mut().engine = Some(engine);
    }

    /// Records what BuildKit said of itself and holds.
    pub fn set_buildkit(&self, buildkit: Buildkit) {
        self.facts_mut().buildkit = Some(buildkit);
    }

    /// A copy of what is known of the source.
    pub fn facts(&self) -> Facts {
        self.facts_mut().clone()
    }

    /// Nothing that can panic runs under this lock, but a poisoned one is recovered all the same.
    fn facts_mut(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a reconnection attempt after a failure.
    pub fn count_reconnect(&self) {
        self.record.reconnect(&self.name);
    }

    /// Counts a restart of the process behind the source, seen when it answered again.
    pub fn count_restart(&self) {
        self.facts_mut().restarts += 1;
        self.record.restart(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BuildInfo;

    struct Nothing;

    impl Record for Nothing {
        fn builder_added(&self, _: &str) {}
        fn builder_removed(&self, _: &str) {}
        fn record(&self, _: &str, _: &Effect) {}
        fn reconnect(&self, _: &str) {}
        fn restart(&self, _: &str) {}
    }

    #[test]
    fn a_panic_under_the_lock_does_not_stop_the_builder() {
        let builder = Builder::new("default", Settings::default(), Arc::new(Nothing));
        builder.apply(Event::Started(BuildInfo { reference: "r1".into(), ..Default::default() }));
        let poisoner = builder.clone();
        let panicked = std::thread::spawn(move || {
            let _model = poisoner.model.lock().unwrap();
            panic!("an update went wrong");
        })
        .join();
        assert!(panicked.is_err() && builder.model.is_poisoned());
        assert_eq!(builder.running_refs(), vec!["r1".to_string()], "what was observed is kept");
        assert!(!builder.model.is_poisoned());
        builder.apply(Event::Started(BuildInfo { reference: "r2".into(), ..Default::default() }));
        assert_eq!(builder.snapshot(0.0).len(), 2);
    }
}
