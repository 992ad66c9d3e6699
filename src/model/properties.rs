//! Property tests of the counting rules at the top of [`super`], over random interleavings of
//! history and status events as a reconnecting source really delivers them.
//!
//! The unit tests in `tests.rs` pin one quirk each; the rules that make replays harmless are
//! about *combinations* (a `COMPLETE` overtaking its `STARTED` during a replay that is then cut,
//! a build wrongly declared gone that shows up in the next replay, ...), which are too many to
//! enumerate by hand. So a small simulated engine and source ([`play`]) turns a generated
//! scenario into the exact event sequence the model would see, and after every single
//! [`Model::apply`] the effects are folded into counters the way `views/counters.rs` does and
//! checked against:
//!
//! - a ref is counted as finished at most once over the whole run;
//! - a start is counted at most once per ref, before or with its finish, so the started total
//!   never falls behind the finished total;
//! - the step counts of running and finished builds are consistent;
//! - a counted build is no longer shown as running, and the builds held as running are exactly
//!   those whose `STARTED` arrived before anything ended them;
//! - a `COMPLETE` for a build held as running counts it once, with that outcome;
//! - a build declared gone while running is counted once, as lost;
//! - a `COMPLETE` first seen after the opening replay (live, or in a reconnect's replay) is news
//!   and counted once; one in the opening replay of a build never seen running is history and
//!   counts nothing, nor do progress, source and `History` events;
//! - with the default ref memory, three or more full reconnect replays count no ref twice.
//!
//! Scenarios are built from strategies only, so a failure shrinks to a short event list; it is
//! printed one event a line.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;

/// Refs are `r0` .. `r{MAX_BUILDS - 1}`.
const MAX_BUILDS: usize = 6;

/// Vertex names a progress message may carry: Dockerfile steps of one or two stages, BuildKit's
/// bookkeeping and a free-form vertex, so that every branch of step selection is reached.
const NAMES: &[&str] = &[
    "[1/3] FROM docker.io/library/alpine:3",
    "[2/3] RUN x",
    "[3/3] COPY . /app",
    "[base 1/2] RUN make",
    "[internal] load build definition from Dockerfile",
    "compile",
];

const FAILURE: &str = "process \"/bin/sh -c false\" did not complete successfully: exit code: 1";

// ---------------------------------------------------------------------------------------------
// What proptest generates and shrinks.

/// One vertex update of a progress message.
#[derive(Debug, Clone)]
struct VertexSpec {
    digest: u8,
    name: u8,
    started: bool,
    /// Unset in a later update of the same digest: BuildKit does send `completed` going back to
    /// unset.
    completed: bool,
    cached: bool,
    error: bool,
}

/// One progress message of a build.
#[derive(Debug, Clone)]
struct ProgressSpec {
    vertexes: Vec<VertexSpec>,
    naming: bool,
}

/// One build's life as the engine lives it: `STARTED`, progress, `COMPLETE` (generation 0),
/// `COMPLETE` again (generation 1), sometimes `DELETED`.
#[derive(Debug, Clone)]
struct Script {
    progress: Vec<ProgressSpec>,
    outcome: Outcome,
    deleted: bool,
    /// Its live `COMPLETE` overtakes its live `STARTED` (BuildKit sends them from goroutines).
    overtaken: bool,
    image: bool,
}

/// What happens next, to the engine or to the connection.
#[derive(Debug, Clone)]
enum Op {
    /// The build moves one step through its script, `dt` half-seconds later.
    Step { build: usize, dt: u8 },
    /// The connection breaks; the source notices it and reports a time `lag` half-seconds early.
    Disconnect { lag: u8 },
    /// The source reconnects: a replay of every stored record starts, in an order given by
    /// priorities (shrinking towards stored order).
    Connect { order: Vec<u8> },
    /// Up to `n` replayed records arrive; when none are left the replay ends.
    Pump { n: u8 },
    /// The last history or status event arrives again.
    Duplicate,
    /// The engine answers "not found" for the build (rightly or not).
    Gone { build: usize },
    /// The source reads the build's stored progress to learn its name.
    History { build: usize },
}

fn vertex_spec() -> impl Strategy<Value = VertexSpec> {
    (0..4u8, 0..NAMES.len() as u8, any::<bool>(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.15)).prop_map(
        |(digest, name, started, completed, cached, error)| VertexSpec {
            digest,
            name,
            started,
            completed,
            cached,
            error,
        },
    )
}

