//! The sources file (`--source.file`): one source a line, in the `--source` form
//! (`[NAME=]URL[?TLS options]`), `#` comments and blank lines ignored. It is looked at every
//! [`CHECK`] and read again when it changed (a new inode included, which is how a Kubernetes
//! ConfigMap changes), and the watched sources are made to match it: a line removed stops its
//! source and takes its series out, a line added starts one, and a line whose URL changed keeps
//! its builder (and its counters) and watches the new address.
//!
//! A bad line is an error for that line alone, logged with the file and line number and counted
//! in `buildkit_exporter_source_file_errors`; the other lines are watched. A file that cannot be
//! read keeps the sources it named last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::spec::{DockerTls, SourceSpec};
use super::watchers::Watchers;
use super::SourceOptions;
use crate::fleet::Fleet;
use crate::stamp::Stamp;

/// How often the file is looked at.
const CHECK: Duration = Duration::from_secs(1);

/// What the sources file says: the sources of its good lines, by name, and one message per bad
/// line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub sources: BTreeMap<String, SourceSpec>,
    /// Where each source is: `FILE:LINE`.
    pub lines: BTreeMap<String, String>,
    pub errors: Vec<String>,
}

/// Reads the sources file's `text`; `path` names it in errors.
pub fn parse(path: &Path, text: &str, docker_tls: &DockerTls) -> Listed {
    let mut listed = Listed::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), number + 1);
        match SourceSpec::parse(line, false, docker_tls) {
            Ok(spec) if listed.sources.contains_key(&spec.name) => {
                listed.errors.push(format!("{at}: the builder name {:?} is on an earlier line", spec.name));
            }
            Ok(spec) => {
                listed.lines.insert(spec.name.clone(), at);
                listed.sources.insert(spec.name.clone(), spec);
            }
            Err(error) => listed.errors.push(format!("{at}: {error}")),
        }
    }
    listed
}

/// Keeps the sources of the file at `path` watched, until `shutdown` turns true.
pub async fn follow(
    path: PathBuf,
    docker_tls: DockerTls,
    fleet: Arc<Fleet>,
    options: SourceOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watchers = Watchers::new(fleet.clone(), options);
    let mut seen: Option<Option<Stamp>> = None;
    let mut check = tokio::time::interval(CHECK);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        watchers.revive();
        let stamp = Stamp::of(&path);
        if seen.as_ref() == Some(&stamp) {
            continue;
        }
        seen = Some(stamp);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                warn!(file = %path.display(), %error, "sources file not read: the sources it named are kept");
                continue;
            }
        };
        let mut listed = parse(&path, &text, &docker_tls);
        apply(&mut watchers, &mut listed).await;
        for error in &listed.errors {
            warn!(%error, "a line of the sources file is not watched");
        }
        info!(file = %path.display(), sources = listed.sources.len(), errors = listed.errors.len(), "sources file read");
        fleet.set_file_errors(listed.errors);
    }
}

/// Makes `watchers` match `listed`; a name another source has becomes an error of `listed`.
async fn apply(watchers: &mut Watchers, listed: &mut Listed) {
    for name in watchers.names() {
        if !listed.sources.contains_key(&name) {
            watchers.stop(&name).await;
            info!(builder = %name, "source removed from the sources file: no longer watched");
        }
    }
    let mut taken = Vec::new();
    for (name, spec) in &listed.sources {
        match watchers.spec(name) {
            Some(watched) if watched == spec => {}
            Some(_) => {
                info!(builder = %name, address = %spec.endpoint, "source moved in the sources file");
                watchers.replace(spec.clone()).await;
            }
            None => match watchers.start(spec.clone()) {
                Ok(()) => info!(builder = %name, address = %spec.endpoint, "source added from the sources file"),
                Err(_) => taken.push(name.clone()),
            },
        }
    }
    for name in taken {
        listed.sources.remove(&name);
        let at = listed.lines.remove(&name).unwrap_or_default();
        listed.errors.push(format!("{at}: the builder name {name:?} is taken by a --source or a container builder"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::spec::{Endpoint, Transport};

    #[test]
    fn good_lines_are_sources_and_each_bad_line_is_its_own_error() {
        let text = "\
# the farm
farm-1=buildkitd+unix:///run/buildkit/a.sock
  farm-2=buildkitd+tcp://10.0.0.2:1234   # no TLS here

ssh://me@host
farm-1=buildkitd+unix:///run/buildkit/b.sock
buildkitd+unix:///run/buildkit/c.sock
";
        let listed = parse(Path::new("sources.txt"), text, &DockerTls::default());
        let names: Vec<&str> = listed.sources.keys().map(String::as_str).collect();
        assert_eq!(names, ["buildkitd+unix:///run/buildkit/c.sock", "farm-1", "farm-2"]);
        assert_eq!(
            listed.sources["farm-1"].endpoint,
            Endpoint::Buildkitd(Transport::Unix("/run/buildkit/a.sock".into())),
            "the first line of a name wins"
        );
        assert_eq!(listed.errors.len(), 2, "{:?}", listed.errors);
        assert!(listed.errors[0].starts_with("sources.txt:5: \"ssh://me@host\": "), "{}", listed.errors[0]);
        assert_eq!(listed.errors[1], "sources.txt:6: the builder name \"farm-1\" is on an earlier line");
    }
}
