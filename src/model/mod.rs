//! The state of one builder's builds: a pure, synchronous state machine.
//!
//! Sources turn what BuildKit sends into [`Event`]s; [`Model::apply`], the one entry for
//! writes, folds them into the state and returns the [`Effect`]s that counters and histograms
//! record (a build started, a build finished with its steps). Views read [`Model::snapshot`] at
//! scrape time. Nothing here does I/O or knows about Prometheus, so every rule about counting is
//! unit-tested with plain values.
//!
//! - [`event`]: what comes in; [`effect`]: what goes out;
//! - [`build`]: one running build's vertices and steps;
//! - [`name`] and [`step`]: the `name` and `instruction` labels;
//! - [`mask`]: build-arg values kept out of everything stored;
//! - [`estimate`]: step durations learned per name, and the ETA;
//! - [`cache_break`]: where a rebuild's cache broke against the previous build of its name, and
//!   why;
//! - [`snapshot`]: what views read.
//!
//! Counting rules, which make replays harmless:
//! - a build is counted as finished when a `COMPLETE` arrives for a build held as running, and
//!   then forgotten, so the second `COMPLETE` BuildKit sends for every build finds nothing;
//! - `COMPLETE` records of builds never seen running are history when they come in the replay
//!   that opens the first connection: they seed names and last completion times and count
//!   nothing. Once that replay is over they are news (BuildKit may deliver a live `COMPLETE`
//!   before its `STARTED`), and in the replay after a reconnect those that finished since the
//!   disconnect are news too; news is counted once (remembered by ref);
//! - a build's start is counted once per ref, however often `STARTED` is replayed;
//! - a running build is lost (counted as failed) only when the engine says it is gone
//!   (`DELETED`, or its `Status` answering "not found"), never because of silence; a lost build
//!   that shows up again is not counted again.

mod build;
pub mod cache_break;
pub mod effect;
pub mod estimate;
pub mod event;
pub mod mask;
pub mod name;
pub mod output;
pub mod snapshot;
pub mod step;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use lru::LruCache;

use build::{Build, Vertex};
pub use cache_break::{CacheBreak, Reason};
pub use effect::Effect;
use estimate::{Estimates, Observed};
pub use event::{
    BuildContext, BuildInfo, Completion, Event, Failure, Location, NoCache, Outcome, Progress, Time, VertexUpdate,
};
use name::{LearnedNames, NameSet, OVERFLOW, UNKNOWN};
pub use snapshot::{BuildView, Estimate, FinishedBuild, LastFailure, RunningBuild, StepCounts, StepView, Warnings};
pub use step::StepState;

/// How much earlier than the moment a disconnect was noticed a build may have completed and
/// still be counted from the replay after reconnecting (the completion may have been missed
/// while the failing stream was being torn down).
const DISCONNECT_SLACK_SECONDS: f64 = 5.0;
/// The failure message of a build that vanished from its source without a result.
pub const LOST: &str = "the build vanished from the engine's history without a result (was the engine restarted?)";

/// Limits that keep memory and label sets bounded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest command text kept in a label.
    pub max_command_chars: usize,
    /// Most distinct `name` label values.
    pub max_names: usize,
    /// Most step lists whose name is remembered.
    pub max_learned: usize,
    /// Most refs remembered to de-duplicate starts and completions.
    pub max_remembered_refs: usize,
    /// Finished builds kept for the status page.
    pub max_recent: usize,
    /// Last lines of each step's output kept (0: output is not read).
    pub output_lines: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_command_chars: 80,
            max_names: 200,
            max_learned: 1000,
            max_remembered_refs: 10_000,
            max_recent: 50,
            output_lines: 0,
        }
    }
}

/// Where a source's history stream is, which decides whether a completion of a build never seen
/// running is history or news.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Receiving the replay of the first connection: everything in it is history.
    Starting,
    /// The replay is over: everything is news.
    Live,
    /// Disconnected at this time (at the earliest; no earlier than the source began watching),
    /// until a replay after reconnecting is received: what completed since then is news.
    Reconnecting(Time),
}

/// What the newest finished build of a name leaves.
#[derive(Debug)]
struct Last {
    completed_at: Time,
    /// Its failure, if it failed.
    failure: Option<LastFailure>,
    /// Its steps, for the next build's cache to be compared with; none under a placeholder
    /// name, which unrelated Dockerfiles share.
    previous: Option<cache_break::Previous>,
}

/// A bounded set of refs; the oldest is forgotten first.
type Refs = LruCache<String, ()>;

fn refs(max: usize) -> Refs {
    LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN))
}

