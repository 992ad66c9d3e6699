//! The text exposition of `/metrics`: the counters' text kept between scrapes, and the live
//! series and the process's own rendered at each.

use std::sync::{Arc, Mutex};

use prometheus::{Encoder, Registry, TextEncoder};

use crate::views::counters::Counters;
use crate::views::live::Live;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text of `/metrics`: the counters' text is kept from one scrape to the next until one of
/// them changes (they change when builds start or finish, far less often than Prometheus
/// scrapes), so a scrape renders only the live series and the process's own.
pub struct Exposition {
    /// The counters and histograms ([`Counters`]), and the build info.
    counters: Registry,
    /// Tells when the counters changed.
    changes: Arc<Counters>,
    /// The builders' state as of each scrape.
    live: Live,
    /// The process collector.
    process: Registry,
    /// The counters' text, and the count of changes it was rendered at.
    cached: Mutex<Option<(u64, String)>>,
}

impl Exposition {
    /// The exposition of `counters` (registered in `counters_registry`), of `live` and of
    /// what is registered in `process`.
    pub fn new(counters_registry: Registry, counters: Arc<Counters>, live: Live, process: Registry) -> Exposition {
        Exposition { counters: counters_registry, changes: counters, live, process, cached: Mutex::new(None) }
    }

    /// The whole text exposition.
    pub fn render(&self) -> String {
        let changes = self.changes.changes();
        let mut out = {
            let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let text = match &*cached {
                Some((at, text)) if *at == changes => text,
                _ => &cached.insert((changes, encode(&self.counters))).1,
            };
            // Room for the live series too, so that appending them rarely moves the text.
            let mut out = String::with_capacity(text.len() + text.len() / 2);
            out.push_str(text);
            out
        };
        // Their names (`buildkit_…`) sort before the process's (`process_…`), so the
        // families stay in the order one registry would give them.
        self.live.render(&mut out);
        out.push_str(&encode(&self.process));
        out
    }
}

/// Renders every metric of `registry` in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("text exposition is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Builder;
    use crate::model::Event;
    use crate::views::live::tests::{info, progress, succeeded};

    /// The daemon's exposition of one builder, wired as `serve` wires it.
    fn exposition() -> (Exposition, Arc<Builder>) {
        let (exposition, _, builder) = crate::views::one_builder();
        (exposition, builder)
    }

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_scrape_only_reads() {
        let (exposition, builder) = exposition();
        builder.apply(Event::Started(info("r1")));
        builder.apply(progress("r1", 1, Some("app")));
        let changes = exposition.changes.changes();
        exposition.render();
        assert_eq!(exposition.changes.changes(), changes, "a scrape changed the counters");
    }

    #[test]
    fn the_kept_counters_text_is_never_stale() {
        let (exposition, builder) = exposition();
        let completed = r#"buildkit_builds_completed_total{builder="default",name="app",result="succeeded"}"#;
        let first = exposition.render();
        assert_eq!(exposition.render(), first, "nothing changed");
        builder.apply(Event::Started(info("r1")));
        builder.apply(progress("r1", 1, Some("app")));
        // The scrape that first sees the build shows its counters at zero already.
        assert_eq!(value(&exposition.render(), completed), Some("0"));
        builder.apply(succeeded("r1", 110.0));
        assert_eq!(value(&exposition.render(), completed), Some("1"));
        builder.count_reconnect();
        let text = exposition.render();
        assert_eq!(value(&text, r#"buildkit_exporter_source_reconnects_total{builder="default"}"#), Some("1"));
        // Every family once, the live ones included.
        for family in ["buildkit_builds_running", "buildkit_builds_completed_total", "buildkit_exporter_source_up"] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family}");
        }
    }

    #[test]
    fn a_builder_that_leaves_the_fleet_takes_every_series_of_its_own_and_no_other() {
        let (exposition, fleet, builder) = crate::views::one_builder();
        let ci = fleet.add("default/ci", String::new()).unwrap();
        for b in [&builder, &ci] {
            b.apply(Event::Started(info("r1")));
            b.apply(progress("r1", 1, Some("app")));
            b.apply(succeeded("r1", 110.0));
            b.count_restart();
        }
        let before = exposition.render();
        let series = |text: &str, builder: &str| text.matches(&format!("builder=\"{builder}\"")).count();
        assert!(series(&before, "default/ci") > 20, "{before}");
        fleet.remove("default/ci");
        let after = exposition.render();
        assert_eq!(series(&after, "default/ci"), 0, "{after}");
        assert_eq!(series(&after, "default"), series(&before, "default"), "the other builder keeps all of its own");
    }
}
