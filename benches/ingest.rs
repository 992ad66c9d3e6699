//! Can one core ingest at least 1 M vertex updates per second? Vertex updates are most of what
//! engines send (every `Status` message of every running build carries some), so this rate
//! decides whether a busy host can outrun the daemon.
//!
//! Input is the four builds recorded from a real engine (tests/fixtures/builds.jsonl), fed in
//! process in the order the daemon's source applies them: a build's `STARTED` history event,
//! each message of its `Status` stream, then its two `COMPLETE` events; each converted
//! (`source::convert`) and applied to a `Builder` whose effects go to the real `Counters`.
//! Network and async runtime are left out: this is the work done per message once it has
//! arrived. Every round uses fresh refs, because the model drops progress of a build it does
//! not hold as running and never restarts a ref it has seen finish: replaying the same refs
//! would time a map lookup, not ingestion. Within a build, updates of a vertex after its first
//! (BuildKit sends one when it starts and one when it ends) are real work as recorded.
//!
//! Groups, throughput counted in vertex updates:
//! - `ingest`: the four builds one after another, and 20 builds (five of each) running at once
//!   with their messages interleaved, from decoded protobuf messages;
//! - `ingest_wire`: the same from protobuf bytes, decoding included, as tonic does it;
//! - `parts`: one round of `ingest_wire/sequential` cut into decoding, conversion, the builder
//!   applying progress, and the builder applying starts and completions, to show where the
//!   time goes.
//!
//! Timed in the thread's CPU time ([`ThreadCpuTime`]): the question is one core's rate. After
//! the run it prints a table of per-sample throughput (median and range) read from
//! criterion's saved samples. `cargo bench --bench ingest`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEvent, BuildHistoryEventType, StatusResponse};
use buildkit_exporter::builder::Builder;
use buildkit_exporter::model::{Event, Settings};
use buildkit_exporter::source::convert::{self, Clock};
use buildkit_exporter::views::counters::Counters;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, Criterion, Throughput};
use prometheus::Registry;
use prost::Message;
use testkit::fixture;
use testkit::fixture::Recorded;

/// The daemon's default `--build.name-label`.
const NAME_LABEL: &str = "org.opencontainers.image.title";
/// The daemon's default (no `--metrics.step-detail`).
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

