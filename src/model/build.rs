//! The state of one running build: its vertices as progress reported them (masked on the way
//! in), which of them are steps and in what order, and what identifies its Dockerfile.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::event::{BuildContext, BuildInfo, Failure, Progress, Time};
use super::mask::Mask;
use super::name;
use super::output::Tail;
use super::step::{StepKind, StepState};

/// A vertex of a running build.
#[derive(Debug, Clone)]
pub(super) struct Vertex {
    /// Announcement order, for stable display.
    seq: u32,
    /// Masked display name.
    name: String,
    /// Parsed from `name`.
    pub kind: StepKind,
    pub started: Option<Time>,
    pub completed: Option<Time>,
    pub cached: bool,
    /// Masked error text.
    pub error: Option<String>,
    /// The last lines it printed, while it runs (and after, if it failed); when kept at all.
    pub output: Option<Box<Tail>>,
    /// BuildKit ran it once for this build and an earlier one running at the same time
    /// (deduplication): it is this build's step, run by the other.
    pub shared: bool,
}

impl Vertex {
    pub fn state(&self) -> StepState {
        match (self.error.is_some(), self.completed.is_some(), self.started.is_some()) {
            (true, _, _) => StepState::Failed,
            (false, true, _) if self.cached => StepState::Cached,
            (false, true, _) => StepState::Done,
            (false, false, true) => StepState::Running,
            (false, false, false) => StepState::Pending,
        }
    }

    /// Stable identity across builds: stage plus instruction text.
    pub fn key(&self) -> String {
        match &self.kind {
            StepKind::Dockerfile { stage, .. } => {
                let text = self.name.split_once(']').map_or(self.name.as_str(), |(_, t)| t.trim());
                format!("{}|{text}", stage.as_deref().unwrap_or(""))
            }
            _ => self.name.clone(),
        }
    }

    /// The bracketed position, e.g. `[base 3/4]`; empty for free-form steps.
    pub fn label(&self) -> &str {
        match &self.kind {
            StepKind::Dockerfile { label, .. } => label,
            _ => "",
        }
    }

    /// The instruction's arguments, or the whole name of a free-form step.
    pub fn command(&self) -> &str {
        match &self.kind {
            StepKind::Dockerfile { command, .. } => command,
            _ => &self.name,
        }
    }
}

/// A build held as running.
#[derive(Debug, Clone)]
pub(super) struct Build {
    pub info: BuildInfo,
    /// Masks the build's build-arg values out of everything kept from it.
    pub mask: Mask,
    pub last_progress: Time,
    /// Vertices by digest.
    vertices: BTreeMap<String, Vertex>,
    /// Image reference from the `naming to` status, masked.
    pub export_image: Option<String>,
    /// Titles of its warnings, masked, each once, at most [`MAX_WARNING_TITLES`].
    pub warnings: Vec<String>,
    /// Its context, masked once: every snapshot shares it.
    pub context: Arc<BuildContext>,
    /// The name and instructions last announced in an [`Effect::BuildNamed`](super::Effect).
    pub announced: Option<(String, Vec<&'static str>)>,
    /// Where it failed, masked, when that was read before its completion was applied.
    pub failure: Option<Failure>,
    /// Image IDs of its `FROM` steps, by the step's text, where the engine said.
    pub images: BTreeMap<String, String>,
}

/// Most warning titles kept per build: a build that warns on every line still shows what
/// kind of warnings it has, and its count says how many.
const MAX_WARNING_TITLES: usize = 20;

impl Build {
    pub fn new(info: BuildInfo) -> Self {
        let mask = Mask::new(&info.secrets);
        Build {
            last_progress: info.created_at,
            context: Arc::new(shown_context(&info.context, &mask)),
            mask,
            info,
            vertices: BTreeMap::new(),
            export_image: None,
            warnings: Vec::new(),
            announced: None,
            failure: None,
            images: BTreeMap::new(),
        }
    }

