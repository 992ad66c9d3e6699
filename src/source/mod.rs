//! Watching one source: the build-history stream plus one `Status` stream per running build,
//! kept alive across failures.
//!
//! The connection is a small state machine:
//!
//! ```text
//!   Disconnected(backoff) --dial + ListenBuildHistory ok--> Connected
//!   Connected --stream error or end--> Disconnected(next backoff)
//! ```
//!
//! Every connection opens `ListenBuildHistory(active_only=false)`, which first replays stored
//! builds and the running ones, then streams live events. The replay is over once the stream
//! has been quiet for [`REPLAY_QUIET`]; the model then drops running builds the replay no longer
//! mentions. Counting rules that keep replays harmless live in the model. Only read-only RPCs
//! are ever called.

mod convert;
pub mod dial;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEventType, BuildHistoryRequest, StatusRequest};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;
use tracing::{debug, info, warn, Instrument};

use crate::builder::Builder;
use crate::config::{Endpoint, SourceSpec};
use crate::model::{Completion, Event, Progress};
use crate::now;

/// Quiet time after which the opening replay of a history stream is taken as complete.
const REPLAY_QUIET: Duration = Duration::from_millis(1500);
/// First retry delay after a failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Times a build's `Status` stream is reopened after failing while the build still runs.
const STATUS_RETRIES: u32 = 3;
/// Wait before reopening a failed `Status` stream (the reopened stream replays what was missed).
const STATUS_RETRY_DELAY: Duration = Duration::from_secs(2);
/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

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
        matches!(self, SourceError::PermissionDenied { .. } | SourceError::TooOld { .. } | SourceError::Upgrade { .. })
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
}

