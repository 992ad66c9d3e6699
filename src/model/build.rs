//! The state of one running build: its vertices as progress reported them (masked on the way
//! in), which of them are steps and in what order, and what identifies its Dockerfile.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use super::event::{BuildInfo, Progress, Time};
use super::mask::Mask;
use super::name;
use super::snapshot::StepState;
use super::step::StepKind;

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
}

impl Build {
    pub fn new(info: BuildInfo) -> Self {
        Build {
            last_progress: info.created_at,
            mask: Mask::new(&info.secrets),
            info,
            vertices: BTreeMap::new(),
            export_image: None,
        }
    }

    pub fn apply(&mut self, progress: &Progress) {
        if let Some(at) = progress.at {
            self.last_progress = self.last_progress.max(at);
        }
        if let Some(image) = &progress.image {
            self.export_image = Some(self.mask.apply(image).into_owned());
        }
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
            });
            if vertex.name != name {
                vertex.kind = StepKind::parse(&name);
                vertex.name = name.into_owned();
            }
            vertex.started = update.started.or(vertex.started);
            vertex.completed = update.completed;
            vertex.cached = update.cached;
            vertex.error = update.error.as_ref().map(|e| self.mask.apply(e).into_owned());
        }
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
        let image = self.export_image.as_deref()?;
        let repository = name::repository(image)?;
        let tag = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t);
        Some(tag.map_or(repository.clone(), |t| format!("{repository}:{t}")))
    }
}
