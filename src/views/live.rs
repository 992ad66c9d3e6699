//! The point-in-time series: built from the builders' snapshots at each scrape, so a build's
//! series vanish when it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::builder::Builder;
use crate::facts::Facts;
use crate::model::{RunningBuild, StepView};
use crate::views::series::LiveVecs;

/// Series built from snapshots at scrape time.
pub struct Live {
    builders: Vec<Arc<Builder>>,
    /// The series served, kept from one scrape to the next.
    served: Mutex<Served>,
    /// Empty vectors whose descriptors describe what `collect` returns.
    prototypes: LiveVecs,
}

impl Live {
    /// Point-in-time series for `builders`.
    pub fn new(builders: Vec<Arc<Builder>>) -> Live {
        Live { builders, served: Mutex::new(Served::default()), prototypes: LiveVecs::new() }
    }
}

/// What the last scrape served, so the next one only adds and removes what changed: a build's
/// label sets are made once while it runs, not once per scrape, and go when it does.
struct Served {
    vecs: LiveVecs,
    /// Running builds served, by builder and ref.
    builds: HashMap<String, HashMap<String, ServedBuild>>,
    /// The label sets of each builder's facts served: versions, then each worker's.
    facts: HashMap<String, ServedFacts>,
    /// Counts scrapes, to find the builds the last one did not see.
    scrape: u64,
}

impl Default for Served {
    fn default() -> Self {
        Served { vecs: LiveVecs::new(), builds: HashMap::new(), facts: HashMap::new(), scrape: 0 }
    }
}

/// The label sets of one running build.
struct ServedBuild {
    name: String,
    /// `step`, `instruction` and `command` of each running step served.
    running: Vec<[String; 3]>,
    estimate: bool,
    scrape: u64,
}

impl ServedBuild {
    /// Removes every series of this build, served under `builder` and `reference`.
    fn remove(&self, vecs: &LiveVecs, builder: &str, reference: &str) {
        let labels = [builder, reference, self.name.as_str()];
        for vec in vecs.per_build() {
            let _ = vec.remove_label_values(&labels);
        }
        for [step, instruction, command] in &self.running {
            let _ =
                vecs.running_info.remove_label_values(&[builder, reference, &self.name, step, instruction, command]);
        }
    }
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        self.prototypes.all().into_iter().flat_map(|v| v.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A panic while serving leaves nothing half-done that the next scrape would not redo.
        let mut served = self.served.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Served { vecs, builds: served_builds, facts: served_facts, scrape } = &mut *served;
        *scrape += 1;
        let now = crate::clock::now();
        for builder in &self.builders {
            let name = builder.name.as_str();
            let facts = builder.facts();
            vecs.up.with_label_values(&[name]).set(if facts.up { 1.0 } else { 0.0 });
            serve_facts(vecs, served_facts.entry(name.to_string()).or_default(), name, &facts);
            let builds = builder.snapshot(now);
            vecs.running.with_label_values(&[name]).set(builds.len() as f64);
            if !served_builds.contains_key(name) {
                served_builds.insert(name.to_string(), HashMap::new());
            }
            let served = served_builds.get_mut(name).expect("inserted above");
            for build in &builds {
                self.serve(vecs, served, name, build, now, *scrape);
            }
            served.retain(|reference, build| {
                let stays = build.scrape == *scrape;
                if !stays {
                    build.remove(vecs, name, reference);
                }
                stays
            });
        }
        vecs.all().into_iter().flat_map(|v| v.collect()).collect()
    }
}

