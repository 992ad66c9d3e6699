//! Log output: logfmt (the default, like Prometheus' own exporters) or JSON lines.

use std::fmt::{self, Write as _};

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `ts=... level=info msg="..." key=value`
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `level` is a level name, or `target=level` directives
/// joined by commas. (A target filter rather than `EnvFilter`: its span-field matching needs a
/// regex engine that would be the largest part of the binary mapped for logging.)
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter: Targets = level.parse().map_err(|e| format!("invalid --log.level {level:?}: {e}"))?;
    // Everything reaches the filter, which alone decides.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Logfmt => builder
            .event_format(Logfmt)
            .fmt_fields(tracing_logfmt::FieldsFormatter::default())
            .finish()
            .with(filter)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// `ts=2026-01-01T00:00:00.000Z level=info msg="source up" builder=default source=unix:///...`
///
/// Only the leading `ts level msg` are written here, because tracing-logfmt writes `message=`
/// where Prometheus' own exporters write `msg=`; span fields come formatted by tracing-logfmt.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        write!(line, "ts={ts} level={}", event.metadata().level().as_str().to_ascii_lowercase())?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(line, " msg={}", quote(&fields.message))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(stored) = span.extensions().get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if !stored.fields.is_empty() {
                        write!(line, " {}", stored.fields)?;
                    }
                }
            }
        }
        line.push_str(&fields.rest);
        writeln!(writer, "{line}")
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn quote(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=') {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("up"), "up");
        assert_eq!(quote("source down"), "\"source down\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn span_fields_with_spaces_stay_whole() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(Logfmt)
            .fmt_fields(tracing_logfmt::FieldsFormatter::default())
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("source", builder = "ci runner 2").entered();
            tracing::warn!(retry_in = "1s", "source down");
        });
        let line = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let rest = line.split_once(' ').expect("ts first").1;
        assert_eq!(rest, "level=warn msg=\"source down\" builder=\"ci runner 2\" retry_in=1s\n");
        let ts = line.strip_prefix("ts=").unwrap().split(' ').next().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
