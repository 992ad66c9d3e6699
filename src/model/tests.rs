//! Event sequences through the model, including the quirks BuildKit really shows.

use super::*;
use std::sync::Arc;

/// Builds the events of one build.
struct Fixture {
    reference: String,
    created_at: Time,
    secrets: Vec<String>,
    image: Option<String>,
    args: Vec<(String, String)>,
    no_cache: Option<NoCache>,
}

fn build(reference: &str, created_at: Time) -> Fixture {
    Fixture {
        reference: reference.to_string(),
        created_at,
        secrets: Vec::new(),
        image: None,
        args: Vec::new(),
        no_cache: None,
    }
}

impl Fixture {
    /// A build-arg: its value is masked too.
    fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push((name.to_string(), value.to_string()));
        self.secrets.push(value.to_string());
        self
    }

    fn no_cache(mut self, no_cache: NoCache) -> Self {
        self.no_cache = Some(no_cache);
        self
    }

    fn secret(mut self, value: &str) -> Self {
        self.secrets.push(value.to_string());
        self
    }

    fn image(mut self, image: &str) -> Self {
        self.image = Some(image.to_string());
        self
    }

    fn info(&self) -> BuildInfo {
        BuildInfo {
            reference: self.reference.clone(),
            created_at: self.created_at,
            image: self.image.clone(),
            secrets: self.secrets.clone(),
            args: self.args.clone(),
            no_cache: self.no_cache.clone(),
            context: Default::default(),
        }
    }

    fn started(&self) -> Event {
        Event::Started(self.info())
    }

    fn completed(&self, at: Time, outcome: Outcome) -> Event {
        Event::Completed(Completion {
            info: self.info(),
            completed_at: at,
            outcome,
            generation: 0,
            warnings: 0,
            failure: None,
        })
    }

    fn progress(&self, at: Time, vertexes: Vec<VertexUpdate>) -> Event {
        Event::Progress(Progress {
            reference: self.reference.clone(),
            at: Some(at),
            vertexes,
            image: None,
            warnings: Vec::new(),
            logs: Vec::new(),
        })
    }

    fn naming(&self, at: Time, image: &str) -> Event {
        Event::Progress(Progress {
            reference: self.reference.clone(),
            at: Some(at),
            vertexes: Vec::new(),
            image: Some(image.to_string()),
            warnings: Vec::new(),
            logs: Vec::new(),
        })
    }
}

fn announced(digest: &str, name: &str) -> VertexUpdate {
    VertexUpdate { digest: digest.to_string(), name: name.to_string(), ..Default::default() }
}

fn running(digest: &str, name: &str, started: Time) -> VertexUpdate {
    VertexUpdate { started: Some(started), ..announced(digest, name) }
}

fn done(digest: &str, name: &str, started: Time, completed: Time) -> VertexUpdate {
    VertexUpdate { completed: Some(completed), ..running(digest, name, started) }
}

fn cached(digest: &str, name: &str, at: Time) -> VertexUpdate {
    VertexUpdate { cached: true, ..done(digest, name, at, at) }
}

fn failed(digest: &str, name: &str, started: Time, completed: Time, error: &str) -> VertexUpdate {
    VertexUpdate { error: Some(error.to_string()), ..done(digest, name, started, completed) }
}

fn model() -> Model {
    Model::new(Settings::default())
}

fn finished(effects: &[Effect]) -> Vec<&FinishedBuild> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::BuildFinished(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn started_count(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| matches!(e, Effect::BuildStarted)).count()
}

fn apply_all(model: &mut Model, events: Vec<Event>) -> Vec<Effect> {
    events.into_iter().flat_map(|e| model.apply(e)).collect()
}

/// The 15-step single-stage build of the README, each step announced up front.
fn fifteen_steps() -> Vec<(String, String)> {
    let instructions = [
        "FROM docker.io/library/tinybase:latest",
        "WORKDIR /app",
        "RUN echo system packages && sleep 1",
        "RUN echo build tools && sleep 1",
        "RUN echo opengl && sleep 1",
        "RUN echo openblas && sleep 1",
        "RUN echo ffmpeg && sleep 1",
        "RUN echo pip upgrade && sleep 1",
        "RUN echo numpy && sleep 1",
        "RUN echo torch && sleep 1",
        "RUN echo torchvision && sleep 1",
        "RUN echo pytorch3d && sleep 1",
        "RUN echo detectron2 && sleep 1",
        "COPY . /app",
        "RUN echo done",
    ];
    instructions
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("sha256:{i:02}"), format!("[{}/15] {text}", i + 1)))
        .collect()
}

#[test]
fn current_step_moves_through_a_single_stage_build() {
    let mut model = model();
    let b = build("r1", 100.0);
    assert_eq!(started_count(&model.apply(b.started())), 1);
    let steps = fifteen_steps();
    let mut announce: Vec<VertexUpdate> = steps.iter().map(|(d, n)| announced(d, n)).collect();
    announce.push(announced("sha256:int", "[internal] load build definition from Dockerfile"));
    model.apply(b.progress(100.5, announce));
    let snap = model.snapshot(0.0);
    assert_eq!((snap[0].view.counts.total, snap[0].view.counts.completed, snap[0].current_step()), (15, 0, 1));

    let mut t = 101.0;
    for (i, (digest, name)) in steps.iter().enumerate() {
        model.apply(b.progress(t, vec![running(digest, name, t)]));
        let snap = model.snapshot(0.0);
        assert_eq!(snap[0].current_step(), i as u32 + 1);
        assert_eq!(snap[0].running_steps().count(), 1);
        assert_eq!(snap[0].last_progress, t);
        model.apply(b.progress(t + 1.0, vec![done(digest, name, t, t + 1.0)]));
        t += 1.0;
    }
    let snap = model.snapshot(0.0);
    assert_eq!((snap[0].view.counts.completed, snap[0].current_step()), (15, 15));
    assert!(snap[0].running_steps().next().is_none());

    let effects = model.apply(b.completed(t + 0.5, Outcome::Succeeded));
    let done = finished(&effects);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].finished_steps().count(), 15);
    assert_eq!(done[0].duration(), t + 0.5 - 100.0);
    assert!(done[0].finished_steps().all(|s| s.run_time() == Some(1.0)));
    assert_eq!(done[0].finished_steps().filter(|s| s.instruction == "RUN").count(), 12);
    assert!(model.snapshot(0.0).is_empty());
}

#[test]
fn snapshots_between_two_events_share_one_view_and_only_the_estimate_moves() {
    let mut model = model();
    let (first, second) = (build("r1", 100.0).image("app:latest"), build("r2", 100.0).image("app:latest"));
    let steps = fifteen_steps();
    // One finished build teaches the step durations (1 s each), so the next one has an estimate.
    apply_all(
        &mut model,
        vec![first.started(), first.progress(100.5, steps.iter().map(|(d, n)| done(d, n, 101.0, 102.0)).collect())],
    );
    model.apply(first.completed(103.0, Outcome::Succeeded));
    model.apply(second.started());
    model.apply(second.progress(110.0, vec![running(&steps[0].0, &steps[0].1, 110.0)]));

    // The running step is expected to take 1 s: a quarter of a second in, then three quarters.
    let (early, late) = (model.snapshot(110.25), model.snapshot(110.75));
    assert!(Arc::ptr_eq(&early[0].view, &late[0].view), "the view was computed twice");
    let remaining = |snap: &[RunningBuild]| snap[0].estimate.expect("learned").remaining;
    assert_eq!(remaining(&early) - remaining(&late), 0.5, "the estimate did not follow the time of asking");
    let at_120 = model.snapshot(120.0);

    model.apply(second.progress(121.0, vec![done(&steps[0].0, &steps[0].1, 110.0, 121.0)]));
    let after = model.snapshot(121.0);
    assert!(!Arc::ptr_eq(&after[0].view, &at_120[0].view), "an event left the old view in place");
    assert_eq!((at_120[0].view.counts.completed, after[0].view.counts.completed), (0, 1));
}

