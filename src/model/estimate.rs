//! Expected step durations learned from earlier builds of the same name, and the ETA of a
//! running build built from them.
//!
//! Steps are matched by a stable identity — stage plus instruction text — not by content digest
//! (which changes with every context change) nor by index (which shifts when a step is added).
//! A step that is cached now is expected to take what cached steps take; a step that ran before
//! is expected to take what it took (smoothed over builds); a step only ever seen cached is
//! expected to be cached again; a step never seen has no estimate, and neither has its build.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::event::Time;
use super::name::{OVERFLOW, UNKNOWN};
use super::snapshot::{Estimate, StepView};
use super::step::StepState;

/// Weight of the newest observation in the smoothed durations.
const SMOOTHING: f64 = 0.5;

/// What was learned about one step.
#[derive(Debug, Clone, Default)]
struct Learned {
    /// Smoothed execution time when it ran.
    executed: Option<f64>,
    /// Whether it was ever seen taken from cache.
    cached_seen: bool,
}

/// Most step identities remembered per name: a step whose text changes with every build
/// (`LABEL commit=...`) must not grow it forever.
const MAX_STEPS_PER_NAME: usize = 512;

/// What was learned about builds of one name.
#[derive(Debug, Clone)]
struct Profile {
    /// By step identity; the one seen longest ago is forgotten first.
    steps: LruCache<String, Learned>,
    /// Smoothed time from the last step's end to the build's completion (export).
    tail: Option<f64>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile { steps: LruCache::new(NonZeroUsize::new(MAX_STEPS_PER_NAME).expect("not zero")), tail: None }
    }
}

/// One finished step, as learning needs it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Stable step identity.
    pub key: String,
    /// Taken from cache.
    pub cached: bool,
    /// How long it took.
    pub duration: f64,
}

/// Learned durations for a bounded number of names.
#[derive(Debug)]
pub struct Estimates {
    /// By name; the name learned from longest ago is forgotten first.
    profiles: LruCache<String, Profile>,
    /// Smoothed duration of cached steps, all names.
    cached_time: f64,
}

fn smooth(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(old) => old + SMOOTHING * (new - old),
        None => new,
    }
}

impl Estimates {
    /// Learns nothing yet; remembers at most `max` names.
    pub fn new(max: usize) -> Self {
        Estimates { profiles: LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN)), cached_time: 0.0 }
    }

    /// Learns from a finished build of `name`: its steps and its export tail.
    pub fn learn(&mut self, name: &str, steps: &[Observed], tail: Option<f64>) {
        let profile = self.profiles.get_or_insert_mut(name.to_string(), Profile::default);
        for step in steps {
            let learned = profile.steps.get_or_insert_mut(step.key.clone(), Learned::default);
            if step.cached {
                learned.cached_seen = true;
                self.cached_time = smooth(Some(self.cached_time), step.duration.max(0.0));
            } else {
                learned.executed = Some(smooth(learned.executed, step.duration.max(0.0)));
            }
        }
        if let Some(tail) = tail {
            profile.tail = Some(smooth(profile.tail, tail.max(0.0)));
        }
    }

    /// Expected duration of step `key` of a build of `name`; `cached_now` if it is being taken
    /// from cache in this build.
    pub fn expected(&self, name: &str, key: &str, cached_now: bool) -> Option<f64> {
        if cached_now {
            return Some(self.cached_time);
        }
        let learned = self.profiles.peek(name)?.steps.peek(key)?;
        learned.executed.or(learned.cached_seen.then_some(self.cached_time))
    }

    /// The usual duration of step `key` of a build of `name` when it runs (not from cache),
    /// learned from earlier builds; `None` when it was never seen running.
    pub fn usual(&self, name: &str, key: &str) -> Option<f64> {
        self.profiles.peek(name)?.steps.peek(key)?.executed
    }

    /// How many names have learned durations.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Expected time from the last step to completion for builds of `name`.
    pub fn tail(&self, name: &str) -> f64 {
        self.profiles.peek(name).and_then(|p| p.tail).unwrap_or(0.0)
    }

    /// Expected total and remaining time of a running build of `name` created at `created_at`,
    /// if every step that is not done has an estimate.
    pub fn eta(&self, name: &str, steps: &[StepView], created_at: Time, now: Time) -> Option<Estimate> {
        if steps.is_empty() || name == UNKNOWN || name == OVERFLOW {
            return None;
        }
        let mut remaining = 0.0;
        for step in steps {
            match step.state {
                StepState::Done | StepState::Cached | StepState::Failed => {}
                StepState::Running => {
                    let ran = now - step.started.unwrap_or(now);
                    remaining += (step.expected? - ran).max(0.0);
                }
                StepState::Pending => remaining += step.expected?,
            }
        }
        remaining += self.tail(name);
        let elapsed = (now - created_at).max(0.0);
        Some(Estimate { total: elapsed + remaining, remaining })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, cached: bool, duration: f64) -> Observed {
        Observed { key: key.to_string(), cached, duration }
    }

    #[test]
    fn unknown_steps_have_no_estimate() {
        let mut e = Estimates::new(10);
        assert_eq!(e.expected("app", "|RUN make", false), None);
        e.learn("app", &[step("|RUN make", false, 10.0)], Some(1.0));
        assert_eq!(e.expected("app", "|RUN make", false), Some(10.0));
        assert_eq!(e.expected("app", "|RUN other", false), None);
        assert_eq!(e.expected("other-name", "|RUN make", false), None);
        assert_eq!(e.tail("app"), 1.0);
    }

    #[test]
    fn durations_are_smoothed() {
        let mut e = Estimates::new(10);
        e.learn("app", &[step("k", false, 10.0)], None);
        e.learn("app", &[step("k", false, 20.0)], None);
        assert_eq!(e.expected("app", "k", false), Some(15.0));
    }

    #[test]
    fn cached_steps_take_what_cached_steps_take() {
        let mut e = Estimates::new(10);
        e.learn("app", &[step("a", true, 0.02), step("b", false, 30.0)], None);
        assert_eq!(e.expected("app", "a", false), Some(e.cached_time), "only ever seen cached");
        assert_eq!(e.expected("app", "b", true), Some(e.cached_time), "cached now");
        assert_eq!(e.expected("app", "never-seen", true), Some(e.cached_time));
        assert_eq!(e.expected("app", "b", false), Some(30.0));
        assert_eq!(e.usual("app", "a"), None, "never seen running");
        assert_eq!(e.usual("app", "b"), Some(30.0));
    }

    #[test]
    fn names_are_bounded() {
        let mut e = Estimates::new(1);
        e.learn("a", &[step("k", false, 1.0)], None);
        e.learn("b", &[step("k", false, 2.0)], None);
        assert_eq!(e.expected("a", "k", false), None);
        assert_eq!(e.expected("b", "k", false), Some(2.0));
    }

    #[test]
    fn steps_per_name_are_bounded() {
        let mut e = Estimates::new(1);
        for build in 0..(MAX_STEPS_PER_NAME + 10) {
            e.learn("app", &[step(&format!("|LABEL commit={build}"), false, 1.0)], None);
        }
        assert_eq!(e.profiles.peek("app").unwrap().steps.len(), MAX_STEPS_PER_NAME);
        assert_eq!(e.expected("app", "|LABEL commit=0", false), None, "the oldest is forgotten");
        assert_eq!(e.expected("app", &format!("|LABEL commit={}", MAX_STEPS_PER_NAME + 9), false), Some(1.0));
    }
}
