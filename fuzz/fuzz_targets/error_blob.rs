//! Fuzzes where a failed build failed: bytes as the `google.rpc.Status` a standalone buildkitd
//! keeps in a failed build's error blob (`source::failure::from_blob`: the `errdefs.Source` JSON
//! with its base64 Dockerfile and line ranges, the exit message), then applied to a running build
//! with a build-arg value and completed, as the daemon does. Every byte comes from the builder,
//! so none of this may panic, and the value may never be shown.

#![no_main]

use buildkit_exporter::model::{BuildInfo, Completion, Event, Model, Outcome};
use buildkit_exporter::source::failure;
use libfuzzer_sys::fuzz_target;

/// A build-arg value that must never be shown.
const SECRET: &str = "s3cret-value";

fuzz_target!(|data: &[u8]| {
    let Ok(Some(found)) = failure::from_blob(data) else { return };
    let secrets = vec![SECRET.to_string()];
    let info = BuildInfo { reference: "r".into(), secrets: secrets.clone(), ..Default::default() };
    let mut model = Model::new(Default::default());
    model.apply(Event::Started(info.clone()));
    model.apply(Event::FailureFound { reference: "r".into(), secrets, failure: found });
    let outcome = Outcome::Failed("failed".into());
    let completion = Completion { info, completed_at: 1.0, outcome, generation: 0, warnings: 0, failure: None };
    model.apply(Event::Completed(completion));
    let shown = model.recent().pop().and_then(|b| b.failure).and_then(|f| f.location);
    if let Some(location) = shown {
        assert!(!location.text.contains(SECRET) && !location.file.contains(SECRET), "{location:?}");
        assert!(location.text.chars().count() <= 2001, "{} characters", location.text.chars().count());
    }
});