#[test]
fn the_second_complete_of_a_build_counts_nothing() {
    let mut model = model();
    let b = build("r1", 10.0);
    let effects = apply_all(
        &mut model,
        vec![
            b.started(),
            b.progress(11.0, vec![done("d1", "[1/1] RUN true", 10.5, 11.0)]),
            b.completed(11.1, Outcome::Succeeded),
            b.completed(11.1, Outcome::Succeeded),
        ],
    );
    assert_eq!(started_count(&effects), 1);
    assert_eq!(finished(&effects).len(), 1);
}

#[test]
fn replayed_history_seeds_but_counts_nothing() {
    let mut model = model();
    let old = build("old", 1.0).image("docker.io/library/app:1");
    let unnamed = build("old2", 2.0);
    let effects = apply_all(
        &mut model,
        vec![
            old.completed(5.0, Outcome::Succeeded),
            unnamed.completed(6.0, Outcome::Failed("x".into())),
            Event::ReplayDone,
        ],
    );
    assert_eq!(effects, vec![Effect::HistorySeen { name: "app".into(), result: "succeeded", completed_at: 5.0 }]);
}

#[test]
fn started_replayed_on_reconnect_counts_once() {
    let mut model = model();
    let b = build("r1", 10.0);
    let mut effects = apply_all(&mut model, vec![b.started(), Event::Disconnected(20.0)]);
    effects.extend(apply_all(&mut model, vec![b.started(), Event::ReplayDone]));
    assert_eq!(started_count(&effects), 1);
    assert!(model.is_running("r1"));
}

#[test]
fn a_build_finishing_while_disconnected_is_counted_once_after_reconnect() {
    let mut model = model();
    let b = build("r1", 10.0);
    model.apply(b.started());
    model.apply(b.progress(12.0, vec![done("d1", "[1/2] FROM x", 11.0, 12.0)]));
    model.apply(Event::Disconnected(13.0));
    // Replay after reconnecting: the build is complete, twice (both generations).
    let effects = apply_all(
        &mut model,
        vec![b.completed(15.0, Outcome::Succeeded), b.completed(15.0, Outcome::Succeeded), Event::ReplayDone],
    );
    let done = finished(&effects);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].finished_steps().count(), 1, "steps observed before the cut are kept");
    // A second reconnect replays it again: nothing more.
    model.apply(Event::Disconnected(30.0));
    let effects = apply_all(&mut model, vec![b.completed(15.0, Outcome::Succeeded), Event::ReplayDone]);
    assert!(finished(&effects).is_empty());
}

#[test]
fn a_build_that_started_and_finished_while_disconnected_is_counted() {
    let mut model = model();
    model.apply(Event::ReplayDone);
    model.apply(Event::Disconnected(100.0));
    let before = build("before", 10.0);
    let during = build("during", 101.0);
    let effects = apply_all(
        &mut model,
        vec![
            before.completed(50.0, Outcome::Succeeded),
            during.completed(110.0, Outcome::Failed("boom".into())),
            Event::ReplayDone,
            during.completed(110.0, Outcome::Failed("boom".into())),
        ],
    );
    let done = finished(&effects);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].view.reference, "during");
    assert_eq!(done[0].outcome.label(), "failed");
    assert_eq!(started_count(&effects), 1);
}

#[test]
fn a_live_completion_is_counted_even_without_its_start() {
    let mut model = model();
    let old = build("old", 1.0);
    assert!(finished(&model.apply(old.completed(2.0, Outcome::Succeeded))).is_empty(), "the opening replay is history");
    model.apply(Event::ReplayDone);
    // BuildKit sends live events from goroutines: a COMPLETE may overtake its STARTED.
    let fast = build("fast", 10.0);
    let effects = model.apply(fast.completed(10.5, Outcome::Succeeded));
    assert_eq!((started_count(&effects), finished(&effects).len()), (1, 1));
    assert!(model.apply(fast.started()).is_empty(), "its late start counts nothing");
    assert!(!model.is_running("fast"));
    assert!(finished(&model.apply(old.completed(2.0, Outcome::Succeeded))).is_empty(), "history stays history");
}

#[test]
fn a_build_that_finished_while_the_opening_replay_was_cut_is_counted() {
    let mut model = model();
    let old = build("old", 1.0);
    model.apply(old.completed(2.0, Outcome::Succeeded));
    // Cut before the replay was over; the next connection's replay brings both.
    model.apply(Event::Disconnected(100.0));
    let during = build("during", 101.0);
    let effects = apply_all(
        &mut model,
        vec![old.completed(2.0, Outcome::Succeeded), during.completed(103.0, Outcome::Succeeded), Event::ReplayDone],
    );
    let done = finished(&effects);
    assert_eq!((done.len(), done[0].view.reference.as_str()), (1, "during"));
}

#[test]
fn a_running_build_is_lost_only_when_the_engine_says_it_is_gone() {
    let mut model = model();
    model.apply(build("r1", 1.0).started());
    model.apply(Event::Disconnected(5.0));
    assert!(model.apply(Event::ReplayDone).is_empty(), "missing from the replay proves nothing");
    assert!(model.is_running("r1"));
    let effects = model.apply(Event::Gone("r1".into()));
    assert_eq!(effects[0], Effect::BuildLost { reference: "r1".into() });
    let done = finished(&effects);
    assert_eq!(done[0].outcome, Outcome::Failed(LOST.into()));
    assert_eq!(done[0].completed_at, 1.0, "ended at its last sign of life");
    assert!(model.snapshot(0.0).is_empty());
    // Its replay later (if the engine kept a record after all) counts nothing more.
    let effects = model.apply(build("r1", 1.0).completed(9.0, Outcome::Canceled));
    assert!(finished(&effects).is_empty());
    let effects = model.apply(build("r1", 1.0).started());
    assert!(effects.is_empty() && !model.is_running("r1"), "nor does its start");
}

#[test]
fn a_retagged_dockerfile_is_named_by_its_own_tag() {
    let mut model = model();
    let steps = vec![announced("a", "[1/2] FROM x"), announced("b", "[2/2] RUN y")];
    for (reference, tag) in [("r1", "first"), ("r2", "second")] {
        let b = build(reference, 1.0);
        model.apply(b.started());
        model.apply(b.progress(2.0, steps.clone()));
        if reference == "r2" {
            assert_eq!(model.snapshot(0.0)[0].view.name, "first", "a learned name may label it while it runs");
        }
        model.apply(b.naming(3.0, &format!("docker.io/library/{tag}:latest")));
        assert_eq!(model.snapshot(0.0)[0].view.name, tag, "its own name wins as soon as it says it");
        let effects = model.apply(b.completed(3.1, Outcome::Succeeded));
        assert_eq!(finished(&effects)[0].view.name, tag);
    }
}

#[test]
fn same_digest_twice_in_one_message_last_wins() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(3.0, vec![running("d1", "[1/1] RUN x", 2.0), done("d1", "[1/1] RUN x", 2.0, 3.0)]));
    assert_eq!(model.snapshot(0.0)[0].view.counts.completed, 1);
    model.apply(b.progress(3.5, vec![done("d1", "[1/1] RUN x", 2.0, 3.0), running("d1", "[1/1] RUN x", 2.0)]));
    let snap = model.snapshot(0.0);
    assert_eq!(snap[0].view.counts.completed, 0, "completed can go back to unset");
    assert_eq!(snap[0].running_steps().count(), 1);
}

