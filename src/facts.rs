//! What is known of a builder besides its builds: whether its source is watched and, if not,
//! why; the engine and BuildKit it runs; its workers and its build cache. Written by the
//! source tasks, read by the views; small, so readers take a copy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Time;

/// The builder's source and what it last said about itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// The source's address (never its credentials or TLS files).
    pub address: String,
    /// Whether the build history is watched: connected, and the opening replay received.
    pub up: bool,
    /// Since when `up` has had its value (unix seconds); when the daemon started, at first.
    pub since: Time,
    /// Why the source is down, in one line; `None` while up or before the first attempt ends.
    pub reason: Option<String>,
    /// The Docker Engine, for a source that is one.
    pub engine: Option<Engine>,
    /// The BuildKit behind the source, once it answered.
    pub buildkit: Option<Buildkit>,
    /// Times the process behind a unix-socket source was another one when it answered again
    /// (a restart, not a broken link); never counted for a TCP source.
    pub restarts: u32,
}

/// A Docker Engine, from its `/version` and `/info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Engine {
    /// e.g. `28.5.2`.
    pub version: String,
    /// The engine's API version, e.g. `1.51`.
    pub api_version: String,
    /// `linux/amd64`.
    pub platform: String,
    /// Whether images live in containerd's store (the default from Docker 29 on).
    pub containerd_store: bool,
    /// Times the engine was seen going away and coming back (its event stream ended, then it
    /// answered again): a restart, or a link that broke in between.
    pub restarts: u32,
}

/// What BuildKit says of itself and holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Buildkit {
    /// e.g. `v0.25.1`; empty when this BuildKit does not say.
    pub version: String,
    /// Its workers, with the platforms each builds for.
    pub workers: Vec<Worker>,
    /// Its build cache, once `DiskUsage` answered.
    pub cache: Option<Cache>,
    /// When these were read (unix seconds).
    pub refreshed_at: Time,
}

/// One BuildKit worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Worker {
    /// BuildKit's ID of it.
    pub id: String,
    /// `os/arch[/variant]` it builds for, in BuildKit's order (native first).
    pub platforms: Vec<String>,
}

/// The build cache, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cache {
    /// By record type, each of a fixed set ([`cache_type`]).
    pub by_type: BTreeMap<&'static str, u64>,
    /// What a prune could free: records not in use.
    pub reclaimable: u64,
    /// Cache records.
    pub records: u64,
}

/// The record types BuildKit's cache reports, and `other` for any later one: the `type` label
/// stays bounded whatever a newer BuildKit adds.
pub const CACHE_TYPES: [&str; 8] = [
    "regular",
    "internal",
    "frontend",
    "source.local",
    "source.git.checkout",
    "exec.cachemount",
    "source.image",
    "other",
];

/// The `type` label value of a cache record type.
pub fn cache_type(record_type: &str) -> &'static str {
    CACHE_TYPES.iter().find(|t| **t == record_type).copied().unwrap_or("other")
}
