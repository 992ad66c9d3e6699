//! Watching one source: the build history plus one `Status` stream per running build, kept
//! alive across failures.
//!
//! The connection is a small state machine:
//!
//! ```text
//!   Disconnected(backoff) --dial, both history calls open--> Replaying
//!   Replaying --the replay call ends--> Live (source up)
//!   Replaying | Live --stream error or end, unanswered keepalive--> Disconnected(next backoff)
//! ```
//!
//! Every connection first subscribes to live history events (`active_only`), then asks for the
//! replay of everything stored (`early_exit`), which the engine ends itself: so the end of the
//! replay is known, not guessed, and nothing between the two calls is missed (live events that
//! arrive during the replay are held and applied after it). Once the replay is over, every
//! build still held as running is followed again; one whose `Status` answers "not found" is
//! gone. A build's completion waits (boundedly) for its `Status` stream to be applied first.
//! A link that stops carrying bytes without closing is noticed by HTTP/2 keepalive pings and by
//! an `Info` call every keepalive interval, whichever fails first: a standalone buildkitd
//! (grpc-go) answers pings closer than 5 minutes on a quiet connection with GOAWAY
//! "too_many_pings", and the call's answer is the traffic that keeps it from doing so.
//! Counting rules that keep replays harmless live in the model. Only read-only RPCs are called.

pub mod convert;
pub mod dial;
mod engine;
pub mod spec;
mod tls;
mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{
    BuildHistoryEvent, BuildHistoryEventType, BuildHistoryRequest, InfoRequest, StatusRequest,
};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tracing::{debug, error, info, warn, Instrument};

use crate::builder::Builder;
use crate::clock::now;
use crate::model::{Completion, Event, Progress};
use convert::Clock;
use spec::{Endpoint, Link, SourceSpec};

/// First retry delay after a failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Times a build's `Status` stream is reopened after failing while the build still runs.
const STATUS_RETRIES: u32 = 3;
/// Wait before reopening a failed `Status` stream (the reopened stream replays what was missed).
const STATUS_RETRY_DELAY: Duration = Duration::from_secs(2);
/// A connection that came up and stayed so this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a replay may run before the daemon says so.
const SLOW_REPLAY: Duration = Duration::from_secs(60);
/// Longest wait of a build's completion for the rest of its `Status` stream.
const ORDER_WAIT: Duration = Duration::from_secs(5);

/// Why a source cannot be watched right now. All are retried; each says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Nothing listens at the address.
    #[error("no engine at {endpoint}: {detail} (is it running? set --source or DOCKER_HOST)")]
    Unreachable { endpoint: String, detail: String },
    /// The socket exists but this user may not open it.
    #[error("permission denied on {endpoint}: run as root or as a member of the socket's group (usually docker)")]
    PermissionDenied { endpoint: String },
    /// The engine refused the `/grpc` upgrade.
    #[error("{endpoint} refused the BuildKit /grpc upgrade with HTTP {status}: not a Docker Engine with BuildKit (23.0 or newer)?")]
    Upgrade { endpoint: String, status: u16 },
    /// The engine has no build-history API.
    #[error(
        "{endpoint} is too old: it has no BuildKit build-history API (needs Docker Engine 23.0+ or buildkitd 0.11+)"
    )]
    TooOld { endpoint: String },
    /// A message was larger than allowed.
    #[error("a message from {endpoint} is larger than --source.max-message-bytes: {detail}")]
    TooLarge { endpoint: String, detail: String },
    /// The connection or stream broke, or carried something that is not BuildKit's protocol.
    #[error("stream from {endpoint} failed: {detail}")]
    Protocol { endpoint: String, detail: String },
    /// The engine ended the history stream.
    #[error("{endpoint} closed the build-history stream")]
    Closed { endpoint: String },
    /// TLS to the source cannot be set up: its files, or the handshake.
    #[error("TLS to {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    /// A plaintext request reached a TLS port.
    #[error("{endpoint} answers with TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), or add ?ca=FILE&cert=FILE&key=FILE to the source")]
    NeedsTls { endpoint: String },
    /// Dialing, the `/grpc` upgrade or a link check got no answer in time.
    #[error("no answer from {endpoint} within {after:?} (engine frozen, or a hung proxy in between?)")]
    Timeout { endpoint: String, after: Duration },
}

