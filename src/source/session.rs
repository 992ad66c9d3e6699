//! One connection to a source, from dialing until it fails. Its phases are a type, [`Phase`]:
//! `Replaying` while the engine replays its stored history (live events that arrive meanwhile
//! are held), then `Live` once the replay call has ended and what it held is applied;
//! [`Phase::step`] is every transition between them. For the whole connection, whatever the
//! phase: the followers of running builds, the link checks, and the background reads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{
    BuildHistoryEvent, BuildHistoryEventType, BuildHistoryRequest, InfoRequest,
};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_stream::{Stream, StreamExt};
use tracing::{debug, info, warn, Instrument};

use super::convert::Clock;
use super::followers::{newest, seed, History, Watch};
use super::peer::{Comeback, Peers};
use super::spec::{Endpoint, SourceSpec};
use super::{dial, usage, SourceError, SourceOptions};
use crate::builder::Builder;
use crate::clock::now;
use crate::model::Completion;

/// How long a replay may run before the daemon says so.
const SLOW_REPLAY: Duration = Duration::from_secs(60);

/// One connection to a source.
pub(super) struct Session<'a> {
    /// The source.
    pub spec: &'a SourceSpec,
    /// Where what it says goes.
    pub builder: &'a Arc<Builder>,
    /// How the source layer behaves.
    pub options: &'a SourceOptions,
    /// Whether finished builds' names are still to be read; cleared once this connection reads
    /// them.
    pub seed: bool,
    /// When live history events were subscribed to, once they are.
    pub subscribed_at: Option<f64>,
    /// The process behind the source at the last connection, which tells a restart from a
    /// broken link.
    pub peers: &'a mut Peers,
}

impl Session<'_> {
    /// Connects, then watches until the connection fails.
    pub async fn run(&mut self) -> Result<Infallible, SourceError> {
        let spec = self.spec;
        let endpoint = &spec.endpoint;
        let failed = |status: tonic::Status| SourceError::from_status(endpoint, &status);
        let link = self.options.link;
        let (channel, peer) = dial::connect(endpoint, link).await?;
        match self.peers.connected(peer) {
            Comeback::Restarted { before, now } => {
                info!(before = before.pid, now = now.pid, "the source restarted: another process answers");
                self.builder.count_restart();
            }
            // Every connection but the first follows a failure.
            Comeback::SameProcess => {
                info!(
                    pid = peer.map_or(0, |p| p.pid),
                    "the same process answers: the link broke, the source did not restart"
                );
            }
            Comeback::Unknown => {}
        }
        let mut client = ControlClient::new(channel.clone()).max_decoding_message_size(self.options.max_message_bytes);
        let live = BuildHistoryRequest { active_only: true, ..Default::default() };
        let live = client.listen_build_history(live).await.map_err(failed)?;
        self.subscribed_at = Some(now());
        let clock = Clock::from_metadata(live.metadata());
        if clock.offset().abs() >= 1.0 {
            info!(engine_ahead_seconds = clock.offset(), "engine clock differs from ours: its times are corrected");
        }
        let mut live = live.into_inner();
        let replay = BuildHistoryRequest { early_exit: true, ..Default::default() };
        let replay = client.listen_build_history(replay).await.map_err(failed)?.into_inner();
        let mut phase = Phase::replaying(Box::pin(replay), self.seed);
        // A Docker source's engine knows the images its builds start from.
        let docker = match endpoint {
            Endpoint::Docker(transport) => super::engine::client(transport, link.timeout).ok(),
            _ => None,
        };
        let mut watch =
            Watch::new(client.clone(), channel, docker, self.builder.clone(), clock, &self.options.name_label);
        let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + link.keepalive, link.keepalive);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes: JoinSet<bool> = JoinSet::new();
        let mut seeding = JoinSet::new();
        // Reads of versions, workers and cache usage; they end with the connection.
        let mut background = JoinSet::new();
        loop {
            let input = tokio::select! {
                input = phase.input() => input.map_err(failed)?,
                message = live.message() => match message.map_err(failed)? {
                    Some(message) => Input::Live(message),
                    None => return Err(SourceError::Closed { endpoint: endpoint.to_string() }),
                },
                () = watch.settle() => continue,
                _ = probe.tick() => {
                    // Any answer, even "unimplemented", shows the link carries bytes both ways.
                    let mut client = client.clone();
                    probes.spawn(async move {
                        tokio::time::timeout(link.timeout, client.info(InfoRequest {})).await.is_ok()
                    });
                    continue;
                }
                Some(answered) = probes.join_next() => match answered {
                    Ok(true) => continue,
                    _ => return Err(SourceError::Timeout { endpoint: endpoint.to_string(), after: link.timeout }),
                },
            };
            let action;
            (phase, action) = phase.step(input, &mut watch);
            match action {
                Action::Wait => {}
                Action::SaySlow { builds, held } => {
                    warn!(
                        builds,
                        held, "the history replay has not ended after a minute: the source stays down until it does"
                    );
                }
                Action::Up { replayed } => {
                    watch.recheck_running();
                    self.builder.set_up(true);
                    info!(source = %endpoint, "source up");
                    let every = self.options.usage_interval;
                    let task = usage::refresh(client.clone(), self.builder.clone(), every, link.timeout);
                    background.spawn(task.in_current_span());
                    if let Some(replayed) = replayed {
                        self.seed = false;
                        let newest = newest(replayed, self.options.seed_builds);
                        let task = seed(client.clone(), newest, self.builder.clone(), clock);
                        seeding.spawn(task.in_current_span());
                    }
                }
            }
        }
    }
}

