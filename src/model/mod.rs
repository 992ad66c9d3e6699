//! The state of one builder's builds: a pure, synchronous state machine.
//!
//! Sources turn what BuildKit sends into [`Event`]s; [`Model::apply`] folds them into the state
//! and returns the [`Effect`]s that counters and histograms record (a build started, a build
//! finished with its steps). Views read [`Model::snapshot`] at scrape time. Nothing here does I/O
//! or knows about Prometheus, so every rule about counting is unit-tested with plain values.
//!
//! Counting rules, which make replays harmless:
//! - a build is counted as finished when a `COMPLETE` arrives for a build held as running, and
//!   then forgotten, so the second `COMPLETE` BuildKit sends for every build finds nothing;
//! - `COMPLETE` records of builds never seen running are history: they seed names and last
//!   completion times and count nothing, except those that finished while the source was
//!   disconnected, which are counted once (remembered by ref);
//! - a build's start is counted once per ref, however often `STARTED` is replayed.

pub mod estimate;
pub mod name;
pub mod step;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use estimate::{Estimates, Observed};
use name::{LearnedNames, NameSet, OVERFLOW, UNKNOWN};
use step::{truncate, StepKind};

/// A point in time as unix seconds.
pub type Time = f64;

/// How much earlier than the moment a disconnect was noticed a build may have completed and
/// still be counted from the replay after reconnecting (the completion may have been missed
/// while the failing stream was being torn down).
const DISCONNECT_SLACK_SECONDS: f64 = 5.0;
/// Shortest build-arg value that is masked in text; shorter values would garble commands while
/// protecting nothing.
const MIN_MASKED_LEN: usize = 3;
/// The failure message of a build that vanished from its source without a result.
pub const LOST: &str = "the build vanished from the engine's history without a result (was the engine restarted?)";
/// What a masked build-arg value is replaced with.
const MASK: &str = "***";

/// What a build-history record says about a build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildInfo {
    /// BuildKit's ref of the build.
    pub reference: String,
    /// When BuildKit created the build.
    pub created_at: Time,
    /// An image name the record carries (exporter attributes, or the configured name label).
    pub image: Option<String>,
    /// Build-arg values, masked wherever text from the build is kept.
    pub secrets: Vec<String>,
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exported successfully.
    Succeeded,
    /// Failed, with BuildKit's message.
    Failed(String),
    /// Canceled by the client.
    Canceled,
}

impl Outcome {
    /// The `result` label value.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Canceled => "canceled",
        }
    }
}

/// A `COMPLETE` build-history record.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The record's build.
    pub info: BuildInfo,
    /// When BuildKit completed it.
    pub completed_at: Time,
    /// How it ended.
    pub outcome: Outcome,
}

/// The state of one vertex as a progress message reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VertexUpdate {
    /// Content digest; shared across builds, so only meaningful within one build.
    pub digest: String,
    /// Display name, e.g. `[3/15] RUN make`.
    pub name: String,
    /// When it started executing.
    pub started: Option<Time>,
    /// When it finished (executed, cached or failed).
    pub completed: Option<Time>,
    /// Whether the result came from cache.
    pub cached: bool,
    /// Error text, if it failed.
    pub error: Option<String>,
}

/// One progress message of a build's `Status` stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The build it belongs to.
    pub reference: String,
    /// Latest timestamp the message carries (vertex, status or log), if any: the build's last
    /// sign of life. BuildKit's own times are used rather than arrival times, so that a late
    /// subscriber's replay does not make a silent build look alive.
    pub at: Option<Time>,
    /// Vertex updates, in order; later updates of the same digest win.
    pub vertexes: Vec<VertexUpdate>,
    /// Image reference from a `naming to ...` status.
    pub image: Option<String>,
}