    /// Folds in one progress message; `output_lines` of each step's output are kept.
    pub fn apply(&mut self, progress: &Progress, output_lines: usize) {
        if let Some(at) = progress.at {
            self.last_progress = self.last_progress.max(at);
        }
        // With several tags, the first: the record names the build by its first tag too
        // (newer engines), so name and tag agree.
        if let (None, Some(image)) = (&self.export_image, &progress.image) {
            self.export_image = Some(self.mask.apply(image).into_owned());
        }
        for title in &progress.warnings {
            let title = self.mask.apply(title);
            if self.warnings.len() < MAX_WARNING_TITLES && !self.warnings.iter().any(|t| *t == title) {
                self.warnings.push(title.into_owned());
            }
        }
        let mut renamed = false;
        for update in &progress.vertexes {
            let next_seq = self.vertices.len() as u32;
            let name = self.mask.apply(&update.name);
            let vertex = self.vertices.entry(update.digest.clone()).or_insert_with(|| Vertex {
                seq: next_seq,
                kind: StepKind::Other,
                name: String::new(),
                started: None,
                completed: None,
                cached: false,
                error: None,
                output: None,
                shared: false,
            });
            if vertex.name != name {
                vertex.kind = StepKind::parse(&name);
                vertex.name = name.into_owned();
                renamed = true;
            }
            vertex.started = update.started.or(vertex.started);
            vertex.completed = update.completed;
            vertex.cached = update.cached;
            vertex.error = update.error.as_ref().map(|e| self.mask.apply(e).into_owned());
            // What a step printed matters while it runs, and when it failed.
            if vertex.completed.is_some() && vertex.error.is_none() {
                vertex.output = None;
            }
        }
        if renamed && self.vertices.values().any(|v| v.shared) {
            self.own_positions();
        }
        if output_lines > 0 {
            for (digest, chunk) in &progress.logs {
                if let Some(vertex) =
                    self.vertices.get_mut(digest).filter(|v| v.started.is_some() && v.completed.is_none())
                {
                    vertex.output.get_or_insert_with(Default::default).push(chunk, output_lines, &self.mask);
                }
            }
        }
    }

    /// Whether it has a vertex of `digest`.
    pub fn has(&self, digest: &str) -> bool {
        self.vertices.contains_key(digest)
    }

    /// Marks the vertex of `digest` as run by another build (see [`Vertex::shared`]), and gives
    /// it this build's own position.
    pub fn share(&mut self, digest: &str) {
        if let Some(vertex) = self.vertices.get_mut(digest) {
            vertex.shared = true;
        }
        self.own_positions();
    }

    /// Gives shared steps this build's own stage and step count. BuildKit names a vertex it runs
    /// for several builds once, as the build that asked first numbers it (`[2/3]` in a 4-step
    /// build): the position within the stage is the same in both (the vertex's whole chain of
    /// inputs is), the stage and the count are the other build's. Where this build's own steps
    /// are all of one stage, the shared ones are taken to be of it too; a build of several
    /// stages keeps BuildKit's names.
    fn own_positions(&mut self) {
        let own: std::collections::BTreeSet<(Option<String>, u32)> = self
            .vertices
            .values()
            .filter(|v| !v.shared)
            .filter_map(|v| match &v.kind {
                StepKind::Dockerfile { stage, total, .. } => Some((stage.clone(), *total)),
                _ => None,
            })
            .collect();
        let Some((own_stage, own_total)) = own.iter().next().filter(|_| own.len() == 1).cloned() else { return };
        for vertex in self.vertices.values_mut().filter(|v| v.shared) {
            if let StepKind::Dockerfile { label, stage, index, total, .. } = &mut vertex.kind {
                if (stage.as_ref(), *total) != (own_stage.as_ref(), own_total) && *index <= own_total {
                    let position = format!("{index}/{own_total}");
                    *label = match &own_stage {
                        Some(own) => format!("[{own} {position}]"),
                        None => format!("[{position}]"),
                    };
                    *stage = own_stage.clone();
                    *total = own_total;
                }
            }
        }
    }

    /// How many vertices it has announced.
    pub fn vertex_count(&self) -> usize {
        self.vertices.len()
    }

    /// The vertices that count as steps, in Dockerfile order: Dockerfile steps when there are
    /// any, else every vertex that is not BuildKit's own bookkeeping (in announcement order).
    pub fn steps(&self) -> Vec<&Vertex> {
        let dockerfile = self.vertices.values().any(|v| matches!(v.kind, StepKind::Dockerfile { .. }));
        let mut steps: Vec<&Vertex> = self
            .vertices
            .values()
            .filter(|v| match v.kind {
                StepKind::Dockerfile { .. } => true,
                StepKind::Other => !dockerfile,
                StepKind::Internal => false,
            })
            .collect();
        // Dockerfile order: stages as they were first announced, steps by index within each.
        let mut stage_order: HashMap<Option<&str>, u32> = HashMap::new();
        for v in &steps {
            if let StepKind::Dockerfile { stage, .. } = &v.kind {
                let first = stage_order.entry(stage.as_deref()).or_insert(v.seq);
                *first = (*first).min(v.seq);
            }
        }
        steps.sort_by_key(|v| match &v.kind {
            StepKind::Dockerfile { stage, index, .. } => (stage_order[&stage.as_deref()], *index, v.seq),
            _ => (v.seq, 0, v.seq),
        });
        steps
    }