/// The replay call's messages (a stream of any kind, so that tests can play their own).
type Replay = Pin<Box<dyn Stream<Item = Result<BuildHistoryEvent, tonic::Status>> + Send>>;

/// Where a connection is, once both of its history calls are open.
pub(super) enum Phase {
    /// The engine replays its stored history; live events other than starts wait.
    Replaying(Replaying),
    /// The replay is over and what it held applied: live events are applied as they come.
    Live,
}

/// A replay under way.
pub(super) struct Replaying {
    /// The replay call, which the engine ends once everything stored is sent.
    replay: Replay,
    /// Live events that arrived during the replay, to apply after it in order.
    held: Vec<BuildHistoryEvent>,
    /// How many builds the replay completed.
    builds: usize,
    /// The builds the replay completed, by ref; kept only when they are to seed names.
    completed: Option<HashMap<String, Completion>>,
    /// Due once the replay has run [`SLOW_REPLAY`]; gone once said. The end of the replay is
    /// never guessed, but a replay that takes this long is said.
    slow: Option<Pin<Box<Sleep>>>,
}

/// What a phase reacts to.
#[derive(Debug)]
pub(super) enum Input {
    /// A message of the replay.
    Replayed(BuildHistoryEvent),
    /// The engine ended the replay.
    ReplayEnded,
    /// The replay has run [`SLOW_REPLAY`].
    SlowReplay,
    /// A live history event.
    Live(BuildHistoryEvent),
}

/// What the session does after a step, beyond the history the step applied.
#[derive(Debug)]
pub(super) enum Action {
    /// Nothing more.
    Wait,
    /// Say that the replay is slow: it has completed `builds` builds and holds `held` events.
    SaySlow { builds: usize, held: usize },
    /// The source is up. `replayed`: the builds the replay completed, when they seed names.
    Up { replayed: Option<HashMap<String, Completion>> },
}

impl Phase {
    /// The first phase of a connection whose replay call is `replay`; `seed`: whether the builds
    /// it completes are kept to seed names.
    pub fn replaying(replay: Replay, seed: bool) -> Phase {
        Phase::Replaying(Replaying {
            replay,
            held: Vec::new(),
            builds: 0,
            completed: seed.then(HashMap::new),
            slow: Some(Box::pin(tokio::time::sleep(SLOW_REPLAY))),
        })
    }