impl SourceError {
    fn from_io(endpoint: &Endpoint, error: std::io::Error) -> SourceError {
        let endpoint = endpoint.to_string();
        match error.kind() {
            std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied { endpoint },
            _ => SourceError::Unreachable { endpoint, detail: error.to_string() },
        }
    }

    fn from_status(endpoint: &Endpoint, status: &tonic::Status) -> SourceError {
        let endpoint = endpoint.to_string();
        let detail = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unimplemented => SourceError::TooOld { endpoint },
            Code::OutOfRange | Code::ResourceExhausted if status.message().contains("too large") => {
                SourceError::TooLarge { endpoint, detail: status.message().to_string() }
            }
            _ => SourceError::Protocol { endpoint, detail },
        }
    }

    /// Whether retrying soon is pointless (it needs someone to act): retry at the longest delay.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            SourceError::PermissionDenied { .. }
                | SourceError::TooOld { .. }
                | SourceError::Upgrade { .. }
                | SourceError::Tls { .. }
                | SourceError::NeedsTls { .. }
        )
    }
}

/// How the source layer behaves.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Label naming builds.
    pub name_label: String,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// Finished builds read from history at startup.
    pub seed_builds: usize,
    /// How links are kept and checked.
    pub link: Link,
    /// How often versions, workers and cache usage are read.
    pub usage_interval: Duration,
}

/// Capped exponential backoff with jitter. (A dozen lines: the backoff crates bring the retry
/// loops and timers that `run` already is.)
struct Backoff {
    attempt: u32,
    /// Longest delay.
    cap: Duration,
}

impl Backoff {
    fn next(&mut self, jump_to_cap: bool) -> Duration {
        if jump_to_cap {
            self.attempt = 16;
        }
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(self.cap);
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Keeps `source_up` at 0 whenever nothing is watching the source, however its task ends.
struct Watching<'a>(&'a Builder);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.set_up(false);
    }
}

