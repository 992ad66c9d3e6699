//! The fixture format: what a source sent, one JSON object per line, protobuf messages in
//! base64 so they replay byte for byte. Written by `record`, read by the fake BuildKit.
//!
//! `{"at":1.25,"stream":"history","message":"..."}`
//! `{"at":1.30,"stream":"status","ref":"abc","message":"..."}`
//! `{"at":9.10,"stream":"status-end","ref":"abc"}`

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEvent, StatusResponse};
use prost::Message;

/// One recorded message (sizes differ as the messages do; fixtures are small).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Recorded {
    /// A build-history event.
    History(BuildHistoryEvent),
    /// A message of one build's `Status` stream.
    Status { reference: String, message: StatusResponse },
    /// The end of one build's `Status` stream.
    StatusEnd { reference: String },
}

/// A recorded message and when it arrived, in seconds since recording started.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: f64,
    pub item: Recorded,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Line {
    /// The same message with every engine timestamp in it `by` seconds later (earlier if
    /// negative): what an engine whose clock is off, or a later build, would send.
    pub fn shifted(&self, by: f64) -> Line {
        use bollard_buildkit_proto::google::protobuf::Timestamp;
        let shift = |ts: &mut Option<Timestamp>| {
            if let Some(ts) = ts {
                let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos) + (by * 1e9) as i128;
                ts.seconds = nanos.div_euclid(1_000_000_000) as i64;
                ts.nanos = nanos.rem_euclid(1_000_000_000) as i32;
            }
        };
        let mut item = self.item.clone();
        match &mut item {
            Recorded::History(event) => {
                if let Some(record) = event.record.as_mut() {
                    shift(&mut record.created_at);
                    shift(&mut record.completed_at);
                }
            }
            Recorded::Status { message, .. } => {
                for v in &mut message.vertexes {
                    shift(&mut v.started);
                    shift(&mut v.completed);
                }
                for s in &mut message.statuses {
                    shift(&mut s.timestamp);
                    shift(&mut s.started);
                    shift(&mut s.completed);
                }
                for l in &mut message.logs {
                    shift(&mut l.timestamp);
                }
            }
            Recorded::StatusEnd { .. } => {}
        }
        Line { at: self.at, item }
    }

    /// The same message of another build: ref `reference`, and with `rename` = `(from, to)`, the
    /// image name `from` replaced by `to` wherever a build names its image (its name label, its
    /// exporter response, its `naming to` status).
    pub fn cloned_as(&self, reference: &str, rename: Option<(&str, &str)>) -> Line {
        let renamed = |value: &mut String| {
            if let Some((from, to)) = rename {
                *value = value.replace(from, to);
            }
        };
        let mut line = self.clone();
        match &mut line.item {
            Recorded::History(event) => {
                let record = event.record.as_mut().expect("recorded history has records");
                record.r#ref = reference.to_string();
                record.frontend_attrs.values_mut().chain(record.exporter_response.values_mut()).for_each(renamed);
            }
            Recorded::Status { reference: r, message } => {
                *r = reference.to_string();
                for s in &mut message.statuses {
                    renamed(&mut s.id);
                    renamed(&mut s.name);
                }
            }
            Recorded::StatusEnd { reference: r } => *r = reference.to_string(),
        }
        line
    }
}

/// Where the builds recorded from a real engine are kept (tests/record.rs records them).
pub fn recording() -> PathBuf {
    crate::test_file("fixtures/builds.jsonl")
}

/// The builds recorded from a real engine that the replay tests and the benchmarks play:
/// `ml-base` uncached and cached, one that fails before naming its image, a multi-stage
/// `team/multi`.
pub fn recorded() -> Vec<Line> {
    read(&recording())
}

/// Encodes one line.
pub fn encode(line: &Line) -> String {
    let value = match &line.item {
        Recorded::History(event) => serde_json::json!({
            "at": line.at, "stream": "history", "message": b64().encode(event.encode_to_vec()),
        }),
        Recorded::Status { reference, message } => serde_json::json!({
            "at": line.at, "stream": "status", "ref": reference, "message": b64().encode(message.encode_to_vec()),
        }),
        Recorded::StatusEnd { reference } => serde_json::json!({
            "at": line.at, "stream": "status-end", "ref": reference,
        }),
    };
    value.to_string()
}

/// Appends one line to `out`.
pub fn write(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    writeln!(out, "{}", encode(line))
}

/// Reads a fixture file.
pub fn read(path: &Path) -> Vec<Line> {
    read_wire(path).into_iter().map(|(line, _)| line).collect()
}

/// Reads a fixture file, with each line's message as the protobuf bytes it was recorded in (none
/// for the end of a stream).
pub fn read_wire(path: &Path) -> Vec<(Line, Option<Vec<u8>>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::io::BufReader::new(file)
        .lines()
        .map(|l| l.expect("read fixture line"))
        .filter(|l| !l.trim().is_empty())
        .map(|l| decode(&l))
        .collect()
}

fn decode(text: &str) -> (Line, Option<Vec<u8>>) {
    let value: serde_json::Value = serde_json::from_str(text).expect("fixture line is JSON");
    let at = value["at"].as_f64().expect("at");
    let bytes = value["message"].as_str().map(|m| b64().decode(m).expect("base64"));
    let message = || bytes.as_deref().expect("message");
    let reference = || value["ref"].as_str().expect("ref").to_string();
    let item = match value["stream"].as_str().expect("stream") {
        "history" => Recorded::History(BuildHistoryEvent::decode(message()).expect("history protobuf")),
        "status" => Recorded::Status {
            reference: reference(),
            message: StatusResponse::decode(message()).expect("status protobuf"),
        },
        "status-end" => Recorded::StatusEnd { reference: reference() },
        other => panic!("unknown stream {other}"),
    };
    (Line { at, item }, bytes)
}
