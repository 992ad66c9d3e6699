//! Sources started and stopped while the daemon runs: an engine's container builders, and the
//! entries of the sources file. Each has a builder in the fleet and a task running [`super::run`]
//! with a stop signal of its own.
//!
//! Stopping one takes its builder out of the fleet first, so that no view sees it stopping (a
//! builder that is removed on purpose is not a source that is down), then waits for its task,
//! then forgets its series once more in case its last writes brought one back. A task that ended
//! by itself (a panic) is started again by [`Watchers::revive`]. Dropping the set stops them all.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::error;

use super::spec::SourceSpec;
use super::SourceOptions;
use crate::builder::Builder;
use crate::fleet::Fleet;

/// One source being watched.
struct Watched {
    spec: SourceSpec,
    builder: Arc<Builder>,
    /// Turns true to stop it.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The sources started at run time, by builder name.
pub(super) struct Watchers {
    fleet: Arc<Fleet>,
    options: SourceOptions,
    watched: BTreeMap<String, Watched>,
}

/// A name that another source already has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the builder name {0:?} is taken by another source")]
pub(super) struct Taken(pub String);

impl Watchers {
    pub(super) fn new(fleet: Arc<Fleet>, options: SourceOptions) -> Watchers {
        Watchers { fleet, options, watched: BTreeMap::new() }
    }

    /// The spec of the source watched as `name`, if any.
    pub(super) fn spec(&self, name: &str) -> Option<&SourceSpec> {
        self.watched.get(name).map(|w| &w.spec)
    }

    /// The names watched.
    pub(super) fn names(&self) -> Vec<String> {
        self.watched.keys().cloned().collect()
    }

    /// Adds `spec`'s builder to the fleet and starts watching it.
    pub(super) fn start(&mut self, spec: SourceSpec) -> Result<(), Taken> {
        let builder = self.fleet.add(&spec.name, spec.endpoint.to_string()).ok_or_else(|| Taken(spec.name.clone()))?;
        let watched = self.spawn(spec, builder);
        self.watched.insert(watched.spec.name.clone(), watched);
        Ok(())
    }

    /// Watches `spec` in place of the source of the same name, keeping its builder (and so its
    /// counters): its address changed.
    pub(super) async fn replace(&mut self, spec: SourceSpec) {
        let Some(old) = self.watched.remove(&spec.name) else { return };
        let _ = old.stop.send(true);
        let _ = old.task.await;
        old.builder.set_address(spec.endpoint.to_string());
        let watched = self.spawn(spec, old.builder);
        self.watched.insert(watched.spec.name.clone(), watched);
    }

    /// Stops watching `name` and takes its builder and series out of the fleet.
    pub(super) async fn stop(&mut self, name: &str) {
        let Some(watched) = self.watched.remove(name) else { return };
        self.fleet.remove(name);
        let _ = watched.stop.send(true);
        let _ = watched.task.await;
        self.fleet.forget(name);
    }

    /// Starts again every source whose task ended without being told to (it panicked).
    pub(super) fn revive(&mut self) {
        let ended: Vec<String> =
            self.watched.iter().filter(|(_, w)| w.task.is_finished()).map(|(name, _)| name.clone()).collect();
        for name in ended {
            if let Some(old) = self.watched.remove(&name) {
                error!(builder = %name, "a source task died: starting it again");
                let watched = self.spawn(old.spec, old.builder);
                self.watched.insert(name, watched);
            }
        }
    }

    fn spawn(&self, spec: SourceSpec, builder: Arc<Builder>) -> Watched {
        let (stop, stopped) = watch::channel(false);
        let source = super::run(spec.clone(), builder.clone(), self.fleet.clone(), self.options.clone(), stopped);
        // Boxed: an engine's source holds the watchers of its container builders, whose tasks
        // run sources.
        let source: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(source);
        Watched { spec, builder, stop, task: tokio::spawn(source) }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for (name, watched) in std::mem::take(&mut self.watched) {
            watched.task.abort();
            self.fleet.remove(&name);
        }
    }
}