    /// The next input the phase itself waits for: the replay's next message, its end, or its
    /// slowness; none once live. Cancel-safe.
    pub async fn input(&mut self) -> Result<Input, tonic::Status> {
        let Phase::Replaying(replaying) = self else {
            return std::future::pending().await;
        };
        tokio::select! {
            message = replaying.replay.next() => Ok(match message.transpose()? {
                Some(message) => Input::Replayed(message),
                None => Input::ReplayEnded,
            }),
            () = due(&mut replaying.slow) => Ok(Input::SlowReplay),
        }
    }

    /// One transition: the phase after `input`, and what the session does next. The history
    /// messages to apply go to `history`, in the order they are to be applied.
    pub fn step(self, input: Input, history: &mut impl History) -> (Phase, Action) {
        match (self, input) {
            (Phase::Replaying(mut replaying), Input::Replayed(message)) => {
                if let Some(completion) = history.history(&message) {
                    replaying.builds += 1;
                    if let Some(completed) = &mut replaying.completed {
                        completed.insert(completion.info.reference.clone(), completion);
                    }
                }
                (Phase::Replaying(replaying), Action::Wait)
            }
            (Phase::Replaying(replaying), Input::ReplayEnded) => {
                debug!(builds = replaying.builds, held = replaying.held.len(), "history replay done");
                history.replay_done();
                for message in &replaying.held {
                    history.history(message);
                }
                (Phase::Live, Action::Up { replayed: replaying.completed })
            }
            (Phase::Replaying(mut replaying), Input::SlowReplay) => {
                replaying.slow = None;
                let action = Action::SaySlow { builds: replaying.builds, held: replaying.held.len() };
                (Phase::Replaying(replaying), action)
            }
            // A start is news whatever the phase, and applying it at once keeps a build that
            // completes before the replay reaches it from passing as history.
            (Phase::Replaying(mut replaying), Input::Live(message)) if !is_started(&message) => {
                replaying.held.push(message);
                (Phase::Replaying(replaying), Action::Wait)
            }
            (phase, Input::Live(message)) => {
                history.history(&message);
                (phase, Action::Wait)
            }
            // Only a replay sends these, and there is none once live.
            (Phase::Live, Input::Replayed(_) | Input::ReplayEnded | Input::SlowReplay) => (Phase::Live, Action::Wait),
        }
    }
}

