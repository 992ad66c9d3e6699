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
//!
//! [`run`] is the loop through these states. One connection, from dialing until it fails, is
//! `session.rs`: its phases, `Replaying` and `Live`, are a type with one step function.
//! `backoff.rs` holds the delays between connections, `followers.rs` the `Status` streams of
//! running builds, `error.rs` why a source is down, `peer.rs` whether a source that answers
//! again restarted; `dial.rs`, `tls.rs` and `exec.rs` (for a container builder) reach BuildKit,
//! `convert.rs` reads its messages, `failure.rs` where a failed build failed (for a standalone
//! buildkitd, from a blob `content.rs` reads), and `engine.rs` and `usage.rs` read what the engine and
//! BuildKit say of themselves. An engine's source also keeps its buildx container builders in
//! the fleet, each a source of its own (`container_builders.rs`).

mod backoff;
pub mod container_builders;
pub mod content;
pub mod convert;
pub mod dial;
mod engine;
mod error;
mod exec;
pub mod failure;
pub mod file;
mod followers;
pub mod peer;
mod session;
pub mod spec;
mod tls;
mod usage;
mod watchers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::builder::Builder;
use crate::clock::now;
use crate::fleet::Fleet;
use crate::model::Event;
use backoff::Backoff;
pub use error::SourceError;
use session::Session;
use spec::{Endpoint, Link, SourceSpec};

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
    /// Whether an engine's buildx container builders are found and watched too.
    pub container_builders: bool,
}

/// Keeps `source_up` at 0 whenever nothing is watching the source, however its task ends.
struct Watching<'a>(&'a Builder);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.set_up(false);
    }
}

/// Watches `spec` until `shutdown` turns true.
#[tracing::instrument(name = "source", parent = None, skip_all, fields(builder = %spec.name))]
pub async fn run(
    spec: SourceSpec,
    builder: Arc<Builder>,
    fleet: Arc<Fleet>,
    options: SourceOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let _watching = Watching(&builder);
    let _engine_side = engine_side(&spec, &builder, &fleet, &options);
    let mut backoff = Backoff::new(options.link.retry_max);
    // The kind of the last failure: a cause is logged once while it lasts (the details of
    // protocol errors vary from one attempt to the next).
    let mut last_error: Option<std::mem::Discriminant<SourceError>> = None;
    let mut seed = options.seed_builds > 0;
    let mut peers = peer::Peers::default();
    loop {
        // Disconnected -> Replaying -> Live, until the connection fails.
        let tried = Instant::now();
        let mut session =
            Session { spec: &spec, builder: &builder, options: &options, seed, subscribed_at: None, peers: &mut peers };
        let Err(error) = tokio::select! {
            ended = session.run() => ended,
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        seed = session.seed;
        // `docker buildx rm` stops a container builder, then removes it: one that is leaving
        // is not down, it waits to be told to stop.
        let error = match &spec.endpoint {
            Endpoint::Container { engine, container } => {
                let address = spec.endpoint.to_string();
                let aftermath = exec::aftermath(engine, container, &address, options.link.timeout);
                match tokio::select! {
                    aftermath = aftermath => aftermath,
                    _ = crate::shutdown::stopped(&mut shutdown) => return,
                } {
                    exec::Aftermath::Gone => {
                        crate::shutdown::stopped(&mut shutdown).await;
                        return;
                    }
                    exec::Aftermath::Stopped(why) => why,
                    exec::Aftermath::Unknown => error,
                }
            }
            _ => error,
        };
        // -> Disconnected(next backoff).
        let was_up = builder.is_up();
        if was_up {
            last_error = None;
        }
        builder.set_down(error.to_string());
        // A link that died silently was noticed up to one keepalive round late: builds that
        // completed in that time still count as completed while disconnected; but nothing from
        // before the connection was watching (a session that never subscribed saw nothing).
        if let Some(subscribed_at) = session.subscribed_at {
            let link = options.link;
            let noticed_late = now() - (link.keepalive + link.timeout).as_secs_f64();
            builder.apply(Event::Disconnected(noticed_late.max(subscribed_at)));
        }
        let delay = backoff.next(tried, was_up, error.needs_operator());
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

/// Reads the Docker Engine behind `spec`, if it is one, until dropped: it lives as long as the
/// source, whatever its BuildKit link does. Its container builders join `fleet` meanwhile.
fn engine_side(spec: &SourceSpec, builder: &Arc<Builder>, fleet: &Arc<Fleet>, options: &SourceOptions) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if let Endpoint::Docker(transport) = &spec.endpoint {
        match engine::client(transport, options.link.timeout) {
            Ok(docker) => {
                if options.container_builders {
                    let found = container_builders::follow(
                        docker.clone(),
                        spec.name.clone(),
                        transport.clone(),
                        fleet.clone(),
                        options.clone(),
                    );
                    tasks.spawn(found.in_current_span());
                }
                tasks.spawn(engine::watch(docker, builder.clone(), options.usage_interval).in_current_span());
            }
            Err(why) => info!(%why, "the engine's version and restarts are not read"),
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::builder::Record;
    use crate::model::{Effect, Settings};
    use crate::source::spec::Transport;

    /// When each reconnection was counted.
    #[derive(Default)]
    struct Reconnects(Mutex<Vec<Instant>>);

    impl Record for Reconnects {
        fn builder_added(&self, _: &str) {}
        fn builder_removed(&self, _: &str) {}
        fn record(&self, _: &str, _: &Effect) {}
        fn reconnect(&self, _: &str) {
            self.0.lock().unwrap().push(Instant::now());
        }
        fn restart(&self, _: &str) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connection_is_tried_again_after_a_growing_backoff() {
        const CAP: Duration = Duration::from_secs(4);
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::Buildkitd(Transport::Unix(dir.path().join("missing.sock")));
        let spec = SourceSpec { name: "default".into(), endpoint };
        let link = Link { keepalive: Duration::from_secs(10), timeout: Duration::from_secs(10), retry_max: CAP };
        let options = SourceOptions {
            name_label: String::new(),
            max_message_bytes: 1 << 20,
            seed_builds: 0,
            link,
            usage_interval: Duration::from_secs(60),
            container_builders: false,
        };
        let reconnects = Arc::new(Reconnects::default());
        let fleet = Fleet::new(Settings::default(), reconnects.clone());
        let builder = fleet.add("default", String::new()).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let started = Instant::now();
        let source = tokio::spawn(run(spec, builder.clone(), fleet, options, shutdown));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let facts = builder.facts();
        assert!(!facts.up);
        let reason = facts.reason.unwrap_or_default();
        assert!(reason.starts_with("no engine at buildkitd+unix://"), "{reason}");
        stop.send(true).unwrap();
        source.await.unwrap();
        let times = reconnects.0.lock().unwrap().clone();
        assert!(times.len() >= 8, "{} tries in 30 s", times.len());
        let mut last = started;
        for (attempt, at) in times.into_iter().enumerate() {
            let ceiling = backoff::BACKOFF_BASE.saturating_mul(1 << attempt).min(CAP);
            let waited = at - last;
            assert!(
                waited >= ceiling / 2 && waited <= ceiling,
                "attempt {attempt}: waited {waited:?}, not within {ceiling:?}"
            );
            last = at;
        }
    }
}