impl Live {
    /// Sets the series of one running build, making or removing only the label sets that
    /// changed since the last scrape.
    fn serve(
        &self,
        vecs: &LiveVecs,
        served: &mut HashMap<String, ServedBuild>,
        builder: &str,
        build: &RunningBuild,
        now: f64,
        scrape: u64,
    ) {
        let view = &build.view;
        if let Some(old) = served.get(&view.reference).filter(|old| old.name != view.name) {
            // Renamed (a learned name gave way to the declared one): the old series go.
            old.remove(vecs, builder, &view.reference);
            served.remove(&view.reference);
        }
        let entry = served.entry(view.reference.clone()).or_insert_with(|| ServedBuild {
            name: view.name.clone(),
            running: Vec::new(),
            estimate: false,
            scrape,
        });
        entry.scrape = scrape;
        let labels = [builder, view.reference.as_str(), view.name.as_str()];
        vecs.steps.with_label_values(&labels).set(view.counts.total.into());
        vecs.steps_completed.with_label_values(&labels).set(view.counts.completed.into());
        vecs.steps_cached.with_label_values(&labels).set(view.counts.cached.into());
        vecs.current_step.with_label_values(&labels).set(build.current_step().into());
        vecs.start_time.with_label_values(&labels).set(view.started_at);
        vecs.elapsed.with_label_values(&labels).set((now - view.started_at).max(0.0));
        vecs.last_progress.with_label_values(&labels).set(build.last_progress);
        match build.estimate {
            Some(estimate) => {
                vecs.estimated_duration.with_label_values(&labels).set(estimate.total);
                vecs.estimated_remaining.with_label_values(&labels).set(estimate.remaining);
            }
            None if entry.estimate => {
                let _ = vecs.estimated_duration.remove_label_values(&labels);
                let _ = vecs.estimated_remaining.remove_label_values(&labels);
            }
            None => {}
        }
        entry.estimate = build.estimate.is_some();
        let running: Vec<&StepView> = build.running_steps().collect();
        let same = |served: &[String; 3], step: &StepView| {
            served[0] == step.label && served[1] == step.instruction && served[2] == step.command
        };
        entry.running.retain(|old| {
            let stays = running.iter().any(|step| same(old, step));
            if !stays {
                let [step, instruction, command] = old;
                let _ = vecs.running_info.remove_label_values(&[
                    builder,
                    &view.reference,
                    &view.name,
                    step,
                    instruction,
                    command,
                ]);
            }
            stays
        });
        for step in running {
            if !entry.running.iter().any(|old| same(old, step)) {
                vecs.running_info
                    .with_label_values(&[
                        builder,
                        &view.reference,
                        &view.name,
                        &step.label,
                        step.instruction,
                        &step.command,
                    ])
                    .set(1.0);
                entry.running.push([step.label.clone(), step.instruction.to_string(), step.command.clone()]);
            }
        }
    }
}

/// The label sets of one builder's facts last served.
#[derive(Default, PartialEq)]
struct ServedFacts {
    /// Engine, BuildKit and API versions.
    versions: Option<[String; 3]>,
    /// Each worker's ID and platforms.
    workers: Vec<[String; 2]>,
}

/// Sets the series of what `builder` is and holds; `served` holds the label sets served last,
/// so only a change of version or of workers makes or removes any.
fn serve_facts(vecs: &LiveVecs, served: &mut ServedFacts, builder: &str, facts: &Facts) {
    let mut now_served = ServedFacts::default();
    if facts.engine.is_some() || facts.buildkit.is_some() {
        let buildkit = facts.buildkit.as_ref().map_or("", |b| b.version.as_str());
        let (version, api) = facts.engine.as_ref().map_or(("", ""), |e| (e.version.as_str(), e.api_version.as_str()));
        now_served.versions = Some([version.to_string(), buildkit.to_string(), api.to_string()]);
    }
    if let Some(buildkit) = &facts.buildkit {
        now_served.workers = buildkit.workers.iter().map(|w| [w.id.clone(), w.platforms.join(",")]).collect();
        if let Some(cache) = &buildkit.cache {
            for (kind, bytes) in &cache.by_type {
                vecs.cache_bytes.with_label_values(&[builder, kind]).set(*bytes as f64);
            }
            vecs.cache_reclaimable.with_label_values(&[builder]).set(cache.reclaimable as f64);
            vecs.cache_records.with_label_values(&[builder]).set(cache.records as f64);
        }
    }
    if *served == now_served {
        return;
    }
    if let Some([engine, buildkit, api]) = &served.versions {
        let _ = vecs.source_info.remove_label_values(&[builder, engine, buildkit, api]);
    }
    for [id, platforms] in &served.workers {
        let _ = vecs.worker_info.remove_label_values(&[builder, id, platforms]);
    }
    if let Some([engine, buildkit, api]) = &now_served.versions {
        vecs.source_info.with_label_values(&[builder, engine, buildkit, api]).set(1.0);
    }
    for [id, platforms] in &now_served.workers {
        vecs.worker_info.with_label_values(&[builder, id, platforms]).set(1.0);
    }
    *served = now_served;
}

#[cfg(test)]
pub(crate) mod tests {
    use prometheus::{Registry, TextEncoder};

    use super::*;
    use crate::model::{BuildInfo, Completion, Event, Outcome, Progress, Settings, VertexUpdate};
    use crate::views::counters::Counters;

    /// A builder and the registry serving it, as the daemon wires them.
    fn daemon() -> (Registry, Arc<Builder>) {
        let registry = Registry::new();
        let counters = Counters::new(&registry, false);
        let builder = Builder::new("default", Settings::default(), counters.clone() as _);
        registry.register(Box::new(Live::new(vec![builder.clone()]))).unwrap();
        (registry, builder)
    }

