//! The point-in-time series: their names, help texts and labels, and how one scrape's samples
//! of them are written in the text format.
//!
//! They are written straight from the builders' state, not kept in the prometheus crate's
//! metric vectors: a vector holds every label set until it is removed, so serving a snapshot
//! through one meant remembering what the last scrape served and removing what went, and its
//! `collect` copies every label set into a new protobuf message at each scrape. The text is
//! the one the crate's `TextEncoder` writes (families by name, series by label values, labels
//! by name), so the exposition reads the same either way (`tests/golden/in-progress.metrics`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A family of gauges.
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    /// Label names, in the order a sample gives their values.
    pub(super) labels: &'static [&'static str],
}

const PER_BUILD: &[&str] = &["builder", "ref", "name"];

pub(super) const STEPS: Family = Family {
    name: "buildkit_build_steps",
    help: "Steps of a running build known so far, all stages.",
    labels: PER_BUILD,
};
pub(super) const STEPS_COMPLETED: Family = Family {
    name: "buildkit_build_steps_completed",
    help: "Steps of a running build completed (executed or cached).",
    labels: PER_BUILD,
};
pub(super) const STEPS_CACHED: Family = Family {
    name: "buildkit_build_steps_cached",
    help: "Steps of a running build that came from cache.",
    labels: PER_BUILD,
};
pub(super) const CURRENT_STEP: Family = Family {
    name: "buildkit_build_current_step",
    help: "Step a running build is at: completed steps + 1, at most the number of steps.",
    labels: PER_BUILD,
};
pub(super) const RUNNING_INFO: Family = Family {
    name: "buildkit_build_step_running_info",
    help: "A step executing now in a running build; always 1.",
    labels: &["builder", "ref", "name", "step", "instruction", "command"],
};
const PER_STEP: &[&str] = &["builder", "ref", "name", "step"];
pub(super) const STEP_START_TIME: Family = Family {
    name: "buildkit_build_step_running_start_time_seconds",
    help: "Unix time a step executing now started.",
    labels: PER_STEP,
};
pub(super) const STEP_EXPECTED: Family = Family {
    name: "buildkit_build_step_running_expected_seconds",
    help: "How long a step executing now usually takes when it runs, learned from earlier builds of the name; absent when never seen running.",
    labels: PER_STEP,
};
pub(super) const START_TIME: Family =
    Family { name: "buildkit_build_start_time_seconds", help: "Unix time a running build started.", labels: PER_BUILD };
pub(super) const ELAPSED: Family = Family {
    name: "buildkit_build_elapsed_seconds",
    help: "Seconds a running build has been running, computed at scrape.",
    labels: PER_BUILD,
};
pub(super) const LAST_PROGRESS: Family = Family {
    name: "buildkit_build_last_progress_time_seconds",
    help: "Unix time of a running build's last progress (vertex, status or log); BuildKit sends no heartbeat.",
    labels: PER_BUILD,
};
pub(super) const ESTIMATED_DURATION: Family = Family {
    name: "buildkit_build_estimated_duration_seconds",
    help: "Expected total duration of a running build, learned from earlier builds of the same name; absent without an estimate.",
    labels: PER_BUILD,
};
pub(super) const ESTIMATED_REMAINING: Family = Family {
    name: "buildkit_build_estimated_remaining_seconds",
    help: "Expected seconds until a running build finishes, computed at scrape; absent without an estimate.",
    labels: PER_BUILD,
};
pub(super) const RUNNING: Family =
    Family { name: "buildkit_builds_running", help: "Builds running now.", labels: &["builder"] };
pub(super) const UP: Family = Family {
    name: "buildkit_exporter_source_up",
    help: "Whether the build history of a source is watched (1: connected, and the replay that opens the connection received) or not (0).",
    labels: &["builder"],
};
pub(super) const LAST_FAILURE: Family = Family {
    name: "buildkit_build_last_failure_info",
    help: "The last build of a name, when it failed: its failing step, Dockerfile location, exit code and message (masked, cut to 200 characters), and with --web.external-url a link to its page; gone once a later build of the name succeeds or is canceled. Always 1.",
    labels: &["builder", "name", "step", "instruction", "command", "location", "exit_code", "message", "url"],
};
pub(super) const FILE_ERRORS: Family = Family {
    name: "buildkit_exporter_source_file_errors",
    help: "Lines of the sources file (--source.file) that are not watched, as last read (see /api/v1/sources); absent without the file.",
    labels: &[],
};
pub(super) const SOURCE_INFO: Family = Family {
    name: "buildkit_exporter_source_info",
    help:
        "Versions of a source's Docker Engine (empty for a standalone buildkitd), its API and its BuildKit; always 1.",
    labels: &["builder", "engine_version", "buildkit_version", "api_version"],
};
pub(super) const CACHE_BYTES: Family = Family {
    name: "buildkit_cache_bytes",
    help: "Size of a builder's build cache by record type, read in the background.",
    labels: &["builder", "type"],
};
pub(super) const CACHE_RECLAIMABLE: Family = Family {
    name: "buildkit_cache_reclaimable_bytes",
    help: "Build cache not in use, which a prune could free.",
    labels: &["builder"],
};
pub(super) const CACHE_RECORDS: Family =
    Family { name: "buildkit_cache_records", help: "Records in a builder's build cache.", labels: &["builder"] };
pub(super) const WORKER_INFO: Family = Family {
    name: "buildkit_worker_info",
    help: "A BuildKit worker and the platforms it builds for (comma-separated, native first); always 1.",
    labels: &["builder", "worker", "platforms"],
};

