//! Reading the Prometheus text exposition the daemon serves: its samples, by metric and labels.

/// One sample line of an exposition.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// `metric{labels}`, as written.
    pub series: &'a str,
    pub metric: &'a str,
    /// The labels as written between the braces, escapes kept; empty without braces.
    pub labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// Whether its labels include every `(name, value)` of `with`.
    pub fn has(&self, with: &[(&str, &str)]) -> bool {
        with.iter().all(|(name, value)| label(self.labels, name) == *value)
    }
}

/// Every sample of `metrics`, in order.
pub fn all(metrics: &str) -> impl Iterator<Item = Sample<'_>> {
    metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
        let labels = labels.strip_suffix('}').expect("labels end with a brace");
        Some(Sample { series, metric, labels, value: value.parse().expect("sample value") })
    })
}

/// The value of label `name` in `labels` (escapes kept); empty when it has none.
pub fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    let mut rest = labels;
    while let Some((key, after)) = rest.split_once("=\"") {
        // The value ends at the first quote that is not escaped.
        let bytes = after.as_bytes();
        let mut end = 0;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let end = end.min(bytes.len());
        if key.trim_start_matches(',').trim() == name {
            return &after[..end];
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    ""
}

/// Every sample of `name` whose labels include every pair of `with`: its series and value.
pub fn samples(metrics: &str, name: &str, with: &[(&str, &str)]) -> Vec<(String, f64)> {
    all(metrics).filter(|s| s.metric == name && s.has(with)).map(|s| (s.series.to_string(), s.value)).collect()
}

/// The value of the sample of `name` whose labels include every pair of `with`; `None` when
/// there is no such sample, panics when several match.
pub fn sample(metrics: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let found = samples(metrics, name, with);
    assert!(found.len() <= 1, "{name} {with:?} matches {} samples:\n{found:?}", found.len());
    found.first().map(|(_, v)| *v)
}

/// The sum of `name` over the samples whose labels include every pair of `with`.
pub fn sum(metrics: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    all(metrics).filter(|s| s.metric == name && s.has(with)).map(|s| s.value).sum()
}

/// How many samples `name` has.
pub fn count(metrics: &str, name: &str) -> usize {
    all(metrics).filter(|s| s.metric == name).count()
}

/// Builds of `name` counted as finished, whatever their result.
pub fn finished_builds(metrics: &str, name: &str) -> f64 {
    sum(metrics, "buildkit_builds_completed_total", &[("name", name)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x x\n# TYPE x gauge\nx{builder=\"a\",step_name=\"no\",name=\"say \\\"hi\\\", too\"} 2\n\
                        x{builder=\"b\",name=\"other\"} 3\ny 1.5\n";

    #[test]
    fn labels_are_read_whole_escapes_kept() {
        let first = all(TEXT).next().unwrap();
        assert_eq!(label(first.labels, "name"), "say \\\"hi\\\", too");
        assert_eq!(label(first.labels, "builder"), "a");
        assert_eq!(label(first.labels, "step"), "");
        assert_eq!(label("", "name"), "");
    }

    #[test]
    fn samples_by_name_and_labels() {
        assert_eq!(sum(TEXT, "x", &[]), 5.0);
        assert_eq!(sample(TEXT, "x", &[("builder", "b")]), Some(3.0));
        assert_eq!(sample(TEXT, "y", &[]), Some(1.5));
        assert_eq!(sample(TEXT, "x", &[("name", "no")]), None);
        assert_eq!(count(TEXT, "x"), 2);
        assert_eq!(samples(TEXT, "y", &[]), [("y".to_string(), 1.5)]);
    }
}
