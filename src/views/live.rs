//! The point-in-time series: written from the builders' snapshots and facts at each scrape,
//! so a build's series go when it does.

use std::borrow::Cow;
use std::sync::Arc;

use crate::facts::Facts;
use crate::fleet::Fleet;
use crate::model::{LastFailure, RunningBuild};
use crate::views::series::{self, Samples};

/// Longest failure message in a label.
const MAX_MESSAGE_CHARS: usize = 200;

/// Series of the builders' state as of each scrape.
pub struct Live {
    fleet: Arc<Fleet>,
    /// Where users reach the exporter, for links to builds' pages.
    external_url: Option<String>,
}

impl Live {
    /// Point-in-time series for the builders of `fleet`, as it is at each scrape; links to
    /// builds' pages start with `external_url`, when given.
    pub fn new(fleet: Arc<Fleet>, external_url: Option<String>) -> Live {
        Live { fleet, external_url }
    }

    /// Appends the series, as of now, to `out` in the text format.
    pub fn render(&self, out: &mut String) {
        let now = crate::clock::now();
        // Read first, so the samples can borrow their label values from what was read.
        let builders = self.fleet.builders();
        let states: Vec<(&str, Facts, Vec<RunningBuild>)> =
            builders.iter().map(|b| (b.name.as_str(), b.facts(), b.snapshot(now))).collect();
        let failures: Vec<(&str, Vec<FailureLabels>)> = builders
            .iter()
            .map(|b| (b.name.as_str(), b.last_failures().iter().map(|f| self.failure_labels(&b.name, f)).collect()))
            .collect();
        let mut samples = Samples::default();
        for (builder, failures) in &failures {
            for failure in failures {
                let [name, step, instruction, command, location, exit_code, message, url] =
                    failure.each_ref().map(|v| Cow::Borrowed(v.as_str()));
                let labels = [(*builder).into(), name, step, instruction, command, location, exit_code, message, url];
                samples.add(&series::LAST_FAILURE, labels, 1.0);
            }
        }
        for (builder, facts, builds) in &states {
            samples.add(&series::UP, [(*builder).into()], if facts.up { 1.0 } else { 0.0 });
            add_facts(&mut samples, builder, facts);
            samples.add(&series::RUNNING, [(*builder).into()], builds.len() as f64);
            for build in builds {
                add_build(&mut samples, builder, build, now);
            }
        }
        let file_errors = self.fleet.file_errors();
        if let Some(errors) = &file_errors {
            samples.add(&series::FILE_ERRORS, [], errors.len() as f64);
        }
        samples.write(out);
    }
}

/// The label values of a name's last failure after `builder`: name, step, instruction,
/// command, location, exit code, message and link.
type FailureLabels = [String; 8];

impl Live {
    /// The labels of `builder`'s `failure`. The link is the name's, not the build's
    /// (`/builds/last-failed?builder=B&name=N`, which the page resolves to the newest failed
    /// build of the name): a ref in a label would outlive its build here.
    fn failure_labels(&self, builder: &str, failure: &LastFailure) -> FailureLabels {
        let step = failure.step.as_ref();
        let location = failure.failure.as_ref().and_then(|f| f.location.as_ref()).map(|l| match l.end_line {
            Some(end) => format!("{}:{}-{end}", l.file, l.line),
            None => format!("{}:{}", l.file, l.line),
        });
        let exit_code = failure.failure.as_ref().and_then(|f| f.exit_code);
        let url = self.external_url.as_ref().map(|base| {
            format!("{base}/builds/last-failed?builder={}&name={}", query_value(builder), query_value(&failure.name))
        });
        [
            failure.name.clone(),
            step.map(|s| s.label.clone()).unwrap_or_default(),
            step.map(|s| s.instruction.to_string()).unwrap_or_default(),
            step.map(|s| s.command.clone()).unwrap_or_default(),
            location.unwrap_or_default(),
            exit_code.map(|c| c.to_string()).unwrap_or_default(),
            crate::model::step::truncate(&failure.message, MAX_MESSAGE_CHARS),
            url.unwrap_or_default(),
        ]
    }
}