#[test]
fn cached_can_flip_to_true() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(2.0, vec![done("d1", "[1/1] WORKDIR /app", 2.0, 2.0)]));
    assert_eq!(model.snapshot(0.0)[0].view.counts.cached, 0);
    model.apply(b.progress(2.1, vec![cached("d1", "[1/1] WORKDIR /app", 2.0)]));
    assert_eq!(model.snapshot(0.0)[0].view.counts.cached, 1);
    let effects = model.apply(b.completed(3.0, Outcome::Succeeded));
    let step = &finished(&effects)[0].view.steps[0];
    assert_eq!(step.state, StepState::Cached);
    assert_eq!(step.run_time(), None, "cached steps have no execution time");
}

#[test]
fn failed_step_and_build() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(
        4.0,
        vec![
            done("d1", "[1/3] FROM x", 1.5, 2.0),
            failed("d2", "[2/3] RUN false", 2.0, 4.0, "exit code: 1"),
            announced("d3", "[3/3] RUN never"),
        ],
    ));
    let snap = model.snapshot(0.0);
    assert_eq!((snap[0].view.counts.total, snap[0].view.counts.completed, snap[0].current_step()), (3, 1, 2));
    assert!(snap[0].running_steps().next().is_none());
    let effects = model.apply(b.completed(4.1, Outcome::Failed("process did not complete".into())));
    let done = finished(&effects);
    assert_eq!(done[0].outcome.label(), "failed");
    assert_eq!(done[0].finished_steps().count(), 2, "a step that never ran is not counted");
    assert_eq!(done[0].view.steps[1].state, StepState::Failed);
}

#[test]
fn multi_stage_steps_count_across_stages() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(
        2.0,
        vec![
            announced("a", "[base 1/2] FROM tinybase"),
            announced("b", "[base 2/2] RUN make"),
            announced("c", "[stage-1 1/2] FROM scratch"),
            announced("d", "[stage-1 2/2] COPY --from=base /out /"),
            announced("e", "[internal] load build context"),
            running("b", "[base 2/2] RUN make", 2.0),
        ],
    ));
    let snap = &model.snapshot(0.0)[0];
    assert_eq!(snap.view.counts.total, 4);
    assert_eq!(snap.running_steps().next().unwrap().label, "[base 2/2]");
    assert_eq!(snap.running_steps().next().unwrap().instruction, "RUN");
    assert_eq!(snap.running_steps().next().unwrap().command, "make");
}

#[test]
fn free_form_frontends_count_their_vertices() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(
        2.0,
        vec![announced("a", "compile"), running("b", "link", 2.0), announced("c", "exporting to image")],
    ));
    let snap = &model.snapshot(0.0)[0];
    assert_eq!(snap.view.counts.total, 2);
    assert_eq!(
        (snap.running_steps().next().unwrap().instruction, snap.running_steps().next().unwrap().command.as_str()),
        ("OTHER", "link")
    );
}

#[test]
fn name_comes_from_the_record_first() {
    let mut model = model();
    let b = build("r1", 1.0).image("base-python-pose");
    model.apply(b.started());
    model.apply(b.naming(5.0, "docker.io/library/other:tag"));
    assert_eq!(model.snapshot(0.0)[0].view.name, "base-python-pose");
}

#[test]
fn running_build_moves_from_unknown_to_its_exported_name() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(2.0, vec![running("a", "[1/1] RUN x", 2.0)]));
    assert_eq!(model.snapshot(0.0)[0].view.name, UNKNOWN);
    model.apply(b.naming(3.0, "docker.io/library/base-python-pose:latest"));
    assert_eq!(model.snapshot(0.0)[0].view.name, "base-python-pose");
    let effects = model.apply(b.completed(3.1, Outcome::Succeeded));
    assert_eq!(finished(&effects)[0].view.name, "base-python-pose");
}

#[test]
fn rebuild_of_the_same_dockerfile_is_named_from_the_start() {
    let mut model = model();
    let first = build("r1", 1.0);
    let steps = vec![announced("a", "[1/2] FROM x"), announced("b", "[2/2] RUN y")];
    apply_all(
        &mut model,
        vec![
            first.started(),
            first.progress(2.0, steps.clone()),
            first.naming(3.0, "docker.io/library/pose:v1"),
            first.completed(3.0, Outcome::Succeeded),
        ],
    );
    let second = build("r2", 10.0);
    model.apply(second.started());
    assert_eq!(model.snapshot(0.0)[0].view.name, UNKNOWN);
    // Same step list, other digests (another context): the learned name applies.
    let renamed: Vec<VertexUpdate> =
        steps.iter().map(|v| VertexUpdate { digest: format!("{}2", v.digest), ..v.clone() }).collect();
    model.apply(second.progress(11.0, renamed));
    assert_eq!(model.snapshot(0.0)[0].view.name, "pose");
}

#[test]
fn history_with_progress_teaches_names() {
    let mut model = model();
    let old = build("old", 1.0);
    let effects = model.apply(Event::History {
        completion: Completion {
            info: old.info(),
            completed_at: 9.0,
            outcome: Outcome::Canceled,
            generation: 0,
            warnings: 0,
            failure: None,
        },
        progress: vec![Progress {
            reference: "old".into(),
            at: Some(9.0),
            vertexes: vec![announced("a", "[1/1] RUN z")],
            image: Some("docker.io/library/hist:1".into()),
            warnings: Vec::new(),
            logs: Vec::new(),
        }],
    });
    assert_eq!(effects, vec![Effect::HistorySeen { name: "hist".into(), result: "canceled", completed_at: 9.0 }]);
    let next = build("new", 20.0);
    model.apply(next.started());
    model.apply(next.progress(21.0, vec![announced("q", "[1/1] RUN z")]));
    assert_eq!(model.snapshot(0.0)[0].view.name, "hist");
}

#[test]
fn build_arg_values_are_masked_in_commands_and_errors() {
    let mut model = model();
    let b = build("r1", 1.0).secret("s3cr3t-marker").secret("x");
    model.apply(b.started());
    model.apply(b.progress(2.0, vec![running("a", "[1/1] RUN echo s3cr3t-marker x", 2.0)]));
    let snap = &model.snapshot(0.0)[0];
    assert_eq!(snap.running_steps().next().unwrap().command, "echo *** x");
    let effects =
        model.apply(b.completed(3.0, Outcome::Failed("process \"/bin/sh -c echo s3cr3t-marker\" failed".into())));
    assert_eq!(finished(&effects)[0].outcome, Outcome::Failed("process \"/bin/sh -c echo ***\" failed".into()));
}

#[test]
fn long_commands_are_cut() {
    let mut model = Model::new(Settings { max_command_chars: 10, ..Settings::default() });
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(2.0, vec![running("a", "[1/1] RUN 0123456789abcdef", 2.0)]));
    assert_eq!(model.snapshot(0.0)[0].running_steps().next().unwrap().command, "012345678…");
}

#[test]
fn names_beyond_the_limit_become_other() {
    let mut model = Model::new(Settings { max_names: 1, ..Settings::default() });
    for (i, image) in ["a", "b"].iter().enumerate() {
        let b = build(&format!("r{i}"), 1.0).image(image);
        model.apply(b.started());
        let effects = model.apply(b.completed(2.0, Outcome::Succeeded));
        let want = if i == 0 { "a" } else { name::OVERFLOW };
        assert_eq!(finished(&effects)[0].view.name, want);
    }
}

#[test]
fn progress_for_unknown_builds_is_ignored() {
    let mut model = model();
    model.apply(build("ghost", 1.0).progress(2.0, vec![announced("a", "[1/1] RUN x")]));
    assert!(model.snapshot(0.0).is_empty());
}

