//! Writes the seed corpora of the fuzz targets into `corpus/<target>/`.
//!
//! ```text
//! cargo run --example seeds [-- CAPTURE.jsonl ...]
//! ```
//!
//! Seeds come from three places:
//! - the replay fixture `tests/fixtures/builds.jsonl`, whose protobuf messages are recorded byte
//!   for byte from a real engine;
//! - optional JSON-line captures of real streams given as arguments (history lines
//!   `{"type":"COMPLETE","record":{...}}`, status lines `{"vertexes":[...],"statuses":[...],
//!   "logs":[...]}`, timestamps in RFC 3339), re-encoded as protobuf;
//! - a few hand-made messages for paths the recordings do not reach (exporter `name`
//!   attributes, `image.name`, the image config label, cancellation, `DELETED`, vertex errors).
//!
//! Vertex names of all status seeds also become `step_name` seeds. Files are named by a hash of
//! their content, so running it again only adds the hand-made history messages whose attribute
//! maps encode in a different order.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::google::rpc::Status;
use bollard_buildkit_proto::moby::buildkit::v1::{
    BuildHistoryEvent, BuildHistoryEventType, BuildHistoryRecord, Exporter, StatusResponse, Vertex, VertexLog,
    VertexStatus,
};
use prost::Message;
use serde_json::Value;

struct Corpus {
    root: PathBuf,
    written: HashMap<&'static str, usize>,
}

impl Corpus {
    fn add(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus directory");
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let path = dir.join(format!("seed-{:016x}", hasher.finish()));
        if !path.exists() {
            std::fs::write(&path, bytes).expect("write seed");
            *self.written.entry(target).or_default() += 1;
        }
    }

    fn history(&mut self, event: &BuildHistoryEvent) {
        self.add("history_event", &event.encode_to_vec());
    }

    fn status(&mut self, message: &StatusResponse) {
        self.add("status_message", &message.encode_to_vec());
        for vertex in &message.vertexes {
            self.add("step_name", vertex.name.as_bytes());
        }
    }
}

/// A UTC time as the captures write it, `2026-11-23T23:19:55.005Z`, as a protobuf timestamp.
fn rfc3339(text: &str) -> Option<Timestamp> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some(Timestamp { seconds: days * 86_400 + h * 3600 + min * 60 + s, nanos: digits.parse().ok()? })
}

fn ts(value: &Value) -> Option<Timestamp> {
    value.as_str().and_then(rfc3339)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn strings(value: &Value) -> HashMap<String, String> {
    value.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect()).unwrap_or_default()
}