/// `value` as a URL query value: unreserved characters as they are, every other byte
/// percent-encoded.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The series of one running build.
fn add_build<'a>(samples: &mut Samples<'a>, builder: &'a str, build: &'a RunningBuild, now: f64) {
    let view = &build.view;
    let labels = || [Cow::Borrowed(builder), view.reference.as_str().into(), view.name.as_str().into()];
    samples.add(&series::STEPS, labels(), view.counts.total.into());
    samples.add(&series::STEPS_COMPLETED, labels(), view.counts.completed.into());
    samples.add(&series::STEPS_CACHED, labels(), view.counts.cached.into());
    samples.add(&series::CURRENT_STEP, labels(), build.current_step().into());
    samples.add(&series::START_TIME, labels(), view.started_at);
    samples.add(&series::ELAPSED, labels(), (now - view.started_at).max(0.0));
    samples.add(&series::LAST_PROGRESS, labels(), build.last_progress);
    if let Some(estimate) = build.estimate {
        samples.add(&series::ESTIMATED_DURATION, labels(), estimate.total);
        samples.add(&series::ESTIMATED_REMAINING, labels(), estimate.remaining);
    }
    for step in build.running_steps() {
        let [builder, reference, name] = labels();
        let step_labels = [
            builder,
            reference,
            name,
            Cow::Borrowed(step.label.as_str()),
            Cow::Borrowed(step.instruction),
            Cow::Borrowed(step.command.as_str()),
        ];
        samples.add(&series::RUNNING_INFO, step_labels, 1.0);
        let per_step = || {
            let [builder, reference, name] = labels();
            [builder, reference, name, Cow::Borrowed(step.label.as_str())]
        };
        if let Some(started) = step.started {
            samples.add(&series::STEP_START_TIME, per_step(), started);
        }
        if let Some(usual) = step.usual {
            samples.add(&series::STEP_EXPECTED, per_step(), usual);
        }
    }
}