/// Resolves when `slow` is due; never once it is gone.
async fn due(slow: &mut Option<Pin<Box<Sleep>>>) {
    match slow {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

fn is_started(message: &BuildHistoryEvent) -> bool {
    message.r#type == BuildHistoryEventType::Started as i32
}

#[cfg(test)]
mod tests {
    use bollard_buildkit_proto::moby::buildkit::v1::BuildHistoryRecord;
    use tokio::time::{timeout, Instant};

    use super::*;
    use crate::model::Event;
    use crate::source::convert;

    use BuildHistoryEventType::{Complete, Deleted, Started};

    /// What the phases applied, in order, as `type ref`.
    #[derive(Default)]
    struct Applied(Vec<String>);

    impl History for Applied {
        fn history(&mut self, message: &BuildHistoryEvent) -> Option<Completion> {
            let kind = BuildHistoryEventType::try_from(message.r#type).unwrap().as_str_name();
            self.0.push(format!("{kind} {}", message.record.as_ref().unwrap().r#ref));
            match convert::history(message, "", &Clock::default()) {
                Some(Event::Completed(completion)) => Some(completion),
                _ => None,
            }
        }

        fn replay_done(&mut self) {
            self.0.push("replay done".into());
        }
    }

    fn event(kind: BuildHistoryEventType, reference: &str) -> BuildHistoryEvent {
        let record = BuildHistoryRecord { r#ref: reference.into(), ..Default::default() };
        BuildHistoryEvent { r#type: kind as i32, record: Some(record) }
    }

    /// A replay that never ends on its own.
    fn endless() -> Phase {
        Phase::replaying(Box::pin(tokio_stream::pending()), false)
    }

    /// Steps through `inputs`; returns the phase and the actions.
    fn steps(mut phase: Phase, inputs: Vec<Input>, history: &mut Applied) -> (Phase, Vec<Action>) {
        let mut actions = Vec::new();
        for input in inputs {
            let action;
            (phase, action) = phase.step(input, history);
            actions.push(action);
        }
        (phase, actions)
    }

    #[tokio::test(start_paused = true)]
    async fn live_events_during_the_replay_are_applied_after_it_in_order() {
        let mut applied = Applied::default();
        let inputs = vec![
            Input::Replayed(event(Complete, "old")),
            Input::Live(event(Complete, "a")),
            Input::Live(event(Started, "b")),
            Input::Live(event(Deleted, "a")),
            Input::Live(event(Complete, "c")),
            Input::Replayed(event(Complete, "older")),
        ];
        let (phase, _) = steps(endless(), inputs, &mut applied);
        assert_eq!(applied.0, ["COMPLETE old", "STARTED b", "COMPLETE older"], "only starts are applied at once");
        let (phase, actions) = steps(phase, vec![Input::ReplayEnded, Input::Live(event(Complete, "b"))], &mut applied);
        assert!(matches!(phase, Phase::Live));
        assert!(matches!(actions[..], [Action::Up { replayed: None }, Action::Wait]), "{actions:?}");
        assert_eq!(
            applied.0[3..],
            ["replay done", "COMPLETE a", "DELETED a", "COMPLETE c", "COMPLETE b"],
            "the model learns the replay is over, then what was held, then what comes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_replay_brings_the_source_up_with_what_seeds_names() {
        let messages = [event(Complete, "a"), event(Started, "b"), event(Complete, "a"), event(Complete, "c")];
        let replay = tokio_stream::iter(messages.map(Ok));
        let mut phase = Phase::replaying(Box::pin(replay), true);
        let mut applied = Applied::default();
        let mut actions = Vec::new();
        while !matches!(phase, Phase::Live) {
            let input = phase.input().await.unwrap();
            let action;
            (phase, action) = phase.step(input, &mut applied);
            actions.push(action);
        }
        assert_eq!(applied.0, ["COMPLETE a", "STARTED b", "COMPLETE a", "COMPLETE c", "replay done"]);
        let Some(Action::Up { replayed: Some(replayed) }) = actions.pop() else { panic!("not up: {actions:?}") };
        let mut refs: Vec<&String> = replayed.keys().collect();
        refs.sort();
        assert_eq!(refs, ["a", "c"], "each completed build once");
        assert!(actions.iter().all(|action| matches!(action, Action::Wait)), "{actions:?}");
        assert!(timeout(SLOW_REPLAY * 10, phase.input()).await.is_err(), "nothing more once live");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_replay_is_said_once() {
        let started = Instant::now();
        let mut applied = Applied::default();
        let (mut phase, _) = steps(
            endless(),
            vec![Input::Replayed(event(Complete, "a")), Input::Live(event(Complete, "b"))],
            &mut applied,
        );
        assert!(timeout(SLOW_REPLAY - Duration::from_millis(1), phase.input()).await.is_err());
        let input = phase.input().await.unwrap();
        assert!(matches!(input, Input::SlowReplay), "{input:?}");
        assert_eq!(started.elapsed(), SLOW_REPLAY);
        let action;
        (phase, action) = phase.step(input, &mut applied);
        assert!(matches!(action, Action::SaySlow { builds: 1, held: 1 }), "{action:?}");
        assert!(timeout(SLOW_REPLAY * 10, phase.input()).await.is_err(), "said once");
        let (phase, actions) = steps(phase, vec![Input::ReplayEnded], &mut applied);
        assert!(matches!((phase, &actions[..]), (Phase::Live, [Action::Up { .. }])), "{actions:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_that_breaks_ends_the_connection() {
        let messages = [Ok(event(Complete, "a")), Err(tonic::Status::unavailable("h2 protocol error"))];
        let mut phase = Phase::replaying(Box::pin(tokio_stream::iter(messages)), false);
        assert!(matches!(phase.input().await, Ok(Input::Replayed(_))));
        let failed = phase.input().await.unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Unavailable);
    }
}