/// Runs a two-step build of `image` whose second step takes `run` seconds; returns its end.
fn two_step_build(model: &mut Model, reference: &str, start: Time, run: f64) -> Time {
    let b = build(reference, start).image("app");
    model.apply(b.started());
    model.apply(b.progress(start + 0.1, vec![announced("f", "[1/2] FROM x"), announced("r", "[2/2] RUN make")]));
    model.apply(b.progress(start + 0.2, vec![cached("f", "[1/2] FROM x", start + 0.2)]));
    let end = start + 0.3 + run;
    model.apply(b.progress(end, vec![done("r", "[2/2] RUN make", start + 0.3, end)]));
    model.apply(b.naming(end + 0.5, "docker.io/library/app:v2"));
    model.apply(b.completed(end + 1.0, Outcome::Succeeded));
    end + 1.0
}

#[test]
fn eta_comes_from_earlier_builds_of_the_same_name() {
    let mut model = model();
    two_step_build(&mut model, "r1", 0.0, 10.0);
    let b = build("r2", 100.0).image("app");
    model.apply(b.started());
    model.apply(b.progress(100.1, vec![announced("f2", "[1/2] FROM x"), announced("r2", "[2/2] RUN make")]));
    let snap = &model.snapshot(100.1)[0];
    let estimate = snap.estimate.expect("every step was seen before");
    // FROM was cached before (0 s), RUN took 10 s, then 1 s of export.
    assert!((estimate.remaining - 11.0).abs() < 1e-9, "{estimate:?}");
    assert!((estimate.total - 11.1).abs() < 1e-9, "{estimate:?}");
    model.apply(b.progress(100.3, vec![cached("f2", "[1/2] FROM x", 100.2), running("r2", "[2/2] RUN make", 100.3)]));
    let estimate = model.snapshot(104.3)[0].estimate.unwrap();
    assert!((estimate.remaining - 7.0).abs() < 1e-9, "6 s of RUN left plus export: {estimate:?}");
    let steps = &model.snapshot(104.3)[0].view.steps;
    assert_eq!(steps.iter().map(|s| s.state).collect::<Vec<_>>(), [StepState::Cached, StepState::Running]);
    assert_eq!(steps[1].expected, Some(10.0));
}

#[test]
fn a_step_never_seen_means_no_estimate() {
    let mut model = model();
    two_step_build(&mut model, "r1", 0.0, 10.0);
    let b = build("r2", 100.0).image("app");
    model.apply(b.started());
    model.apply(b.progress(
        100.1,
        vec![announced("f", "[1/3] FROM x"), announced("n", "[2/3] RUN new"), announced("r", "[3/3] RUN make")],
    ));
    let snap = &model.snapshot(100.1)[0];
    assert_eq!(snap.estimate, None);
    assert_eq!(snap.view.steps[1].expected, None);
    assert_eq!(snap.view.steps[2].expected, Some(10.0), "matched by instruction text, not index");
    let other = build("r3", 100.0).image("another");
    model.apply(other.started());
    model.apply(other.progress(100.1, vec![announced("x", "[1/1] RUN make")]));
    assert_eq!(model.snapshot(100.1)[1].estimate, None, "learned per name");
}

#[test]
fn recent_builds_keep_tag_result_and_failing_step() {
    let mut model = Model::new(Settings { max_recent: 2, ..Settings::default() });
    two_step_build(&mut model, "r1", 0.0, 1.0);
    let f = build("r2", 10.0);
    model.apply(f.started());
    model.apply(f.progress(
        12.0,
        vec![done("a", "[1/2] FROM x", 10.0, 10.1), failed("b", "[2/2] RUN false", 10.1, 12.0, "exit 1")],
    ));
    model.apply(f.completed(12.1, Outcome::Failed("exit code: 1".into())));
    two_step_build(&mut model, "r3", 20.0, 1.0);
    let recent = model.recent();
    assert_eq!(recent.iter().map(|b| b.view.reference.as_str()).collect::<Vec<_>>(), ["r3", "r2"]);
    assert_eq!(recent[0].view.tag.as_deref(), Some("app:v2"));
    assert_eq!(recent[1].failed_step.as_deref(), Some("[2/2]"));
    assert_eq!(recent[1].view.steps[1].state, StepState::Failed);
}

#[test]
fn history_seen_before_a_disconnect_is_not_counted_after_it() {
    let mut model = model();
    let old = build("old", 1.0);
    // Seen as history on the first connection, completed shortly before the cut.
    model.apply(old.completed(98.0, Outcome::Canceled));
    model.apply(Event::ReplayDone);
    model.apply(Event::Disconnected(100.0));
    let effects = apply_all(&mut model, vec![old.completed(98.0, Outcome::Canceled), Event::ReplayDone]);
    assert!(finished(&effects).is_empty());
    assert_eq!(started_count(&effects), 0);
}

#[test]
fn steps_are_listed_in_dockerfile_order() {
    let mut model = model();
    let b = build("r1", 1.0);
    model.apply(b.started());
    model.apply(b.progress(
        2.0,
        vec![
            announced("c", "[base 3/3] RUN c"),
            announced("x", "[final 1/1] COPY --from=base / /"),
            announced("a", "[base 1/3] FROM x"),
            announced("b", "[base 2/3] RUN b"),
        ],
    ));
    let labels: Vec<String> = model.snapshot(2.0)[0].view.steps.iter().map(|s| s.label.clone()).collect();
    assert_eq!(labels, ["[base 1/3]", "[base 2/3]", "[base 3/3]", "[final 1/1]"]);
}

#[test]
fn memory_stays_bounded_however_many_builds_pass() {
    let settings =
        Settings { max_names: 50, max_learned: 40, max_remembered_refs: 300, max_recent: 20, ..Settings::default() };
    let mut model = Model::new(settings);
    for i in 0..5_000 {
        let b = build(&format!("r{i}"), i as f64).image(&format!("app-{}", i % 120));
        model.apply(b.started());
        model.apply(b.progress(
            i as f64 + 0.5,
            vec![
                done("a", &format!("[1/2] RUN step {}", i % 70), i as f64, i as f64 + 0.5),
                announced("b", "[2/2] RUN x"),
            ],
        ));
        model.apply(b.completed(i as f64 + 0.9, Outcome::Succeeded));
        model.apply(b.completed(i as f64 + 0.9, Outcome::Succeeded));
    }
    assert!(model.running.is_empty());
    assert_eq!(model.recent.len(), 20);
    assert!(model.started.len() <= 300);
    assert!(model.finished.len() <= 300);
    assert!(model.learned.len() <= 40);
    assert!(model.estimates.len() <= 50);
    assert_eq!(model.names.len(), 50);
}

#[test]
fn a_running_build_keeps_the_name_it_shows_when_the_name_set_fills() {
    let mut model = Model::new(Settings { max_names: 2, ..Settings::default() });
    let early = build("early", 1.0).image("early");
    model.apply(early.started());
    assert_eq!(model.snapshot(0.0)[0].view.name, "early");
    // Two other names finish meanwhile: the set is full, but "early" was admitted when declared.
    for (reference, image) in [("b", "second"), ("c", "third")] {
        let b = build(reference, 2.0).image(image);
        model.apply(b.started());
        model.apply(b.completed(3.0, Outcome::Succeeded));
    }
    let effects = model.apply(early.completed(4.0, Outcome::Succeeded));
    assert_eq!(finished(&effects)[0].view.name, "early");
    // A build declared once the set is full is shown as, and counted under, `other`.
    let late = build("late", 5.0);
    model.apply(late.started());
    model.apply(late.naming(6.0, "docker.io/library/late:1"));
    assert_eq!(model.snapshot(0.0)[0].view.name, OVERFLOW);
    let effects = model.apply(late.completed(7.0, Outcome::Succeeded));
    assert_eq!(finished(&effects)[0].view.name, OVERFLOW);
}