fn progress_spec() -> impl Strategy<Value = ProgressSpec> {
    // Up to five updates over four digests: the same digest twice in one message is common.
    (vec(vertex_spec(), 0..5), prop::bool::weighted(0.2))
        .prop_map(|(vertexes, naming)| ProgressSpec { vertexes, naming })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![Just(Outcome::Succeeded), Just(Outcome::Failed(FAILURE.to_string())), Just(Outcome::Canceled)]
}

fn script() -> impl Strategy<Value = Script> {
    (vec(progress_spec(), 0..4), outcome(), prop::bool::weighted(0.3), prop::bool::weighted(0.2), any::<bool>())
        .prop_map(|(progress, outcome, deleted, overtaken, image)| Script {
            progress,
            outcome,
            deleted,
            overtaken,
            image,
        })
}

fn order() -> impl Strategy<Value = Vec<u8>> {
    vec(0..4u8, 0..6)
}

fn step_op() -> impl Strategy<Value = Op> {
    (0..MAX_BUILDS, 0..=6u8).prop_map(|(build, dt)| Op::Step { build, dt })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => step_op(),
        4 => (1..=8u8).prop_map(|n| Op::Pump { n }),
        1 => (0..=40u8).prop_map(|lag| Op::Disconnect { lag }),
        2 => order().prop_map(|order| Op::Connect { order }),
        1 => Just(Op::Duplicate),
        1 => (0..MAX_BUILDS).prop_map(|build| Op::Gone { build }),
        1 => (0..MAX_BUILDS).prop_map(|build| Op::History { build }),
    ]
}

/// Any scenario: builds that may already have run before the exporter started, the first
/// connection, then anything.
fn scenario() -> impl Strategy<Value = Trace> {
    (vec(script(), 1..=MAX_BUILDS), vec(step_op(), 0..8), order(), vec(op(), 0..120))
        .prop_map(|(builds, before, first, ops)| play(&builds, &before, &first, &ops))
}

/// A scenario with at least three cuts each followed by a reconnect whose replay is received
/// whole, so that every stored `COMPLETE` is replayed three or more times.
fn scenario_with_reconnects() -> impl Strategy<Value = Trace> {
    let segment = (vec(op(), 0..25), vec(step_op(), 0..6), 0..=40u8, order());
    (vec(script(), 1..=MAX_BUILDS), vec(step_op(), 0..8), order(), vec(segment, 3..6)).prop_map(
        |(builds, before, first, segments)| {
            let mut ops = vec![Op::Pump { n: u8::MAX }];
            for (live, outage, lag, order) in segments {
                ops.extend(live);
                ops.push(Op::Disconnect { lag });
                ops.extend(outage);
                ops.push(Op::Connect { order });
                ops.push(Op::Pump { n: u8::MAX });
            }
            play(&builds, &before, &first, &ops)
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The simulated engine and source.

/// The events a model receives, printed one a line.
#[derive(Clone)]
struct Trace(Vec<Event>);

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, event) in self.0.iter().enumerate() {
            write!(f, "\n  #{i:<3} {}", show(event))?;
        }
        Ok(())
    }
}

fn show(event: &Event) -> String {
    let completion = |c: &Completion| {
        format!("{} gen{} {} at {}", c.info.reference, c.generation, c.outcome.label(), c.completed_at)
    };
    match event {
        Event::Started(info) => format!("Started {} created {}", info.reference, info.created_at),
        Event::Completed(c) => format!("Completed {}", completion(c)),
        Event::Deleted(r) => format!("Deleted {r}"),
        Event::Gone(r) => format!("Gone {r}"),
        Event::Disconnected(at) => format!("Disconnected {at}"),
        Event::ReplayDone => "ReplayDone".to_string(),
        Event::FailureFound { reference, .. } => format!("FailureFound {reference}"),
        Event::BaseImage { reference, image, .. } => format!("BaseImage {reference} {image}"),
        Event::History { completion: c, progress } => {
            format!("History {} ({} progress)", completion(c), progress.len())
        }
        Event::Progress(p) => {
            let vertexes: Vec<String> = p
                .vertexes
                .iter()
                .map(|v| {
                    let mut flags = String::new();
                    for (set, flag) in [
                        (v.started.is_some(), " started"),
                        (v.completed.is_some(), " completed"),
                        (v.cached, " cached"),
                        (v.error.is_some(), " error"),
                    ] {
                        if set {
                            flags.push_str(flag);
                        }
                    }
                    format!("{} {:?}{flags}", v.digest, v.name)
                })
                .collect();
            format!("Progress {} at {:?} [{}] image {:?}", p.reference, p.at, vertexes.join(", "), p.image)
        }
    }
}

