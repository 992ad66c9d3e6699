//! Turning BuildKit's protobuf messages into model events, with the engine's timestamps put on
//! our clock. Pure functions.

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::{
    BuildHistoryEvent, BuildHistoryEventType, BuildHistoryRecord, StatusResponse,
};

use crate::model::{name, BuildContext, BuildInfo, Completion, Event, NoCache, Outcome, Progress, Time, VertexUpdate};

/// gRPC code BuildKit records for a build canceled by its client.
const CODE_CANCELED: i32 = 1;
/// The response header in which BuildKit (0.12+) sends its own time.
const ENGINE_TIME_HEADER: &str = "buildkit-current-timestamp";
/// Clock differences below this are network latency rather than skew, and are left alone.
const MIN_SKEW_SECONDS: f64 = 1.0;

/// How far the engine's clock is ahead of ours, so that times it sends (build start, last
/// progress) compare with our "now" even when its clock is minutes off. Durations, being
/// differences of its own times, need no correction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clock {
    /// Engine time minus our time, in seconds; 0 when unknown or negligible.
    offset: f64,
}

impl Clock {
    /// The clock of an engine that said it was `engine` when it was `local` here.
    pub fn new(engine: Time, local: Time) -> Clock {
        let offset = engine - local;
        Clock { offset: if offset.abs() >= MIN_SKEW_SECONDS { offset } else { 0.0 } }
    }

    /// The clock of the engine whose response carried `metadata`, read now.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Clock {
        let engine = metadata.get(ENGINE_TIME_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_rfc3339);
        engine.map_or_else(Clock::default, |engine| Clock::new(engine, crate::clock::now()))
    }

    /// Engine time minus our time, in seconds.
    pub fn offset(&self) -> f64 {
        self.offset
    }

    /// An engine timestamp on our clock.
    fn local(&self, ts: &Option<Timestamp>) -> Option<Time> {
        ts.as_ref().map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9 - self.offset)
    }
}

/// Unix seconds of an RFC 3339 time with any offset (BuildKit writes its local zone).
fn parse_rfc3339(text: &str) -> Option<Time> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(time.unix_timestamp_nanos() as f64 / 1e9)
}

/// The event a build-history message stands for; `None` for a message without a record.
pub fn history(event: &BuildHistoryEvent, name_label: &str, clock: &Clock) -> Option<Event> {
    let record = event.record.as_ref()?;
    match BuildHistoryEventType::try_from(event.r#type).ok()? {
        BuildHistoryEventType::Started => Some(Event::Started(info(record, name_label, clock))),
        BuildHistoryEventType::Complete => Some(Event::Completed(completion(record, name_label, clock))),
        BuildHistoryEventType::Deleted => Some(Event::Deleted(record.r#ref.clone())),
    }
}

/// What a record says about its build.
pub fn info(record: &BuildHistoryRecord, name_label: &str, clock: &Clock) -> BuildInfo {
    BuildInfo {
        reference: record.r#ref.clone(),
        created_at: clock.local(&record.created_at).unwrap_or_default(),
        image: image_name(record, name_label),
        secrets: record
            .frontend_attrs
            .iter()
            .filter(|(k, _)| k.starts_with("build-arg:"))
            .map(|(_, v)| v.clone())
            .collect(),
        args: record
            .frontend_attrs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("build-arg:")?.to_string(), v.clone())))
            .collect(),
        no_cache: no_cache(record),
        context: context(record),
    }
}

/// Whether the build asked for no cache: `no-cache` empty for every step (`--no-cache`), else
/// the stages it names (`--no-cache-filter`).
fn no_cache(record: &BuildHistoryRecord) -> Option<NoCache> {
    let stages = record.frontend_attrs.get("no-cache")?;
    let stages: Vec<String> = stages.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    Some(if stages.is_empty() { NoCache::All } else { NoCache::Stages(stages) })
}