#[test]
fn warnings_are_masked_kept_once_and_counted_as_the_record_says() {
    let b = build("w1", 1.0).secret("hunter2-token");
    let mut model = model();
    let warning = |titles: &[&str]| {
        Event::Progress(Progress {
            reference: "w1".into(),
            at: Some(2.0),
            warnings: titles.iter().map(|t| t.to_string()).collect(),
            ..Progress::default()
        })
    };
    apply_all(
        &mut model,
        vec![
            b.started(),
            warning(&["FromAsCasing: 'as' and 'FROM' keywords' casing do not match"]),
            warning(&["SecretsUsedInArgOrEnv: ARG \"TOKEN=hunter2-token\""]),
            // BuildKit sends a warning again in later messages: one title.
            warning(&["FromAsCasing: 'as' and 'FROM' keywords' casing do not match"]),
        ],
    );
    let running = model.snapshot(3.0);
    assert_eq!(running[0].view.warnings.count, 2);
    assert_eq!(running[0].view.warnings.titles[1], "SecretsUsedInArgOrEnv: ARG \"TOKEN=***\"");
    // The record counts three (one the stream never carried): the record wins.
    let effects = model.apply(Event::Completed(Completion {
        info: b.info(),
        completed_at: 4.0,
        outcome: Outcome::Succeeded,
        generation: 0,
        warnings: 3,
        failure: None,
    }));
    let done = finished(&effects);
    assert_eq!(done[0].view.warnings.count, 3);
    assert_eq!(done[0].view.warnings.titles.len(), 2);
}

#[test]
fn several_tags_name_and_tag_the_build_by_the_first() {
    let b = build("t1", 1.0);
    let mut model = model();
    let effects = apply_all(
        &mut model,
        vec![
            b.started(),
            b.naming(2.0, "docker.io/library/first:v1"),
            b.naming(2.1, "docker.io/library/second:v2"),
            b.completed(3.0, Outcome::Succeeded),
        ],
    );
    let done = finished(&effects);
    assert_eq!((done[0].view.name.as_str(), done[0].view.tag.as_deref()), ("first", Some("first:v1")));
}

#[test]
fn a_digest_is_not_a_tag() {
    let b = build("d1", 1.0);
    let mut model = model();
    let effects = apply_all(
        &mut model,
        vec![b.started(), b.naming(2.0, "app@sha256:0123abcd"), b.completed(3.0, Outcome::Succeeded)],
    );
    assert_eq!(finished(&effects)[0].view.tag.as_deref(), Some("app"));
}

#[test]
fn a_running_steps_last_lines_are_kept_masked_and_dropped_when_it_is_done() {
    let b = build("o1", 1.0).secret("hunter2-token");
    let mut model = Model::new(Settings { output_lines: 2, ..Settings::default() });
    let printed = |chunk: &str| {
        Event::Progress(Progress {
            reference: "o1".into(),
            logs: vec![("d1".into(), chunk.into()), ("d2".into(), "never started\n".into())],
            ..Progress::default()
        })
    };
    apply_all(
        &mut model,
        vec![
            b.started(),
            b.progress(2.0, vec![running("d1", "[1/2] RUN apt-get install", 2.0), announced("d2", "[2/2] RUN make")]),
            printed("Reading lists\nUnpacking hunter2-"),
            printed("token\nSetting up\n"),
        ],
    );
    let steps = &model.snapshot(3.0)[0].view.steps;
    assert_eq!(steps[0].output, vec!["Unpacking ***", "Setting up"]);
    assert!(steps[1].output.is_empty(), "a pending step printed nothing");
    // Done: its output goes; a step that fails keeps what it printed last.
    apply_all(
        &mut model,
        vec![
            b.progress(
                4.0,
                vec![done("d1", "[1/2] RUN apt-get install", 2.0, 4.0), running("d2", "[2/2] RUN make", 4.0)],
            ),
            Event::Progress(Progress {
                reference: "o1".into(),
                logs: vec![("d2".into(), "cc: error\n".into())],
                ..Progress::default()
            }),
            b.progress(5.0, vec![failed("d2", "[2/2] RUN make", 4.0, 5.0, "exit code: 2")]),
        ],
    );
    let steps = &model.snapshot(6.0)[0].view.steps;
    assert!(steps[0].output.is_empty());
    assert_eq!(steps[1].output, vec!["cc: error"]);
    assert_eq!(steps[1].error.as_deref(), Some("exit code: 2"));
}

#[test]
fn output_is_not_kept_unless_asked_for() {
    let b = build("o2", 1.0);
    let mut model = model();
    apply_all(
        &mut model,
        vec![
            b.started(),
            b.progress(2.0, vec![running("d1", "[1/1] RUN x", 2.0)]),
            Event::Progress(Progress {
                reference: "o2".into(),
                logs: vec![("d1".into(), "line\n".into())],
                ..Progress::default()
            }),
        ],
    );
    assert!(model.snapshot(3.0)[0].view.steps[0].output.is_empty());
}

