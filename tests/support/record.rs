//! The fixture recorder: listens to a real source like the exporter does (live history events,
//! one `Status` stream per started build) and keeps every message with its arrival time.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{BuildHistoryEventType, BuildHistoryRequest, StatusRequest};
use buildkit_exporter::source::dial;
use buildkit_exporter::source::spec::SourceSpec;

use crate::fixture::{Line, Recorded};

/// Records live events of `source` until `stop` is dropped or sent; returns the lines in
/// arrival order.
pub async fn record(source: &str, mut stop: tokio::sync::oneshot::Receiver<()>) -> Vec<Line> {
    let spec = SourceSpec::parse(source, true, &Default::default()).expect("source");
    let (channel, _peer) = dial::connect(&spec.endpoint, Default::default()).await.expect("connect to source");
    let mut client = ControlClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let lines: Arc<Mutex<Vec<Line>>> = Arc::default();
    let start = Instant::now();
    let mut history = client
        .listen_build_history(BuildHistoryRequest { active_only: true, ..Default::default() })
        .await
        .expect("listen build history")
        .into_inner();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            event = history.message() => event.expect("history stream").expect("history stream open"),
            _ = &mut stop => break,
        };
        let started = (event.r#type == BuildHistoryEventType::Started as i32)
            .then(|| event.record.as_ref().map(|r| r.r#ref.clone()))
            .flatten();
        lines.lock().unwrap().push(Line { at: start.elapsed().as_secs_f64(), item: Recorded::History(event) });
        if let Some(reference) = started {
            let (mut client, lines) = (client.clone(), lines.clone());
            tasks.spawn(async move {
                let mut stream =
                    client.status(StatusRequest { r#ref: reference.clone() }).await.expect("status").into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    let at = start.elapsed().as_secs_f64();
                    lines
                        .lock()
                        .unwrap()
                        .push(Line { at, item: Recorded::Status { reference: reference.clone(), message } });
                }
                let at = start.elapsed().as_secs_f64();
                lines.lock().unwrap().push(Line { at, item: Recorded::StatusEnd { reference } });
            });
        }
    }
    tasks.shutdown().await;
    let lines = lines.lock().unwrap().clone();
    lines
}