/// Something a source observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `STARTED` history event: a build is running.
    Started(BuildInfo),
    /// `COMPLETE` history event.
    Completed(Completion),
    /// `DELETED` history event.
    Deleted(String),
    /// A message of a running build's `Status` stream.
    Progress(Progress),
    /// The connection to the source failed at this time.
    Disconnected(Time),
    /// The replay that opens a history stream has been received; `seen` holds every ref in it.
    ReplayDone {
        /// Refs that appeared in the replay, as `STARTED` or `COMPLETE`.
        seen: HashSet<String>,
    },
    /// A finished build from history with its replayed progress, read to learn its name.
    History {
        /// The build's record.
        completion: Completion,
        /// Its stored progress.
        progress: Vec<Progress>,
    },
}

/// A change that counters and histograms record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A build was seen starting (or running, for the first time).
    BuildStarted,
    /// A build finished and is counted.
    BuildFinished(FinishedBuild),
    /// A build from history: its completion time seeds the last-completion gauge only.
    HistorySeen {
        /// Its `name` label.
        name: String,
        /// Its `result` label.
        result: &'static str,
        /// When it completed.
        completed_at: Time,
    },
    /// A running build vanished from the source without a completion record (it is also
    /// finished, as failed).
    BuildLost {
        /// Its ref.
        reference: String,
    },
}

/// A counted build, with everything the views need to remember of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedBuild {
    /// BuildKit's ref.
    pub reference: String,
    /// `name` label value.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was created.
    pub started_at: Time,
    /// When it completed.
    pub completed_at: Time,
    /// The image it was exported as, e.g. `base-python-pose:latest`.
    pub tag: Option<String>,
    /// Every step with its final state, for the status page.
    pub step_list: Vec<StepView>,
    /// The step that failed, e.g. `[3/15]`.
    pub failed_step: Option<String>,
}

impl FinishedBuild {
    /// Wall-clock duration of the build.
    pub fn duration(&self) -> f64 {
        (self.completed_at - self.started_at).max(0.0)
    }

    /// The steps that completed, came from cache or failed (those that never ran are left out).
    pub fn finished_steps(&self) -> impl Iterator<Item = &StepView> {
        self.step_list.iter().filter(|s| s.state != StepState::Pending && s.state != StepState::Running)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Announced, not started.
    Pending,
    /// Executing.
    Running,
    /// Executed.
    Done,
    /// Taken from cache.
    Cached,
    /// Failed.
    Failed,
}

impl StepState {
    /// Lower-case name used by the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Cached => "cached",
            StepState::Failed => "failed",
        }
    }
}

/// One step of a build, for the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    /// The bracketed position, e.g. `[base 3/4]` (empty for free-form steps).
    pub label: String,
    /// `instruction` label value.
    pub instruction: &'static str,
    /// The instruction's arguments (masked, cut).
    pub command: String,
    /// Where it is.
    pub state: StepState,
    /// When it started.
    pub started: Option<Time>,
    /// When it finished.
    pub completed: Option<Time>,
    /// How long it is expected to take, learned from earlier builds of the same name.
    pub expected: Option<f64>,
}

impl StepView {
    /// Execution time of a step that ran (not from cache) and succeeded.
    pub fn run_time(&self) -> Option<f64> {
        match (self.state, self.started, self.completed) {
            (StepState::Done, Some(started), Some(completed)) => Some((completed - started).max(0.0)),
            _ => None,
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

/// A step in progress in a running build.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningStep {
    /// The bracketed position, e.g. `[base 3/4]` (empty for free-form steps).
    pub label: String,
    /// `instruction` label value.
    pub instruction: &'static str,
    /// The instruction's arguments, masked and cut to the configured length.
    pub command: String,
    /// When it started.
    pub started: Time,
}

/// A running build as views show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningBuild {
    /// BuildKit's ref.
    pub reference: String,
    /// `name` label value.
    pub name: String,
    /// When BuildKit created it.
    pub started_at: Time,
    /// Its last sign of life.
    pub last_progress: Time,
    /// Steps known so far, all stages.
    pub steps: u32,
    /// Steps completed (executed or cached).
    pub completed: u32,
    /// Steps that came from cache.
    pub cached: u32,
    /// `completed + 1`, capped at `steps`.
    pub current_step: u32,
    /// Steps executing now.
    pub in_progress: Vec<RunningStep>,
    /// The image it is being built as, once known.
    pub tag: Option<String>,
    /// Every step known so far, in announcement order.
    pub step_list: Vec<StepView>,
    /// When it should finish, where every remaining step has an estimate.
    pub estimate: Option<Estimate>,
}

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_command_chars: 80,
            max_names: 200,
            max_learned: 1000,
            max_remembered_refs: 10_000,
            max_recent: 50,
        }
    }
}

