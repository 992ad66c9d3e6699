//! Where one connection's history messages are applied ([`History`]), and the `Status` streams
//! they start: a follower per running build applying its progress, reopened a few times when it
//! breaks; completions that wait (boundedly) for their build's follower to end, so that a build's
//! last progress is applied before it counts; and the reading of finished builds' stored
//! progress, to learn their names at startup. Where a failed build failed, when its record
//! keeps that in a blob (a standalone buildkitd), is read here too, beside its completion.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEvent, StatusRequest};
use tokio::task::{JoinError, JoinSet};
use tonic::transport::Channel;
use tonic::Code;
use tracing::{debug, error, Instrument};

use bollard::Docker;

use super::convert::{self, Clock};
use super::{content, failure};
use crate::builder::Builder;
use crate::model::step::StepKind;
use crate::model::{Completion, Event, Progress};

/// Times a build's `Status` stream is reopened after failing while the build still runs.
const STATUS_RETRIES: u32 = 3;
/// Wait before reopening a failed `Status` stream (the reopened stream replays what was missed).
const STATUS_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Longest wait of a build's completion for the rest of its `Status` stream.
const ORDER_WAIT: Duration = Duration::from_secs(5);
/// Longest read of a failed build's error blob.
const BLOB_WAIT: Duration = Duration::from_secs(10);
/// Most error blobs read at once; a failure beyond them shows without where it failed.
const MAX_BLOB_READS: usize = 8;
/// Longest wait for the engine to say what image a `FROM` names.
const IMAGE_WAIT: Duration = Duration::from_secs(2);

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

/// Where one connection's history messages go, in the order the session decides: the model, and
/// the followers they start and end. A trait so that the session's phases can be tested with a
/// recorder in its place.
pub(super) trait History {
    /// Applies a history message; returns it as a completion, if it is one.
    fn history(&mut self, message: &BuildHistoryEvent) -> Option<Completion>;
    /// Tells the model that the replay is over.
    fn replay_done(&mut self);
}

/// The `Status` streams of one connection, and the completions waiting for them.
pub(super) struct Watch {
    client: ControlClient<Channel>,
    /// The same channel, for the content store.
    channel: Channel,
    /// The Docker Engine itself, for a Docker source: asked for the images builds start from.
    docker: Option<Docker>,
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
    /// Reads of failed builds' error blobs; each ends with its ref and what to apply.
    blobs: JoinSet<(String, Option<Event>)>,
    /// Refs whose error blob is being read: BuildKit sends a completion twice.
    reading: HashSet<String>,
}

impl Watch {
    pub(super) fn new(
        client: ControlClient<Channel>,
        channel: Channel,
        docker: Option<Docker>,
        builder: Arc<Builder>,
        clock: Clock,
        name_label: &str,
    ) -> Watch {
        Watch {
            client,
            channel,
            docker,
            builder,
            clock,
            name_label: name_label.to_string(),
            followers: JoinSet::new(),
            followed_by: HashMap::new(),
            following: HashSet::new(),
            retries: HashMap::new(),
            pending: HashMap::new(),
            deadlines: JoinSet::new(),
            blobs: JoinSet::new(),
            reading: HashSet::new(),
        }
    }

    /// Handles the next follower to end, or completion to have waited long enough; never
    /// resolves while there is none.
    pub(super) async fn settle(&mut self) {
        tokio::select! {
            Some(ended) = self.followers.join_next_with_id() => self.followed(ended),
            Some(Ok(reference)) = self.deadlines.join_next() => self.complete(&reference),
            Some(Ok((reference, found))) = self.blobs.join_next() => {
                self.reading.remove(&reference);
                if let Some(found) = found {
                    self.builder.apply(found);
                }
            }
            else => std::future::pending().await,
        }
    }

    fn follow(&mut self, reference: String, delay: Duration) {
        let task = follow(
            self.client.clone(),
            self.docker.clone(),
            reference.clone(),
            self.builder.clone(),
            self.clock,
            delay,
        );
        let id = self.followers.spawn(task.in_current_span()).id();
        self.followed_by.insert(id, reference);
    }

