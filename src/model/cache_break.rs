//! Why a rebuild ran a step that the previous finished build of its name took from cache: the
//! first such step, and a reason read from what BuildKit says of both builds.
//!
//! Vertex digests cannot tell: those of steps that read the build context change on every
//! build, and a classic-store `FROM` keeps its digest when the image behind its tag changes. So
//! steps are matched by stage and position, and the reason comes from the build's attributes
//! (no-cache, build-arg values compared by a keyed hash), the steps' texts, the stage's `FROM`
//! (its text, which names the image's digest where BuildKit resolved one, and the image's ID
//! where the engine said) and the step's instruction.

use std::collections::BTreeMap;

use super::build::{Build, Vertex};
use super::event::NoCache;
use super::mask;
use super::step::{StepKind, StepState};

/// Why the cache broke at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The build asked for no cache (for all stages, or for this step's).
    NoCache,
    /// The step's text changed.
    Instruction,
    /// A build-arg's value changed (or one was added or dropped).
    BuildArg,
    /// The stage's `FROM` now resolves to another image.
    BaseImage,
    /// A `COPY` or `ADD` with the same text, whose files changed: the step itself, or the step
    /// right after one that BuildKit called cached (its `detail` names the COPY).
    Files,
    /// Nothing the builds say explains it (the cache pruned, say).
    Unknown,
}

impl Reason {
    /// Every reason: the `reason` label values.
    pub const ALL: [Reason; 6] =
        [Reason::NoCache, Reason::Instruction, Reason::BaseImage, Reason::BuildArg, Reason::Files, Reason::Unknown];

    /// The `reason` label value, as the JSON says it.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoCache => "no-cache",
            Reason::Instruction => "instruction",
            Reason::BuildArg => "build-arg",
            Reason::BaseImage => "base-image",
            Reason::Files => "files",
            Reason::Unknown => "unknown",
        }
    }
}

/// Where a build's cache broke, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheBreak {
    /// The step, e.g. `[4/7]`.
    pub step: String,
    /// Its instruction, e.g. `COPY`.
    pub instruction: &'static str,
    /// Why.
    pub reason: Reason,
    /// What changed, where it can be said: the build-args by name (never their values), the
    /// base image as `FROM` names it now, the step's text before. Masked.
    pub detail: Option<String>,
}

/// What a finished build leaves for the next build of its name to be compared with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Previous {
    /// Its Dockerfile steps by stage and position.
    steps: BTreeMap<(Option<String>, u32), PreviousStep>,
    /// Its build-args: name → keyed hash of the value.
    args: BTreeMap<String, u64>,
    /// Each build-arg as its step texts show it: `***` where the value is masked, the value
    /// itself where it is too short to be (and so in the texts already).
    shown: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
struct PreviousStep {
    instruction: &'static str,
    /// Its text as shown (masked).
    text: String,
    cached: bool,
    /// For a `FROM`: the image's ID, when the engine said.
    image_id: Option<String>,
}

impl Previous {
    /// What `build`, finished, leaves.
    pub(super) fn of(build: &Build) -> Previous {
        let steps = build
            .steps()
            .into_iter()
            // A shared step may keep the other build's stage and position.
            .filter(|v| !v.shared)
            .filter_map(|v| {
                let (stage, index, instruction) = position(v)?;
                let step = PreviousStep {
                    instruction,
                    text: v.command().to_string(),
                    cached: v.state() == StepState::Cached,
                    image_id: image_id(build, v),
                };
                Some(((stage, index), step))
            })
            .collect();
        Previous { steps, args: fingerprints(build), shown: shown(build) }
    }
}

/// Where `build`'s cache broke against `previous`: the first of its steps to start that ran
/// (not from cache, nor for another build) where the previous build's step at the same stage
/// and position came from cache. `FROM` steps are left out: BuildKit marks them cached or not
/// from one build to the next without anything changing.
pub(super) fn find(previous: &Previous, build: &Build) -> Option<CacheBreak> {
    let steps = build.steps();
    let broken = steps
        .iter()
        .filter(|v| !v.shared && matches!(v.state(), StepState::Running | StepState::Done | StepState::Failed))
        .filter_map(|v| {
            let (stage, index, instruction) = position(v)?;
            let before = previous.steps.get(&(stage.clone(), index))?;
            (instruction != "FROM" && before.cached).then_some((*v, stage, before))
        })
        .min_by(|a, b| a.0.started.unwrap_or(f64::MAX).total_cmp(&b.0.started.unwrap_or(f64::MAX)))?;
    let (vertex, stage, before) = broken;
    let (reason, detail) = reason(previous, build, &steps, vertex, &stage, before);
    Some(CacheBreak { step: vertex.label().to_string(), instruction: vertex.kind.instruction(), reason, detail })
}

