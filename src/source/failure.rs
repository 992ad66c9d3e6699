//! Where a build failed, read from its error's details (a `google.rpc.Status`): BuildKit's
//! `errdefs.Source` (the Dockerfile and the failing instruction's ranges) and
//! `gatewayapi.ExitMessage` (the exit code). Docker Engines keep these details in the history
//! record; a standalone buildkitd clears them there and keeps the whole status in a blob (the
//! record's `externalError`), which is decoded here too.
//!
//! BuildKit marshals these details as JSON (type URLs ending in `+json`), with the Dockerfile in
//! base64; only the failing lines are taken from it, never the whole file.

use base64::Engine as _;
use bollard_buildkit_proto::google::protobuf::Any;
use bollard_buildkit_proto::google::rpc::Status;
use prost::Message as _;
use serde::Deserialize;

use crate::model::event::{Failure, Location};

/// Most lines of an instruction kept; a longer one keeps its first lines. Lines are kept whole
/// here: the model masks them, then cuts them to length, so that no cut splits a value before it
/// is masked.
const MAX_LINES: usize = 20;

/// `errdefs.Source`, as BuildKit marshals it to JSON.
#[derive(Deserialize)]
struct Source {
    info: Option<SourceInfo>,
    #[serde(default)]
    ranges: Vec<Range>,
}

