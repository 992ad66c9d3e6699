//! The buildx container builders of one Docker Engine: found through the engine, each watched
//! as a source of its own for as long as its container exists.
//!
//! buildx's "docker-container" driver runs each node of a builder in a container named
//! `buildx_buildkit_<node>`, where the first node of builder `ci` is `ci0`. The engine knows
//! nothing more of them (no label says "builder"), so the name is what finds them. Containers
//! are listed when the engine's container events say one of these came or went, and every
//! [`RELIST`] in case an event was missed; the list is the truth, events only say when to read
//! it.
//!
//! A container that stops stays in the fleet, down with that reason; a container that is
//! removed (`docker buildx rm`) leaves it, with its series: it was removed on purpose, so it is
//! not a source that is down.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use super::spec::{Endpoint, SourceSpec, Transport};
use super::watchers::Watchers;
use super::SourceOptions;
use crate::fleet::Fleet;

/// The prefix of the name of every buildx container builder's container.
const PREFIX: &str = "buildx_buildkit_";
/// How often the containers are listed even when no event came.
const RELIST: Duration = Duration::from_secs(30);
/// Wait before following the engine's events again after they ended.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// The `builder` label of the node in container `container`, on the engine whose source is
/// `engine`: `ENGINE/BUILDER` for a builder's first node (`buildx_buildkit_ci0` is `ci`), and
/// `ENGINE/NODE` for any other, so two nodes never share a label. `None` for other containers.
fn label(engine: &str, container: &str) -> Option<String> {
    let node = container.trim_start_matches('/').strip_prefix(PREFIX)?;
    let builder = match node.strip_suffix('0') {
        Some(builder) if !builder.is_empty() => builder,
        _ => node,
    };
    (!builder.is_empty()).then(|| format!("{engine}/{builder}"))
}

/// The container builders of one engine in the fleet; dropping it (when the engine's source
/// ends) stops their sources and takes them out.
struct Builders {
    engine: String,
    transport: Transport,
    /// Their sources, by label.
    watchers: Watchers,
    /// The label of each container watched.
    labels: HashMap<String, String>,
    /// Labels already said to be taken, so that it is said once.
    refused: BTreeSet<String>,
}

/// Keeps the container builders of the engine at `transport` (the source named `engine`) in
/// `fleet`, until dropped.
pub(super) async fn follow(
    docker: Docker,
    engine: String,
    transport: Transport,
    fleet: Arc<Fleet>,
    options: SourceOptions,
) {
    let watchers = Watchers::new(fleet, options);
    let mut builders = Builders { engine, transport, watchers, labels: HashMap::new(), refused: BTreeSet::new() };
    let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
    loop {
        // Events first, then the list: a container that comes between the two is in the list.
        let mut events = docker.events(Some(EventsOptions { filters: Some(filters.clone()), ..Default::default() }));
        builders.relist(&docker).await;
        let mut relist = tokio::time::interval_at(tokio::time::Instant::now() + RELIST, RELIST);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let actor = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                        if actor.get("name").is_some_and(|name| name.starts_with(PREFIX)) {
                            builders.relist(&docker).await;
                        }
                    }
                    Some(Err(error)) => {
                        debug!(%error, "container events ended");
                        break;
                    }
                    None => break,
                },
                _ = relist.tick() => builders.relist(&docker).await,
            }
        }
        tokio::time::sleep(EVENTS_RETRY).await;
    }
}

impl Builders {
    /// Lists the engine's container builders and makes the fleet match. An engine that does
    /// not answer changes nothing: its builders' own sources say they are down.
    async fn relist(&mut self, docker: &Docker) {
        self.watchers.revive();
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("name".to_string(), vec![PREFIX.to_string()])])),
            ..Default::default()
        };
        let listed = match docker.list_containers(Some(options)).await {
            Ok(listed) => listed,
            Err(error) => {
                debug!(%error, "container builders not listed");
                return;
            }
        };
        // The name filter matches anywhere in the name: keep those that start with it.
        let present: BTreeSet<String> = listed
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|name| name.trim_start_matches('/').to_string())
            .filter(|name| name.starts_with(PREFIX))
            .collect();
        let gone: Vec<String> = self.labels.keys().filter(|name| !present.contains(*name)).cloned().collect();
        for container in gone {
            if let Some(label) = self.labels.remove(&container) {
                self.watchers.stop(&label).await;
                info!(builder = %label, %container, "container builder removed: no longer watched");
            }
        }
        for container in present {
            if !self.labels.contains_key(&container) {
                self.add(container);
            }
        }
    }

    fn add(&mut self, container: String) {
        let Some(label) = label(&self.engine, &container) else { return };
        let endpoint = Endpoint::Container { engine: self.transport.clone(), container: container.clone() };
        match self.watchers.start(SourceSpec { name: label.clone(), endpoint }) {
            Ok(()) => {
                info!(builder = %label, %container, "container builder found");
                self.labels.insert(container, label);
            }
            Err(taken) => {
                if self.refused.insert(label.clone()) {
                    warn!(%taken, %container, "a container builder is not watched");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_is_named_after_its_first_node_and_other_nodes_keep_theirs() {
        assert_eq!(label("default", "/buildx_buildkit_ci0").as_deref(), Some("default/ci"));
        assert_eq!(label("host-a", "buildx_buildkit_builder-3f2a0").as_deref(), Some("host-a/builder-3f2a"));
        // A builder whose name ends in a digit: its first node is still the name and a 0.
        assert_eq!(label("default", "buildx_buildkit_ci20").as_deref(), Some("default/ci2"));
        assert_eq!(label("default", "buildx_buildkit_ci1").as_deref(), Some("default/ci1"));
        assert_eq!(label("default", "buildx_buildkit_mynode").as_deref(), Some("default/mynode"));
        assert_eq!(label("default", "buildx_buildkit_0").as_deref(), Some("default/0"));
        for other in ["buildx_buildkit_", "my_buildx_buildkit_ci0", "web", "buildkitd"] {
            assert_eq!(label("default", other), None, "{other}");
        }
    }
}
