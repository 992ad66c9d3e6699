//! What views read: running builds as of a moment ([`RunningBuild`]) and counted builds
//! ([`FinishedBuild`]), each with its steps in one shape ([`StepView`]) and its step counts
//! computed once.

use std::sync::Arc;

use super::build::{Build, Vertex};
use super::cache_break::CacheBreak;
use super::event::{BuildContext, Failure, Outcome, Time};
use super::step::StepState;
use super::Model;

/// A step is slower than usual past this many times its usual duration...
pub const SLOWER_FACTOR: f64 = 2.0;
/// ...and this many seconds more than it.
pub const SLOWER_MARGIN: f64 = 10.0;

/// One step of a build, running or finished.
#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    /// The bracketed position, e.g. `[base 3/4]` (empty for free-form steps).
    pub label: String,
    /// `instruction` label value.
    pub instruction: &'static str,
    /// The instruction's arguments, masked and cut to the configured length.
    pub command: String,
    /// Where it is.
    pub state: StepState,
    /// When it started.
    pub started: Option<Time>,
    /// When it finished.
    pub completed: Option<Time>,
    /// How long it is expected to take, learned from earlier builds of the same name.
    pub expected: Option<f64>,
    /// How long it usually takes when it runs rather than comes from cache, learned from earlier
    /// builds of the same name: what the cache saves when it is cached.
    pub usual: Option<f64>,
    /// Its error, masked, if it failed.
    pub error: Option<String>,
    /// The last lines it printed, masked: while it runs, or if it failed; only when
    /// `--build.output-lines` keeps any.
    pub output: Vec<String>,
    /// BuildKit ran it once for this build and one that started earlier (deduplication): its
    /// result was reused, so it counts as from cache once done, and has no run time here.
    pub shared: bool,
}

impl StepView {
    /// Execution time of a step that ran (not from cache, nor for another build) and succeeded.
    pub fn run_time(&self) -> Option<f64> {
        match (self.state, self.started, self.completed) {
            (StepState::Done, Some(started), Some(completed)) if !self.shared => Some((completed - started).max(0.0)),
            _ => None,
        }
    }

    /// Whether it ran (or has been running, at `now`) past [`SLOWER_FACTOR`] times its usual
    /// duration, and at least [`SLOWER_MARGIN`] seconds more: shorter steps vary too much to
    /// judge. A step taken from cache, or shared, is never slower.
    pub fn slower_than_usual(&self, now: Time) -> bool {
        // A shared step ran for another build, as it did there.
        if self.shared {
            return false;
        }
        let ran = match (self.state, self.started) {
            (StepState::Running, Some(started)) => now - started,
            (StepState::Done | StepState::Failed, _) => match self.duration() {
                Some(duration) => duration,
                None => return false,
            },
            _ => return false,
        };
        self.usual.is_some_and(|usual| ran > SLOWER_FACTOR * usual && ran - usual >= SLOWER_MARGIN)
    }

    /// Whether its result was reused: taken from cache, or shared and done.
    pub fn from_cache(&self) -> bool {
        self.state == StepState::Cached || (self.shared && self.state == StepState::Done)
    }

    /// How long it took, once it finished.
    pub fn duration(&self) -> Option<f64> {
        self.started.zip(self.completed).map(|(started, completed)| (completed - started).max(0.0))
    }
}

/// How far a build's steps are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepCounts {
    /// Steps known, all stages.
    pub total: u32,
    /// Executed or taken from cache.
    pub completed: u32,
    /// Taken from cache.
    pub cached: u32,
}

impl StepCounts {
    /// Counts `steps`.
    pub fn of(steps: &[StepView]) -> StepCounts {
        let count = |f: fn(StepState) -> bool| steps.iter().filter(|s| f(s.state)).count() as u32;
        StepCounts {
            total: steps.len() as u32,
            completed: count(|s| matches!(s, StepState::Done | StepState::Cached)),
            cached: steps.iter().filter(|s| s.from_cache()).count() as u32,
        }
    }
}

/// The expected duration of a running build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Expected total duration, from its start.
    pub total: f64,
    /// Expected time left.
    pub remaining: f64,
}

/// What views show of any build, running or finished.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildView {
    /// BuildKit's ref.
    pub reference: String,
    /// `name` label value.
    pub name: String,
    /// When BuildKit created it.
    pub started_at: Time,
    /// The image it is built as, once known, e.g. `base-python-pose:latest`.
    pub tag: Option<String>,
    /// Every step known, in Dockerfile order.
    pub steps: Vec<StepView>,
    /// Counts of `steps`.
    pub counts: StepCounts,
    /// Where and how it was asked for.
    pub context: Arc<BuildContext>,
    /// What it warned about.
    pub warnings: Warnings,
    /// Where it ran a step that the previous finished build of its name took from cache, and
    /// why; `None` for a first build and for one that kept to the cache.
    pub cache_break: Option<Box<CacheBreak>>,
}

impl BuildView {
    /// What the cache saved this build: the usual durations of the steps it took from cache
    /// (those never seen running count nothing). A shared step saves nothing here: it ran, for
    /// another build, while this one waited.
    pub fn cache_saved(&self) -> f64 {
        self.steps.iter().filter(|s| s.state == StepState::Cached).filter_map(|s| s.usual).sum()
    }
}

/// The warnings of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Warnings {
    /// How many: BuildKit's own count once the build finished (0.16+), else the titles seen.
    pub count: u32,
    /// Their titles, masked, each once, in the order they came (at most 20).
    pub titles: Vec<String>,
}