/// All builds of one builder.
#[derive(Debug)]
pub struct Model {
    settings: Settings,
    /// Builds running now, by ref.
    running: BTreeMap<String, Build>,
    /// Refs whose start was counted.
    started: Refs,
    /// Refs whose completion was counted, or that were history.
    finished: Refs,
    /// Where the source's history stream is.
    phase: Phase,
    names: NameSet,
    learned: LearnedNames,
    /// Expected step durations by name.
    estimates: Estimates,
    /// The latest finished builds, newest last.
    recent: std::collections::VecDeque<FinishedBuild>,
    /// Each name's newest finished build, as later builds of the name are compared with it
    /// (names are bounded).
    last: BTreeMap<String, Last>,
    /// Counts the events applied: what was computed from the state at one revision holds
    /// until the next.
    revision: u64,
    /// The running builds' views at a revision ([`Model::snapshot`]). A cell, because taking
    /// a snapshot is a read of the model: the memo only saves doing the same work again.
    memo: std::cell::RefCell<Option<(u64, snapshot::RunningViews)>>,
}

impl Model {
    /// An empty model.
    pub fn new(settings: Settings) -> Self {
        Model {
            running: BTreeMap::new(),
            started: refs(settings.max_remembered_refs),
            finished: refs(settings.max_remembered_refs),
            phase: Phase::Starting,
            names: NameSet::new(settings.max_names),
            learned: LearnedNames::new(settings.max_learned),
            estimates: Estimates::new(settings.max_names),
            recent: Default::default(),
            last: BTreeMap::new(),
            revision: 0,
            memo: Default::default(),
            settings,
        }
    }

    /// Whether `reference` is held as running.
    pub fn is_running(&self, reference: &str) -> bool {
        self.running.contains_key(reference)
    }

