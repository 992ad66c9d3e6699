//! What a step is and where it is: its [`StepState`], and what a BuildKit vertex name says about
//! the step it belongs to.
//!
//! The Dockerfile frontend names step vertices `[3/15] RUN ...`, `[base 3/4] RUN ...` or
//! `[linux/amd64 stage-2 2/3] COPY ...`; its bookkeeping vertices are `[internal] ...`,
//! `exporting to image` and the like. Other frontends use free-form names.

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Announced, not started.
    Pending,
    /// Executing.
    Running,
    /// Executed.
    Done,
    /// Taken from cache.
    Cached,
    /// Failed.
    Failed,
}

impl StepState {
    /// Lower-case name used by the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Cached => "cached",
            StepState::Failed => "failed",
        }
    }
}

/// Dockerfile keywords that may become the `instruction` label; anything else is `OTHER`.
const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The `instruction` label for steps that are not Dockerfile instructions.
pub const OTHER_INSTRUCTION: &str = "OTHER";

/// A parsed vertex name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// A Dockerfile step: `[stage i/n] INSTRUCTION args`.
    Dockerfile {
        /// The bracketed prefix as shown to users, e.g. `[base 3/4]`.
        label: String,
        /// Stage name (with platform, when BuildKit shows one), `None` for a single stage.
        stage: Option<String>,
        /// 1-based position within the stage.
        index: u32,
        /// Number of steps of the stage.
        total: u32,
        /// Dockerfile keyword, upper-case, from [`KEYWORDS`] or [`OTHER_INSTRUCTION`].
        instruction: &'static str,
        /// The instruction's arguments as BuildKit shows them.
        command: String,
    },
    /// BuildKit's own work: loading the definition, context and metadata, exporting.
    Internal,
    /// A vertex from another frontend, counted as a step of its own.
    Other,
}

impl StepKind {
    /// Parses a vertex name.
    pub fn parse(name: &str) -> StepKind {
        let name = name.trim();
        if is_internal(name) {
            return StepKind::Internal;
        }
        parse_dockerfile(name).unwrap_or(StepKind::Other)
    }

    /// The `instruction` label value.
    pub fn instruction(&self) -> &'static str {
        match self {
            StepKind::Dockerfile { instruction, .. } => instruction,
            _ => OTHER_INSTRUCTION,
        }
    }
}

fn is_internal(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "[internal]",
        "[auth]",
        "exporting ",
        "exporting to",
        "resolve image config",
        "resolving provenance",
        "importing cache",
        "writing image",
        "naming to",
        "pushing ",
        "sending tarball",
        "copying files",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name.starts_with("docker-image://")
}