/// A vertex of a running build.
#[derive(Debug, Clone)]
struct Vertex {
    /// Announcement order, for stable display.
    seq: u32,
    /// Masked display name.
    name: String,
    /// Parsed from `name`.
    kind: StepKind,
    started: Option<Time>,
    completed: Option<Time>,
    cached: bool,
    error: Option<String>,
}

impl Vertex {
    fn state(&self) -> StepState {
        match (self.error.is_some(), self.completed.is_some(), self.started.is_some()) {
            (true, _, _) => StepState::Failed,
            (false, true, _) if self.cached => StepState::Cached,
            (false, true, _) => StepState::Done,
            (false, false, true) => StepState::Running,
            (false, false, false) => StepState::Pending,
        }
    }

    /// Stable identity across builds: stage plus instruction text.
    fn key(&self) -> String {
        match &self.kind {
            StepKind::Dockerfile { stage, .. } => {
                let text = self.name.split_once(']').map_or(self.name.as_str(), |(_, t)| t.trim());
                format!("{}|{text}", stage.as_deref().unwrap_or(""))
            }
            _ => self.name.clone(),
        }
    }

    fn label_and_command(&self) -> (String, &str) {
        match &self.kind {
            StepKind::Dockerfile { label, command, .. } => (label.clone(), command.as_str()),
            _ => (String::new(), self.name.as_str()),
        }
    }
}

/// A build held as running.
#[derive(Debug, Clone)]
struct Build {
    info: BuildInfo,
    last_progress: Time,
    /// Vertices by digest.
    vertices: BTreeMap<String, Vertex>,
    /// Image reference from the `naming to` status.
    export_image: Option<String>,
}

impl Build {
    fn new(info: BuildInfo) -> Self {
        Build { last_progress: info.created_at, info, vertices: BTreeMap::new(), export_image: None }
    }

    fn apply(&mut self, progress: &Progress) {
        if let Some(at) = progress.at {
            self.last_progress = self.last_progress.max(at);
        }
        if let Some(image) = &progress.image {
            self.export_image = Some(image.clone());
        }
        for update in &progress.vertexes {
            let next_seq = self.vertices.len() as u32;
            let name = mask(&update.name, &self.info.secrets);
            let vertex = self.vertices.entry(update.digest.clone()).or_insert_with(|| Vertex {
                seq: next_seq,
                kind: StepKind::parse(&name),
                name: String::new(),
                started: None,
                completed: None,
                cached: false,
                error: None,
            });
            if vertex.name != name {
                vertex.kind = StepKind::parse(&name);
                vertex.name = name;
            }
            vertex.started = update.started.or(vertex.started);
            vertex.completed = update.completed;
            vertex.cached = update.cached;
            vertex.error = update.error.as_ref().map(|e| mask(e, &self.info.secrets));
        }
    }