#[test]
fn a_long_history_leaves_room_for_the_builds_to_come() {
    let mut model = Model::new(Settings { max_names: 4, ..Settings::default() });
    let mut events = Vec::new();
    for n in 0..6 {
        let old = build(&format!("old{n}"), 1.0).image(&format!("old-{n}"));
        events.push(old.completed(2.0, Outcome::Succeeded));
    }
    events.push(Event::ReplayDone);
    let effects = apply_all(&mut model, events);
    let seen: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::HistorySeen { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    // Half the bound for history; the rest say nothing rather than "other".
    assert_eq!(seen, vec!["old-0", "old-1"]);
    for n in 0..2 {
        let new = build(&format!("new{n}"), 3.0).image(&format!("new-{n}"));
        let effects = apply_all(&mut model, vec![new.started(), new.completed(4.0, Outcome::Succeeded)]);
        assert_eq!(finished(&effects)[0].view.name, format!("new-{n}"));
    }
    let last = build("new2", 5.0).image("new-2");
    let effects = apply_all(&mut model, vec![last.started(), last.completed(6.0, Outcome::Succeeded)]);
    assert_eq!(finished(&effects)[0].view.name, OVERFLOW, "the bound still holds");
}

fn named(effects: &[Effect]) -> Vec<(&str, &[&'static str])> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::BuildNamed { name, instructions } => Some((name.as_str(), instructions.as_slice())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_running_build_is_announced_once_named_and_again_when_an_instruction_comes() {
    let mut model = model();
    let b = build("r1", 10.0);
    let effects = apply_all(
        &mut model,
        vec![b.started(), b.progress(11.0, vec![announced("a", "[1/2] FROM base"), announced("b", "[2/2] RUN make")])],
    );
    assert!(named(&effects).is_empty(), "no series for a name the build may not keep: {effects:?}");
    let effects = model.apply(b.naming(12.0, "docker.io/library/app:1"));
    assert_eq!(named(&effects), vec![("app", &["FROM", "RUN"][..])]);
    // The same name and steps again: nothing new to make.
    assert!(named(&model.apply(b.progress(13.0, vec![running("b", "[2/2] RUN make", 13.0)]))).is_empty());
    // Another RUN step: no instruction the name has no series for.
    assert!(named(&model.apply(b.progress(13.5, vec![announced("d", "[stage-2 1/2] RUN more")]))).is_empty());
    let effects = model.apply(b.progress(14.0, vec![announced("c", "[stage-2 2/2] COPY --from=0 / /")]));
    assert_eq!(named(&effects), vec![("app", &["FROM", "RUN", "COPY"][..])]);
}

#[test]
fn a_build_named_by_what_earlier_builds_taught_is_announced_when_they_finish() {
    let mut model = model();
    let steps = || vec![announced("a", "[1/2] FROM base"), announced("b", "[2/2] RUN make")];
    let (first, second) = (build("r1", 10.0).image("docker.io/library/app"), build("r2", 11.0));
    apply_all(&mut model, vec![Event::ReplayDone, first.started(), first.progress(11.0, steps())]);
    let effects = apply_all(&mut model, vec![second.started(), second.progress(12.0, steps())]);
    assert!(named(&effects).is_empty(), "nothing taught its name yet: {effects:?}");
    let effects = model.apply(first.completed(13.0, Outcome::Succeeded));
    assert_eq!(named(&effects), vec![("app", &["FROM", "RUN"][..])], "the second build learned its name");
}

#[test]
fn the_cache_saved_what_its_steps_usually_take_when_they_run() {
    let mut model = model();
    // The first build ran its RUN for 10 s: nothing was saved, nothing known yet.
    let first = build("r1", 0.0).image("app");
    model.apply(first.started());
    model.apply(first.progress(0.1, vec![announced("f", "[1/2] FROM x"), announced("r", "[2/2] RUN make")]));
    model.apply(first.progress(0.2, vec![cached("f", "[1/2] FROM x", 0.2)]));
    model.apply(first.progress(10.3, vec![done("r", "[2/2] RUN make", 0.3, 10.3)]));
    let effects = model.apply(first.completed(11.0, Outcome::Succeeded));
    assert_eq!(finished(&effects)[0].view.cache_saved(), 0.0);
    // The rebuild takes the RUN from cache: it saved the 10 s it took; FROM, never seen running,
    // counts nothing. Already while it runs.
    let rebuild = build("r2", 100.0).image("app");
    model.apply(rebuild.started());
    model.apply(
        rebuild.progress(100.1, vec![cached("f2", "[1/2] FROM x", 100.1), cached("r2", "[2/2] RUN make", 100.1)]),
    );
    let running = &model.snapshot(100.2)[0];
    assert_eq!(running.view.steps.iter().map(|s| s.usual).collect::<Vec<_>>(), [None, Some(10.0)]);
    assert_eq!(running.view.cache_saved(), 10.0);
    let effects = model.apply(rebuild.completed(100.5, Outcome::Succeeded));
    assert_eq!(finished(&effects)[0].view.cache_saved(), 10.0);
}

#[test]
fn a_finished_build_is_judged_against_the_builds_before_it() {
    let mut model = model();
    two_step_build(&mut model, "r1", 0.0, 10.0);
    let end = two_step_build(&mut model, "r2", 100.0, 40.0);
    let done = model.recent().into_iter().find(|b| b.view.reference == "r2").unwrap();
    let step = &done.view.steps[1];
    assert_eq!(step.usual, Some(10.0), "the usual before it, not smoothed with its own 40 s");
    assert!(step.slower_than_usual(end));
}

#[test]
fn a_step_is_slower_than_usual_past_twice_its_usual_time_and_ten_seconds_more() {
    let step = |state, started: Option<Time>, completed: Option<Time>, usual: Option<f64>| StepView {
        label: "[2/2]".into(),
        instruction: "RUN",
        command: "make".into(),
        state,
        started,
        completed,
        expected: usual,
        usual,
        error: None,
        output: Vec::new(),
        shared: false,
    };
    // Usually 20 s: slower past 40 s while it runs...
    let running = step(StepState::Running, Some(100.0), None, Some(20.0));
    assert!(!running.slower_than_usual(140.0));
    assert!(running.slower_than_usual(140.5));
    // ...and once it finished.
    assert!(step(StepState::Done, Some(100.0), Some(141.0), Some(20.0)).slower_than_usual(0.0));
    assert!(step(StepState::Failed, Some(100.0), Some(141.0), Some(20.0)).slower_than_usual(0.0));
    // Usually 2 s: three times that is not 10 s more.
    assert!(!step(StepState::Running, Some(100.0), None, Some(2.0)).slower_than_usual(111.9));
    assert!(step(StepState::Running, Some(100.0), None, Some(2.0)).slower_than_usual(112.0));
    // Never seen running, from cache, or not started: never slower.
    assert!(!step(StepState::Running, Some(100.0), None, None).slower_than_usual(1000.0));
    assert!(!step(StepState::Cached, Some(100.0), Some(900.0), Some(2.0)).slower_than_usual(1000.0));
    assert!(!step(StepState::Pending, None, None, Some(2.0)).slower_than_usual(1000.0));
}

/// Where a build failed, on line `line` of its Dockerfile, with `text` there.
fn located(line: u32, text: &str, exit_code: i32) -> Failure {
    Failure {
        location: Some(Box::new(Location { file: "Dockerfile".into(), line, end_line: None, text: text.into() })),
        exit_code: Some(exit_code),
    }
}

#[test]
fn where_a_build_failed_is_kept_masked_and_its_name_keeps_it_until_a_later_build_succeeds() {
    let mut model = model();
    let a = build("a", 1.0).secret("s3cret").image("app:1");
    let steps = |at| {
        vec![
            done("d1", "[1/2] FROM base", at, at + 1.0),
            failed("d2", "[2/2] RUN make", at + 1.0, at + 2.0, "exit code: 2"),
        ]
    };
    model.apply(a.started());
    model.apply(a.progress(3.0, steps(1.0)));
    let Event::Completed(mut completion) = a.completed(4.0, Outcome::Failed("make s3cret: exit code: 2".into())) else {
        unreachable!()
    };
    completion.failure = Some(located(7, "RUN make s3cret", 2));
    let effects = model.apply(Event::Completed(completion));
    let done = finished(&effects);
    assert_eq!(done[0].failure, Some(located(7, "RUN make ***", 2)), "masked with the build's build-arg values");
    let last = model.last_failures();
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].name.as_str(), last[0].reference.as_str()), ("app", "a"));
    assert_eq!(last[0].step.as_ref().map(|s| s.label.as_str()), Some("[2/2]"));
    assert_eq!(last[0].message, "make ***: exit code: 2");
    assert_eq!(last[0].failure, Some(located(7, "RUN make ***", 2)));

    // A later failure of the name replaces it; a later success removes it; an older build
    // (history) changes nothing.
    let b = build("b", 5.0).image("app:1");
    model.apply(b.started());
    model.apply(b.completed(6.0, Outcome::Failed("other".into())));
    assert_eq!(model.last_failures().iter().map(|f| f.reference.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(model.last_failures()[0].failure, None, "nothing said where");
    let c = build("c", 7.0).image("app:1");
    model.apply(c.started());
    model.apply(c.completed(8.0, Outcome::Succeeded));
    assert!(model.last_failures().is_empty());
    model.apply(Event::History {
        completion: Completion {
            info: build("old", 0.5).image("other:0").info(),
            completed_at: 0.6,
            outcome: Outcome::Failed("old".into()),
            generation: 0,
            warnings: 0,
            failure: None,
        },
        progress: Vec::new(),
    });
    assert_eq!(model.last_failures().iter().map(|f| f.reference.as_str()).collect::<Vec<_>>(), ["old"], "its own name");
    model.apply(Event::History {
        completion: Completion {
            info: build("older", 0.1).image("app:1").info(),
            completed_at: 0.2,
            outcome: Outcome::Failed("older".into()),
            generation: 0,
            warnings: 0,
            failure: None,
        },
        progress: Vec::new(),
    });
    assert_eq!(model.last_failures().len(), 1, "app's last build succeeded after it");
}

#[test]
fn where_a_build_failed_may_be_read_before_or_after_its_completion() {
    let mut model = model();
    // Read while it is still held as running (its completion waits for its progress).
    let a = build("a", 1.0).secret("s3cret").image("app:1");
    model.apply(a.started());
    let found = |reference: &str, failure| Event::FailureFound {
        reference: reference.into(),
        secrets: vec!["s3cret".into()],
        failure,
    };
    assert!(model.apply(found("a", located(3, "RUN s3cret", 1))).is_empty(), "counts nothing");
    let effects = model.apply(a.completed(2.0, Outcome::Failed("failed".into())));
    assert_eq!(finished(&effects)[0].failure, Some(located(3, "RUN ***", 1)));

    // Read after it was counted: the kept build and its name's last failure take it.
    let b = build("b", 3.0).image("app:1");
    model.apply(b.started());
    model.apply(b.completed(4.0, Outcome::Failed("failed".into())));
    assert_eq!(model.recent()[0].failure, None);
    assert!(model.apply(found("b", located(5, "RUN s3cret make", 2))).is_empty());
    assert_eq!(model.recent()[0].failure, Some(located(5, "RUN *** make", 2)));
    assert_eq!(model.last_failures()[0].failure, Some(located(5, "RUN *** make", 2)));
    // What the record said first is kept; an unknown build is ignored.
    model.apply(found("b", located(9, "RUN other", 9)));
    model.apply(found("nope", located(9, "RUN other", 9)));
    assert_eq!(model.recent()[0].failure, Some(located(5, "RUN *** make", 2)));
    assert_eq!(model.recent()[1].failure, Some(located(3, "RUN ***", 1)));
}

/// Runs a build of `app` through `model`: `steps` are (name, from cache), one second apart,
/// announced at once; returns it finished.
fn built(model: &mut Model, fixture: Fixture, steps: &[(&str, bool)]) -> FinishedBuild {
    let fixture = fixture.image("app:1");
    let at = fixture.created_at;
    let updates = steps
        .iter()
        .enumerate()
        .map(|(i, (name, from_cache))| {
            let digest = format!("{}-{i}", fixture.reference);
            let start = at + i as f64;
            if *from_cache {
                cached(&digest, name, start)
            } else {
                done(&digest, name, start, start + 1.0)
            }
        })
        .collect();
    model.apply(fixture.started());
    model.apply(fixture.progress(at + steps.len() as f64, updates));
    let effects = model.apply(fixture.completed(at + steps.len() as f64 + 1.0, Outcome::Succeeded));
    finished(&effects)[0].clone()
}

const FROM: &str = "[1/4] FROM docker.io/library/base:latest";
const COPY: &str = "[2/4] COPY f /f";
const HI: &str = "[3/4] RUN echo hi";

/// Where the cache broke, as the JSON says it.
fn broke(build: &FinishedBuild) -> Option<(String, &'static str, &'static str, Option<String>)> {
    let b = build.view.cache_break.as_ref()?;
    Some((b.step.clone(), b.instruction, b.reason.label(), b.detail.clone()))
}

#[test]
fn a_first_build_and_a_build_that_kept_to_the_cache_broke_nothing() {
    let mut model = model();
    let first = built(&mut model, build("a", 1.0), &[(FROM, false), (COPY, false), (HI, false)]);
    assert_eq!(broke(&first), None, "nothing to compare with");
    // FROM marked uncached again: BuildKit does that without anything changing.
    let cached = built(&mut model, build("b", 10.0), &[(FROM, false), (COPY, true), (HI, true)]);
    assert_eq!(broke(&cached), None);
    // A step the previous build ran (not from cache) running again is no break either.
    let mut other = Model::new(Settings::default());
    built(&mut other, build("a", 1.0), &[(FROM, false), (COPY, false), (HI, false)]);
    assert_eq!(broke(&built(&mut other, build("b", 10.0), &[(FROM, false), (COPY, false), (HI, false)])), None);
}

#[test]
fn the_first_step_that_ran_where_the_previous_build_used_the_cache_says_why() {
    let cached = [(FROM, false), (COPY, true), (HI, true), ("[4/4] RUN make", true)];
    let case = |next: Fixture, steps: &[(&str, bool)], before: Fixture| {
        let mut model = model();
        built(&mut model, before, &cached);
        broke(&built(&mut model, next, steps))
    };
    let some = |step: &str, instruction, reason, detail: Option<&str>| {
        Some((step.to_string(), instruction, reason, detail.map(str::to_string)))
    };
    // Same text, files changed: the COPY ran, and every step after it.
    let files = [(FROM, false), (COPY, false), (HI, false), ("[4/4] RUN make", false)];
    assert_eq!(case(build("b", 10.0), &files, build("a", 1.0)), some("[2/4]", "COPY", "files", None));
    // The text of a step changed.
    let edited = [(FROM, false), (COPY, true), ("[3/4] RUN echo hello", false), ("[4/4] RUN make", false)];
    assert_eq!(
        case(build("b", 10.0), &edited, build("a", 1.0)),
        some("[3/4]", "RUN", "instruction", Some("was: RUN echo hi"))
    );
    // A build-arg's value changed: named, never its value (long values are masked in the texts,
    // short ones put back as their name).
    let args = [(FROM, false), (COPY, true), (HI, false), ("[4/4] RUN make", false)];
    for (old, new) in [("s3cret-1", "s3cret-2"), ("1", "2")] {
        let step = |v: &str| format!("[4/4] RUN make V={v}");
        let mut model = model();
        let before: Vec<(&str, bool)> = vec![(FROM, false), (COPY, true), (HI, true)];
        let old_step = step(old);
        let mut previous = before.clone();
        previous.push((&old_step, true));
        built(&mut model, build("a", 1.0).arg("V", old).arg("OTHER", "same"), &previous);
        let new_step = step(new);
        let mut now: Vec<(&str, bool)> = args[..3].to_vec();
        now.push((&new_step, false));
        let rebuilt = built(&mut model, build("b", 10.0).arg("V", new).arg("OTHER", "same"), &now);
        assert_eq!(broke(&rebuilt), some("[3/4]", "RUN", "build-arg", Some("V")), "{old} → {new}");
    }
    // An argument dropped counts as changed.
    let mut model = model();
    built(&mut model, build("a", 1.0).arg("GONE", "x"), &cached);
    assert_eq!(broke(&built(&mut model, build("b", 10.0), &args)), some("[3/4]", "RUN", "build-arg", Some("GONE")));
    // Its input is a COPY that BuildKit called cached (0.13 does, for a COPY whose files changed).
    assert_eq!(case(build("b", 10.0), &args, build("a", 1.0)), some("[3/4]", "RUN", "files", Some("[2/4] COPY f /f")));
    // Nothing the builds say explains it: the cache was pruned, say.
    let runs = [(FROM, false), ("[2/3] RUN a", true), ("[3/3] RUN b", true)];
    let mut fresh = Model::new(Settings::default());
    built(&mut fresh, build("a", 1.0), &runs);
    let pruned = built(&mut fresh, build("b", 10.0), &[(FROM, false), ("[2/3] RUN a", true), ("[3/3] RUN b", false)]);
    assert_eq!(broke(&pruned), some("[3/3]", "RUN", "unknown", None));
    // No cache asked for, for every stage or for this one: said before anything else.
    let all_ran = [(FROM, false), (COPY, false), ("[3/4] RUN echo hello", false), ("[4/4] RUN make", false)];
    assert_eq!(
        case(build("b", 10.0).no_cache(NoCache::All), &all_ran, build("a", 1.0)),
        some("[2/4]", "COPY", "no-cache", None)
    );
}

#[test]
fn a_changed_base_image_is_told_by_its_resolved_name_or_by_the_engines_image_id() {
    let from = |digest: &str| format!("[1/3] FROM docker.io/library/base:latest@sha256:{digest}");
    let (a, b) = (from("aaa"), from("bbb"));
    let steps = |from: &str, cached: bool| vec![(from.to_string(), false), ("[2/3] RUN make".to_string(), cached)];
    let run = |model: &mut Model, fixture: Fixture, steps: Vec<(String, bool)>| {
        let steps: Vec<(&str, bool)> = steps.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        built(model, fixture, &steps)
    };
    // The containerd store names the digest: it changed.
    let mut model = Model::new(Settings::default());
    run(&mut model, build("a", 1.0), steps(&a, true));
    let rebuilt = run(&mut model, build("b", 10.0), steps(&b, false));
    let detail = Some("docker.io/library/base:latest@sha256:bbb".to_string());
    assert_eq!(broke(&rebuilt), Some(("[2/3]".to_string(), "RUN", "base-image", detail)));

    // The classic store keeps name and digest: the engine's image ID tells.
    let plain = "[1/3] FROM docker.io/library/base:latest";
    let with_image = |model: &mut Model, fixture: Fixture, id: &str, cached: bool| {
        let fixture = fixture.image("app:1");
        model.apply(fixture.started());
        model.apply(Event::BaseImage {
            reference: fixture.reference.clone(),
            image: "docker.io/library/base:latest".into(),
            id: id.into(),
        });
        run(model, fixture, steps(plain, cached))
    };
    let mut model = Model::new(Settings::default());
    with_image(&mut model, build("a", 1.0), "sha256:111", true);
    let same = with_image(&mut model, build("b", 10.0), "sha256:111", false);
    assert_eq!(broke(&same).map(|b| b.2), Some("unknown"), "the same image");
    let mut model = Model::new(Settings::default());
    with_image(&mut model, build("a", 1.0), "sha256:111", true);
    let replaced = with_image(&mut model, build("b", 10.0), "sha256:222", false);
    assert_eq!(
        broke(&replaced).map(|b| (b.2, b.3)),
        Some(("base-image", Some("docker.io/library/base:latest".to_string())))
    );
}

#[test]
fn a_running_build_says_where_its_cache_broke_as_soon_as_that_step_starts() {
    let mut model = model();
    built(&mut model, build("a", 1.0), &[(FROM, false), (COPY, true), (HI, true)]);
    let b = build("b", 10.0).image("app:1");
    model.apply(b.started());
    model.apply(b.progress(10.5, vec![done("b0", FROM, 10.0, 10.2), cached("b1", COPY, 10.3), announced("b2", HI)]));
    assert_eq!(model.snapshot(11.0)[0].view.cache_break, None, "nothing ran yet");
    model.apply(b.progress(11.0, vec![running("b2", HI, 11.0)]));
    let cache_break = model.snapshot(11.5)[0].view.cache_break.clone().unwrap();
    assert_eq!((cache_break.step.as_str(), cache_break.reason), ("[3/4]", Reason::Files));
}

#[test]
fn a_step_run_once_for_two_builds_is_each_builds_own_and_counted_executed_once() {
    let mut model = model();
    let (a, b) = (build("a", 1.0).image("three:1"), build("b", 2.0).image("four:1"));
    model.apply(a.started());
    model.apply(b.started());
    // BuildKit names the shared vertices as the build that asked first numbers them.
    model.apply(a.progress(
        3.0,
        vec![
            cached("from", "[1/3] FROM base", 3.0),
            running("shared", "[2/3] RUN make", 3.0),
            announced("a3", "[3/3] RUN a"),
        ],
    ));
    model.apply(b.progress(
        3.5,
        vec![
            cached("from", "[1/3] FROM base", 3.0),
            running("shared", "[2/3] RUN make", 3.0),
            announced("b3", "[3/4] RUN b"),
            announced("b4", "[4/4] RUN b2"),
        ],
    ));
    let views = model.snapshot(4.0);
    let view = |r: &str| views.iter().find(|v| v.view.reference == r).unwrap().view.clone();
    let labels = |r: &str| view(r).steps.iter().map(|s| (s.label.clone(), s.shared)).collect::<Vec<_>>();
    assert_eq!(labels("a"), [("[1/3]".into(), false), ("[2/3]".into(), false), ("[3/3]".into(), false)]);
    assert_eq!(
        labels("b"),
        [("[1/4]".into(), true), ("[2/4]".into(), true), ("[3/4]".into(), false), ("[4/4]".into(), false)],
        "its own positions, marked shared"
    );
    assert_eq!(views.iter().find(|v| v.view.reference == "b").unwrap().current_step(), 2);

    // Both end: the shared step ran once, for a; for b its result was reused.
    model.apply(a.progress(9.0, vec![done("shared", "[2/3] RUN make", 3.0, 8.0), done("a3", "[3/3] RUN a", 8.0, 9.0)]));
    model.apply(b.progress(
        10.0,
        vec![
            done("shared", "[2/3] RUN make", 3.0, 8.0),
            done("b3", "[3/4] RUN b", 8.0, 9.0),
            done("b4", "[4/4] RUN b2", 9.0, 10.0),
        ],
    ));
    let a_done = finished(&model.apply(a.completed(9.5, Outcome::Succeeded)))[0].clone();
    let b_done = finished(&model.apply(b.completed(10.5, Outcome::Succeeded)))[0].clone();
    let ran = |f: &FinishedBuild| {
        f.finished_steps().filter(|s| s.run_time().is_some()).map(|s| s.label.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ran(&a_done), ["[2/3]", "[3/3]"]);
    assert_eq!(ran(&b_done), ["[3/4]", "[4/4]"], "the shared step is not b's to time");
    assert_eq!(
        (b_done.view.counts.cached, b_done.view.counts.completed),
        (2, 4),
        "FROM from cache, the shared step reused"
    );
}

#[test]
fn a_failures_lines_are_masked_before_they_are_cut() {
    let mut model = model();
    let a = build("a", 1.0).secret("s3cret-value-0123456789").image("app:1");
    model.apply(a.started());
    let Event::Completed(mut completion) = a.completed(2.0, Outcome::Failed("failed".into())) else { unreachable!() };
    // The value straddles where the text is cut.
    let text = format!("RUN {} s3cret-value-0123456789", "x".repeat(1993));
    completion.failure = Some(located(3, &text, 1));
    let done = finished(&model.apply(Event::Completed(completion)))[0].clone();
    let shown = done.failure.unwrap().location.unwrap().text;
    // Cut first, "s3" would be left; masked first, the cut falls in the mask.
    assert!(!shown.contains("s3"), "{shown}");
    assert!(shown.ends_with(" **…"), "{}", &shown[shown.len() - 10..]);
    assert_eq!(shown.chars().count(), 2001);
}

#[test]
fn builds_without_a_name_are_never_compared_with_each_other() {
    let mut model = model();
    let steps = |cached| vec![done("f", FROM, 1.0, 1.5), VertexUpdate { cached, ..done("c", COPY, 2.0, 3.0) }];
    for (reference, cached) in [("a", true), ("b", false)] {
        let fixture = build(reference, 1.0);
        model.apply(fixture.started());
        model.apply(fixture.progress(3.0, steps(cached)));
        let done = finished(&model.apply(fixture.completed(4.0, Outcome::Succeeded)))[0].clone();
        assert_eq!(done.view.name, "unknown");
        assert_eq!(done.view.cache_break, None, "{reference}: unrelated Dockerfiles share the placeholder");
    }
}