/// The context a record's frontend attributes describe (what buildx and the docker CLI send).
fn context(record: &BuildHistoryRecord) -> BuildContext {
    let attrs = &record.frontend_attrs;
    let get = |key: &str| attrs.get(key).filter(|v| !v.is_empty()).cloned();
    let mut build_args: Vec<String> =
        attrs.keys().filter_map(|k| k.strip_prefix("build-arg:")).map(str::to_string).collect();
    build_args.sort_unstable();
    BuildContext {
        context: get("context").or_else(|| get("vcs:localdir:context")),
        dockerfile: get("filename").or_else(|| get("vcs:localdir:dockerfile")),
        target: get("target"),
        platforms: get("platform").map(|p| p.split(',').map(|p| p.trim().to_string()).collect()).unwrap_or_default(),
        vcs_source: get("vcs:source"),
        vcs_revision: get("vcs:revision"),
        build_args,
    }
}

/// A `COMPLETE` record as a completion.
pub fn completion(record: &BuildHistoryRecord, name_label: &str, clock: &Clock) -> Completion {
    let outcome = match &record.error {
        None => Outcome::Succeeded,
        Some(status) if status.code == 0 => Outcome::Succeeded,
        Some(status) if status.code == CODE_CANCELED || status.message.contains("context canceled") => {
            Outcome::Canceled
        }
        Some(status) => Outcome::Failed(status.message.clone()),
    };
    let info = info(record, name_label, clock);
    let completed_at = clock.local(&record.completed_at).unwrap_or(info.created_at);
    let warnings = u32::try_from(record.num_warnings).unwrap_or(0);
    let failure = match (&outcome, &record.error) {
        (Outcome::Failed(_), Some(status)) => super::failure::from_details(&status.details),
        _ => None,
    };
    Completion { completed_at, info, outcome, generation: record.generation, warnings, failure }
}

/// The image name a record carries, earliest source first: the image exporter's `name`
/// attribute, the exporter response's `image.name`, the configured label given to the build,
/// the same label in the exported image config.
fn image_name(record: &BuildHistoryRecord, name_label: &str) -> Option<String> {
    let first = |names: &str| names.split(',').map(str::trim).find(|n| !n.is_empty()).map(str::to_string);
    let exporter = record.exporters.iter().find_map(|e| e.attrs.get("name").and_then(|n| first(n)));
    let response = || record.exporter_response.get("image.name").and_then(|n| first(n));
    let label = || record.frontend_attrs.get(&format!("label:{name_label}")).filter(|v| !v.is_empty()).cloned();
    let config_label = || {
        let config = record.exporter_response.get("containerimage.config")?;
        let config: serde_json::Value = serde_json::from_str(config).ok()?;
        config.pointer("/config/Labels")?.get(name_label)?.as_str().map(str::to_string)
    };
    exporter.or_else(response).or_else(label).or_else(config_label).filter(|n| name::repository(n).is_some())
}