    /// The vertices that count as steps, in Dockerfile order: Dockerfile steps when there are
    /// any, else every vertex that is not BuildKit's own bookkeeping (in announcement order).
    fn steps(&self) -> Vec<&Vertex> {
        let dockerfile = self.vertices.values().any(|v| matches!(v.kind, StepKind::Dockerfile { .. }));
        let mut steps: Vec<&Vertex> = self
            .vertices
            .values()
            .filter(|v| match v.kind {
                StepKind::Dockerfile { .. } => true,
                StepKind::Other => !dockerfile,
                StepKind::Internal => false,
            })
            .collect();
        // Dockerfile order: stages as they were first announced, steps by index within each.
        let mut stage_order: HashMap<Option<&str>, u32> = HashMap::new();
        for v in &steps {
            if let StepKind::Dockerfile { stage, .. } = &v.kind {
                let first = stage_order.entry(stage.as_deref()).or_insert(v.seq);
                *first = (*first).min(v.seq);
            }
        }
        steps.sort_by_key(|v| match &v.kind {
            StepKind::Dockerfile { stage, index, .. } => (stage_order[&stage.as_deref()], *index, v.seq),
            _ => (v.seq, 0, v.seq),
        });
        steps
    }

    /// Identifies the Dockerfile: the same step list gives the same key.
    fn steps_key(&self) -> Option<u64> {
        let mut names: Vec<&str> = self.steps().iter().map(|v| v.name.as_str()).collect();
        if names.is_empty() {
            return None;
        }
        names.sort_unstable();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        names.hash(&mut hasher);
        Some(hasher.finish())
    }
}

/// Replaces every build-arg value in `text` with a mask.
fn mask(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_MASKED_LEN) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), MASK);
        }
    }
    text
}

/// A bounded set of refs, forgetting the oldest.
#[derive(Debug)]
struct RecentRefs {
    set: HashSet<String>,
    order: VecDeque<String>,
    max: usize,
}

impl RecentRefs {
    fn new(max: usize) -> Self {
        RecentRefs { set: HashSet::new(), order: VecDeque::new(), max }
    }

    /// Records `reference`; false if it was already there.
    fn insert(&mut self, reference: &str) -> bool {
        if !self.set.insert(reference.to_string()) {
            return false;
        }
        self.order.push_back(reference.to_string());
        if self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, reference: &str) -> bool {
        self.set.contains(reference)
    }
}

/// All builds of one builder.
#[derive(Debug)]
pub struct Model {
    settings: Settings,
    /// Builds running now, by ref.
    running: BTreeMap<String, Build>,
    /// Refs whose start was counted.
    started: RecentRefs,
    /// Refs whose completion was counted.
    finished: RecentRefs,
    /// When the source was lost, until the replay after reconnecting is done.
    disconnected_at: Option<Time>,
    names: NameSet,
    learned: LearnedNames,
    /// Expected step durations by name.
    estimates: Estimates,
    /// The latest finished builds, newest last.
    recent: VecDeque<FinishedBuild>,
}

