//! buildkit-exporter: watches BuildKit image builds and serves them to Prometheus.
//!
//! # Layout
//! Data flows one way, one hop per layer:
//!
//! - [`source`] talks to engines: a BuildKit Control API client (through a Docker Engine's
//!   `/grpc` upgrade or a buildkitd socket) that turns build-history and `Status` streams into
//!   model events, reconnecting with backoff. What a source is and how it is reached (the
//!   `--source` grammar) is [`source::spec`].
//! - [`model`] is the pure build/step state machine: `apply(event) -> effects`, `snapshot()`.
//!   No I/O, no async, no Prometheus types.
//! - [`builder`] joins them: one builder's model behind a lock, written by its source, read by
//!   the views as snapshots; the effects of each write go to a [`builder::Record`] as they
//!   happen. Beside the model, the builder keeps its [`facts`]: whether its source is watched
//!   and why not, the engine and BuildKit versions, workers and cache. The builders watched
//!   are the [`fleet`], which an engine's container builders and the sources file join and
//!   leave while the daemon runs.
//! - [`views`] show it, and only read: the counters (the `Record` fed by effects),
//!   point-in-time series built from snapshots at scrape, the JSON API and the live status page.
//! - [`server`] serves the views over HTTP, guarded as [`web`] (the web configuration file:
//!   TLS, client certificates, basic auth, extra headers) says.
//!
//! [`run`] wires them together from a [`config::Config`], which [`cli`] makes of the flags
//! (with [`defaults`], written once); `main.rs` only parses flags and sets up logging. Around the model, the layers read the time from [`clock`], and their long-lived
//! tasks end when [`shutdown`] says so; files re-read when they change are compared by their
//! [`stamp`]. TLS towards sources and towards scrapers names a
//! certificate rustls refuses, and how to re-issue it, through [`certificate`].

pub mod builder;
pub mod certificate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod defaults;
pub mod facts;
pub mod fleet;
pub mod logging;
pub mod model;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod stamp;
pub mod views;
pub mod web;

use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::Config;
use crate::fleet::Fleet;
use crate::server::Views;
use crate::views::counters::Counters;
use crate::views::live::Live;
use crate::views::metrics::Exposition;

/// Binds the configured addresses and runs the daemon until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for address in &config.listen_addresses {
        let listener = server::bind(*address).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        info!(address = %listener.local_addr()?, "listening");
        listeners.push(listener);
    }
    serve(config, listeners, shutdown).await;
    Ok(())
}

/// Runs the daemon on already-bound listeners until `shutdown` turns true.
pub async fn serve(config: Config, listeners: Vec<TcpListener>, shutdown: watch::Receiver<bool>) {
    let counters_registry = Registry::new();
    let counters = Counters::new(&counters_registry, config.step_detail);
    let process = Registry::new();
    // The daemon's own CPU, memory and descriptors, as every exporter serves them.
    process.register(Box::new(views::process::Process::new())).expect("process metric names are unique");
    let fleet = Fleet::new(config.model.clone(), counters.clone() as Arc<dyn builder::Record>);
    let exposition = Exposition::new(
        counters_registry,
        counters.clone(),
        Live::new(fleet.clone(), config.web.external_url.clone()),
        process,
    );
    let views = Arc::new(Views::new(exposition, config.telemetry_path.clone(), fleet.clone()));

    let server = tokio::spawn(server::serve(listeners, views, config.web.clone(), shutdown.clone()));
    let mut sources: Vec<Start> = Vec::new();
    for spec in &config.sources {
        let Some(builder) = fleet.add(&spec.name, spec.endpoint.to_string()) else {
            // Names are checked unique when the flags are read; an embedder's duplicate is skipped.
            tracing::error!(builder = %spec.name, "two sources share a name: the second is not watched");
            continue;
        };
        let (spec, options, shutdown) = (spec.clone(), config.source.clone(), shutdown.clone());
        let fleet = fleet.clone();
        sources.push(Box::new(move || {
            Box::pin(source::run(spec.clone(), builder.clone(), fleet.clone(), options.clone(), shutdown.clone()))
        }));
    }
    // After the named sources, so that their names are taken first.
    if let Some(file) = config.source_file.clone() {
        let (fleet, options, shutdown) = (fleet.clone(), config.source.clone(), shutdown.clone());
        sources.push(Box::new(move || {
            let (path, tls) = (file.path.clone(), file.docker_tls.clone());
            Box::pin(source::file::follow(path, tls, fleet.clone(), options.clone(), shutdown.clone()))
        }));
    }
    supervise(sources).await;
    let _ = server.await;
    info!("stopped");
}

/// What starts one long-lived source task (again, after a panic).
type Start = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Pause before a source task that panicked is started again.
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs every task `starts` makes until each returns, starting again any that panics: a source
/// that nothing watches any more must not look merely quiet.
async fn supervise<F, Fut>(starts: Vec<F>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut which = std::collections::HashMap::new();
    for (index, start) in starts.iter().enumerate() {
        which.insert(tasks.spawn(start()).id(), index);
    }
    while let Some(ended) = tasks.join_next_with_id().await {
        let (id, panicked) = match &ended {
            Ok((id, ())) => (*id, None),
            Err(error) => (error.id(), error.is_panic().then(|| error.to_string())),
        };
        let Some(index) = which.remove(&id) else { continue };
        if let Some(error) = panicked {
            // After a pause, so that a task that dies at once does not spin.
            tracing::error!(%error, restart_in = ?RESTART_DELAY, "a source task died: starting it again");
            let start = starts[index]();
            which.insert(
                tasks
                    .spawn(async move {
                        tokio::time::sleep(RESTART_DELAY).await;
                        start.await
                    })
                    .id(),
                index,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_started_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let start = move || {
            let runs = counter.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a source task went wrong");
                }
            }
        };
        supervise(vec![start]).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, then a run that returned");
    }
}