/// The series of what a builder is and holds: its versions, once known, its workers and its
/// build cache.
fn add_facts<'a>(samples: &mut Samples<'a>, builder: &'a str, facts: &'a Facts) {
    if facts.engine.is_some() || facts.buildkit.is_some() {
        let buildkit = facts.buildkit.as_ref().map_or("", |b| b.version.as_str());
        let (version, api) = facts.engine.as_ref().map_or(("", ""), |e| (e.version.as_str(), e.api_version.as_str()));
        let labels = [Cow::Borrowed(builder), version.into(), buildkit.into(), api.into()];
        samples.add(&series::SOURCE_INFO, labels, 1.0);
    }
    let Some(buildkit) = &facts.buildkit else { return };
    for worker in &buildkit.workers {
        let labels = [Cow::Borrowed(builder), worker.id.as_str().into(), worker.platforms.join(",").into()];
        samples.add(&series::WORKER_INFO, labels, 1.0);
    }
    if let Some(cache) = &buildkit.cache {
        for (kind, bytes) in &cache.by_type {
            samples.add(&series::CACHE_BYTES, [Cow::Borrowed(builder), Cow::Borrowed(*kind)], *bytes as f64);
        }
        samples.add(&series::CACHE_RECLAIMABLE, [Cow::Borrowed(builder)], cache.reclaimable as f64);
        samples.add(&series::CACHE_RECORDS, [Cow::Borrowed(builder)], cache.records as f64);
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::builder::Builder;
    use crate::model::{BuildInfo, Completion, Event, Outcome, Progress, VertexUpdate};
    use crate::views::metrics::Exposition;

    /// A builder and the exposition serving it, as the daemon wires them.
    fn daemon() -> (Exposition, Arc<Builder>) {
        let (exposition, _, builder) = crate::views::one_builder();
        (exposition, builder)
    }

    pub(crate) fn info(reference: &str) -> BuildInfo {
        BuildInfo {
            reference: reference.to_string(),
            created_at: 100.0,
            image: None,
            secrets: Vec::new(),
            args: Vec::new(),
            no_cache: None,
            context: Default::default(),
        }
    }

    /// The `COMPLETE` of a build that succeeded at `at`.
    pub(crate) fn succeeded(reference: &str, at: f64) -> Event {
        let info = info(reference);
        Event::Completed(Completion {
            info,
            completed_at: at,
            outcome: Outcome::Succeeded,
            generation: 0,
            warnings: 0,
            failure: None,
        })
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

    fn encode(exposition: &Exposition) -> String {
        exposition.render()
    }

    /// The lines of the exposition that mention `needle`.
    fn lines(exposition: &Exposition, needle: &str) -> Vec<String> {
        encode(exposition).lines().filter(|l| !l.starts_with('#') && l.contains(needle)).map(str::to_string).collect()
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
            let completion = Completion {
                info: info(&reference),
                completed_at: 110.0,
                outcome: result,
                generation: 0,
                warnings: 0,
                failure: None,
            };
            builder.apply(Event::Completed(completion));
        }
        let text = encode(&registry);
        let per_name = text.lines().filter(|l| !l.starts_with('#') && l.contains(r#"name="app""#)).count();
        // 3 completion counters, a 13-bucket histogram (16 series), 3 last-completion times,
        // 3 step counters, the warnings counter and the cache-saved counter.
        assert_eq!(per_name, 27, "{text}");
        // Plus, once per builder and instruction, the step histogram (here: RUN).
        let after = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(after - before, 27 + 17, "{text}");
    }

    #[test]
    fn a_names_last_failure_says_where_and_links_to_its_page_until_a_later_build_succeeds() {
        let registry = prometheus::Registry::new();
        let counters = crate::views::counters::Counters::new(&registry, false);
        let fleet = Fleet::new(crate::model::Settings::default(), counters.clone() as _);
        let builder = fleet.add("default", String::new()).unwrap();
        let live = Live::new(fleet.clone(), Some("https://ci.example.com/buildkit".into()));
        let render = || {
            let mut out = String::new();
            live.render(&mut out);
            out.lines()
                .filter(|l| l.starts_with("buildkit_build_last_failure_info"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let failed_at = |reference: &str, failure: Option<crate::model::Failure>| {
            builder.apply(Event::Started(info(reference)));
            builder.apply(progress(reference, 1, Some("app")));
            let Event::Progress(mut failing) = progress(reference, 1, None) else { unreachable!() };
            failing.vertexes[1].completed = Some(103.0);
            failing.vertexes[1].error = Some("exit code: 3".into());
            builder.apply(Event::Progress(failing));
            let outcome = Outcome::Failed(format!("process did not complete successfully: {}", "x".repeat(300)));
            builder.apply(Event::Completed(Completion {
                info: info(reference),
                completed_at: 110.0,
                outcome,
                generation: 0,
                warnings: 0,
                failure,
            }));
        };
        let location =
            crate::model::Location { file: "Dockerfile".into(), line: 4, end_line: Some(5), text: "RUN make".into() };
        failed_at("r1", Some(crate::model::Failure { location: Some(Box::new(location)), exit_code: Some(3) }));
        let message = format!("process did not complete successfully: {}…", "x".repeat(200 - 40));
        assert_eq!(
            render(),
            [format!(
                r#"buildkit_build_last_failure_info{{builder="default",command="make part-1",exit_code="3",instruction="RUN",location="Dockerfile:4-5",message="{message}",name="app",step="[2/3]",url="https://ci.example.com/buildkit/builds/last-failed?builder=default&name=app"}} 1"#
            )]
        );
        // Without what BuildKit says of where, the labels are empty, not absent; no label
        // names a ref.
        failed_at("r2", None);
        let lines = render();
        assert_eq!(lines.len(), 1, "one per name: {lines:?}");
        assert!(lines[0].contains(r#"exit_code="",instruction="RUN",location="","#), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("r1") || l.contains("r2")), "{lines:?}");
        builder.apply(Event::Started(info("r3")));
        builder.apply(progress("r3", 3, Some("app")));
        builder.apply(succeeded("r3", 120.0));
        assert!(render().is_empty());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("default/ci"), "default%2Fci");
        assert_eq!(query_value("team/app name&x=ü"), "team%2Fapp%20name%26x%3D%C3%BC");
        assert_eq!(query_value("a-b_c.d~e"), "a-b_c.d~e");
    }
}