    /// Refs of the builds held as running.
    pub fn running_refs(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// The latest finished builds, newest first.
    pub fn recent(&self) -> Vec<FinishedBuild> {
        self.recent.iter().rev().cloned().collect()
    }

    /// The names whose last build failed, with that failure.
    pub fn last_failures(&self) -> Vec<LastFailure> {
        self.last.values().filter_map(|last| last.failure.clone()).collect()
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, event: Event) -> Vec<Effect> {
        self.revision += 1;
        let mut effects = Vec::new();
        match event {
            Event::Started(info) => {
                if !self.finished.contains(&info.reference) {
                    if self.started.put(info.reference.clone(), ()).is_none() {
                        effects.push(Effect::BuildStarted);
                    }
                    let build = self.running.entry(info.reference.clone()).or_insert_with(|| Build::new(info));
                    if let Some(declared) = build.declared_name() {
                        self.names.admit(&declared);
                    }
                }
            }
            Event::Progress(progress) => {
                if let Some(build) = self.running.get_mut(&progress.reference) {
                    let vertices = build.vertex_count();
                    let new: Vec<&str> =
                        progress.vertexes.iter().map(|v| v.digest.as_str()).filter(|d| !build.has(d)).collect();
                    build.apply(&progress, self.settings.output_lines);
                    if progress.image.is_some() {
                        if let Some(declared) = build.declared_name() {
                            self.names.admit(&declared);
                        }
                    }
                    let grew = build.vertex_count() != vertices;
                    if !new.is_empty() {
                        self.share(&progress.reference, &new);
                    }
                    // Only new vertices or an export name can rename it or grow its steps.
                    if progress.image.is_some() || grew {
                        effects.extend(self.announce(&progress.reference));
                    }
                }
                return effects;
            }
            Event::Completed(completion) => {
                let reference = completion.info.reference.clone();
                if let Some(build) = self.running.remove(&reference) {
                    self.finished.put(reference, ());
                    effects.push(Effect::BuildFinished(self.finish(build, completion)));
                } else if let Some(counted) = self.recent.iter_mut().rev().find(|b| b.view.reference == reference) {
                    // A later generation of a build just counted: nothing to count again.
                    counted.generation = counted.generation.max(completion.generation);
                } else if self.is_news(&completion) {
                    self.finished.put(reference.clone(), ());
                    if self.started.put(reference, ()).is_none() {
                        effects.push(Effect::BuildStarted);
                    }
                    let build = Build::new(completion.info.clone());
                    effects.push(Effect::BuildFinished(self.finish(build, completion)));
                } else if self.finished.put(reference, ()).is_none() {
                    // History, new to us: remembered, so that a later replay cannot count it
                    // either, and learned from once (a replay after a reconnect brings it again).
                    effects.extend(self.seed(Build::new(completion.info.clone()), &completion));
                }
            }
            Event::Deleted(reference) | Event::Gone(reference) => {
                if let Some(build) = self.running.remove(&reference) {
                    effects.extend(self.lose(build));
                }
            }
            Event::Disconnected(at) => {
                if !matches!(self.phase, Phase::Reconnecting(_)) {
                    self.phase = Phase::Reconnecting(at);
                }
            }
            Event::ReplayDone => self.phase = Phase::Live,
            Event::BaseImage { reference, image, id } => {
                if let Some(build) = self.running.get_mut(&reference) {
                    let image = build.mask.apply(&image).into_owned();
                    build.images.insert(image, id);
                }
                // Names nothing: no build is renamed.
                return effects;
            }
            Event::FailureFound { reference, secrets, failure } => {
                if let Some(build) = self.running.get_mut(&reference) {
                    build.failure = Some(build::shown_failure(failure, &build.mask));
                } else if let Some(finished) = self.recent.iter_mut().rev().find(|b| b.view.reference == reference) {
                    let failure = build::shown_failure(failure, &mask::Mask::new(&secrets));
                    finished.failure.get_or_insert_with(|| failure.clone());
                    let last = self.last.get_mut(&finished.view.name).and_then(|last| last.failure.as_mut());
                    if let Some(last) = last.filter(|last| last.reference == reference) {
                        last.failure.get_or_insert(failure);
                    }
                }
                return effects;
            }
            Event::History { completion, progress } => {
                let mut build = Build::new(completion.info.clone());
                for message in &progress {
                    build.apply(message, 0);
                }
                effects.extend(self.seed(build, &completion));
            }
        }
        // Names admitted or learned here can rename any running build.
        let references: Vec<String> = self.running.keys().cloned().collect();
        for reference in references {
            effects.extend(self.announce(&reference));
        }
        effects
    }

    /// Marks which of `digests`, vertices new to running build `reference`, BuildKit runs once
    /// for it and another running build (deduplication): the build that started first runs
    /// such a vertex, and in each later one it is shared.
    fn share(&mut self, reference: &str, digests: &[&str]) {
        let Some(this) = self.running.get(reference) else { return };
        let first = |build: &Build| (build.info.created_at, build.info.reference.clone());
        let this_first = first(this);
        let mut later: Vec<(String, &str)> = Vec::new();
        for (other_ref, other) in self.running.iter().filter(|(r, _)| r.as_str() != reference) {
            for digest in digests.iter().filter(|d| other.has(d)) {
                let sharer = if first(other) < this_first { reference } else { other_ref.as_str() };
                later.push((sharer.to_string(), digest));
            }
        }
        for (sharer, digest) in later {
            if let Some(build) = self.running.get_mut(&sharer) {
                build.share(digest);
            }
        }
    }

    /// A running build's name and instructions, when they changed since last announced and
    /// the name is known: a build still unnamed may yet be named, and gets no series for a
    /// name it will not keep.
    fn announce(&mut self, reference: &str) -> Option<Effect> {
        let build = self.running.get(reference)?;
        let vertices = build.steps();
        let name = self.names.peek(&self.resolve_name(build, &vertices));
        // Each instruction once, in step order: the series of a name are made per instruction,
        // so a build that grows by another RUN has nothing new to announce (and a build
        // announced at every new step made the counters look up all its series each time).
        let mut instructions: Vec<&'static str> = Vec::new();
        for instruction in vertices.iter().map(|v| v.kind.instruction()) {
            if !instructions.contains(&instruction) {
                instructions.push(instruction);
            }
        }
        let announced = (name, instructions);
        if announced.0 == UNKNOWN || build.announced.as_ref() == Some(&announced) {
            return None;
        }
        let (name, instructions) = announced.clone();
        self.running.get_mut(reference)?.announced = Some(announced);
        Some(Effect::BuildNamed { name, instructions })
    }

    /// Ends a running build that vanished from the source without a result — what BuildKit
    /// does with a build its engine was restarted under: counted as failed, ended at its last
    /// sign of life.
    fn lose(&mut self, build: Build) -> [Effect; 2] {
        let reference = build.info.reference.clone();
        self.finished.put(reference.clone(), ());
        let completion = Completion {
            info: build.info.clone(),
            completed_at: build.last_progress,
            outcome: Outcome::Failed(LOST.to_string()),
            generation: 0,
            warnings: 0,
            failure: None,
        };
        [Effect::BuildLost { reference }, Effect::BuildFinished(self.finish(build, completion))]
    }

    /// Whether the completion of a build never seen running is one to count.
    fn is_news(&self, completion: &Completion) -> bool {
        let news = match self.phase {
            Phase::Starting => false,
            Phase::Live => true,
            Phase::Reconnecting(at) => completion.completed_at >= at - DISCONNECT_SLACK_SECONDS,
        };
        news && !self.finished.contains(&completion.info.reference)
    }

    /// The name a build with `steps` is known by now, before bounding: a name the build
    /// declares (its record, then its export) always beats one learned from earlier builds of
    /// the same Dockerfile, which is only a guess until the build says otherwise.
    fn resolve_name(&self, build: &Build, steps: &[&Vertex]) -> String {
        let learned = || Build::steps_key(steps).and_then(|k| self.learned.get(k)).map(str::to_string);
        build.declared_name().or_else(learned).unwrap_or_else(|| UNKNOWN.to_string())
    }

    /// Names a finished build with `steps` and remembers the name for its step list.
    fn admit_name(&mut self, build: &Build, steps: &[&Vertex], from_history: bool) -> String {
        let name = self.resolve_name(build, steps);
        let name = if from_history { self.names.admit_from_history(&name) } else { self.names.admit(&name) };
        if let Some(key) = Build::steps_key(steps) {
            self.learned.learn(key, &name);
        }
        name
    }

    fn seed(&mut self, build: Build, completion: &Completion) -> Option<Effect> {
        let steps = build.steps();
        let name = self.admit_name(&build, &steps, true);
        self.learn_durations(&name, &steps, completion.completed_at);
        let failure = matches!(completion.outcome, Outcome::Failed(_)).then(|| {
            let failure = completion.failure.clone().map(|f| build::shown_failure(f, &build.mask));
            self.finished_build(&build, name.clone(), completion, failure)
        });
        let last = failure.as_ref().and_then(LastFailure::of);
        self.note_last(&name, completion.completed_at, last, &build);
        (name != UNKNOWN && name != OVERFLOW).then(|| Effect::HistorySeen {
            name,
            result: completion.outcome.label(),
            completed_at: completion.completed_at,
        })
    }

    fn finish(&mut self, build: Build, completion: Completion) -> FinishedBuild {
        let vertices = build.steps();
        let name = self.admit_name(&build, &vertices, false);
        let failure = match completion.failure.clone() {
            Some(failure) => Some(build::shown_failure(failure, &build.mask)),
            None => build.failure.clone(),
        };
        // Its steps against what earlier builds taught, before it teaches its own durations: a
        // step judged slower than usual is judged against the builds before it.
        let finished = self.finished_build(&build, name.clone(), &completion, failure);
        self.learn_durations(&name, &vertices, completion.completed_at);
        self.note_last(&name, completion.completed_at, LastFailure::of(&finished), &build);
        self.recent.push_back(finished.clone());
        while self.recent.len() > self.settings.max_recent {
            self.recent.pop_front();
        }
        finished
    }

    /// What views keep of `build`, called `name`, finished as `completion` says, having failed
    /// where `failure` says (masked).
    fn finished_build(
        &self,
        build: &Build,
        name: String,
        completion: &Completion,
        failure: Option<Failure>,
    ) -> FinishedBuild {
        let outcome = match &completion.outcome {
            Outcome::Failed(message) => Outcome::Failed(build.mask.apply(message).into_owned()),
            other => other.clone(),
        };
        let steps = self.step_views(&build.steps(), &name);
        let mut view = self.view(build, name, steps);
        // The record counts warnings the progress stream may not have carried (a build seen
        // late, or only in history).
        view.warnings.count = view.warnings.count.max(completion.warnings);
        FinishedBuild {
            generation: completion.generation,
            outcome,
            completed_at: completion.completed_at,
            failed_step: view.steps.iter().find(|s| s.state == StepState::Failed).map(|s| s.label.clone()),
            failure,
            view,
        }
    }

    /// Notes `build` of `name`, completed at `completed_at`, and its failure if it failed, as
    /// the name's newest, unless a later one is already noted (history comes in any order).
    fn note_last(&mut self, name: &str, completed_at: Time, failure: Option<LastFailure>, build: &Build) {
        if self.last.get(name).is_some_and(|last| last.completed_at > completed_at) {
            return;
        }
        // Bounded: `name` is one the name set admitted, or a placeholder.
        let previous = (name != UNKNOWN && name != OVERFLOW).then(|| cache_break::Previous::of(build));
        self.last.insert(name.to_string(), Last { completed_at, failure, previous });
    }

    /// Learns the durations of a finished build's `steps`.
    fn learn_durations(&mut self, name: &str, steps: &[&Vertex], completed_at: Time) {
        if name == UNKNOWN || name == OVERFLOW {
            return;
        }
        let observed: Vec<Observed> = steps
            .iter()
            // A shared step ran for another build: its time is that build's to learn.
            .filter(|v| v.error.is_none() && !v.shared)
            .filter_map(|v| {
                let duration = v.completed? - v.started?;
                Some(Observed { key: v.key(), cached: v.cached, duration })
            })
            .collect();
        let last_end = steps.iter().filter_map(|v| v.completed).reduce(f64::max);
        let tail = last_end.map(|end| completed_at - end);
        self.estimates.learn(name, &observed, tail);
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
