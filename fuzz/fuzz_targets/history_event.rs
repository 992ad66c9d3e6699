//! Fuzzes the build-history path: bytes as a `BuildHistoryEvent` protobuf, turned into a model
//! event (`convert::history`: record fields, outcome, image name from exporter attributes,
//! exporter response, labels and the image config JSON) and folded into a fresh model, then
//! snapshotted. Every field of these messages comes from the engine, so none of this may panic.

#![no_main]

use bollard_buildkit_proto::moby::buildkit::v1::BuildHistoryEvent;
use buildkit_exporter::model::Model;
use buildkit_exporter::source::convert::{self, Clock};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The exporter's default image-name label.
const NAME_LABEL: &str = "org.opencontainers.image.title";

fuzz_target!(|data: &[u8]| {
    let Ok(event) = BuildHistoryEvent::decode(data) else { return };
    // An engine clock two minutes ahead, so the skew correction is applied too.
    let clock = Clock::new(120.0, 0.0);
    let Some(event) = convert::history(&event, NAME_LABEL, &clock) else { return };
    let mut model = Model::new(Default::default());
    model.apply(event);
    let _ = model.snapshot(0.0);
});
