//! The Docker Engine behind a source, through bollard: its version, API version, platform and
//! image store (from `/version` and `/info`), and its restarts: an engine that stops ends its
//! `/events` stream, so a stream that ends and an engine that answers again is a restart (or a
//! link that broke in between, which looks the same from here).
//!
//! bollard does not carry the BuildKit channel itself. Its `buildkit` feature has the `/grpc`
//! upgrade, but keeps the pieces crate-private (no `ControlClient` can be had from it) and pulls
//! in a second, older copy of BuildKit's protos; `dial.rs` does the upgrade in a few lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use super::spec::Transport;
use crate::builder::Builder;
use crate::facts::Engine;

/// The containerd snapshotter's driver type in `/info`, which the containerd image store uses.
const CONTAINERD_SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";

/// A bollard client for the engine at `transport`, or why there is none.
pub fn client(transport: &Transport, timeout: Duration) -> Result<Docker, String> {
    let seconds = timeout.as_secs().max(1);
    let docker =
        match transport {
            Transport::Unix(path) => Docker::connect_with_socket(&path.to_string_lossy(), seconds, API_DEFAULT_VERSION),
            Transport::Tcp(address, None) => Docker::connect_with_http(address, seconds, API_DEFAULT_VERSION),
            Transport::Tcp(address, Some(tls)) => match (&tls.cert, &tls.key) {
                // bollard's TLS takes a client certificate, and checks the host of the address.
                (Some(cert), Some(key)) if tls.server_name.is_none() => {
                    Docker::connect_with_ssl(address, key, cert, &tls.ca, seconds, API_DEFAULT_VERSION)
                }
                _ => return Err(
                    "the engine's version is read over TLS only with a client certificate and no server-name option"
                        .into(),
                ),
            },
        };
    docker.map_err(|e| e.to_string())
}

/// Reads what the engine says of itself, every `every`, and follows its event stream to notice
/// restarts, until the task is dropped.
pub async fn watch(docker: Docker, builder: Arc<Builder>, every: Duration) {
    let mut restarts = 0u32;
    let mut known: Option<Engine> = None;
    // The engine's event stream ended since it last answered: the next answer is a comeback.
    let mut comeback = false;
    let filters = HashMap::from([("type".to_string(), vec!["daemon".to_string()])]);
    loop {
        let engine = match read(&docker).await {
            Ok(engine) => engine,
            Err(error) => {
                debug!(%error, "engine does not answer /version");
                tokio::time::sleep(every).await;
                continue;
            }
        };
        if comeback {
            restarts += 1;
            match &known {
                Some(before) if before.version != engine.version => {
                    warn!(from = %before.version, to = %engine.version, "engine restarted with another version")
                }
                _ => info!(version = %engine.version, "engine restarted (or the link to it broke): it answers again"),
            }
        } else if known.is_none() {
            info!(version = %engine.version, api_version = %engine.api_version, containerd_store = engine.containerd_store, "engine found");
        }
        let engine = Engine { restarts, ..engine };
        builder.set_engine(engine.clone());
        known = Some(engine);
        // Daemon events are rare (a configuration reload): the stream stays quiet until the
        // engine stops and ends it. Refresh the versions meanwhile.
        let options = EventsOptions { filters: Some(filters.clone()), ..Default::default() };
        let mut events = docker.events(Some(options));
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        warn!(%error, "engine event stream ended: the engine stopped or the link broke");
                        break;
                    }
                    None => {
                        warn!("engine event stream ended: the engine stopped or the link broke");
                        break;
                    }
                },
                _ = refresh.tick() => {
                    if let Ok(engine) = read(&docker).await {
                        let engine = Engine { restarts, ..engine };
                        builder.set_engine(engine.clone());
                        known = Some(engine);
                    }
                }
            }
        }
        comeback = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The engine's `/version` and `/info`.
async fn read(docker: &Docker) -> Result<Engine, bollard::errors::Error> {
    let version = docker.version().await?;
    let info = docker.info().await?;
    let containerd_store = info
        .driver_status
        .unwrap_or_default()
        .iter()
        .any(|pair| pair.get(1).is_some_and(|v| v == CONTAINERD_SNAPSHOTTER));
    Ok(Engine {
        version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
        platform: format!("{}/{}", version.os.unwrap_or_default(), version.arch.unwrap_or_default()),
        containerd_store,
        restarts: 0,
    })
}
