//! Can one core ingest at least 1 M vertex updates per second? Vertex updates are what a busy
//! host sends most of (every `Status` message of every running build carries a batch), so this
//! is the rate that decides whether ingestion can fall behind the engines it watches.
//!
//! Input is the four builds recorded from a real engine (tests/fixtures/builds.jsonl), fed in
//! process the way the daemon's source does: a build's `STARTED` history event, each message of
//! its `Status` stream, then its `COMPLETE` events, each converted (`source::convert`) and
//! applied to a `Builder` whose effects go to the real `Counters`. No network, no async: only
//! the work done per message. Every round feeds the builds under fresh refs, because the model
//! ignores progress of a build it does not hold as running and does not start a ref it has
//! seen finish: replaying the same refs would measure a lookup, not ingestion.
//!
//! Groups (throughput counted in vertex updates):
//! - `ingest`: the four builds one after another, and 20 builds (five of each) at once with
//!   their messages interleaved, from decoded `StatusResponse`s;
//! - `ingest_wire`: the same from protobuf bytes, decoding included;
//! - `parts`: decoding alone, conversion alone, and the builder (model and counters) alone, to
//!   show where the time goes.
//!
//! After the run, prints per-sample throughput (median and range) from criterion's saved
//! samples. `cargo bench --bench ingest`

#[path = "../tests/support/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEvent, BuildHistoryEventType, StatusResponse};
use buildkit_exporter::builder::Builder;
use buildkit_exporter::model::{Event, Settings};
use buildkit_exporter::source::convert::{self, Clock};
use buildkit_exporter::views::counters::Counters;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput};
use fixture::Recorded;
use prometheus::Registry;
use prost::Message;

/// The daemon's default `--build.name-label`.
const NAME_LABEL: &str = "org.opencontainers.image.title";
/// The daemon's default: step series without the name × instruction detail.
const STEP_DETAIL: bool = false;
/// Builds running at once in the interleaved case.
const CONCURRENT: usize = 20;
/// The target, in vertex updates per second on one core.
const TARGET: f64 = 1e6;

/// One recorded build, as decoded messages and as the bytes they came in.
struct Build {
    reference: String,
    /// `STARTED` history events (one).
    started: Vec<BuildHistoryEvent>,
    /// Its `Status` stream, in order.
    status: Vec<StatusResponse>,
    /// `COMPLETE` history events, in order (BuildKit sends two).
    completed: Vec<BuildHistoryEvent>,
    started_wire: Vec<Vec<u8>>,
    status_wire: Vec<Vec<u8>>,
    completed_wire: Vec<Vec<u8>>,
}

impl Build {
    fn updates(&self) -> u64 {
        self.status.iter().map(|m| m.vertexes.len() as u64).sum()
    }
}

/// The recorded builds, in the order they started. The messages are kept as the recorder wrote
/// them, which is prost's encoding of what the engine sent: re-encoding gives the same bytes.
fn recording() -> Vec<Build> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/builds.jsonl");
    let mut builds: Vec<Build> = Vec::new();
    let find = |builds: &mut Vec<Build>, reference: &str| match builds.iter().position(|b| b.reference == reference) {
        Some(i) => i,
        None => {
            builds.push(Build {
                reference: reference.to_string(),
                started: vec![],
                status: vec![],
                completed: vec![],
                started_wire: vec![],
                status_wire: vec![],
                completed_wire: vec![],
            });
            builds.len() - 1
        }
    };
    for line in fixture::read(&path) {
        match line.item {
            Recorded::History(event) => {
                let Some(record) = &event.record else { continue };
                let i = find(&mut builds, &record.r#ref);
                let build = &mut builds[i];
                match BuildHistoryEventType::try_from(event.r#type) {
                    Ok(BuildHistoryEventType::Started) => {
                        build.started_wire.push(event.encode_to_vec());
                        build.started.push(event);
                    }
                    Ok(BuildHistoryEventType::Complete) => {
                        build.completed_wire.push(event.encode_to_vec());
                        build.completed.push(event);
                    }
                    _ => {}
                }
            }
            Recorded::Status { reference, message } => {
                let i = find(&mut builds, &reference);
                builds[i].status_wire.push(message.encode_to_vec());
                builds[i].status.push(message);
            }
            Recorded::StatusEnd { .. } => {}
        }
    }
    builds.retain(|b| !b.started.is_empty() && !b.status.is_empty() && !b.completed.is_empty());
    assert_eq!(builds.len(), 4, "the recording holds four complete builds");
    builds
}

