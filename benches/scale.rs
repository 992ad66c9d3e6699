//! Does the cost of a scrape and the daemon's memory stay flat however many builds pass? Feeds
//! synthetic 15-step builds (100 names, like a busy CI host) through the real model, counters
//! and exposition, with 20 builds always running, and measures after 1 000, 10 000 and 100 000
//! finished builds: the time to render /metrics and /api/v1/builds, their size, and the resident
//! memory of the process. Writes `benches/scale.md`.
//!
//! `cargo bench --bench scale`

use std::fmt::Write as _;
use std::time::Instant;

use buildkit_exporter::fleet::Fleet;
use buildkit_exporter::model::{BuildInfo, Completion, Event, Outcome, Progress, Settings, VertexUpdate};
use buildkit_exporter::views::api;
use buildkit_exporter::views::counters::Counters;
use buildkit_exporter::views::live::Live;
use buildkit_exporter::views::metrics::Exposition;
use prometheus::Registry;
use testkit::measure::memory;
use testkit::report::Report;

const RUNNING: usize = 20;
const STEPS: usize = 15;

fn progress(reference: &str, at: f64, done_steps: usize) -> Progress {
    let vertexes = (0..STEPS)
        .map(|i| VertexUpdate {
            digest: format!("sha256:{reference}-{i}"),
            name: format!("[{:>2}/{STEPS}] RUN echo step {i} && make target-{i}", i + 1),
            started: (i <= done_steps).then_some(at - 1.0),
            completed: (i < done_steps).then_some(at),
            cached: i % 4 == 0,
            error: None,
        })
        .collect();
    Progress {
        reference: reference.to_string(),
        at: Some(at),
        vertexes,
        image: None,
        warnings: Vec::new(),
        logs: Vec::new(),
    }
}

fn info(reference: &str, n: usize, at: f64) -> BuildInfo {
    BuildInfo {
        reference: reference.to_string(),
        created_at: at,
        image: Some(format!("team/app-{}", n % 100)),
        secrets: vec!["s3cr3t-value".to_string()],
        args: Vec::new(),
        no_cache: None,
        context: Default::default(),
    }
}

fn time_per_call(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let rounds = 200;
    let mut size = 0;
    let start = Instant::now();
    for _ in 0..rounds {
        size = f();
    }
    (start.elapsed().as_secs_f64() * 1e6 / rounds as f64, size)
}

fn main() {
    let registry = Registry::new();
    let counters = Counters::new(&registry, false);
    let fleet = Fleet::new(Settings::default(), counters.clone() as _);
    let builder = fleet.add("default", String::new()).expect("a new fleet has no builder");
    let exposition = Exposition::new(registry, counters, Live::new(fleet.clone(), None), Registry::new());
    for r in 0..RUNNING {
        let reference = format!("running{r}");
        builder.apply(Event::Started(info(&reference, r, 0.0)));
        builder.apply(Event::Progress(progress(&reference, 1.0, r % STEPS)));
    }
    let mut report = Report::new("scale");
    report.write_str(
        "# Scale: scrape cost and memory against history length\n\n\
         Synthetic 15-step builds of 100 names go through the real model, counters and views, with 20 builds \
         always running. After each checkpoint: mean time to render `/metrics` and `/api/v1/builds` (200 \
         renders each, in process, no HTTP; as in the daemon, the counters' text is kept from one render to the next), their size, and the process's resident memory. Release build.\n\n\
         Reproduce: `cargo bench --bench scale`\n\n\
         | finished builds | feed time per build | /metrics render | /metrics size | /api/v1/builds render | JSON size | RSS |\n\
         |---|---|---|---|---|---|---|\n",
    )
    .unwrap();
    let mut fed = 0usize;
    for checkpoint in [1_000usize, 10_000, 100_000] {
        let start = Instant::now();
        let batch = checkpoint - fed;
        while fed < checkpoint {
            let reference = format!("build{fed}");
            let at = fed as f64;
            builder.apply(Event::Started(info(&reference, fed, at)));
            builder.apply(Event::Progress(progress(&reference, at + 5.0, STEPS)));
            let completion = Completion {
                info: info(&reference, fed, at),
                completed_at: at + 6.0,
                outcome: Outcome::Succeeded,
                generation: 0,
                warnings: 0,
                failure: None,
            };
            builder.apply(Event::Completed(completion.clone()));
            builder.apply(Event::Completed(completion));
            fed += 1;
        }
        let feed_us = start.elapsed().as_secs_f64() * 1e6 / batch as f64;
        let (metrics_us, metrics_size) = time_per_call(|| exposition.render().len());
        let (json_us, json_size) = time_per_call(|| api::list(&fleet.builders(), 100.0).len());
        writeln!(
            report,
            "| {checkpoint} | {feed_us:.0} µs | {metrics_us:.0} µs | {} KiB | {json_us:.0} µs | {} KiB | {} MiB |",
            metrics_size / 1024,
            json_size / 1024,
            memory(std::process::id()).0 / 1024
        )
        .unwrap();
    }
    report.finish(true);
}