/// One scrape's samples, borrowed from the state they were read from, by family name.
#[derive(Default)]
pub(super) struct Samples<'a> {
    families: BTreeMap<&'static str, Gathered<'a>>,
}

/// The samples of one family, each with its label values in the order of the sorted label names.
struct Gathered<'a> {
    family: &'static Family,
    /// `family.labels`' positions, by label name.
    by_name: Vec<usize>,
    samples: Vec<(Vec<Cow<'a, str>>, f64)>,
}

impl<'a> Samples<'a> {
    /// Adds a sample of `family` with `values` for its labels, in `family.labels`' order.
    pub(super) fn add<const N: usize>(&mut self, family: &'static Family, values: [Cow<'a, str>; N], value: f64) {
        debug_assert_eq!(family.labels.len(), N, "{}", family.name);
        let gathered = self.families.entry(family.name).or_insert_with(|| {
            let mut by_name: Vec<usize> = (0..family.labels.len()).collect();
            by_name.sort_by_key(|&i| family.labels[i]);
            Gathered { family, by_name, samples: Vec::new() }
        });
        let mut values = values.map(Some);
        let ordered = gathered.by_name.iter().map(|&i| values[i].take().expect("each label once")).collect();
        gathered.samples.push((ordered, value));
    }

    /// Writes every family that has samples to `out`: by name, each with its help and type,
    /// then its series ordered by label values.
    pub(super) fn write(mut self, out: &mut String) {
        for gathered in self.families.values_mut() {
            let family = gathered.family;
            gathered.samples.sort_by(|(a, _), (b, _)| a.cmp(b));
            out.push_str("# HELP ");
            out.push_str(family.name);
            out.push(' ');
            escape(out, family.help, false);
            out.push_str("\n# TYPE ");
            out.push_str(family.name);
            out.push_str(" gauge\n");
            for (values, value) in &gathered.samples {
                out.push_str(family.name);
                for (n, (&i, text)) in gathered.by_name.iter().zip(values).enumerate() {
                    out.push_str(if n == 0 { "{" } else { "," });
                    out.push_str(family.labels[i]);
                    out.push_str("=\"");
                    escape(out, text, true);
                    out.push('"');
                }
                if !values.is_empty() {
                    out.push('}');
                }
                // `f64`'s `Display`, as the crate's encoder writes values.
                let _ = writeln!(out, " {value}");
            }
        }
    }
}

/// Appends `text` with backslashes and line feeds escaped, and double quotes too in a label
/// value, as the text format wants.
fn escape(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{GaugeVec, Opts, Registry, TextEncoder};

    use super::*;

    /// The same samples through the prometheus crate's vectors and encoder.
    fn through_the_crate(samples: &[(&'static Family, Vec<&str>, f64)]) -> String {
        let registry = Registry::new();
        let mut vecs: BTreeMap<&str, GaugeVec> = BTreeMap::new();
        for (family, values, value) in samples {
            let vec = vecs.entry(family.name).or_insert_with(|| {
                let vec = GaugeVec::new(Opts::new(family.name, family.help), family.labels).unwrap();
                registry.register(Box::new(vec.clone())).unwrap();
                vec
            });
            vec.with_label_values(values).set(*value);
        }
        TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    #[test]
    fn the_text_is_the_one_the_crate_writes() {
        let samples: Vec<(&'static Family, Vec<&str>, f64)> = vec![
            (&RUNNING_INFO, vec!["b", "r2", "app", "[2/3]", "RUN", r#"make "all" \ done"#], 1.0),
            (&RUNNING_INFO, vec!["b", "r1", "app", "[1/3]", "COPY", "line\nbreak"], 1.0),
            (&RUNNING_INFO, vec!["a", "r3", "zz", "[1/3]", "RUN", "x"], 1.0),
            (&SOURCE_INFO, vec!["b", "26.1.5", "v0.13.2", "1.45"], 1.0),
            (&SOURCE_INFO, vec!["a", "", "v0.32.2", ""], 1.0),
            (&ELAPSED, vec!["b", "r1", "app"], 12.25),
            (&ELAPSED, vec!["b", "r2", "app"], 0.0),
            (&START_TIME, vec!["b", "r1", "app"], 1795479830.2),
            (&RUNNING, vec!["b"], 2.0),
            (&RUNNING, vec!["a"], 1e21),
            (&CACHE_BYTES, vec!["b", "regular"], 123456789.0),
        ];
        let mut ours = Samples::default();
        for (family, values, value) in &samples {
            match values.as_slice() {
                [a] => ours.add(family, [(*a).into()], *value),
                [a, b] => ours.add(family, [(*a).into(), (*b).into()], *value),
                [a, b, c] => ours.add(family, [(*a).into(), (*b).into(), (*c).into()], *value),
                [a, b, c, d] => ours.add(family, [(*a).into(), (*b).into(), (*c).into(), (*d).into()], *value),
                [a, b, c, d, e, f] => ours.add(
                    family,
                    [(*a).into(), (*b).into(), (*c).into(), (*d).into(), (*e).into(), (*f).into()],
                    *value,
                ),
                other => unreachable!("{other:?}"),
            }
        }
        let mut text = String::new();
        ours.write(&mut text);
        assert_eq!(text, through_the_crate(&samples));
    }

    #[test]
    fn no_sample_writes_nothing() {
        let mut text = String::new();
        Samples::default().write(&mut text);
        assert_eq!(text, "");
    }
}