fn history_from_json(line: &Value) -> Option<BuildHistoryEvent> {
    let r#type = match line["type"].as_str()? {
        "STARTED" => BuildHistoryEventType::Started,
        "COMPLETE" => BuildHistoryEventType::Complete,
        "DELETED" => BuildHistoryEventType::Deleted,
        _ => return None,
    };
    let r = &line["record"];
    let record = BuildHistoryRecord {
        r#ref: text(&r["ref"]),
        frontend: text(&r["frontend"]),
        frontend_attrs: strings(&r["frontendAttrs"]),
        exporters: r["exporters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Exporter { r#type: text(&e["type"]), attrs: strings(&e["attrs"]) })
            .collect(),
        error: r["error"].as_object().map(|e| Status {
            code: e.get("code").and_then(Value::as_i64).unwrap_or_default() as i32,
            message: e.get("message").map(text).unwrap_or_default(),
            details: vec![],
        }),
        created_at: ts(&r["createdAt"]),
        completed_at: ts(&r["completedAt"]),
        exporter_response: strings(&r["exporterResponse"]),
        ..Default::default()
    };
    Some(BuildHistoryEvent { r#type: r#type as i32, record: Some(record) })
}

fn status_from_json(line: &Value) -> Option<StatusResponse> {
    let list = |key: &str| line[key].as_array().cloned().unwrap_or_default();
    line.get("vertexes")?;
    Some(StatusResponse {
        vertexes: list("vertexes")
            .iter()
            .map(|v| Vertex {
                digest: text(&v["digest"]),
                inputs: v["inputs"].as_array().into_iter().flatten().map(text).collect(),
                name: text(&v["name"]),
                cached: v["cached"].as_bool().unwrap_or_default(),
                started: ts(&v["started"]),
                completed: ts(&v["completed"]),
                error: text(&v["error"]),
                progress_group: None,
            })
            .collect(),
        statuses: list("statuses")
            .iter()
            .map(|s| VertexStatus {
                id: text(&s["id"]),
                vertex: text(&s["vertex"]),
                name: text(&s["name"]),
                current: s["current"].as_i64().unwrap_or_default(),
                total: s["total"].as_i64().unwrap_or_default(),
                timestamp: ts(&s["timestamp"]),
                started: ts(&s["started"]),
                completed: ts(&s["completed"]),
            })
            .collect(),
        logs: list("logs")
            .iter()
            .map(|l| VertexLog {
                vertex: text(&l["vertex"]),
                timestamp: ts(&l["timestamp"]),
                stream: l["stream"].as_i64().unwrap_or_default(),
                msg: text(&l["msg"]).into_bytes(),
            })
            .collect(),
        warnings: vec![],
    })
}

/// The replay fixture: `{"stream":"history"|"status","message":"<base64 protobuf>"}`.
fn from_fixture(corpus: &mut Corpus, path: &Path) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for line in std::fs::read_to_string(path).expect("read fixture").lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).expect("fixture line is JSON");
        let Some(message) = value["message"].as_str() else { continue };
        let bytes = b64.decode(message).expect("base64");
        match value["stream"].as_str() {
            Some("history") => corpus.add("history_event", &bytes),
            Some("status") => {
                corpus.add("status_message", &bytes);
                for vertex in StatusResponse::decode(bytes.as_slice()).expect("status protobuf").vertexes {
                    corpus.add("step_name", vertex.name.as_bytes());
                }
            }
            _ => {}
        }
    }
}

fn from_capture(corpus: &mut Corpus, path: &Path) {
    let content = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for line in content.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else { continue };
        if let Some(event) = history_from_json(&value) {
            corpus.history(&event);
        } else if let Some(message) = status_from_json(&value) {
            corpus.status(&message);
        }
    }
}

