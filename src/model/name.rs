//! The `name` label: an image repository without registry host, tag or digest, kept to a
//! bounded set of values.

use std::collections::HashSet;
use std::num::NonZeroUsize;

use lru::LruCache;

/// The `name` of a build whose image name is not known (yet).
pub const UNKNOWN: &str = "unknown";
/// The `name` given to builds once the set of distinct names is full.
pub const OVERFLOW: &str = "other";
/// Longest `name` value kept; longer repositories are cut.
const MAX_NAME_LEN: usize = 128;

/// Turns an image reference into the `name` label value.
///
/// `docker.io/library/base-python-pose:latest` → `base-python-pose`,
/// `registry.example.com:5000/team/app@sha256:…` → `team/app`. Returns `None` for an empty or
/// unusable reference.
pub fn repository(reference: &str) -> Option<String> {
    let reference = reference.trim();
    let reference = reference.split('@').next().unwrap_or_default();
    // A tag is a last `:` after the last `/`.
    let without_tag = match (reference.rfind(':'), reference.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &reference[..colon],
        (Some(colon), None) => &reference[..colon],
        _ => reference,
    };
    let mut parts: Vec<&str> = without_tag.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    if parts.len() > 1 && parts[0] == "library" {
        parts.remove(0);
    }
    let name: String = parts
        .join("/")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        .take(MAX_NAME_LEN)
        .collect::<String>()
        .to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The image reference in a `naming to docker.io/library/NAME:TAG` progress status, with the
/// suffix BuildKit adds for pushes (`naming to x:y done`) removed.
/// An untagged build on the containerd image store is named `moby-dangling@sha256:…`: no name.
pub fn naming_to(status_id: &str) -> Option<&str> {
    let reference = status_id.strip_prefix("naming to ")?;
    let reference = reference.split_whitespace().next()?;
    (!reference.is_empty() && !reference.starts_with(DANGLING)).then_some(reference)
}

/// What Docker's containerd image store names an image built without a tag.
const DANGLING: &str = "moby-dangling@";

/// Keeps the `name` label bounded: the first `max` distinct names are kept, later ones become
/// [`OVERFLOW`].
#[derive(Debug)]
pub struct NameSet {
    /// Names already given out as label values.
    known: HashSet<String>,
    /// Most distinct names ever given out.
    max: usize,
}

impl NameSet {
    /// An empty set holding at most `max` names.
    pub fn new(max: usize) -> Self {
        NameSet { known: HashSet::new(), max }
    }

    /// The label value for `name`, recording it as used.
    pub fn admit(&mut self, name: &str) -> String {
        if name == UNKNOWN || self.known.contains(name) {
            return name.to_string();
        }
        if self.known.len() < self.max {
            self.known.insert(name.to_string());
            return name.to_string();
        }
        OVERFLOW.to_string()
    }

    /// The label value for `name`, seen only in the history read at startup: such names take
    /// at most half the bound, so that a long-used engine's history (every test image, every
    /// branch build) never leaves the builds to come named "other".
    pub fn admit_from_history(&mut self, name: &str) -> String {
        if name == UNKNOWN || self.known.contains(name) || self.known.len() < self.max / 2 {
            return self.admit(name);
        }
        OVERFLOW.to_string()
    }

    /// How many names are in use.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no name is in use yet.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The label value of `name` as admitted so far, without admitting it. A running build's
    /// declared name is admitted as soon as it is declared, so what views show of it (and the
    /// series they make exist at zero) is what the finished build will be counted under.
    pub fn peek(&self, name: &str) -> String {
        if name == UNKNOWN || self.known.contains(name) {
            name.to_string()
        } else {
            OVERFLOW.to_string()
        }
    }
}

/// Names learned from finished builds, keyed by their step list, so that a rebuild of the same
/// Dockerfile is named from its first seconds instead of at export time.
#[derive(Debug)]
pub struct LearnedNames {
    /// Step-list key → name; the key learned longest ago is forgotten first.
    by_steps: LruCache<u64, String>,
}

impl LearnedNames {
    /// An empty memory of at most `max` step lists.
    pub fn new(max: usize) -> Self {
        LearnedNames { by_steps: LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN)) }
    }

    /// Remembers that builds with step list `key` are called `name`.
    pub fn learn(&mut self, key: u64, name: &str) {
        if name != UNKNOWN && name != OVERFLOW {
            self.by_steps.put(key, name.to_string());
        }
    }

    /// How many step lists are remembered.
    pub fn len(&self) -> usize {
        self.by_steps.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_steps.is_empty()
    }

    /// The name learned for step list `key`.
    pub fn get(&self, key: u64) -> Option<&str> {
        self.by_steps.peek(&key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_registry_library_tag_and_digest() {
        let cases = [
            ("docker.io/library/base-python-pose:latest", "base-python-pose"),
            ("base-python-pose", "base-python-pose"),
            ("proto:slow", "proto"),
            ("registry.example.com:5000/team/app:1.2", "team/app"),
            ("localhost/app", "app"),
            ("localhost:5000/app:dev", "app"),
            ("ghcr.io/org/tool@sha256:0123", "org/tool"),
            ("team/App_1:x", "team/app_1"),
        ];
        for (input, want) in cases {
            assert_eq!(repository(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(repository(""), None);
        assert_eq!(repository(":tag"), None);
    }

    #[test]
    fn repository_drops_characters_outside_the_reference_grammar() {
        assert_eq!(repository("app\"} 1\nevil").as_deref(), Some("app1evil"));
        assert_eq!(repository(&"a".repeat(500)).map(|n| n.len()), Some(MAX_NAME_LEN));
    }

    #[test]
    fn naming_to_status() {
        assert_eq!(naming_to("naming to docker.io/library/proto:slow"), Some("docker.io/library/proto:slow"));
        assert_eq!(naming_to("naming to docker.io/library/proto:slow done"), Some("docker.io/library/proto:slow"));
        assert_eq!(naming_to("exporting layers"), None);
        // Docker 28.5's containerd store, building without -t.
        assert_eq!(naming_to("naming to moby-dangling@sha256:d3c58cf0 done"), None);
    }

    #[test]
    fn name_set_is_bounded() {
        let mut set = NameSet::new(2);
        assert_eq!(set.admit("a"), "a");
        assert_eq!(set.admit("b"), "b");
        assert_eq!(set.peek("c"), OVERFLOW);
        assert_eq!(set.peek("a"), "a");
        assert_eq!(set.admit("c"), OVERFLOW);
        assert_eq!(set.admit("a"), "a");
        assert_eq!(set.admit(UNKNOWN), UNKNOWN);
    }

    #[test]
    fn learned_names_forget_the_oldest() {
        let mut learned = LearnedNames::new(2);
        learned.learn(1, "a");
        learned.learn(2, "b");
        learned.learn(3, "c");
        assert_eq!(learned.get(1), None);
        assert_eq!(learned.get(3), Some("c"));
        learned.learn(4, UNKNOWN);
        assert_eq!(learned.get(4), None);
    }
}