impl Model {
    /// An empty model.
    pub fn new(settings: Settings) -> Self {
        Model {
            running: BTreeMap::new(),
            started: RecentRefs::new(settings.max_remembered_refs),
            finished: RecentRefs::new(settings.max_remembered_refs),
            disconnected_at: None,
            names: NameSet::new(settings.max_names),
            learned: LearnedNames::new(settings.max_learned),
            estimates: Estimates::new(settings.max_names),
            recent: VecDeque::new(),
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

    /// Folds one event into the state.
    pub fn apply(&mut self, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Started(info) => {
                if !self.finished.contains(&info.reference) {
                    if self.started.insert(&info.reference) {
                        effects.push(Effect::BuildStarted);
                    }
                    self.running.entry(info.reference.clone()).or_insert_with(|| Build::new(info));
                }
            }
            Event::Progress(progress) => {
                if let Some(build) = self.running.get_mut(&progress.reference) {
                    build.apply(&progress);
                }
            }
            Event::Completed(completion) => {
                let reference = completion.info.reference.clone();
                if let Some(build) = self.running.remove(&reference) {
                    self.finished.insert(&reference);
                    effects.push(Effect::BuildFinished(self.finish(build, completion)));
                } else if self.finished_while_disconnected(&completion) {
                    self.finished.insert(&reference);
                    if self.started.insert(&reference) {
                        effects.push(Effect::BuildStarted);
                    }
                    let build = Build::new(completion.info.clone());
                    effects.push(Effect::BuildFinished(self.finish(build, completion)));
                } else {
                    // History: remembered, so that a later replay cannot count it either.
                    self.finished.insert(&reference);
                    effects.extend(self.seed(Build::new(completion.info.clone()), &completion));
                }
            }
            Event::Deleted(reference) => {
                if let Some(build) = self.running.remove(&reference) {
                    effects.extend(self.lose(build));
                }
            }
            Event::Disconnected(at) => {
                self.disconnected_at.get_or_insert(at);
            }
            Event::ReplayDone { seen } => {
                self.disconnected_at = None;
                let lost: Vec<String> = self.running.keys().filter(|r| !seen.contains(*r)).cloned().collect();
                for reference in lost {
                    if let Some(build) = self.running.remove(&reference) {
                        effects.extend(self.lose(build));
                    }
                }
            }
            Event::History { completion, progress } => {
                let mut build = Build::new(completion.info.clone());
                for message in &progress {
                    build.apply(message);
                }
                effects.extend(self.seed(build, &completion));
            }
        }
        effects
    }

    /// Ends a running build that vanished from the source without a result — what BuildKit
    /// does with a build its engine was restarted under: counted as failed, ended at its last
    /// sign of life.
    fn lose(&mut self, build: Build) -> [Effect; 2] {
        let reference = build.info.reference.clone();
        self.finished.insert(&reference);
        let completion = Completion {
            info: build.info.clone(),
            completed_at: build.last_progress,
            outcome: Outcome::Failed(LOST.to_string()),
        };
        [Effect::BuildLost { reference }, Effect::BuildFinished(self.finish(build, completion))]
    }

    fn finished_while_disconnected(&self, completion: &Completion) -> bool {
        self.disconnected_at.is_some_and(|at| completion.completed_at >= at - DISCONNECT_SLACK_SECONDS)
            && !self.finished.contains(&completion.info.reference)
    }

    /// The name a build is known by now, before bounding.
    fn resolve_name(&self, build: &Build) -> String {
        let from_record = build.info.image.as_deref().and_then(name::repository);
        let learned = || build.steps_key().and_then(|k| self.learned.get(k)).map(str::to_string);
        let exported = || build.export_image.as_deref().and_then(name::repository);
        from_record.or_else(learned).or_else(exported).unwrap_or_else(|| UNKNOWN.to_string())
    }

    /// Names a finished build and remembers the name for its step list.
    fn admit_name(&mut self, build: &Build) -> String {
        let name = self.names.admit(&self.resolve_name(build));
        if let Some(key) = build.steps_key() {
            self.learned.learn(key, &name);
        }
        name
    }

    fn seed(&mut self, build: Build, completion: &Completion) -> Option<Effect> {
        let name = self.admit_name(&build);
        self.learn_durations(&name, &build, completion.completed_at);
        (name != UNKNOWN).then(|| Effect::HistorySeen {
            name,
            result: completion.outcome.label(),
            completed_at: completion.completed_at,
        })
    }

    fn finish(&mut self, build: Build, completion: Completion) -> FinishedBuild {
        let name = self.admit_name(&build);
        let outcome = match completion.outcome {
            Outcome::Failed(message) => Outcome::Failed(mask(&message, &build.info.secrets)),
            other => other,
        };
        self.learn_durations(&name, &build, completion.completed_at);
        let finished = FinishedBuild {
            reference: completion.info.reference,
            name: name.clone(),
            outcome,
            started_at: build.info.created_at,
            completed_at: completion.completed_at,
            tag: self.tag(&build),
            step_list: self.step_list(&build, &name),
            failed_step: build.steps().iter().find(|v| v.error.is_some()).map(|v| v.label_and_command().0),
        };
        self.recent.push_back(finished.clone());
        while self.recent.len() > self.settings.max_recent {
            self.recent.pop_front();
        }
        finished
    }

    /// Learns the step durations of a finished build.
    fn learn_durations(&mut self, name: &str, build: &Build, completed_at: Time) {
        if name == UNKNOWN || name == OVERFLOW {
            return;
        }
        let steps = build.steps();
        let observed: Vec<Observed> = steps
            .iter()
            .filter(|v| v.error.is_none())
            .filter_map(|v| {
                let duration = v.completed? - v.started?;
                Some(Observed { key: v.key(), cached: v.cached, duration })
            })
            .collect();
        let last_end =
            steps.iter().filter_map(|v| v.completed).fold(None, |m: Option<Time>, c| Some(m.map_or(c, |m| m.max(c))));
        let tail = last_end.map(|end| completed_at - end);
        self.estimates.learn(name, &observed, tail);
    }

    /// `repository:tag` of the image a build exports, from its `naming to` status.
    fn tag(&self, build: &Build) -> Option<String> {
        let image = build.export_image.as_deref()?;
        let repository = name::repository(image)?;
        let tag = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t);
        Some(mask(&tag.map_or(repository.clone(), |t| format!("{repository}:{t}")), &build.info.secrets))
    }