    /// Identifies the Dockerfile by its `steps`: the same step list gives the same key.
    pub fn steps_key(steps: &[&Vertex]) -> Option<u64> {
        let mut names: Vec<&str> = steps.iter().map(|v| v.name.as_str()).collect();
        if names.is_empty() {
            return None;
        }
        names.sort_unstable();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        names.hash(&mut hasher);
        Some(hasher.finish())
    }

    /// The name the build declares: its record's, else its export's.
    pub fn declared_name(&self) -> Option<String> {
        let from_record = self.info.image.as_deref().and_then(|image| name::repository(&self.mask.apply(image)));
        from_record.or_else(|| self.export_image.as_deref().and_then(name::repository))
    }

    /// `repository:tag` of the image it exports, from its `naming to` status.
    pub fn tag(&self) -> Option<String> {
        // A digest (`app@sha256:…`) is not a tag.
        let image = self.export_image.as_deref()?.split('@').next()?;
        let repository = name::repository(image)?;
        let tag = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t);
        Some(tag.map_or(repository.clone(), |t| format!("{repository}:{t}")))
    }
}

/// Most characters of a failure's Dockerfile lines kept.
const MAX_LOCATION_CHARS: usize = 2000;

/// `failure` as views may show it: masked with `mask`, its Dockerfile lines cut to
/// [`MAX_LOCATION_CHARS`].
pub(super) fn shown_failure(failure: Failure, mask: &Mask) -> Failure {
    Failure {
        location: failure.location.map(|mut location| {
            location.file = mask.apply(&location.file).into_owned();
            // Masked whole, then cut: a cut first could split a value and leave part of it.
            let mut text = mask.apply(&location.text).into_owned();
            if let Some((cut, _)) = text.char_indices().nth(MAX_LOCATION_CHARS) {
                text.truncate(cut);
                text.push('…');
            }
            location.text = text;
            location
        }),
        exit_code: failure.exit_code,
    }
}

/// `context` as views may show it: build-arg values masked, credentials in URLs cut.
fn shown_context(context: &BuildContext, mask: &Mask) -> BuildContext {
    let text = |value: &Option<String>| value.as_deref().map(|v| without_credentials(&mask.apply(v)));
    BuildContext {
        context: text(&context.context),
        dockerfile: text(&context.dockerfile),
        target: text(&context.target),
        platforms: context.platforms.iter().map(|p| mask.apply(p).into_owned()).collect(),
        vcs_source: text(&context.vcs_source),
        vcs_revision: text(&context.vcs_revision),
        build_args: context.build_args.iter().map(|a| mask.apply(a).into_owned()).collect(),
    }
}

/// `url` without the user and password a remote context may carry
/// (`https://user:token@host/repo.git` → `https://host/repo.git`).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_cut_from_urls() {
        assert_eq!(without_credentials("https://bob:tok3n@github.com/o/r.git#main"), "https://github.com/o/r.git#main");
        assert_eq!(without_credentials("https://github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(without_credentials("git@github.com:o/r.git"), "git@github.com:o/r.git");
        assert_eq!(without_credentials("https://host/path@v1"), "https://host/path@v1");
    }

    #[test]
    fn the_context_shows_names_and_masks_values() {
        let info = BuildInfo {
            reference: "r".into(),
            secrets: vec!["s3cret-token".into()],
            context: BuildContext {
                context: Some("https://ci:s3cret-token@git.example.com/app.git".into()),
                target: Some("stage-s3cret-token".into()),
                build_args: vec!["TOKEN".into()],
                ..BuildContext::default()
            },
            ..BuildInfo::default()
        };
        let context = Build::new(info).context;
        assert_eq!(context.context.as_deref(), Some("https://git.example.com/app.git"));
        assert_eq!(context.target.as_deref(), Some("stage-***"));
        assert_eq!(context.build_args, vec!["TOKEN"]);
    }
}