/// Why `vertex`, of stage `stage`, ran where `before` came from cache.
fn reason(
    previous: &Previous,
    build: &Build,
    steps: &[&Vertex],
    vertex: &Vertex,
    stage: &Option<String>,
    before: &PreviousStep,
) -> (Reason, Option<String>) {
    let no_cache = match &build.info.no_cache {
        Some(NoCache::All) => true,
        Some(NoCache::Stages(stages)) => stage.as_deref().is_some_and(|s| stages.iter().any(|n| stage_is(s, n))),
        None => false,
    };
    if no_cache {
        return (Reason::NoCache, None);
    }
    // BuildKit writes expanded build-arg values into step names: a text that differs only where
    // a changed value shows is the same instruction.
    let now = shown(build);
    let values: Vec<(&str, &str)> = now
        .iter()
        .filter_map(|(name, value)| Some((previous.shown.get(name)?.as_str(), value.as_str())))
        .filter(|(then, now)| then != now)
        .collect();
    if vertex.kind.instruction() != before.instruction || !same_but(&before.text, vertex.command(), &values) {
        let was = super::step::truncate(&format!("{} {}", before.instruction, before.text), MAX_DETAIL_CHARS);
        return (Reason::Instruction, Some(format!("was: {was}")));
    }
    // The stage's base: its `FROM` names another image (a resolved digest), or the engine says
    // the image behind the same name is another one.
    let from = steps.iter().find(|v| matches!(position(v), Some((s, _, "FROM")) if s == *stage));
    if let Some(from) = from {
        let key = (stage.clone(), 1);
        if let Some(then) = previous.steps.get(&key).filter(|s| s.instruction == "FROM") {
            let id = image_id(build, from);
            let renamed = from.command() != then.text;
            let replaced = id.is_some() && then.image_id.is_some() && id != then.image_id;
            if renamed || replaced {
                return (Reason::BaseImage, Some(from.command().to_string()));
            }
        }
    }
    if matches!(vertex.kind.instruction(), "COPY" | "ADD") {
        return (Reason::Files, None);
    }
    let args = fingerprints(build);
    let mut changed: Vec<&str> = args
        .iter()
        .filter(|(name, hash)| previous.args.get(*name) != Some(hash))
        .chain(previous.args.iter().filter(|(name, _)| !args.contains_key(*name)))
        .map(|(name, _)| name.as_str())
        .collect();
    changed.sort_unstable();
    changed.dedup();
    if !changed.is_empty() {
        return (Reason::BuildArg, Some(changed.join(", ")));
    }
    // Its input, the step before it in its stage, is a COPY or ADD that BuildKit called cached:
    // BuildKit 0.13 says so of a COPY whose files changed, and runs the steps after it.
    let index = position(vertex).map_or(0, |(_, index, _)| index);
    let input = steps.iter().find(|v| matches!(position(v), Some((s, i, _)) if s == *stage && i + 1 == index));
    if let Some(input) = input.filter(|v| matches!(v.kind.instruction(), "COPY" | "ADD")) {
        if input.state() == StepState::Cached {
            let detail = format!("{} {} {}", input.label(), input.kind.instruction(), input.command());
            return (Reason::Files, Some(detail));
        }
    }
    (Reason::Unknown, None)
}

/// A Dockerfile step's stage, position and instruction.
fn position(v: &Vertex) -> Option<(Option<String>, u32, &'static str)> {
    match &v.kind {
        StepKind::Dockerfile { stage, index, instruction, .. } => Some((stage.clone(), *index, instruction)),
        _ => None,
    }
}

/// Whether BuildKit's stage label `label` (which may carry a platform, `linux/amd64 base`) is
/// the stage `name` of a `--no-cache-filter`.
fn stage_is(label: &str, name: &str) -> bool {
    label.split_whitespace().last() == Some(name.trim())
}

