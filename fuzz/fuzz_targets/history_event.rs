//! Fuzzes the build-history path: bytes as a `BuildHistoryEvent` protobuf, turned into a model
//! event (`convert::history`: record fields, outcome, image name from exporter attributes,
//! exporter response, labels and the image config JSON) and folded into a fresh model, then
//! snapshotted. Every field of these messages comes from the engine, so none of this may panic.

#![no_main]

use bollard_buildkit_proto::moby::buildkit::v1::BuildHistoryEvent;
use buildkit_exporter::model::Model;
use buildkit_exporter_fuzz::{convert, NAME_LABEL};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = BuildHistoryEvent::decode(data) else { return };
    let Some(event) = convert::history(&event, NAME_LABEL) else { return };
    let mut model = Model::new(Default::default());
    model.apply(event);
    let _ = model.snapshot(0.0);
});