/// A `Status` message as progress of build `reference`; with its output when `with_logs`.
pub fn progress(reference: &str, message: &StatusResponse, clock: &Clock, with_logs: bool) -> Progress {
    let mut latest: Option<Time> = None;
    let mut saw = |t: Option<Time>| {
        if let Some(t) = t {
            latest = Some(latest.map_or(t, |l: Time| l.max(t)));
        }
    };
    let vertexes = message
        .vertexes
        .iter()
        .map(|v| {
            let started = clock.local(&v.started);
            let completed = clock.local(&v.completed);
            saw(started);
            saw(completed);
            VertexUpdate {
                digest: v.digest.clone(),
                name: v.name.clone(),
                started,
                completed,
                cached: v.cached,
                error: (!v.error.is_empty()).then(|| v.error.clone()),
            }
        })
        .collect();
    let mut image = None;
    for status in &message.statuses {
        saw(clock.local(&status.timestamp));
        if let Some(reference) = name::naming_to(&status.id) {
            image = Some(reference.to_string());
        }
    }
    for log in &message.logs {
        saw(clock.local(&log.timestamp));
    }
    let warnings = message.warnings.iter().map(|w| String::from_utf8_lossy(&w.short).trim().to_string()).collect();
    // Output is text a build printed: read only when the operator asked to show it.
    let logs = if with_logs {
        message.logs.iter().map(|l| (l.vertex.clone(), String::from_utf8_lossy(&l.msg).into_owned())).collect()
    } else {
        Vec::new()
    };
    Progress { reference: reference.to_string(), at: latest, vertexes, image, warnings, logs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::google::rpc::Status;
    use bollard_buildkit_proto::moby::buildkit::v1::{Exporter, Vertex, VertexLog, VertexStatus};

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn record(error: Option<Status>) -> BuildHistoryRecord {
        BuildHistoryRecord {
            r#ref: "r1".into(),
            created_at: ts(100, 500_000_000),
            completed_at: ts(110, 0),
            error,
            frontend_attrs: [
                ("build-arg:TOKEN".to_string(), "marker-value".to_string()),
                ("filename".to_string(), "Dockerfile".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes() {
        let outcome = |error| completion(&record(error), "title", &Clock::default()).outcome;
        assert_eq!(outcome(None), Outcome::Succeeded);
        assert_eq!(
            outcome(Some(Status { code: 1, message: "context canceled".into(), details: vec![] })),
            Outcome::Canceled
        );
        assert_eq!(
            outcome(Some(Status { code: 2, message: "exit code: 1".into(), details: vec![] })),
            Outcome::Failed("exit code: 1".into())
        );
    }

    #[test]
    fn record_fields() {
        let c = completion(&record(None), "title", &Clock::default());
        assert_eq!((c.info.created_at, c.completed_at), (100.5, 110.0));
        assert_eq!(c.info.secrets, vec!["marker-value".to_string()]);
        assert_eq!(c.info.image, None);
    }

    #[test]
    fn image_name_sources_in_order() {
        let mut r = record(None);
        r.exporter_response
            .insert("containerimage.config".into(), r#"{"config":{"Labels":{"title":"from-config"}}}"#.into());
        assert_eq!(info(&r, "title", &Clock::default()).image.as_deref(), Some("from-config"));
        r.frontend_attrs.insert("label:title".into(), "from-label".into());
        assert_eq!(info(&r, "title", &Clock::default()).image.as_deref(), Some("from-label"));
        r.exporter_response.insert("image.name".into(), "docker.io/library/resp:1,other:2".into());
        assert_eq!(info(&r, "title", &Clock::default()).image.as_deref(), Some("docker.io/library/resp:1"));
        r.exporters
            .push(Exporter { r#type: "image".into(), attrs: [("name".to_string(), "exp:1".to_string())].into() });
        assert_eq!(info(&r, "title", &Clock::default()).image.as_deref(), Some("exp:1"));
    }

    #[test]
    fn progress_takes_the_latest_timestamp_and_the_export_name() {
        let message = StatusResponse {
            vertexes: vec![Vertex {
                digest: "d".into(),
                name: "[1/1] RUN x".into(),
                started: ts(10, 0),
                completed: ts(12, 0),
                error: String::new(),
                ..Default::default()
            }],
            statuses: vec![VertexStatus {
                id: "naming to docker.io/library/proto:slow".into(),
                timestamp: ts(13, 0),
                ..Default::default()
            }],
            logs: vec![VertexLog { timestamp: ts(14, 250_000_000), ..Default::default() }],
            warnings: vec![],
        };
        let p = progress("r1", &message, &Clock::default(), false);
        assert_eq!(p.at, Some(14.25));
        assert_eq!(p.image.as_deref(), Some("docker.io/library/proto:slow"));
        assert_eq!(p.vertexes[0].error, None);
        assert_eq!(progress("r1", &StatusResponse::default(), &Clock::default(), false).at, None);
        // An engine five minutes ahead: its times are moved onto ours.
        let ahead = Clock::new(1000.0 + 300.0, 1000.0);
        assert_eq!(progress("r1", &message, &ahead, false).at, Some(14.25 - 300.0));
        // Output is read only when asked for.
        assert!(p.logs.is_empty());
        let log = VertexLog { vertex: "sha256:a".into(), msg: b"Unpacking packages\n".to_vec(), ..Default::default() };
        let with_log = StatusResponse { logs: vec![log], ..Default::default() };
        let p = progress("r1", &with_log, &Clock::default(), true);
        assert_eq!(p.logs, vec![("sha256:a".to_string(), "Unpacking packages\n".to_string())]);
    }

    #[test]
    fn engine_time_header_in_any_zone() {
        assert_eq!(parse_rfc3339("2026-11-28T18:41:39.5Z"), Some(1795891299.5));
        assert_eq!(parse_rfc3339("2026-11-28T19:41:39.5+01:00"), Some(1795891299.5));
        assert_eq!(parse_rfc3339("2026-11-28T18:41:39Z"), Some(1795891299.0));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(Clock::new(100.4, 100.0).offset(), 0.0, "latency is not skew");
    }
}