/// Each build-arg of `build` as its step texts show it: masked, or too short to be.
fn shown(build: &Build) -> BTreeMap<String, String> {
    let show =
        |value: &str| if value.len() >= mask::MIN_MASKED_LEN { mask::MASK.to_string() } else { value.to_string() };
    build.info.args.iter().map(|(name, value)| (name.clone(), show(value))).collect()
}

/// Whether `then` and `now` are the same text but where one shows a build-arg's earlier value
/// and the other its value now (`values`: pairs of what each shows). A value may also stand in
/// a text by coincidence (`sleep 1` beside `ARG V=1`), so each place is tried both ways.
///
/// A search over positions in both texts, each pair visited once: at most
/// ([`MAX_SEARCHED`] + 1)² small steps, whatever the texts; longer texts are compared as they
/// are.
fn same_but(then: &str, now: &str, values: &[(&str, &str)]) -> bool {
    if then == now || values.is_empty() || then.len().max(now.len()) > MAX_SEARCHED {
        return then == now;
    }
    let (then, now) = (then.as_bytes(), now.as_bytes());
    let width = now.len() + 1;
    let mut seen = vec![false; (then.len() + 1) * width];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        if (i, j) == (then.len(), now.len()) {
            return true;
        }
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i < then.len() && j < now.len() && then[i] == now[j] {
            todo.push((i + 1, j + 1));
        }
        for (old, new) in values {
            let (old, new) = (old.as_bytes(), new.as_bytes());
            if !old.is_empty() && then[i..].starts_with(old) && now[j..].starts_with(new) {
                todo.push((i + old.len(), j + new.len()));
            }
        }
    }
    false
}

/// Longest step text in a `detail` (characters).
const MAX_DETAIL_CHARS: usize = 200;

/// Longest step text searched for changed build-arg values (bytes).
const MAX_SEARCHED: usize = 512;

/// The image ID the engine gave for a `FROM` step's image, if it did.
fn image_id(build: &Build, v: &Vertex) -> Option<String> {
    match &v.kind {
        StepKind::Dockerfile { instruction: "FROM", command, .. } => build.images.get(command).cloned(),
        _ => None,
    }
}

/// The build's build-args, each value by its keyed hash.
fn fingerprints(build: &Build) -> BTreeMap<String, u64> {
    build.info.args.iter().map(|(name, value)| (name.clone(), mask::fingerprint(value))).collect()
}

#[cfg(test)]
mod tests {
    use super::{same_but, MAX_SEARCHED};

    #[test]
    fn texts_that_differ_only_where_a_changed_value_shows_are_the_same() {
        let v = [("1", "2")];
        assert!(same_but("echo test 1 && sleep 1", "echo test 2 && sleep 1", &v), "a 1 that is not the value");
        assert!(same_but("make V=1 W=1", "make V=2 W=2", &v));
        assert!(!same_but("echo test 1 && sleep 1", "echo test 2 && sleep 3", &v), "an edit beside the value");
        assert!(!same_but("echo hi", "echo hello", &v));
        assert!(same_but("echo *** x", "echo 7 x", &[("***", "7")]), "a long value, masked, then a short one");
        assert!(!same_but("echo 1", "echo 2", &[]), "nothing changed that could show");
        assert!(same_but("make V=1", "make V=", &[("1", "")]), "a value emptied at the end");
        assert!(!same_but("make V= x", "make V=1 x", &[("", "1")]), "nothing shows where a value was empty");
        let long = "x".repeat(600);
        assert!(!same_but(&format!("{long}1"), &format!("{long}2"), &v), "long texts are compared as they are");
    }

    #[test]
    fn the_search_is_bounded_whatever_the_texts() {
        // Values of every length against a long run of the same byte: each pair of positions
        // is visited once.
        let then = "1".repeat(MAX_SEARCHED);
        let now = format!("{}2", "1".repeat(MAX_SEARCHED - 1));
        let values = [("1", "11"), ("1", ""), ("11", "1"), ("1", "2")];
        assert!(same_but(&then, &now, &values));
        assert!(!same_but(&then, &format!("{}3", "1".repeat(MAX_SEARCHED - 1)), &values));
    }
}
