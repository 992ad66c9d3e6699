//! Fuzzes the progress path: bytes as a `StatusResponse` protobuf, turned into progress
//! (`convert::progress`) and applied to a build started just before, then snapshotted and
//! completed. This drives step-name parsing, build-arg masking (the build carries secrets,
//! overlapping ones included), step ordering, ETA and the finished-build view with whatever
//! vertex names, digests, times and errors the engine may send.

#![no_main]

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::google::rpc::Status;
use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryRecord, StatusResponse};
use buildkit_exporter::model::{Event, Model};
use buildkit_exporter::source::convert::{self, Clock};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const REF: &str = "ref";
const NAME_LABEL: &str = "org.opencontainers.image.title";

/// The build the progress belongs to: build-arg values to mask (one overlapping another, one too
/// short to mask) and, once complete, a failure whose message holds one of them.
fn record() -> BuildHistoryRecord {
    BuildHistoryRecord {
        r#ref: REF.into(),
        created_at: Some(Timestamp { seconds: 0, nanos: 0 }),
        frontend_attrs: [
            ("build-arg:A".to_string(), "s3cret".to_string()),
            ("build-arg:B".to_string(), "cret-token".to_string()),
            ("build-arg:C".to_string(), "ab".to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = StatusResponse::decode(data) else { return };
    // An engine clock two minutes ahead, so the skew correction is applied too.
    let clock = Clock::new(120.0, 0.0);
    let progress = convert::progress(REF, &message, &clock, true);
    let now = progress.at.unwrap_or(0.0);
    let mut record = record();
    let mut model = Model::new(buildkit_exporter::model::Settings { output_lines: 3, ..Default::default() });
    model.apply(Event::Started(convert::info(&record, NAME_LABEL, &clock)));
    model.apply(Event::Progress(progress));
    let _ = model.snapshot(now);
    // Finishing it builds the view that counters and the status page read.
    record.completed_at = Some(Timestamp { seconds: 600, nanos: 0 });
    record.error = Some(Status { code: 2, message: "exit code: 1 s3cret".into(), details: vec![] });
    model.apply(Event::Completed(convert::completion(&record, NAME_LABEL, &clock)));
    let _ = model.recent();
});