fn parse_dockerfile(name: &str) -> Option<StepKind> {
    let rest = name.strip_prefix('[')?;
    let close = rest.find(']')?;
    let inside = &rest[..close];
    let after = rest[close + 1..].trim_start();
    // BuildKit pads the index to the width of the total: `[ 2/15]`.
    let mut words: Vec<&str> = inside.split_whitespace().collect();
    let position = words.pop()?;
    let stage = (!words.is_empty()).then(|| words.join(" "));
    let (index, total) = position.split_once('/')?;
    let index: u32 = index.parse().ok()?;
    let total: u32 = total.parse().ok()?;
    if index == 0 || index > total {
        return None;
    }
    let (keyword, command) = match after.split_once(char::is_whitespace) {
        Some((keyword, command)) => (keyword, command.trim()),
        None => (after, ""),
    };
    let upper = keyword.to_ascii_uppercase();
    let instruction = KEYWORDS.iter().find(|k| **k == upper).copied().unwrap_or(OTHER_INSTRUCTION);
    Some(StepKind::Dockerfile {
        label: match &stage {
            Some(stage) => format!("[{stage} {position}]"),
            None => format!("[{position}]"),
        },
        stage,
        index,
        total,
        instruction,
        command: command.to_string(),
    })
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    let single_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if single_line.chars().count() <= max {
        return single_line;
    }
    let mut cut: String = single_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dockerfile(name: &str) -> (String, Option<String>, u32, u32, &'static str, String) {
        match StepKind::parse(name) {
            StepKind::Dockerfile { label, stage, index, total, instruction, command } => {
                (label, stage, index, total, instruction, command)
            }
            other => panic!("{name:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn single_stage_step() {
        let (label, stage, index, total, instruction, command) =
            dockerfile("[3/15] RUN apt-get update && apt-get install -y python3");
        assert_eq!(label, "[3/15]");
        assert_eq!(stage, None);
        assert_eq!((index, total), (3, 15));
        assert_eq!(instruction, "RUN");
        assert_eq!(command, "apt-get update && apt-get install -y python3");
    }

    #[test]
    fn multi_stage_steps() {
        let (label, stage, index, total, instruction, command) = dockerfile("[base 3/4] RUN echo hi");
        assert_eq!((label.as_str(), stage.as_deref()), ("[base 3/4]", Some("base")));
        assert_eq!((index, total, instruction, command.as_str()), (3, 4, "RUN", "echo hi"));
        let (label, stage, _, _, instruction, command) = dockerfile("[stage-2 2/3] COPY --from=base /out /app");
        assert_eq!((label.as_str(), stage.as_deref()), ("[stage-2 2/3]", Some("stage-2")));
        assert_eq!((instruction, command.as_str()), ("COPY", "--from=base /out /app"));
    }

    #[test]
    fn padded_index() {
        let (label, stage, index, total, _, _) = dockerfile("[ 2/15] WORKDIR /workspace");
        assert_eq!((label.as_str(), stage, index, total), ("[2/15]", None, 2, 15));
        let (label, stage, ..) = dockerfile("[base  3/12] RUN x");
        assert_eq!((label.as_str(), stage.as_deref()), ("[base 3/12]", Some("base")));
    }

    #[test]
    fn platform_prefixed_stage() {
        let (_, stage, index, total, instruction, _) = dockerfile("[linux/amd64 builder 2/5] WORKDIR /src");
        assert_eq!(stage.as_deref(), Some("linux/amd64 builder"));
        assert_eq!((index, total, instruction), (2, 5, "WORKDIR"));
    }

    #[test]
    fn from_without_arguments_and_unknown_keyword() {
        assert_eq!(dockerfile("[1/2] FROM docker.io/library/tinybase:latest").4, "FROM");
        assert_eq!(dockerfile("[2/2] FROBNICATE x").4, OTHER_INSTRUCTION);
        assert_eq!(dockerfile("[2/2] run lower-case").4, "RUN");
    }

    #[test]
    fn internal_vertices() {
        for name in [
            "[internal] load build definition from Dockerfile",
            "[internal] load metadata for docker.io/library/tinybase:latest",
            "[internal] load .dockerignore",
            "[internal] load build context",
            "exporting to image",
            "[auth] library/python:pull token for registry-1.docker.io",
            "resolve image config for docker-image://docker.io/docker/dockerfile:1",
            "docker-image://docker.io/docker/dockerfile:1@sha256:abc",
        ] {
            assert_eq!(StepKind::parse(name), StepKind::Internal, "{name}");
        }
    }

    #[test]
    fn free_form_names() {
        for name in ["compile the thing", "[3/x] RUN nope", "[0/3] RUN nope", "[4/3] RUN nope", "[]"] {
            assert_eq!(StepKind::parse(name), StepKind::Other, "{name}");
        }
        assert_eq!(StepKind::parse("compile").instruction(), OTHER_INSTRUCTION);
    }

    #[test]
    fn truncate_is_bounded_and_single_line() {
        assert_eq!(truncate("echo hi", 20), "echo hi");
        assert_eq!(truncate("a\nb", 20), "a b");
        let long = "é".repeat(300);
        let cut = truncate(&long, 80);
        assert_eq!(cut.chars().count(), 80);
        assert!(cut.ends_with('…'));
    }
}