/// A build as the engine has it.
#[derive(Debug, Default, Clone)]
struct EngineBuild {
    /// Position in its script's lifecycle.
    pos: usize,
    created_at: Time,
    running: bool,
    /// Its stored history record, latest generation.
    record: Option<Completion>,
    /// Its progress so far, as the engine stores it.
    progress: Vec<Progress>,
}

/// The source's connection.
enum Link {
    Down,
    /// Receiving the replay (what is left of it); live history events are held meanwhile.
    Replaying(VecDeque<Event>),
    Live,
}

/// One engine and the source watching it, recording what the model is sent.
struct Play<'a> {
    scripts: &'a [Script],
    builds: Vec<EngineBuild>,
    now: Time,
    link: Link,
    /// Live history events that arrived during the replay, sent after it (as the source does).
    held: Vec<Event>,
    /// Live `STARTED`s waiting for their overtaking `COMPLETE`.
    overtaken: Vec<Option<Event>>,
    /// The last history or status event sent, for duplicates.
    last: Option<Event>,
    out: Vec<Event>,
}

fn play(scripts: &[Script], before: &[Op], first: &[u8], ops: &[Op]) -> Trace {
    let mut play = Play {
        scripts,
        builds: vec![EngineBuild::default(); scripts.len()],
        now: 1000.0,
        link: Link::Down,
        held: Vec::new(),
        overtaken: vec![None; scripts.len()],
        last: None,
        out: Vec::new(),
    };
    // Builds that ran before the exporter did: only the first replay tells of them.
    for op in before {
        play.op(op);
    }
    play.connect(first);
    for op in ops {
        play.op(op);
    }
    Trace(play.out)
}

