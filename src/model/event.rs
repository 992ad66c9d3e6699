//! What flows into the model: the [`Event`]s sources observe, and the shapes they carry.

/// A point in time as unix seconds.
pub type Time = f64;

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
    /// Build-args by name and value, held in memory only. Once the build is over, only a keyed
    /// hash of each value is kept, with the name's last build, to compare the next build's
    /// with (and a value too short to be masked, which step texts show anyway).
    pub args: Vec<(String, String)>,
    /// Whether the build asked for no cache.
    pub no_cache: Option<NoCache>,
    /// Where and how the build was asked for, as the record says.
    pub context: BuildContext,
}

/// A build's request for no cache (`--no-cache`, `--no-cache-filter`).
#[derive(Debug, Clone, PartialEq)]
pub enum NoCache {
    /// For every step.
    All,
    /// For the steps of these stages.
    Stages(Vec<String>),
}

/// Where and how a build was asked for, from its record's frontend attributes: shown on the
/// page and in the JSON, never made a label (every value is unbounded).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BuildContext {
    /// A remote context (Git or HTTP URL); a local directory is not sent to BuildKit by name.
    pub context: Option<String>,
    /// The Dockerfile's name.
    pub dockerfile: Option<String>,
    /// The stage built.
    pub target: Option<String>,
    /// Platforms built for.
    pub platforms: Vec<String>,
    /// The repository the context came from, as the client found it.
    pub vcs_source: Option<String>,
    /// Its revision.
    pub vcs_revision: Option<String>,
    /// Names of the build-args given; their values never leave the process.
    pub build_args: Vec<String>,
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
    /// How often BuildKit updated the record since (it sends it again with the trace, ~3 s
    /// later, and whenever it is updated).
    pub generation: i32,
    /// Warnings BuildKit recorded (lint checks and others; BuildKit 0.16+, else 0).
    pub warnings: u32,
    /// Where a failed build failed, when the record says so in its error's details; a
    /// standalone buildkitd keeps those in a blob, which is read, for a build held as running
    /// when its completion comes, and applied as [`Event::FailureFound`] (a failure seen only
    /// in history goes without).
    pub failure: Option<Failure>,
}

/// Where a build failed and how, from BuildKit's error details. Unmasked as it comes in; the
/// model masks it with the build's build-arg values before keeping it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Failure {
    /// The Dockerfile lines of the failing instruction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<Location>>,
    /// The exit code of the failing process, when a process failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Lines of a build's Dockerfile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Location {
    /// The file's name as the client gave it.
    pub file: String,
    /// Its first line, from 1.
    pub line: u32,
    /// Its last line, when it spans several (an instruction continued with `\`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    /// The text of those lines.
    pub text: String,
}

impl Failure {
    /// Whether it says anything.
    pub fn is_empty(&self) -> bool {
        self.location.is_none() && self.exit_code.is_none()
    }
}

/// The state of one vertex as a progress message reports it: the model's input shape, before
/// it is masked, parsed and ordered into a [`StepView`](super::StepView).
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
    /// Titles of the warnings the message carries.
    pub warnings: Vec<String>,
    /// Output the steps printed, as (vertex digest, chunk); read only when output is kept.
    pub logs: Vec<(String, String)>,
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
    /// The engine confirmed that a build no longer exists (its `Status` answered "not found").
    Gone(String),
    /// A message of a running build's `Status` stream.
    Progress(Progress),
    /// The connection to the source failed at this time.
    Disconnected(Time),
    /// The whole replay that opens a history stream has been received (the engine ended it).
    ReplayDone,
    /// Where a build failed, read after its completion (a standalone buildkitd keeps its error's
    /// details in a blob); `secrets` are its build-arg values, to mask it with.
    FailureFound {
        /// The build.
        reference: String,
        /// Its build-arg values.
        secrets: Vec<String>,
        /// What was read.
        failure: Failure,
    },
    /// The engine's ID of the image a running build's `FROM` names (`image`, as the step's text
    /// says it), read when the step appeared: a classic-store `FROM` keeps its name and digest
    /// when the image behind its tag changes.
    BaseImage {
        /// The build.
        reference: String,
        /// The `FROM` step's text.
        image: String,
        /// The image's ID.
        id: String,
    },
    /// A finished build from history with its replayed progress, read to learn its name.
    History {
        /// The build's record.
        completion: Completion,
        /// Its stored progress.
        progress: Vec<Progress>,
    },
}
