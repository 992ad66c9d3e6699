//! The daemon's own `process_*` series (CPU, memory, descriptors, threads), read from `/proc`
//! at most once per [`FRESH_FOR`] however many scrapers ask.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;

/// How long one reading of `/proc` is served. Reading it costs four files and a directory
/// listing per scrape, which is most of a small scrape's time when several scrapers (an HA
/// pair of Prometheus, a federation, a dashboard) ask within the same second. A second is
/// below any sensible scrape interval and the CPU counter moves in whole seconds anyway, so no
/// scraper sees a value older than the resolution it can tell apart.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// [`ProcessCollector`] for this process, its last reading kept for [`FRESH_FOR`].
pub struct Process<C = ProcessCollector> {
    inner: C,
    /// The last reading and when it was made.
    last: Mutex<Option<(Instant, Vec<MetricFamily>)>>,
}

impl Process {
    /// The collector of this process's figures.
    pub fn new() -> Process {
        Process::of(ProcessCollector::for_self())
    }
}

impl Default for Process {
    fn default() -> Self {
        Process::new()
    }
}

impl<C> Process<C> {
    fn of(inner: C) -> Self {
        Process { inner, last: Mutex::new(None) }
    }
}

impl<C: Collector> Collector for Process<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Held while reading: scrapers that arrive meanwhile wait for this reading rather than
        // each making their own.
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*last {
            Some((at, families)) if at.elapsed() < FRESH_FOR => families.clone(),
            _ => last.insert((Instant::now(), self.inner.collect())).1.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntCounter;

    use super::*;

    /// Counts its readings, and serves the count.
    struct Readings(IntCounter);

    impl Collector for Readings {
        fn desc(&self) -> Vec<&Desc> {
            self.0.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            self.0.inc();
            self.0.collect()
        }
    }

    fn value(families: &[MetricFamily]) -> f64 {
        families[0].get_metric()[0].get_counter().get_value()
    }

    #[test]
    fn a_reading_is_served_until_it_is_stale() {
        let process = Process::of(Readings(IntCounter::new("readings", "readings").unwrap()));
        assert_eq!(value(&process.collect()), 1.0);
        assert_eq!(value(&process.collect()), 1.0, "served from the kept reading");
        let kept = process.last.lock().unwrap().take().map(|(at, families)| (at - FRESH_FOR, families));
        *process.last.lock().unwrap() = kept;
        assert_eq!(value(&process.collect()), 2.0, "read again once stale");
    }

    #[test]
    fn the_process_figures_are_served() {
        let names: Vec<String> = Process::new().collect().iter().map(|f| f.name().to_string()).collect();
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }
}