impl Play<'_> {
    fn op(&mut self, op: &Op) {
        match op {
            Op::Step { build, dt } => self.step(build % self.scripts.len(), *dt),
            Op::Disconnect { lag } => self.disconnect(*lag),
            Op::Connect { order } => self.connect(order),
            Op::Pump { n } => self.pump(*n),
            Op::Duplicate => {
                if !matches!(self.link, Link::Down) {
                    if let Some(event) = self.last.clone() {
                        self.send(event);
                    }
                }
            }
            Op::Gone { build } => {
                if !matches!(self.link, Link::Down) {
                    self.out.push(Event::Gone(reference(build % self.scripts.len())));
                }
            }
            Op::History { build } => self.history(build % self.scripts.len()),
        }
    }

    fn info(&self, b: usize) -> BuildInfo {
        BuildInfo {
            reference: reference(b),
            created_at: self.builds[b].created_at,
            image: self.scripts[b].image.then(|| format!("docker.io/library/image-{b}:latest")),
            secrets: Vec::new(),
            args: Vec::new(),
            no_cache: None,
            context: Default::default(),
        }
    }

    fn step(&mut self, b: usize, dt: u8) {
        self.now += f64::from(dt) * 0.5;
        let script = &self.scripts[b];
        let progress = script.progress.len();
        let pos = self.builds[b].pos;
        match pos {
            0 => {
                self.builds[b].running = true;
                self.builds[b].created_at = self.now;
                let event = Event::Started(self.info(b));
                if script.overtaken && !matches!(self.link, Link::Down) {
                    self.overtaken[b] = Some(event);
                } else {
                    self.history_event(event);
                }
            }
            p if p <= progress => {
                let message = self.progress(b, &script.progress[p - 1]);
                self.builds[b].progress.push(message.clone());
                // Status streams run during the replay too; they die with the connection.
                if !matches!(self.link, Link::Down) {
                    self.send(Event::Progress(message));
                }
            }
            p if p == progress + 1 => {
                let completion = Completion {
                    info: self.info(b),
                    completed_at: self.now,
                    outcome: script.outcome.clone(),
                    generation: 0,
                    warnings: 0,
                    failure: None,
                };
                self.builds[b].running = false;
                self.builds[b].record = Some(completion.clone());
                self.history_event(Event::Completed(completion));
                if let Some(started) = self.overtaken[b].take() {
                    self.history_event(started);
                }
            }
            p if p == progress + 2 => {
                let Some(record) = self.builds[b].record.as_mut() else { return };
                record.generation = 1;
                let event = Event::Completed(record.clone());
                self.history_event(event);
            }
            p if p == progress + 3 && script.deleted => {
                self.builds[b].record = None;
                self.history_event(Event::Deleted(reference(b)));
            }
            _ => return,
        }
        self.builds[b].pos += 1;
    }

    fn progress(&self, b: usize, spec: &ProgressSpec) -> Progress {
        let now = self.now;
        Progress {
            reference: reference(b),
            at: Some(now),
            vertexes: spec
                .vertexes
                .iter()
                .map(|v| VertexUpdate {
                    digest: format!("sha256:d{}", v.digest),
                    name: NAMES[usize::from(v.name)].to_string(),
                    started: v.started.then_some(now - 1.0),
                    completed: v.completed.then_some(now),
                    cached: v.cached,
                    error: v.error.then(|| "exit code: 1".to_string()),
                })
                .collect(),
            image: spec.naming.then(|| format!("docker.io/library/named-{b}:v1")),
            warnings: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// A live history event: lost while down, held during a replay, sent when live.
    fn history_event(&mut self, event: Event) {
        match self.link {
            Link::Down => {}
            Link::Replaying(_) => self.held.push(event),
            Link::Live => self.send(event),
        }
    }

    fn send(&mut self, event: Event) {
        self.last = Some(event.clone());
        self.out.push(event);
    }

    fn disconnect(&mut self, lag: u8) {
        // The source reports the cut at or before the moment it happened (it subtracts the
        // keepalive round that may have passed unnoticed), never after it.
        self.link = Link::Down;
        self.held.clear();
        self.overtaken.iter_mut().for_each(|o| *o = None);
        self.out.push(Event::Disconnected(self.now - f64::from(lag) * 0.5));
    }

    fn connect(&mut self, order: &[u8]) {
        if !matches!(self.link, Link::Down) {
            return;
        }
        let mut replay: Vec<Event> = Vec::new();
        for (b, build) in self.builds.iter().enumerate() {
            if let Some(record) = &build.record {
                replay.push(Event::Completed(record.clone()));
            }
            if build.running {
                replay.push(Event::Started(self.info(b)));
            }
        }
        let priority = |i: usize| if order.is_empty() { 0 } else { order[i % order.len()] };
        let mut keyed: Vec<(u8, usize, Event)> =
            replay.into_iter().enumerate().map(|(i, e)| (priority(i), i, e)).collect();
        keyed.sort_by_key(|(p, i, _)| (*p, *i));
        self.link = Link::Replaying(keyed.into_iter().map(|(_, _, e)| e).collect());
    }

    fn pump(&mut self, n: u8) {
        let Link::Replaying(queue) = &mut self.link else { return };
        let mut next = Vec::new();
        for _ in 0..n {
            match queue.pop_front() {
                Some(event) => next.push(event),
                None => break,
            }
        }
        let done = queue.is_empty();
        for event in next {
            self.send(event);
        }
        if done {
            self.link = Link::Live;
            self.out.push(Event::ReplayDone);
            for event in std::mem::take(&mut self.held) {
                self.send(event);
            }
        }
    }

    fn history(&mut self, b: usize) {
        if matches!(self.link, Link::Down) || self.builds[b].pos == 0 {
            return;
        }
        let completion = self.builds[b].record.clone().unwrap_or_else(|| Completion {
            info: self.info(b),
            completed_at: self.now,
            outcome: self.scripts[b].outcome.clone(),
            generation: 0,
            warnings: 0,
            failure: None,
        });
        self.out.push(Event::History { completion, progress: self.builds[b].progress.clone() });
    }
}

fn reference(b: usize) -> String {
    format!("r{b}")
}

// ---------------------------------------------------------------------------------------------
// Folding effects, and what the event sequence alone says about each ref.

/// Where a ref is, judged from the events the model was sent, without asking the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Seen {
    /// Nothing has started or ended it yet.
    #[default]
    Fresh,
    /// Its `STARTED` arrived first and nothing has ended it since.
    Held,
    /// A `COMPLETE` arrived, or it was declared gone while held.
    Ended,
}