    fn step_list(&self, build: &Build, name: &str) -> Vec<StepView> {
        build
            .steps()
            .iter()
            .map(|v| {
                let (label, command) = v.label_and_command();
                let state = v.state();
                StepView {
                    label,
                    instruction: v.kind.instruction(),
                    command: truncate(command, self.settings.max_command_chars),
                    state,
                    started: v.started,
                    completed: v.completed,
                    expected: self.estimates.expected(name, &v.key(), state == StepState::Cached),
                }
            })
            .collect()
    }

    /// The latest finished builds, newest first.
    pub fn recent(&self) -> Vec<FinishedBuild> {
        self.recent.iter().rev().cloned().collect()
    }

    /// The running builds as of `now`, ordered by ref.
    pub fn snapshot(&self, now: Time) -> Vec<RunningBuild> {
        self.running
            .values()
            .map(|build| {
                let steps = build.steps();
                let total = steps.len() as u32;
                let completed = steps.iter().filter(|v| v.completed.is_some() && v.error.is_none()).count() as u32;
                let cached =
                    steps.iter().filter(|v| v.completed.is_some() && v.cached && v.error.is_none()).count() as u32;
                let in_progress = steps
                    .iter()
                    .filter(|v| v.completed.is_none() && v.error.is_none())
                    .filter_map(|v| {
                        let started = v.started?;
                        let (label, command) = v.label_and_command();
                        Some(RunningStep {
                            label,
                            instruction: v.kind.instruction(),
                            command: truncate(command, self.settings.max_command_chars),
                            started,
                        })
                    })
                    .collect();
                let name = self.names.peek(&self.resolve_name(build));
                let step_list = self.step_list(build, &name);
                let estimate = self.estimate(build, &name, &step_list, now);
                RunningBuild {
                    reference: build.info.reference.clone(),
                    tag: self.tag(build),
                    step_list,
                    estimate,
                    name,
                    started_at: build.info.created_at,
                    last_progress: build.last_progress,
                    steps: total,
                    completed,
                    cached,
                    current_step: (completed + 1).min(total),
                    in_progress,
                }
            })
            .collect()
    }
}

impl Model {
    /// Expected total and remaining time of a running build, if every step that is not done
    /// has an estimate.
    fn estimate(&self, build: &Build, name: &str, steps: &[StepView], now: Time) -> Option<Estimate> {
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
        remaining += self.estimates.tail(name);
        let elapsed = (now - build.info.created_at).max(0.0);
        Some(Estimate { total: elapsed + remaining, remaining })
    }
}

#[cfg(test)]
mod tests;
