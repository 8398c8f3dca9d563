//! Logging: human-readable lines on stderr, or one JSON object per line with
//! `NUDGE_LOG_FORMAT=json` (for log shippers), filtered by `NUDGE_LOG` (`info`, `debug`,
//! `nudge_engine=debug`...).

use std::io::Write;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

pub fn init(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NUDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = std::env::var("NUDGE_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "json" => tracing_subscriber::registry()
            .with(filter)
            .with(JsonLines)
            .init(),
        other => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .init();
            if !other.is_empty() && other != "text" {
                tracing::warn!(
                    "NUDGE_LOG_FORMAT={other} is not a log format (json or text): logging text"
                );
            }
        }
    }
}

/// Writes each event as a JSON object on one line of stderr: `ts` (RFC 3339, UTC), `level`,
/// `target`, `message` and the event's fields by name.
struct JsonLines;

impl<S: tracing::Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        let mut fields = serde_json::Map::new();
        fields.insert(
            "ts".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        fields.insert("level".into(), metadata.level().as_str().into());
        fields.insert("target".into(), metadata.target().into());
        event.record(&mut Fields(&mut fields));
        let mut line = serde_json::Value::Object(fields).to_string();
        line.push('\n');
        // One write per line, so lines of concurrent events never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Collects an event's fields as JSON values.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