#[derive(Debug, Clone, Default)]
struct Ledger {
    /// `BuildStarted` per ref, attributed to the event that caused it.
    started: BTreeMap<String, u32>,
    /// Outcomes counted per ref.
    finished: BTreeMap<String, Vec<Outcome>>,
    total_started: u64,
    total_finished: u64,
    /// Starts caused by an event about no ref.
    unattributed_starts: u32,
    seen: BTreeMap<String, Seen>,
    /// The opening replay is over.
    opened: bool,
    /// Cut since the opening replay, and not yet replayed whole.
    cut: bool,
    /// When the link was first cut before the opening replay was over: what completed since
    /// then (less the slack) happened while the exporter was watching.
    starting_cut: Option<Time>,
    replays_after_reconnect: u32,
    /// The outcome of the `COMPLETE` each ref received while held as running.
    completed_while_held: BTreeMap<String, Outcome>,
    /// The outcome of the first `COMPLETE` of refs neither held nor ended, after the opening
    /// replay.
    news: BTreeMap<String, Outcome>,
    /// Refs declared gone while held.
    lost: BTreeMap<String, ()>,
    /// Refs first seen completed in the opening replay: finished before the exporter looked.
    history: BTreeMap<String, ()>,
    /// Latest time any event carried, for snapshots.
    now: Time,
}

impl Ledger {
    fn seen(&self, reference: &str) -> Seen {
        self.seen.get(reference).copied().unwrap_or_default()
    }

    fn record(&mut self, event: &Event, effects: &[Effect]) {
        let subject = match event {
            Event::Started(info) => Some(info.reference.as_str()),
            Event::Completed(c) => Some(c.info.reference.as_str()),
            _ => None,
        };
        for effect in effects {
            match effect {
                Effect::BuildStarted => {
                    self.total_started += 1;
                    match subject {
                        Some(r) => *self.started.entry(r.to_string()).or_default() += 1,
                        None => self.unattributed_starts += 1,
                    }
                }
                Effect::BuildFinished(build) => {
                    self.total_finished += 1;
                    self.finished.entry(build.view.reference.clone()).or_default().push(build.outcome.clone());
                }
                Effect::BuildNamed { name, .. } => assert_ne!(name, UNKNOWN, "an unnamed build is not announced"),
                Effect::HistorySeen { .. } | Effect::BuildLost { .. } => {}
            }
        }
        match event {
            Event::Started(info) => {
                self.now = self.now.max(info.created_at);
                if self.seen(&info.reference) == Seen::Fresh {
                    self.seen.insert(info.reference.clone(), Seen::Held);
                }
            }
            Event::Completed(c) => {
                self.now = self.now.max(c.completed_at);
                let r = &c.info.reference;
                match self.seen(r) {
                    Seen::Held => {
                        self.completed_while_held.insert(r.clone(), c.outcome.clone());
                    }
                    Seen::Fresh if self.opened || self.watched(c.completed_at) => {
                        self.news.insert(r.clone(), c.outcome.clone());
                    }
                    Seen::Fresh => {
                        self.history.insert(r.clone(), ());
                    }
                    Seen::Ended => {}
                }
                self.seen.insert(r.clone(), Seen::Ended);
            }
            Event::Deleted(r) | Event::Gone(r) => {
                if self.seen(r) == Seen::Held {
                    self.seen.insert(r.clone(), Seen::Ended);
                    self.lost.insert(r.clone(), ());
                }
            }
            Event::Progress(p) => self.now = self.now.max(p.at.unwrap_or(self.now)),
            Event::Disconnected(at) => {
                self.now = self.now.max(*at);
                self.cut |= self.opened;
                if !self.opened {
                    self.starting_cut.get_or_insert(*at);
                }
            }
            Event::ReplayDone => {
                self.opened = true;
                if std::mem::take(&mut self.cut) {
                    self.replays_after_reconnect += 1;
                }
            }
            Event::History { completion, .. } => self.now = self.now.max(completion.completed_at),
            // Count nothing.
            Event::FailureFound { .. } | Event::BaseImage { .. } => {}
        }
    }

    /// Whether a build completed at `at`, before the opening replay was over, did so while the
    /// exporter watched: after the first cut of that replay (the model's slack included).
    fn watched(&self, at: Time) -> bool {
        self.starting_cut.is_some_and(|cut| at >= cut - super::DISCONNECT_SLACK_SECONDS)
    }