#[derive(Deserialize)]
struct SourceInfo {
    #[serde(default)]
    filename: String,
    /// The whole file, base64.
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct Range {
    start: Option<Position>,
    end: Option<Position>,
}

#[derive(Deserialize)]
struct Position {
    #[serde(default)]
    line: u32,
}

/// `gatewayapi.ExitMessage` (a Go struct without JSON tags).
#[derive(Deserialize)]
struct ExitMessage {
    #[serde(rename = "Code")]
    code: i64,
}

/// What the `details` of a failed build's status say; `None` if nothing.
pub fn from_details(details: &[Any]) -> Option<Failure> {
    let json = |kind: &'static str| details.iter().filter(move |d| d.type_url.ends_with(&format!("{kind}+json")));
    let location =
        json("errdefs.Source").find_map(|d| serde_json::from_slice::<Source>(&d.value).ok().and_then(location));
    let exit_code = json("gatewayapi.ExitMessage")
        .find_map(|d| serde_json::from_slice::<ExitMessage>(&d.value).ok())
        .and_then(|exit| i32::try_from(exit.code).ok());
    let failure = Failure { location: location.map(Box::new), exit_code };
    (!failure.is_empty()).then_some(failure)
}

/// What the status in a buildkitd's error blob says, if it is one.
pub fn from_blob(blob: &[u8]) -> Result<Option<Failure>, prost::DecodeError> {
    Ok(from_details(&Status::decode(blob)?.details))
}

/// The failing lines of the file a source detail carries.
fn location(source: Source) -> Option<Location> {
    let info = source.info?;
    let first = source.ranges.iter().filter_map(|r| r.start.as_ref()).map(|p| p.line).filter(|l| *l > 0).min()?;
    let last = source.ranges.iter().filter_map(|r| r.end.as_ref()).map(|p| p.line).max().unwrap_or(first).max(first);
    let data = base64::engine::general_purpose::STANDARD.decode(info.data.as_bytes()).ok()?;
    let file = String::from_utf8_lossy(&data);
    let last = last.min(first.saturating_add(MAX_LINES as u32 - 1));
    let lines: Vec<&str> = file.lines().skip(first as usize - 1).take((last - first + 1) as usize).collect();
    if lines.is_empty() {
        return None;
    }
    Some(Location {
        file: info.filename,
        line: first,
        end_line: (lines.len() > 1).then_some(first + lines.len() as u32 - 1),
        text: lines.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: &str) -> Any {
        Any { type_url: format!("github.com/moby/buildkit/{type_url}"), value: value.as_bytes().to_vec() }
    }

    fn source(file: &str, ranges: &str) -> Any {
        let data = base64::engine::general_purpose::STANDARD.encode(file);
        any(
            "errdefs.Source+json",
            &format!(
                r#"{{"info":{{"filename":"Dockerfile","data":"{data}","language":"Dockerfile"}},"ranges":{ranges}}}"#
            ),
        )
    }

    const DOCKERFILE: &str = "FROM tinybase\nRUN echo one\n\nRUN echo failing; \\\n  exit 3\nRUN echo never\n";

    #[test]
    fn the_failing_lines_and_the_exit_code_as_an_engine_records_them() {
        // As Engine 26.1 recorded a failing build (stack traces and the vertex left out).
        let details = [
            any("stack.Stack+json", r#"{"frames":[]}"#),
            any("errdefs.Solve+json", "{}"),
            source(DOCKERFILE, r#"[{"start":{"line":4},"end":{"line":4}},{"start":{"line":5},"end":{"line":5}}]"#),
            any("errdefs.Vertex+json", r#"{"digest":"sha256:14ab"}"#),
            any("gatewayapi.ExitMessage+json", r#"{"Code":3}"#),
        ];
        let failure = from_details(&details).unwrap();
        assert_eq!(
            failure,
            Failure {
                location: Some(Box::new(Location {
                    file: "Dockerfile".into(),
                    line: 4,
                    end_line: Some(5),
                    text: "RUN echo failing; \\\n  exit 3".into()
                })),
                exit_code: Some(3),
            }
        );
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            serde_json::json!({"location": {"file": "Dockerfile", "line": 4, "end_line": 5, "text": "RUN echo failing; \\\n  exit 3"}, "exit_code": 3})
        );
    }

    #[test]
    fn a_failure_without_a_process_has_a_line_and_no_exit_code() {
        // A `FROM` whose image cannot be resolved: one line, no process.
        let details = [source(DOCKERFILE, r#"[{"start":{"line":1},"end":{"line":1}}]"#)];
        let failure = from_details(&details).unwrap();
        let location = failure.location.unwrap();
        assert_eq!((location.line, location.end_line, location.text.as_str()), (1, None, "FROM tinybase"));
        assert_eq!(failure.exit_code, None);
    }

    #[test]
    fn details_that_say_nothing_usable_give_nothing() {
        assert_eq!(from_details(&[]), None);
        let useless = [
            any("errdefs.Source+json", "not json"),
            source(DOCKERFILE, "[]"),
            source(DOCKERFILE, r#"[{"start":{"line":40},"end":{"line":40}}]"#),
            any(
                "errdefs.Source+json",
                r#"{"info":{"filename":"Dockerfile","data":"%%%"},"ranges":[{"start":{"line":1}}]}"#,
            ),
            any("gatewayapi.ExitMessage+json", r#"{"Code":"three"}"#),
            any("gatewayapi.ExitMessage", "\u{8}\u{3}"),
        ];
        assert_eq!(from_details(&useless), None);
    }

    #[test]
    fn lines_past_the_file_or_past_every_number_are_not_invented() {
        let details = [source("FROM a\nRUN b\n", r#"[{"start":{"line":2},"end":{"line":9}}]"#)];
        let location = from_details(&details).unwrap().location.unwrap();
        assert_eq!((location.line, location.end_line, location.text.as_str()), (2, None, "RUN b"));
        let huge = [source("FROM a\n", r#"[{"start":{"line":4294967295},"end":{"line":4294967295}}]"#)];
        assert_eq!(from_details(&huge), None);
    }

    #[test]
    fn a_long_instruction_keeps_its_first_lines() {
        let file: String = (1..=100).map(|i| format!("RUN echo {i} \\\n")).collect();
        let details = [source(&file, r#"[{"start":{"line":2},"end":{"line":90}}]"#)];
        let location = from_details(&details).unwrap().location.unwrap();
        assert_eq!((location.line, location.end_line), (2, Some(2 + MAX_LINES as u32 - 1)));
        assert_eq!(location.text.lines().count(), MAX_LINES);
        assert!(location.text.starts_with("RUN echo 2 \\"), "{}", location.text);
    }

    #[test]
    fn a_buildkitd_error_blob_is_a_status_with_the_same_details() {
        let status = Status {
            code: 2,
            message: "process did not complete successfully: exit code: 7".into(),
            details: vec![any("gatewayapi.ExitMessage+json", r#"{"Code":7}"#)],
        };
        let failure = from_blob(&status.encode_to_vec()).unwrap().unwrap();
        assert_eq!(failure.exit_code, Some(7));
        assert!(from_blob(b"\xff\xff garbage").is_err());
    }
}