/// Watches `spec` until `shutdown` turns true.
#[tracing::instrument(name = "source", skip_all, fields(builder = %spec.name))]
pub async fn run(spec: SourceSpec, builder: Arc<Builder>, options: SourceOptions, mut shutdown: watch::Receiver<bool>) {
    let _watching = Watching(&builder);
    // The engine side lives as long as the source, whatever its BuildKit link does.
    let mut engine_side = JoinSet::new();
    if let Endpoint::Docker(transport) = &spec.endpoint {
        match engine::client(transport, options.link.timeout) {
            Ok(docker) => {
                engine_side.spawn(engine::watch(docker, builder.clone(), options.usage_interval).in_current_span());
            }
            Err(why) => info!(%why, "the engine's version and restarts are not read"),
        }
    }
    let mut backoff = Backoff { attempt: 0, cap: options.link.retry_max };
    // The kind of the last failure: a cause is logged once while it lasts (the details of
    // protocol errors vary from one attempt to the next).
    let mut last_error: Option<std::mem::Discriminant<SourceError>> = None;
    let mut seeded = options.seed_builds == 0;
    loop {
        let started = tokio::time::Instant::now();
        let session = Session { spec: &spec, builder: &builder, options: &options, seed: !seeded };
        let mut subscribed_at = None;
        let error = tokio::select! {
            error = session.run(&mut seeded, &mut subscribed_at) => error,
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let was_up = builder.is_up();
        if was_up {
            last_error = None;
        }
        builder.set_down(error.to_string());
        // A link that died silently was noticed up to one keepalive round late: builds that
        // completed in that time still count as completed while disconnected; but nothing from
        // before the connection was watching (a session that never subscribed saw nothing).
        if let Some(subscribed_at) = subscribed_at {
            let link = options.link;
            let noticed_late = now() - (link.keepalive + link.timeout).as_secs_f64();
            builder.apply(Event::Disconnected(noticed_late.max(subscribed_at)));
        }
        if was_up && started.elapsed() >= HEALTHY_AFTER {
            backoff.attempt = 0;
        }
        let delay = backoff.next(error.needs_operator());
        let kind = std::mem::discriminant(&error);
        if last_error != Some(kind) {
            warn!(%error, retry_in = ?delay, "source down");
        } else {
            debug!(%error, retry_in = ?delay, "source still down");
        }
        last_error = Some(kind);
        tokio::select! {
            _ = tokio::time::sleep(delay) => builder.count_reconnect(),
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// One connection to a source.
struct Session<'a> {
    spec: &'a SourceSpec,
    builder: &'a Arc<Builder>,
    options: &'a SourceOptions,
    /// Whether to read finished builds' progress once the replay is done.
    seed: bool,
}

impl Session<'_> {
    /// Runs until the connection fails; returns why. `subscribed_at` is set once live history
    /// events are subscribed to.
    async fn run(self, seeded: &mut bool, subscribed_at: &mut Option<f64>) -> SourceError {
        let endpoint = &self.spec.endpoint;
        let failed = |status: tonic::Status| SourceError::from_status(endpoint, &status);
        let channel = match dial::connect(endpoint, self.options.link).await {
            Ok(channel) => channel,
            Err(error) => return error,
        };
        let mut client = ControlClient::new(channel).max_decoding_message_size(self.options.max_message_bytes);
        let live = BuildHistoryRequest { active_only: true, ..Default::default() };
        let live = match client.listen_build_history(live).await {
            Ok(response) => response,
            Err(status) => return failed(status),
        };
        *subscribed_at = Some(now());
        let clock = Clock::from_metadata(live.metadata());
        if clock.offset().abs() >= 1.0 {
            info!(engine_ahead_seconds = clock.offset(), "engine clock differs from ours: its times are corrected");
        }
        let mut live = live.into_inner();
        let replay = BuildHistoryRequest { early_exit: true, ..Default::default() };
        let mut replay = match client.listen_build_history(replay).await {
            Ok(response) => Some(response.into_inner()),
            Err(status) => return failed(status),
        };
        let mut watch = Watch::new(client, self.builder.clone(), clock, &self.options.name_label);
        let link = self.options.link;
        let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + link.keepalive, link.keepalive);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes: JoinSet<bool> = JoinSet::new();
        // Live events that arrive while the replay runs, applied after it.
        let mut held: Vec<BuildHistoryEvent> = Vec::new();
        // Builds the replay completed, kept only when they are to seed names; and how many.
        let mut replayed: HashMap<String, Completion> = HashMap::new();
        let mut replayed_count = 0usize;
        let mut seeding = JoinSet::new();
        // Reads of versions, workers and cache usage; they end with the connection.
        let mut background = JoinSet::new();
        // The end of the replay is never guessed, but a replay that takes this long is said.
        let slow_replay = tokio::time::sleep(SLOW_REPLAY);
        tokio::pin!(slow_replay);
        let mut slow_said = false;
        loop {
            tokio::select! {
                message = next(&mut replay) => match message {
                    Ok(Some(message)) => {
                        if let Some(completion) = watch.history(&message) {
                            replayed_count += 1;
                            if self.seed {
                                replayed.insert(completion.info.reference.clone(), completion);
                            }
                        }
                    }
                    Ok(None) => {
                        replay = None;
                        debug!(builds = replayed_count, held = held.len(), "history replay done");
                        self.builder.apply(Event::ReplayDone);
                        for message in held.drain(..) {
                            watch.history(&message);
                        }
                        watch.recheck_running();
                        self.builder.set_up(true);
                        info!(source = %endpoint, "source up");
                        let every = self.options.usage_interval;
                        let task = usage::refresh(watch.client.clone(), self.builder.clone(), every, link.timeout);
                        background.spawn(task.in_current_span());
                        if self.seed {
                            *seeded = true;
                            let newest = newest(std::mem::take(&mut replayed), self.options.seed_builds);
                            let task = seed(watch.client.clone(), newest, self.builder.clone(), clock);
                            seeding.spawn(task.in_current_span());
                        }
                    }
                    Err(status) => return failed(status),
                },
                message = live.message() => match message {
                    // A start is news whatever the phase, and applying it at once keeps a build
                    // that completes before the replay reaches it from passing as history.
                    Ok(Some(message)) if replay.is_some() && !is_started(&message) => held.push(message),
                    Ok(Some(message)) => {
                        watch.history(&message);
                    }
                    Ok(None) => return SourceError::Closed { endpoint: endpoint.to_string() },
                    Err(status) => return failed(status),
                },
                Some(ended) = watch.followers.join_next_with_id() => watch.followed(ended),
                Some(Ok(reference)) = watch.deadlines.join_next() => watch.complete(&reference),
                _ = probe.tick() => {
                    // Any answer, even "unimplemented", shows the link carries bytes both ways.
                    let mut client = watch.client.clone();
                    probes.spawn(async move {
                        tokio::time::timeout(link.timeout, client.info(InfoRequest {})).await.is_ok()
                    });
                }
                _ = &mut slow_replay, if replay.is_some() && !slow_said => {
                    slow_said = true;
                    warn!(builds = replayed_count, held = held.len(), "the history replay has not ended after a minute: the source stays down until it does");
                }
                Some(answered) = probes.join_next() => {
                    if !answered.unwrap_or(false) {
                        return SourceError::Timeout { endpoint: endpoint.to_string(), after: link.timeout };
                    }
                }
            }
        }
    }
}

fn is_started(message: &BuildHistoryEvent) -> bool {
    message.r#type == BuildHistoryEventType::Started as i32
}

/// The next message of the replay, or never once it is over.
async fn next(replay: &mut Option<Streaming<BuildHistoryEvent>>) -> Result<Option<BuildHistoryEvent>, tonic::Status> {
    match replay {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// How a build's `Status` stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    /// It ended: the build is over (its result comes from history).
    Ended,
    /// The engine has no such build.
    Gone,
    /// It broke.
    Failed,
}

/// The `Status` streams of one connection, and the completions waiting for them.
struct Watch {
    client: ControlClient<Channel>,
    builder: Arc<Builder>,
    clock: Clock,
    name_label: String,
    /// Each ends with its ref and how its stream ended.
    followers: JoinSet<(String, Followed)>,
    /// The ref of each follower task, to clean up after one that panicked.
    followed_by: HashMap<tokio::task::Id, String>,
    /// Refs with a follower.
    following: HashSet<String>,
    /// Times each ref's stream was reopened.
    retries: HashMap<String, u32>,
    /// Completions waiting for their build's follower to end.
    pending: HashMap<String, Completion>,
    /// Each ends with a ref whose completion has waited long enough.
    deadlines: JoinSet<String>,
}

impl Watch {
    fn new(client: ControlClient<Channel>, builder: Arc<Builder>, clock: Clock, name_label: &str) -> Watch {
        Watch {
            client,
            builder,
            clock,
            name_label: name_label.to_string(),
            followers: JoinSet::new(),
            followed_by: HashMap::new(),
            following: HashSet::new(),
            retries: HashMap::new(),
            pending: HashMap::new(),
            deadlines: JoinSet::new(),
        }
    }

    /// Applies a history message; returns it as a completion, if it is one.
    fn history(&mut self, message: &BuildHistoryEvent) -> Option<Completion> {
        match convert::history(message, &self.name_label, &self.clock)? {
            Event::Completed(completion) => {
                let reference = completion.info.reference.clone();
                if let Some(pending) = self.pending.get_mut(&reference) {
                    // A later generation while the first waits: it is the record to count.
                    pending.generation = pending.generation.max(completion.generation);
                } else if self.following.contains(&reference) && self.builder.is_running(&reference) {
                    // Its last progress may still be on the way: count it once that is applied.
                    self.pending.insert(reference.clone(), completion.clone());
                    self.deadlines.spawn(async move {
                        tokio::time::sleep(ORDER_WAIT).await;
                        reference
                    });
                } else {
                    self.builder.apply(Event::Completed(completion.clone()));
                }
                Some(completion)
            }
            Event::Deleted(reference) => {
                // A record deleted right after completing: its completion, if waiting, comes first.
                self.complete(&reference);
                self.builder.apply(Event::Deleted(reference));
                None
            }
            Event::Started(info) => {
                let reference = info.reference.clone();
                self.builder.apply(Event::Started(info));
                if self.builder.is_running(&reference) && self.following.insert(reference.clone()) {
                    self.follow(reference, Duration::ZERO);
                }
                None
            }
            event => {
                self.builder.apply(event);
                None
            }
        }
    }

    fn follow(&mut self, reference: String, delay: Duration) {
        let task = follow(self.client.clone(), reference.clone(), self.builder.clone(), self.clock, delay);
        let id = self.followers.spawn(task.in_current_span()).id();
        self.followed_by.insert(id, reference);
    }

    /// Follows again every build held as running that nothing follows: after a reconnect, the
    /// ones the replay did not mention may be gone, and only the engine can say so.
    fn recheck_running(&mut self) {
        for reference in self.builder.running_refs() {
            if self.following.insert(reference.clone()) {
                self.follow(reference, Duration::ZERO);
            }
        }
    }

    fn followed(&mut self, ended: Result<(tokio::task::Id, (String, Followed)), JoinError>) {
        let (reference, how) = match ended {
            Ok((id, ended)) => {
                self.followed_by.remove(&id);
                ended
            }
            Err(error) => {
                // Treated as a broken stream: retried, or its completion let through.
                error!(%error, "a status follower died");
                match self.followed_by.remove(&error.id()) {
                    Some(reference) => (reference, Followed::Failed),
                    None => return,
                }
            }
        };
        let running = self.builder.is_running(&reference);
        if how == Followed::Failed && running {
            let tries = self.retries.entry(reference.clone()).or_default();
            if *tries < STATUS_RETRIES {
                *tries += 1;
                // A build already complete has its whole progress stored: read it at once, while
                // its completion waits.
                let delay = if self.pending.contains_key(&reference) { Duration::ZERO } else { STATUS_RETRY_DELAY };
                self.follow(reference, delay);
                return;
            }
        }
        self.following.remove(&reference);
        self.retries.remove(&reference);
        if self.pending.contains_key(&reference) {
            self.complete(&reference);
        } else if how == Followed::Gone && running {
            self.builder.apply(Event::Gone(reference));
        }
    }

    /// Counts a completion that waited for its build's progress.
    fn complete(&mut self, reference: &str) {
        if let Some(completion) = self.pending.remove(reference) {
            self.builder.apply(Event::Completed(completion));
        }
    }
}

/// The `count` most recently completed builds, oldest first.
fn newest(finished: HashMap<String, Completion>, count: usize) -> Vec<Completion> {
    let mut all: Vec<Completion> = finished.into_values().collect();
    all.sort_by(|a, b| b.completed_at.total_cmp(&a.completed_at));
    all.truncate(count);
    // Learn oldest first, as if they were happening now.
    all.reverse();
    all
}

/// Follows the progress of running build `reference`, after `delay`, until its `Status` stream
/// ends.
async fn follow(
    mut client: ControlClient<Channel>,
    reference: String,
    builder: Arc<Builder>,
    clock: Clock,
    delay: Duration,
) -> (String, Followed) {
    tokio::time::sleep(delay).await;
    let request = StatusRequest { r#ref: reference.clone() };
    let mut stream = match client.status(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            debug!(%reference, code = ?status.code(), "status unavailable");
            let how = if status.code() == Code::NotFound { Followed::Gone } else { Followed::Failed };
            return (reference, how);
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let progress = convert::progress(&reference, &message, &clock, builder.keeps_output());
                builder.apply(Event::Progress(progress));
            }
            Ok(None) => return (reference, Followed::Ended),
            Err(status) => {
                debug!(%reference, code = ?status.code(), message = status.message(), "status stream failed");
                let how = if status.code() == Code::NotFound { Followed::Gone } else { Followed::Failed };
                return (reference, how);
            }
        }
    }
}

/// Reads the stored progress of finished builds to learn their names.
async fn seed(mut client: ControlClient<Channel>, builds: Vec<Completion>, builder: Arc<Builder>, clock: Clock) {
    for completion in builds {
        let reference = completion.info.reference.clone();
        let mut progress: Vec<Progress> = Vec::new();
        if let Ok(response) = client.status(StatusRequest { r#ref: reference.clone() }).await {
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                progress.push(convert::progress(&reference, &message, &clock, false));
            }
        }
        builder.apply(Event::History { completion, progress });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        const CAP: Duration = Duration::from_secs(30);
        let mut backoff = Backoff { attempt: 0, cap: CAP };
        let first = backoff.next(false);
        assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE, "{first:?}");
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next(false)).collect();
        assert!(delays.iter().all(|d| *d <= CAP));
        assert!(delays.last().unwrap() >= &(CAP / 2));
        let mut fresh = Backoff { attempt: 0, cap: CAP };
        assert!(fresh.next(true) >= CAP / 2);
    }

    #[test]
    fn unimplemented_means_too_old() {
        let endpoint = Endpoint::Docker(spec::Transport::Unix("/x.sock".into()));
        let error = SourceError::from_status(&endpoint, &tonic::Status::unimplemented("unknown service"));
        assert!(matches!(error, SourceError::TooOld { .. }));
        assert!(error.to_string().contains("23.0"));
        let error = SourceError::from_io(&endpoint, std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(
            error.to_string(),
            "permission denied on unix:///x.sock: run as root or as a member of the socket's group (usually docker)"
        );
    }
}