    fn held(&self) -> Vec<String> {
        self.seen.iter().filter(|(_, s)| **s == Seen::Held).map(|(r, _)| r.clone()).collect()
    }
}

/// One `apply` and everything a property may look at after it.
struct Applied<'a> {
    index: usize,
    event: &'a Event,
    effects: &'a [Effect],
    model: &'a Model,
    before: &'a Ledger,
    after: &'a Ledger,
}

impl fmt::Display for Applied<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "after event #{} ({})", self.index, show(self.event))
    }
}

impl Applied<'_> {
    fn finished_here(&self) -> impl Iterator<Item = &FinishedBuild> {
        self.effects.iter().filter_map(|e| match e {
            Effect::BuildFinished(b) => Some(b),
            _ => None,
        })
    }
}

/// Sends `trace` to a fresh model, one event at a time, checking after every `apply`.
fn run(
    trace: &Trace,
    settings: Settings,
    mut check: impl FnMut(&Applied) -> Result<(), TestCaseError>,
) -> Result<Ledger, TestCaseError> {
    let mut model = Model::new(settings);
    let mut ledger = Ledger::default();
    for (index, event) in trace.0.iter().enumerate() {
        let before = ledger.clone();
        let effects = model.apply(event.clone());
        ledger.record(event, &effects);
        check(&Applied { index, event, effects: &effects, model: &model, before: &before, after: &ledger })?;
    }
    Ok(ledger)
}

fn no_ref_finished_twice(step: &Applied) -> Result<(), TestCaseError> {
    for (reference, outcomes) in &step.after.finished {
        prop_assert!(
            outcomes.len() <= 1,
            "{step}: {reference} counted as finished {} times: {outcomes:?}",
            outcomes.len()
        );
    }
    Ok(())
}

fn starts_once_and_not_behind(step: &Applied) -> Result<(), TestCaseError> {
    let after = step.after;
    prop_assert_eq!(after.unattributed_starts, 0, "{}: a start counted for no build", step);
    for (reference, count) in &after.started {
        prop_assert!(*count <= 1, "{step}: the start of {reference} counted {count} times");
    }
    for reference in after.finished.keys() {
        prop_assert!(
            after.started.contains_key(reference),
            "{step}: {reference} finished without being counted as started"
        );
    }
    prop_assert!(
        after.total_started >= after.total_finished,
        "{step}: {} started < {} finished",
        after.total_started,
        after.total_finished
    );
    Ok(())
}

/// The default settings, spelled out where the property depends on them.
fn remembering_many_refs() -> Settings {
    Settings { max_remembered_refs: 10_000, ..Default::default() }
}

