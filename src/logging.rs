//! Tracing set-up: logfmt (the Prometheus ecosystem's habit) or JSON, on stderr.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs, one event a line.
    Logfmt,
    /// One JSON object a line.
    Json,
}

/// The log settings, validated.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// An `EnvFilter` directive.
    pub filter: String,
    /// logfmt or JSON.
    pub format: LogFormat,
}

/// The levels `--log.level` takes, least verbose first.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl LogConfig {
    /// Validates a level name (one of [`LEVELS`], any case); the error says what would be right.
    pub fn new(level: &str, format: LogFormat) -> Result<LogConfig, String> {
        let filter = level.trim().to_ascii_lowercase();
        if !LEVELS.contains(&filter.as_str()) {
            return Err(format!("{level:?} is not one of {}", LEVELS.join(", ")));
        }
        Ok(LogConfig { filter, format })
    }
}

/// Quotes a logfmt value when it needs it.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c == ' ' || c == '"' || c == '=' || c.is_control()) {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.msg = v;
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(&v));
        }
    }
}

/// A logfmt event formatter: `ts=… level=info msg="…" key=value`.
#[derive(Debug, Clone, Copy)]
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        writeln!(
            w,
            "ts={} level={} target={} msg={}{}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            meta.level().as_str().to_ascii_lowercase(),
            meta.target(),
            quote(&f.msg),
            f.rest
        )
    }
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::new(format!(
        "{},hyper=warn,bollard=warn,reqwest=warn,h2=warn",
        cfg.filter
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn logfmt_values_are_quoted_only_when_needed() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a=\"b\""), "\"a=\\\"b\\\"\"");
        assert_eq!(quote(""), "\"\"");
    }
}