/// A running build as of a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningBuild {
    /// What every build has; shared by every snapshot taken at one revision of the model.
    pub view: Arc<BuildView>,
    /// Its last sign of life.
    pub last_progress: Time,
    /// When it should finish, where every remaining step has an estimate.
    pub estimate: Option<Estimate>,
}

impl RunningBuild {
    /// The "3" of "3/15": completed steps + 1, at most the number of steps.
    pub fn current_step(&self) -> u32 {
        (self.view.counts.completed + 1).min(self.view.counts.total)
    }

    /// The steps executing now.
    pub fn running_steps(&self) -> impl Iterator<Item = &StepView> {
        self.view.steps.iter().filter(|s| s.state == StepState::Running)
    }
}

/// A counted build, with everything the views need to remember of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedBuild {
    /// What every build has.
    pub view: BuildView,
    /// How it ended.
    pub outcome: Outcome,
    /// When it completed.
    pub completed_at: Time,
    /// The step that failed, e.g. `[3/15]`.
    pub failed_step: Option<String>,
    /// Where it failed and how, masked, when BuildKit said.
    pub failure: Option<Failure>,
    /// The latest generation of its record seen (see [`Completion`](super::Completion)).
    pub generation: i32,
}

/// The last build of a name, when it failed: kept until a later build of the name succeeds or
/// is canceled, so that an alert on that failure can say what failed.
#[derive(Debug, Clone, PartialEq)]
pub struct LastFailure {
    /// The name.
    pub name: String,
    /// The build's ref.
    pub reference: String,
    /// When it completed.
    pub completed_at: Time,
    /// The step that failed, as a view shows it, when it is known.
    pub step: Option<StepView>,
    /// BuildKit's message, masked.
    pub message: String,
    /// Where and how, when BuildKit said.
    pub failure: Option<Failure>,
}

impl LastFailure {
    /// What `build` leaves as its name's last failure, if it failed.
    pub(super) fn of(build: &FinishedBuild) -> Option<LastFailure> {
        let Outcome::Failed(message) = &build.outcome else { return None };
        Some(LastFailure {
            name: build.view.name.clone(),
            reference: build.view.reference.clone(),
            completed_at: build.completed_at,
            step: build.view.steps.iter().find(|s| s.state == StepState::Failed).cloned(),
            message: message.clone(),
            failure: build.failure.clone(),
        })
    }
}

impl FinishedBuild {
    /// Wall-clock duration of the build.
    pub fn duration(&self) -> f64 {
        (self.completed_at - self.view.started_at).max(0.0)
    }

    /// The steps that completed, came from cache or failed (those that never ran are left out).
    pub fn finished_steps(&self) -> impl Iterator<Item = &StepView> {
        self.view.steps.iter().filter(|s| s.state != StepState::Pending && s.state != StepState::Running)
    }
}

/// Each running build's view and its last sign of life, ordered by ref.
pub(super) type RunningViews = Arc<[(Arc<BuildView>, Time)]>;

impl Model {
    /// The running builds as of `now`, ordered by ref.
    pub fn snapshot(&self, now: Time) -> Vec<RunningBuild> {
        self.running_views()
            .iter()
            .map(|(view, last_progress)| RunningBuild {
                estimate: self.estimates.eta(&view.name, &view.steps, view.started_at, now),
                view: view.clone(),
                last_progress: *last_progress,
            })
            .collect()
    }

    /// The running builds' views and last signs of life, computed once per revision of the
    /// model: they change only when an event is applied, while scrapes and page loads come
    /// more often and several at once. Only the estimate depends on the time of asking.
    fn running_views(&self) -> RunningViews {
        let mut memo = self.memo.borrow_mut();
        if let Some((revision, views)) = &*memo {
            if *revision == self.revision {
                return views.clone();
            }
        }
        let views: RunningViews = self
            .running
            .values()
            .map(|build| {
                let vertices = build.steps();
                let name = self.names.peek(&self.resolve_name(build, &vertices));
                let steps = self.step_views(&vertices, &name);
                (Arc::new(self.view(build, name, steps)), build.last_progress)
            })
            .collect();
        *memo = Some((self.revision, views.clone()));
        views
    }

    /// What views show of `build`, called `name`, with `steps`.
    pub(super) fn view(&self, build: &Build, name: String, steps: Vec<StepView>) -> BuildView {
        BuildView {
            reference: build.info.reference.clone(),
            started_at: build.info.created_at,
            tag: build.tag(),
            counts: StepCounts::of(&steps),
            steps,
            context: build.context.clone(),
            warnings: Warnings { count: build.warnings.len() as u32, titles: build.warnings.clone() },
            cache_break: self
                .last
                .get(&name)
                .and_then(|last| last.previous.as_ref())
                .and_then(|previous| super::cache_break::find(previous, build))
                .map(Box::new),
            name,
        }
    }

    /// A build's `steps` as views show them, with what builds of `name` taught to expect.
    pub(super) fn step_views(&self, steps: &[&Vertex], name: &str) -> Vec<StepView> {
        steps
            .iter()
            .map(|v| {
                let state = v.state();
                StepView {
                    label: v.label().to_string(),
                    instruction: v.kind.instruction(),
                    command: super::step::truncate(v.command(), self.settings.max_command_chars),
                    state,
                    started: v.started,
                    completed: v.completed,
                    expected: self.estimates.expected(name, &v.key(), state == StepState::Cached),
                    usual: self.estimates.usual(name, &v.key()),
                    error: v.error.clone(),
                    output: v.output.as_ref().map(|t| t.lines()).unwrap_or_default(),
                    shared: v.shared,
                }
            })
            .collect()
    }
}