fn config() -> ProptestConfig {
    // The default case count (256) honours `PROPTEST_CASES`; `with_cases` would not. Failures
    // are not persisted: this file is the only one the tests may write next to.
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_build_is_counted_as_finished_twice(trace in scenario()) {
        run(&trace, Settings::default(), no_ref_finished_twice)?;
    }

    #[test]
    fn starts_count_once_per_build_and_never_fall_behind_finishes(trace in scenario()) {
        run(&trace, Settings::default(), starts_once_and_not_behind)?;
    }

    #[test]
    fn step_counts_stay_consistent(trace in scenario()) {
        run(&trace, Settings::default(), |step| {
            let mut views: Vec<(BuildView, Option<u32>)> = step
                .model
                .snapshot(step.after.now)
                .into_iter()
                .map(|running| {
                    let current = running.current_step();
                    (std::sync::Arc::unwrap_or_clone(running.view), Some(current))
                })
                .collect();
            views.extend(step.finished_here().map(|b| (b.view.clone(), None)));
            for (view, current) in views {
                let c = view.counts;
                prop_assert_eq!(c, StepCounts::of(&view.steps), "{}: counts of {} disagree with its steps", step, view.reference);
                prop_assert!(c.completed <= c.total, "{step}: {}: {c:?}", view.reference);
                prop_assert!(c.cached <= c.completed, "{step}: {}: {c:?}", view.reference);
                if let Some(current) = current {
                    prop_assert!(current <= c.total, "{step}: {}: step {current} of {c:?}", view.reference);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_counted_build_is_no_longer_shown_running(trace in scenario()) {
        run(&trace, Settings::default(), |step| {
            let shown: Vec<String> = step.model.snapshot(step.after.now).into_iter().map(|b| b.view.reference.clone()).collect();
            prop_assert_eq!(&shown, &step.model.running_refs(), "{}: the snapshot and the running refs disagree", step);
            for reference in &shown {
                prop_assert!(
                    !step.after.finished.contains_key(reference),
                    "{step}: {reference} is shown running after being counted as finished"
                );
            }
            Ok(())
        })?;
    }

    #[test]
    fn builds_held_running_are_those_started_and_not_yet_ended(trace in scenario()) {
        // What makes "held as running" in the other properties a fact about the events, not
        // about the model's own bookkeeping.
        run(&trace, Settings::default(), |step| {
            prop_assert_eq!(step.model.running_refs(), step.after.held(), "{}", step);
            Ok(())
        })?;
    }

    #[test]
    fn a_complete_for_a_running_build_counts_it_once_with_that_outcome(trace in scenario()) {
        run(&trace, Settings::default(), |step| {
            // Checked over the whole run, not only at the COMPLETE: a later replay, duplicate
            // or Gone must neither count it again nor replace its outcome.
            for (reference, outcome) in &step.after.completed_while_held {
                let counted = step.after.finished.get(reference).cloned().unwrap_or_default();
                prop_assert_eq!(
                    &counted,
                    &vec![outcome.clone()],
                    "{}: {} completed while running",
                    step,
                    reference
                );
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_build_declared_gone_while_running_is_counted_once_as_lost(trace in scenario()) {
        run(&trace, Settings::default(), |step| {
            if let Event::Gone(reference) | Event::Deleted(reference) = step.event {
                if step.before.seen(reference) == Seen::Held {
                    prop_assert_eq!(
                        step.effects.first(),
                        Some(&Effect::BuildLost { reference: reference.clone() }),
                        "{}",
                        step
                    );
                }
            }
            let lost = Outcome::Failed(LOST.to_string());
            for reference in step.after.lost.keys() {
                let counted = step.after.finished.get(reference).cloned().unwrap_or_default();
                prop_assert_eq!(&counted, &vec![lost.clone()], "{}: {} was lost", step, reference);
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_complete_first_seen_after_the_opening_replay_is_counted_once(trace in scenario()) {
        // Live, or in a reconnect's replay: either it completed while we were connected and
        // was not seen yet, or it completed after the cut the source reported.
        run(&trace, Settings::default(), |step| {
            for (reference, outcome) in &step.after.news {
                let counted = step.after.finished.get(reference).cloned().unwrap_or_default();
                prop_assert_eq!(&counted, &vec![outcome.clone()], "{}: news of {}", step, reference);
                prop_assert_eq!(step.after.started.get(reference), Some(&1), "{}: start of {}", step, reference);
            }
            Ok(())
        })?;
    }

    #[test]
    fn history_and_source_events_count_nothing(trace in scenario()) {
        run(&trace, Settings::default(), |step| {
            let counts = |e: &Effect| matches!(e, Effect::BuildStarted | Effect::BuildFinished(_));
            let history = match step.event {
                // A build the opening replay shows completed, never seen running, finished
                // before the exporter was there to see it.
                Event::Completed(c) => {
                    !step.before.opened
                        && !step.before.watched(c.completed_at)
                        && step.before.seen(&c.info.reference) == Seen::Fresh
                }
                Event::Progress(_)
                | Event::Disconnected(_)
                | Event::ReplayDone
                | Event::History { .. }
                | Event::FailureFound { .. }
                | Event::BaseImage { .. } => true,
                Event::Started(_) | Event::Deleted(_) | Event::Gone(_) => false,
            };
            if history {
                prop_assert!(!step.effects.iter().any(counts), "{}: counted {:?}", step, step.effects);
            }
            // Nor later, when a replay after a reconnect or a duplicate brings it again.
            for reference in step.after.history.keys() {
                prop_assert!(!step.after.finished.contains_key(reference), "{step}: history {reference} was counted");
            }
            Ok(())
        })?;
    }

    #[test]
    fn three_or_more_reconnect_replays_count_no_build_twice(trace in scenario_with_reconnects()) {
        let ledger = run(&trace, remembering_many_refs(), |step| {
            no_ref_finished_twice(step)?;
            starts_once_and_not_behind(step)
        })?;
        // Guards the generator: the property means nothing without the replays.
        prop_assert!(ledger.replays_after_reconnect >= 3, "only {} replays after a reconnect", ledger.replays_after_reconnect);
    }
}