/// The recorded builds, in the order they started, with each message both decoded (by the test
/// kit's fixture reader) and as the protobuf bytes the recording holds.
fn recording() -> Vec<Build> {
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
    for (line, wire) in fixture::read_wire(&fixture::recording()) {
        match line.item {
            Recorded::History(event) => {
                let Some(record) = &event.record else { continue };
                let i = find(&mut builds, &record.r#ref);
                let build = &mut builds[i];
                let wire = wire.expect("a history line has a message");
                match BuildHistoryEventType::try_from(event.r#type) {
                    Ok(BuildHistoryEventType::Started) => {
                        build.started_wire.push(wire);
                        build.started.push(event);
                    }
                    Ok(BuildHistoryEventType::Complete) => {
                        build.completed_wire.push(wire);
                        build.completed.push(event);
                    }
                    _ => {}
                }
            }
            Recorded::Status { reference, message } => {
                let i = find(&mut builds, &reference);
                builds[i].status_wire.push(wire.expect("a status line has a message"));
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

/// Criterion's timer for this bench: CPU time of the calling thread, as the kernel counts it.
/// The question is what one core can do, and the machine may be running other work: wall time
/// would also count the time this thread waited for a core. On an idle machine the two agree.
struct ThreadCpuTime {
    /// Lends criterion's formatting of durations.
    wall: WallTime,
}

/// `struct timespec` of 64-bit Linux.
#[repr(C)]
struct Timespec {
    seconds: i64,
    nanos: i64,
}

extern "C" {
    /// From the C library every Rust program on Linux links; std has no thread CPU clock.
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
}

/// Linux's `CLOCK_THREAD_CPUTIME_ID`.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

/// CPU time used by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut time = Timespec { seconds: 0, nanos: 0 };
    // SAFETY: `time` is a valid timespec for the call to fill in.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(time.seconds as u64, time.nanos as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time() - start
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
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
    fn start(&self, builder: &Builder, clock: &Clock, input: Input) {
        for (event, wire) in self.build.started.iter().zip(&self.build.started_wire) {
            builder.apply(history_from(event, wire, &self.reference, clock, input));
        }
    }

    /// Applies message `i` of the `Status` stream, if there is one.
    fn progress(&self, i: usize, builder: &Builder, clock: &Clock, input: Input) {
        let Some(message) = self.build.status.get(i) else { return };
        let progress = match input {
            Input::Decoded => convert::progress(&self.reference, message, clock, false),
            Input::Wire => {
                let message = StatusResponse::decode(self.build.status_wire[i].as_slice()).expect("status protobuf");
                convert::progress(&self.reference, &message, clock, false)
            }
        };
        builder.apply(Event::Progress(progress));
    }

    fn complete(&self, builder: &Builder, clock: &Clock, input: Input) {
        for (event, wire) in self.build.completed.iter().zip(&self.build.completed_wire) {
            builder.apply(history_from(event, wire, &self.reference, clock, input));
        }
    }
}

fn history_from(event: &BuildHistoryEvent, wire: &[u8], reference: &str, clock: &Clock, input: Input) -> Event {
    match input {
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
fn sequential(builder: &Builder, builds: &[Build], round: u64, clock: &Clock, input: Input) {
    for feed in feeds(builds, 1, round) {
        feed.start(builder, clock, input);
        for i in 0..feed.build.status.len() {
            feed.progress(i, builder, clock, input);
        }
        feed.complete(builder, clock, input);
    }
}

/// [`CONCURRENT`] builds running at once: all start, their messages arrive in turn, all finish.
fn interleaved(builder: &Builder, builds: &[Build], round: u64, clock: &Clock, input: Input) {
    let feeds = feeds(builds, CONCURRENT / builds.len(), round);
    let longest = feeds.iter().map(|f| f.build.status.len()).max().unwrap_or(0);
    for feed in &feeds {
        feed.start(builder, clock, input);
    }
    for i in 0..longest {
        for feed in &feeds {
            feed.progress(i, builder, clock, input);
        }
    }
    for feed in &feeds {
        feed.complete(builder, clock, input);
    }
}

type Feeder = fn(&Builder, &[Build], u64, &Clock, Input);

fn whole_path(group: &mut BenchmarkGroup<'_, ThreadCpuTime>, builds: &[Build], input: Input) {
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
                feeder(&builder, builds, round, &clock, input);
            })
        });
    }
}

/// The parts of one round of [`sequential`], timed apart: decoding (`Status` messages, history
/// events), converting them, the builder (model and counters) applying progress, and applying
/// the starts and completions. The builder parts apply a round's starts, then its progress,
/// then its completions (four builds running at once, which the interleaved case shows costs
/// the same), so that each part is one or two timed stretches per round.
fn parts(c: &mut Criterion<ThreadCpuTime>, builds: &[Build]) {
    let clock = Clock::default();
    let updates: u64 = builds.iter().map(Build::updates).sum();
    let mut group = c.benchmark_group("parts");
    group.throughput(Throughput::Elements(updates));
    group.bench_function("decode_status", |b| {
        b.iter(|| {
            for wire in builds.iter().flat_map(|b| &b.status_wire) {
                black_box(StatusResponse::decode(black_box(wire.as_slice())).expect("status protobuf"));
            }
        })
    });
    group.bench_function("decode_history", |b| {
        b.iter(|| {
            for wire in builds.iter().flat_map(|b| b.started_wire.iter().chain(&b.completed_wire)) {
                black_box(BuildHistoryEvent::decode(black_box(wire.as_slice())).expect("history protobuf"));
            }
        })
    });
    group.bench_function("convert_status", |b| {
        b.iter(|| {
            for build in builds {
                for message in &build.status {
                    black_box(convert::progress(&build.reference, black_box(message), &clock, false));
                }
            }
        })
    });
    group.bench_function("convert_history", |b| {
        b.iter(|| {
            for build in builds {
                for event in build.started.iter().chain(&build.completed) {
                    black_box(history(black_box(event), &build.reference, &clock));
                }
            }
        })
    });
    for (name, timed) in [("builder_progress", Phase::Progress), ("builder_start_complete", Phase::StartComplete)] {
        let builder = builder();
        let mut round = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let feeds = feeds(builds, 1, round);
                    let history = |list: fn(&Build) -> &[BuildHistoryEvent]| -> Vec<Event> {
                        let events =
                            feeds.iter().flat_map(|f| list(f.build).iter().map(|e| history(e, &f.reference, &clock)));
                        events.collect()
                    };
                    let progress: Vec<Event> = feeds
                        .iter()
                        .flat_map(|f| {
                            f.build
                                .status
                                .iter()
                                .map(|m| Event::Progress(convert::progress(&f.reference, m, &clock, false)))
                        })
                        .collect();
                    let (started, completed) = (history(|b| &b.started), history(|b| &b.completed));
                    // Few timed stretches per round: reading the clock is a system call.
                    spent += apply(&builder, started, timed == Phase::StartComplete);
                    spent += apply(&builder, progress, timed == Phase::Progress);
                    spent += apply(&builder, completed, timed == Phase::StartComplete);
                }
                spent
            })
        });
    }
    group.finish();
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Progress,
    StartComplete,
}

/// Applies `events`, and says how much CPU time that took if `timed`.
fn apply(builder: &Builder, events: Vec<Event>, timed: bool) -> Duration {
    if !timed {
        for event in events {
            black_box(builder.apply(event));
        }
        return Duration::ZERO;
    }
    let start = thread_cpu_time();
    for event in events {
        black_box(builder.apply(event));
    }
    thread_cpu_time() - start
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
    println!("\n| benchmark | time per round | vertex updates/s, median | range of samples | median / target |");
    println!("|---|---|---|---|---|");
    let interleaved = updates * (CONCURRENT / builds.len()) as u64;
    for (id, updates) in [
        ("ingest/sequential", updates),
        ("ingest/interleaved_20", interleaved),
        ("ingest_wire/sequential", updates),
        ("ingest_wire/interleaved_20", interleaved),
        ("parts/decode_status", updates),
        ("parts/decode_history", updates),
        ("parts/convert_status", updates),
        ("parts/convert_history", updates),
        ("parts/builder_progress", updates),
        ("parts/builder_start_complete", updates),
    ] {
        let Some(rates) = samples(id, updates, since) else { continue };
        let middle = rates.len() / 2;
        let median = if rates.len() % 2 == 0 { (rates[middle - 1] + rates[middle]) / 2.0 } else { rates[middle] };
        let (low, high) = (rates[0], rates[rates.len() - 1]);
        println!(
            "| {id} | {:.1} µs | {:.2} M/s | {:.2}–{:.2} M/s | {:.2} |",
            updates as f64 / median * 1e6,
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
        .with_measurement(ThreadCpuTime { wall: WallTime })
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