/// A builder as the daemon makes one, past its opening replay, recording into real counters.
fn builder() -> Arc<Builder> {
    let registry = Registry::new();
    let counters = Counters::new(&registry, STEP_DETAIL);
    let builder = Builder::new("default", Settings::default(), counters as _);
    builder.apply(Event::ReplayDone);
    builder
}

/// A history event as the model event it stands for, moved to build `reference`.
fn history(event: &BuildHistoryEvent, reference: &str, clock: &Clock) -> Event {
    match convert::history(event, NAME_LABEL, clock).expect("a history event with a record") {
        Event::Started(mut info) => {
            info.reference = reference.to_string();
            Event::Started(info)
        }
        Event::Completed(mut completion) => {
            completion.info.reference = reference.to_string();
            Event::Completed(completion)
        }
        other => other,
    }
}

/// Where the messages come from: decoded already, or protobuf bytes decoded on the way.
#[derive(Clone, Copy)]
enum Input {
    Decoded,
    Wire,
}

/// The events one build sends, in stream order, converted for build `reference`.
struct Feed<'a> {
    build: &'a Build,
    reference: String,
}

impl Feed<'_> {
    fn start(&self, builder: &Builder, clock: &Clock, from: Input) {
        for (event, wire) in self.build.started.iter().zip(&self.build.started_wire) {
            builder.apply(history_from(event, wire, &self.reference, clock, from));
        }
    }

    /// Applies message `i` of the `Status` stream, if there is one.
    fn progress(&self, i: usize, builder: &Builder, clock: &Clock, from: Input) {
        let Some(message) = self.build.status.get(i) else { return };
        let progress = match from {
            Input::Decoded => convert::progress(&self.reference, message, clock),
            Input::Wire => {
                let message = StatusResponse::decode(self.build.status_wire[i].as_slice()).expect("status protobuf");
                convert::progress(&self.reference, &message, clock)
            }
        };
        builder.apply(Event::Progress(progress));
    }

    fn complete(&self, builder: &Builder, clock: &Clock, from: Input) {
        for (event, wire) in self.build.completed.iter().zip(&self.build.completed_wire) {
            builder.apply(history_from(event, wire, &self.reference, clock, from));
        }
    }
}

fn history_from(event: &BuildHistoryEvent, wire: &[u8], reference: &str, clock: &Clock, from: Input) -> Event {
    match from {
        Input::Decoded => history(event, reference, clock),
        Input::Wire => history(&BuildHistoryEvent::decode(wire).expect("history protobuf"), reference, clock),
    }
}

/// `copies` of every recorded build under refs never used before (round `round`).
fn feeds(builds: &[Build], copies: usize, round: u64) -> Vec<Feed<'_>> {
    (0..copies)
        .flat_map(|copy| builds.iter().map(move |build| (copy, build)))
        .map(|(copy, build)| Feed { build, reference: format!("{}-{round}-{copy}", build.reference) })
        .collect()
}

/// The builds one after another, each whole.
fn sequential(builder: &Builder, builds: &[Build], round: u64, clock: &Clock, from: Input) {
    for feed in feeds(builds, 1, round) {
        feed.start(builder, clock, from);
        for i in 0..feed.build.status.len() {
            feed.progress(i, builder, clock, from);
        }
        feed.complete(builder, clock, from);
    }
}

/// [`CONCURRENT`] builds running at once: all start, their messages arrive in turn, all finish.
fn interleaved(builder: &Builder, builds: &[Build], round: u64, clock: &Clock, from: Input) {
    let feeds = feeds(builds, CONCURRENT / builds.len(), round);
    let longest = feeds.iter().map(|f| f.build.status.len()).max().unwrap_or(0);
    for feed in &feeds {
        feed.start(builder, clock, from);
    }
    for i in 0..longest {
        for feed in &feeds {
            feed.progress(i, builder, clock, from);
        }
    }
    for feed in &feeds {
        feed.complete(builder, clock, from);
    }
}

type Feeder = fn(&Builder, &[Build], u64, &Clock, Input);