    pub(crate) fn info(reference: &str) -> BuildInfo {
        BuildInfo {
            reference: reference.to_string(),
            created_at: 100.0,
            image: None,
            secrets: Vec::new(),
            context: Default::default(),
        }
    }

    /// The `COMPLETE` of a build that succeeded at `at`.
    pub(crate) fn succeeded(reference: &str, at: f64) -> Event {
        let info = info(reference);
        Event::Completed(Completion { info, completed_at: at, outcome: Outcome::Succeeded, generation: 0, warnings: 0 })
    }

    /// Progress of a three-step build with `done` steps completed and the next one running.
    pub(crate) fn progress(reference: &str, done: usize, image: Option<&str>) -> Event {
        let vertexes = (0..3)
            .map(|i| VertexUpdate {
                digest: format!("sha256:{reference}-{i}"),
                name: format!("[{}/3] RUN make part-{i}", i + 1),
                started: (i <= done).then_some(101.0),
                completed: (i < done).then_some(102.0),
                cached: false,
                error: None,
            })
            .collect();
        Event::Progress(Progress {
            reference: reference.to_string(),
            at: Some(102.0),
            vertexes,
            image: image.map(str::to_string),
            warnings: Vec::new(),
            logs: Vec::new(),
        })
    }

    /// The lines of the exposition that mention `needle`.
    fn encode(registry: &Registry) -> String {
        TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    fn lines(registry: &Registry, needle: &str) -> Vec<String> {
        encode(registry).lines().filter(|l| !l.starts_with('#') && l.contains(needle)).map(str::to_string).collect()
    }

    #[test]
    fn series_follow_the_build_across_scrapes() {
        let (registry, builder) = daemon();
        builder.apply(Event::Started(info("r1")));
        builder.apply(progress("r1", 0, None));
        let running = lines(&registry, "buildkit_build_step_running_info");
        assert_eq!(running.len(), 1, "{running:?}");
        assert!(running[0].contains(r#"step="[1/3]""#) && running[0].contains(r#"name="unknown""#));

        // The next step runs: the first step's series goes, the second's comes.
        builder.apply(progress("r1", 1, None));
        let running = lines(&registry, "buildkit_build_step_running_info");
        assert_eq!(running.len(), 1, "{running:?}");
        assert!(running[0].contains(r#"step="[2/3]""#), "{running:?}");

        // Named at export: nothing stays under the old name.
        builder.apply(progress("r1", 2, Some("docker.io/library/app:latest")));
        assert!(lines(&registry, r#"name="unknown""#).is_empty(), "{:?}", lines(&registry, r#"name="unknown""#));
        assert_eq!(
            lines(&registry, r#"buildkit_build_current_step{builder="default",name="app",ref="r1"} 3"#).len(),
            1
        );
        // The name's counters exist at zero while it runs.
        assert_eq!(lines(&registry, r#"buildkit_builds_completed_total{builder="default",name="app""#).len(), 3);

        // Finished: every series of the running build is gone, the counters took it.
        builder.apply(succeeded("r1", 110.0));
        assert!(lines(&registry, r#"ref="r1""#).is_empty(), "{:?}", lines(&registry, r#"ref="r1""#));
        assert_eq!(
            lines(&registry, r#"buildkit_builds_completed_total{builder="default",name="app",result="succeeded"}"#),
            vec![r#"buildkit_builds_completed_total{builder="default",name="app",result="succeeded"} 1"#]
        );
        assert_eq!(
            lines(&registry, "buildkit_builds_running").last().unwrap(),
            r#"buildkit_builds_running{builder="default"} 0"#
        );
    }

    #[test]
    fn the_default_costs_a_bounded_handful_of_series_per_name() {
        let (registry, builder) = daemon();
        let before = encode(&registry).lines().filter(|l| !l.starts_with('#')).count();
        for (n, result) in
            [Outcome::Succeeded, Outcome::Failed("boom".into()), Outcome::Canceled].into_iter().enumerate()
        {
            let reference = format!("r{n}");
            builder.apply(Event::Started(info(&reference)));
            builder.apply(progress(&reference, 3, Some("app")));
            let completion =
                Completion { info: info(&reference), completed_at: 110.0, outcome: result, generation: 0, warnings: 0 };
            builder.apply(Event::Completed(completion));
        }
        let text = encode(&registry);
        let per_name = text.lines().filter(|l| !l.starts_with('#') && l.contains(r#"name="app""#)).count();
        // 3 completion counters, a 13-bucket histogram (16 series), 3 last-completion times,
        // 3 step counters and the warnings counter.
        assert_eq!(per_name, 26, "{text}");
        // Plus, once per builder and instruction, the step histogram (here: RUN).
        let after = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(after - before, 26 + 17, "{text}");
    }
}