/// Capped exponential backoff with jitter.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self, jump_to_cap: bool) -> Duration {
        if jump_to_cap {
            self.attempt = 16;
        }
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(BACKOFF_CAP);
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Watches `spec` until `shutdown` turns true.
#[tracing::instrument(name = "source", skip_all, fields(builder = %spec.name))]
pub async fn run(spec: SourceSpec, builder: Arc<Builder>, options: SourceOptions, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff { attempt: 0 };
    // The kind of the last failure: a cause is logged once while it lasts (the details of
    // protocol errors vary from one attempt to the next).
    let mut last_error: Option<std::mem::Discriminant<SourceError>> = None;
    let mut seeded = options.seed_builds == 0;
    loop {
        let started = tokio::time::Instant::now();
        let session = Session { spec: &spec, builder: &builder, options: &options, seed: !seeded };
        let error = tokio::select! {
            error = session.run(&mut seeded) => error,
            _ = crate::stopped(&mut shutdown) => return,
        };
        if builder.is_up() {
            last_error = None;
        }
        builder.set_up(false);
        builder.apply(Event::Disconnected(now()));
        if started.elapsed() >= HEALTHY_AFTER {
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
            _ = crate::stopped(&mut shutdown) => return,
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
    /// Runs until the connection fails; returns why.
    async fn run(self, seeded: &mut bool) -> SourceError {
        let endpoint = &self.spec.endpoint;
        let channel = match dial::connect(endpoint).await {
            Ok(channel) => channel,
            Err(error) => return error,
        };
        let mut client = ControlClient::new(channel).max_decoding_message_size(self.options.max_message_bytes);
        let request = BuildHistoryRequest { active_only: false, ..Default::default() };
        let mut stream = match client.listen_build_history(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return SourceError::from_status(endpoint, &status),
        };
        self.builder.set_up(true);
        info!(source = %endpoint, "source up");

        // Each follower ends with the ref of a build whose Status stream failed, if one did.
        let mut followers: JoinSet<Option<String>> = JoinSet::new();
        let mut following: HashSet<String> = HashSet::new();
        let mut retries: HashMap<String, u32> = HashMap::new();
        let mut replay: Option<(HashSet<String>, HashMap<String, Completion>)> = Some(Default::default());
        let quiet = tokio::time::sleep(REPLAY_QUIET);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                message = stream.message() => {
                    let message = match message {
                        Ok(Some(message)) => message,
                        Ok(None) => return SourceError::Closed { endpoint: endpoint.to_string() },
                        Err(status) => return SourceError::from_status(endpoint, &status),
                    };
                    let Some(event) = convert::history(&message, &self.options.name_label) else { continue };
                    if let Some((seen, finished)) = replay.as_mut() {
                        quiet.as_mut().reset(tokio::time::Instant::now() + REPLAY_QUIET);
                        if let Event::Started(info) = &event {
                            seen.insert(info.reference.clone());
                        }
                        if let Event::Completed(completion) = &event {
                            seen.insert(completion.info.reference.clone());
                            finished.insert(completion.info.reference.clone(), completion.clone());
                        }
                    }
                    let started = (message.r#type == BuildHistoryEventType::Started as i32)
                        .then(|| message.record.as_ref().map(|r| r.r#ref.clone()))
                        .flatten();
                    self.builder.apply(event);
                    if let Some(reference) = started {
                        if following.insert(reference.clone()) {
                            followers.spawn(
                                follow(client.clone(), reference, self.builder.clone(), Duration::ZERO).in_current_span(),
                            );
                        }
                    }
                }
                _ = &mut quiet, if replay.is_some() => {
                    let (seen, finished) = replay.take().unwrap_or_default();
                    debug!(builds = seen.len(), "history replay done");
                    self.builder.apply(Event::ReplayDone { seen });
                    if self.seed {
                        *seeded = true;
                        let newest = newest(finished, self.options.seed_builds);
                        let (client, builder) = (client.clone(), self.builder.clone());
                        followers.spawn(
                            async move {
                                seed(client, newest, builder).await;
                                None
                            }
                            .in_current_span(),
                        );
                    }
                }
                Some(ended) = followers.join_next() => {
                    let failed = ended.ok().flatten();
                    if let Some(reference) = failed.filter(|r| self.builder.is_running(r)) {
                        let tries = retries.entry(reference.clone()).or_default();
                        if *tries < STATUS_RETRIES {
                            *tries += 1;
                            let delay = STATUS_RETRY_DELAY;
                            followers.spawn(follow(client.clone(), reference, self.builder.clone(), delay).in_current_span());
                            continue;
                        }
                    }
                    following.retain(|r| self.builder.is_running(r));
                    retries.retain(|r, _| following.contains(r));
                }
            }
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
/// ends; returns the ref if the stream failed rather than ended.
async fn follow(
    mut client: ControlClient<Channel>,
    reference: String,
    builder: Arc<Builder>,
    delay: Duration,
) -> Option<String> {
    tokio::time::sleep(delay).await;
    let request = StatusRequest { r#ref: reference.clone() };
    let mut stream = match client.status(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            debug!(%reference, code = ?status.code(), "status unavailable");
            return (status.code() != Code::NotFound).then_some(reference);
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                builder.apply(Event::Progress(convert::progress(&reference, &message)));
            }
            Ok(None) => return None,
            Err(status) => {
                debug!(%reference, code = ?status.code(), message = status.message(), "status stream failed");
                return Some(reference);
            }
        }
    }
}

/// Reads the stored progress of finished builds to learn their names.
async fn seed(mut client: ControlClient<Channel>, builds: Vec<Completion>, builder: Arc<Builder>) {
    for completion in builds {
        let reference = completion.info.reference.clone();
        let mut progress: Vec<Progress> = Vec::new();
        if let Ok(response) = client.status(StatusRequest { r#ref: reference.clone() }).await {
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                progress.push(convert::progress(&reference, &message));
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
        let mut backoff = Backoff { attempt: 0 };
        let first = backoff.next(false);
        assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE, "{first:?}");
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next(false)).collect();
        assert!(delays.iter().all(|d| *d <= BACKOFF_CAP));
        assert!(delays.last().unwrap() >= &(BACKOFF_CAP / 2));
        let mut fresh = Backoff { attempt: 0 };
        assert!(fresh.next(true) >= BACKOFF_CAP / 2);
    }

    #[test]
    fn unimplemented_means_too_old() {
        let endpoint = Endpoint::Docker(crate::config::Transport::Unix("/x.sock".into()));
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
