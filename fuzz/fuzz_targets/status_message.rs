//! Fuzzes the progress path: bytes as a `StatusResponse` protobuf, turned into progress
//! (`convert::progress`) and applied to a build started just before, then snapshotted and
//! completed. This drives step-name parsing, build-arg masking (the build carries secrets,
//! overlapping ones included), step ordering, ETA and the finished-build view with whatever
//! vertex names, digests, times and errors the engine may send.

#![no_main]

use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use buildkit_exporter::model::{BuildInfo, Completion, Event, Model, Outcome};
use buildkit_exporter::source::convert::{self, Clock};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const REF: &str = "ref";

fuzz_target!(|data: &[u8]| {
    let Ok(message) = StatusResponse::decode(data) else { return };
    // An engine clock two minutes ahead, so the skew correction is applied too.
    let progress = convert::progress(REF, &message, &Clock::new(120.0, 0.0));
    let now = progress.at.unwrap_or(0.0);
    let info = BuildInfo {
        reference: REF.to_string(),
        created_at: 0.0,
        image: None,
        secrets: vec!["s3cret".into(), "cret-token".into(), "ab".into()],
    };
    let mut model = Model::new(Default::default());
    model.apply(Event::Started(info.clone()));
    model.apply(Event::Progress(progress));
    let _ = model.snapshot(now);
    // Finishing it builds the view counters and the status page read.
    model.apply(Event::Completed(Completion {
        info,
        completed_at: now,
        outcome: Outcome::Failed("exit code: 1 s3cret".into()),
    }));
    let _ = model.recent();
});