    /// Follows again every build held as running that nothing follows: after a reconnect, the
    /// ones the replay did not mention may be gone, and only the engine can say so.
    pub(super) fn recheck_running(&mut self) {
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

impl Watch {
    /// Reads where a build held as running failed, when its record keeps that in an error blob
    /// rather than in its error's details (a standalone buildkitd). Its completion does not wait
    /// for the read: what is read comes after, as [`Event::FailureFound`].
    fn read_failure(&mut self, message: &BuildHistoryEvent, completion: &Completion) {
        let Some(record) = &message.record else { return };
        let (Some(blob), None) = (&record.external_error, &completion.failure) else { return };
        let failed = matches!(completion.outcome, crate::model::Outcome::Failed(_));
        let details = record.error.as_ref().is_some_and(|e| !e.details.is_empty());
        if !failed || details || !self.builder.is_running(&record.r#ref) || self.blobs.len() >= MAX_BLOB_READS {
            return;
        }
        // BuildKit sends a completion twice, and the first may wait here while the build still
        // counts as running.
        if !self.reading.insert(record.r#ref.clone()) {
            return;
        }
        let (channel, digest, size) = (self.channel.clone(), blob.digest.clone(), blob.size);
        let (reference, secrets) = (record.r#ref.clone(), completion.info.secrets.clone());
        let read = async move {
            let failure = match content::read(channel, &digest, size, BLOB_WAIT).await {
                Ok(blob) => failure::from_blob(&blob).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let found = match failure {
                Ok(found) => {
                    found.map(|failure| Event::FailureFound { reference: reference.clone(), secrets, failure })
                }
                Err(error) => {
                    debug!(%error, %digest, "where the build failed could not be read");
                    None
                }
            };
            (reference, found)
        };
        self.blobs.spawn(read.in_current_span());
    }
}

impl History for Watch {
    fn history(&mut self, message: &BuildHistoryEvent) -> Option<Completion> {
        match convert::history(message, &self.name_label, &self.clock)? {
            Event::Completed(completion) => {
                let reference = completion.info.reference.clone();
                self.read_failure(message, &completion);
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

    fn replay_done(&mut self) {
        self.builder.apply(Event::ReplayDone);
    }
}

/// The `count` most recently completed builds, oldest first.
pub(super) fn newest(finished: HashMap<String, Completion>, count: usize) -> Vec<Completion> {
    let mut all: Vec<Completion> = finished.into_values().collect();
    all.sort_by(|a, b| b.completed_at.total_cmp(&a.completed_at));
    all.truncate(count);
    // Learn oldest first, as if they were happening now.
    all.reverse();
    all
}

/// Follows the progress of running build `reference`, after `delay`, until its `Status` stream
/// ends. With `docker` (a Docker source), each image a `FROM` step names is looked up once, for
/// its ID.
async fn follow(
    mut client: ControlClient<Channel>,
    docker: Option<Docker>,
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
    let mut bases: HashSet<String> = HashSet::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let progress = convert::progress(&reference, &message, &clock, builder.keeps_output());
                if let Some(docker) = &docker {
                    // Once per image and stream, before the progress that names it is applied.
                    let new: Vec<String> = base_images(&progress).filter(|image| bases.insert(image.clone())).collect();
                    for image in new {
                        image_id(docker, &reference, image, &builder).await;
                    }
                }
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

/// The images the `FROM` steps of `progress` name.
fn base_images(progress: &Progress) -> impl Iterator<Item = String> + '_ {
    progress.vertexes.iter().filter_map(|v| match StepKind::parse(&v.name) {
        StepKind::Dockerfile { instruction: "FROM", command, .. } if !command.is_empty() => Some(command),
        _ => None,
    })
}

/// Asks the engine for the ID of `image`, which a `FROM` of running build `reference` names:
/// in the classic image store, neither the step's name nor its digest changes when the image
/// behind the tag does. An image the engine does not have (a stage's name, `scratch`, one
/// pulled into BuildKit's own store) has no ID to give, and the step's name is all there is.
/// The image is never logged: its name may hold a build-arg's value.
async fn image_id(docker: &Docker, reference: &str, image: String, builder: &Builder) {
    match tokio::time::timeout(IMAGE_WAIT, docker.inspect_image(&image)).await {
        Ok(Ok(inspect)) => {
            if let Some(id) = inspect.id {
                builder.apply(Event::BaseImage { reference: reference.to_string(), image, id });
            }
        }
        Ok(Err(_)) => debug!(%reference, "the engine has no image for one of the build's FROM steps"),
        Err(_) => debug!(%reference, "the engine did not say what image a FROM names in time"),
    }
}

/// Reads the stored progress of finished builds to learn their names.
pub(super) async fn seed(
    mut client: ControlClient<Channel>,
    builds: Vec<Completion>,
    builder: Arc<Builder>,
    clock: Clock,
) {
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