/// Error blobs as a standalone buildkitd keeps them: a status whose details say where (the
/// details Engine 26.1 recorded for a failing two-line `RUN` that names a build-arg's value).
fn error_blobs(corpus: &mut Corpus) {
    use bollard_buildkit_proto::google::protobuf::Any;
    let detail = |kind: &str, value: String| Any {
        type_url: format!("github.com/moby/buildkit/{kind}+json"),
        value: value.into_bytes(),
    };
    let dockerfile = "FROM tinybase\nARG TOKEN\nRUN echo one\nRUN echo $TOKEN && \\\n  exit 3 # s3cret-value\n";
    let data = base64::engine::general_purpose::STANDARD.encode(dockerfile);
    for ranges in [
        r#"[{"start":{"line":4},"end":{"line":4}},{"start":{"line":5},"end":{"line":5}}]"#,
        r#"[{"start":{"line":1}}]"#,
    ] {
        let status = Status {
            code: 2,
            message: "process did not complete successfully: exit code: 3".into(),
            details: vec![
                detail("stack.Stack", r#"{"frames":[]}"#.into()),
                detail(
                    "errdefs.Source",
                    format!(
                        r#"{{"info":{{"filename":"Dockerfile","data":"{data}","language":"Dockerfile"}},"ranges":{ranges}}}"#
                    ),
                ),
                detail("errdefs.Vertex", r#"{"digest":"sha256:14ab"}"#.into()),
                detail("gatewayapi.ExitMessage", r#"{"Code":3}"#.into()),
            ],
        };
        corpus.add("error_blob", &status.encode_to_vec());
    }
}

fn hand_made(corpus: &mut Corpus) {
    let at = |seconds| Some(Timestamp { seconds, nanos: 250_000_000 });
    let record = |reference: &str| BuildHistoryRecord {
        r#ref: reference.into(),
        created_at: at(1_795_476_000),
        completed_at: at(1_795_476_012),
        frontend_attrs: [
            ("build-arg:TOKEN".to_string(), "s3cret-value".to_string()),
            ("filename".to_string(), "Dockerfile".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let event =
        |r#type: BuildHistoryEventType, record| BuildHistoryEvent { r#type: r#type as i32, record: Some(record) };

    let mut exporter = record("exporter");
    exporter.exporters.push(Exporter {
        r#type: "image".into(),
        attrs: [("name".to_string(), " , docker.io/library/app:1, app:2".to_string())].into(),
    });
    corpus.history(&event(BuildHistoryEventType::Complete, exporter));

    let mut response = record("response");
    response.exporter_response.insert("image.name".into(), "registry.example:5000/team/app:v1".into());
    corpus.history(&event(BuildHistoryEventType::Complete, response));

    let mut label = record("label");
    label.frontend_attrs.insert("label:org.opencontainers.image.title".into(), "ml-base".into());
    corpus.history(&event(BuildHistoryEventType::Started, label));

    let mut config = record("config");
    config.exporter_response.insert(
        "containerimage.config".into(),
        r#"{"config":{"Labels":{"org.opencontainers.image.title":"from-config"}}}"#.into(),
    );
    corpus.history(&event(BuildHistoryEventType::Complete, config));

    let mut canceled = record("canceled");
    canceled.error = Some(Status { code: 1, message: "context canceled".into(), details: vec![] });
    corpus.history(&event(BuildHistoryEventType::Complete, canceled));

    let mut failed = record("failed");
    failed.error = Some(Status { code: 2, message: "exit code: 1 s3cret-value".into(), details: vec![] });
    corpus.history(&event(BuildHistoryEventType::Complete, failed));

    corpus.history(&event(BuildHistoryEventType::Deleted, record("deleted")));
    corpus.history(&BuildHistoryEvent { r#type: 7, record: Some(record("unknown-type")) });

    let vertex = |digest: &str, name: &str, started, completed, cached, error: &str| Vertex {
        digest: digest.into(),
        name: name.into(),
        started,
        completed,
        cached,
        error: error.into(),
        ..Default::default()
    };
    corpus.status(&StatusResponse {
        vertexes: vec![
            vertex("sha256:a", "[internal] load build definition from Dockerfile", at(10), at(10), false, ""),
            vertex("sha256:b", "[base 1/3] FROM docker.io/library/tinybase:latest", at(11), at(11), true, ""),
            vertex("sha256:c", "[base  2/3] RUN echo s3cret-value && make", at(12), at(20), false, ""),
            vertex("sha256:d", "[linux/amd64 stage-2 3/3] COPY --from=base /out /app", at(21), None, false, ""),
            vertex(
                "sha256:d",
                "[linux/amd64 stage-2 3/3] COPY --from=base /out /app",
                at(21),
                at(22),
                false,
                "exit code: 1",
            ),
            vertex("sha256:e", "exporting to image", at(23), None, false, ""),
        ],
        statuses: vec![VertexStatus {
            id: "naming to docker.io/library/app:latest".into(),
            vertex: "sha256:e".into(),
            timestamp: at(24),
            ..Default::default()
        }],
        logs: vec![VertexLog { vertex: "sha256:c".into(), timestamp: at(13), stream: 1, msg: b"tick 1\n".to_vec() }],
        warnings: vec![],
    });

    for name in [
        "[3/15] RUN apt-get update && apt-get install -y python3",
        "[ 2/15] WORKDIR /workspace",
        "[linux/arm64 builder 2/5] RUN go build ./...",
        "[0/3] RUN nope",
        "[4/3] RUN nope",
        "[]",
        "compile the thing",
        "resolve image config for docker-image://docker.io/docker/dockerfile:1",
        "[2/2] run lower-case\twith a tab\nand a newline",
    ] {
        corpus.add("step_name", name.as_bytes());
    }
    corpus.add("step_name", "é".repeat(100).as_bytes());
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = Corpus { root: fuzz.join("corpus"), written: HashMap::new() };
    from_fixture(&mut corpus, &fuzz.join("../tests/fixtures/builds.jsonl"));
    for path in std::env::args_os().skip(1) {
        from_capture(&mut corpus, Path::new(&path));
    }
    error_blobs(&mut corpus);
    hand_made(&mut corpus);
    let mut written: Vec<_> = corpus.written.into_iter().collect();
    written.sort();
    for (target, count) in written {
        println!("{target}: {count} new seeds");
    }
}