fn whole_path(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, builds: &[Build], from: Input) {
    let clock = Clock::default();
    let updates: u64 = builds.iter().map(Build::updates).sum();
    let cases: [(&str, Feeder, u64); 2] = [
        ("sequential", sequential, updates),
        ("interleaved_20", interleaved, updates * (CONCURRENT / builds.len()) as u64),
    ];
    for (name, feeder, updates) in cases {
        group.throughput(Throughput::Elements(updates));
        let builder = builder();
        let mut round = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                round += 1;
                feeder(&builder, builds, round, &clock, from);
            })
        });
    }
}

fn parts(c: &mut Criterion, builds: &[Build]) {
    let clock = Clock::default();
    let updates: u64 = builds.iter().map(Build::updates).sum();
    let mut group = c.benchmark_group("parts");
    group.throughput(Throughput::Elements(updates));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for wire in builds.iter().flat_map(|b| &b.status_wire) {
                black_box(StatusResponse::decode(black_box(wire.as_slice())).expect("status protobuf"));
            }
        })
    });
    group.bench_function("convert", |b| {
        b.iter(|| {
            for build in builds {
                for message in &build.status {
                    black_box(convert::progress(&build.reference, black_box(message), &clock));
                }
            }
        })
    });
    // The events are made in the untimed setup: this is the builder's share alone.
    let builder = builder();
    let mut round = 0u64;
    group.bench_function("builder", |b| {
        b.iter_batched(
            || {
                round += 1;
                let mut events = Vec::new();
                for feed in feeds(builds, 1, round) {
                    events.extend(feed.build.started.iter().map(|e| history(e, &feed.reference, &clock)));
                    events.extend(
                        feed.build
                            .status
                            .iter()
                            .map(|m| Event::Progress(convert::progress(&feed.reference, m, &clock))),
                    );
                    events.extend(feed.build.completed.iter().map(|e| history(e, &feed.reference, &clock)));
                }
                events
            },
            |events| {
                for event in events {
                    black_box(builder.apply(event));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Criterion's directory, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Per-sample throughput of one benchmark (updates per second), from criterion's saved samples.
/// Samples saved before `since` (an earlier, or filtered, run) are left out.
fn samples(id: &str, updates: u64, since: SystemTime) -> Option<Vec<f64>> {
    let path = criterion_dir().join(id).join("new/sample.json");
    if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let saved: serde_json::Value = serde_json::from_str(&text).ok()?;
    let iters = saved["iters"].as_array()?;
    let times = saved["times"].as_array()?;
    let mut rates: Vec<f64> =
        iters.iter().zip(times).filter_map(|(i, t)| Some(i.as_f64()? * updates as f64 / (t.as_f64()? / 1e9))).collect();
    rates.sort_by(f64::total_cmp);
    (!rates.is_empty()).then_some(rates)
}

fn summary(builds: &[Build], since: SystemTime) {
    let updates: u64 = builds.iter().map(Build::updates).sum();
    let messages: usize = builds.iter().map(|b| b.status.len()).sum();
    println!("\nrecording: {} builds, {messages} status messages, {updates} vertex updates", builds.len());
    println!("\n| benchmark | vertex updates/s, median | range (min–max of samples) | median / target |");
    println!("|---|---|---|---|");
    let interleaved = updates * (CONCURRENT / builds.len()) as u64;
    for (id, updates) in [
        ("ingest/sequential", updates),
        ("ingest/interleaved_20", interleaved),
        ("ingest_wire/sequential", updates),
        ("ingest_wire/interleaved_20", interleaved),
        ("parts/decode", updates),
        ("parts/convert", updates),
        ("parts/builder", updates),
    ] {
        let Some(rates) = samples(id, updates, since) else { continue };
        let median = rates[rates.len() / 2];
        let (low, high) = (rates[0], rates[rates.len() - 1]);
        println!(
            "| {id} | {:.2} M/s | {:.2}–{:.2} M/s | {:.2} |",
            median / 1e6,
            low / 1e6,
            high / 1e6,
            median / TARGET
        );
    }
}

fn main() {
    let since = SystemTime::now();
    let builds = recording();
    // Short runs: the figures settle within a second or two, and the whole run stays under a
    // minute.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("ingest");
    whole_path(&mut group, &builds, Input::Decoded);
    group.finish();
    let mut group = c.benchmark_group("ingest_wire");
    whole_path(&mut group, &builds, Input::Wire);
    group.finish();
    parts(&mut c, &builds);
    c.final_summary();
    summary(&builds, since);
}
