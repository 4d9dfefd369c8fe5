//! `call -v`: every attempt of a call, read from the stack's own tracing spans and events (the
//! attempt span of the log layer, the retry layer's decisions, the rate limiter's throttle
//! signals, the token cache's fetches). Nothing here re-implements the stack, and every value shown
//! is one the stack put in its logs, redacted as there.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::output::{self, DIM, GREEN, RED, YELLOW, paint};

/// The fields of a span or an event, as text.
#[derive(Clone, Debug, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// One attempt in flight: its number, its start, and its span's fields.
struct Attempt {
    number: u32,
    started: Instant,
    fields: Fields,
}

/// What `-v` collected: printed on stderr as it happens, and kept for `--output json`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trace {
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    attempts: Arc<AtomicU32>,
    print: bool,
}

impl Trace {
    /// A trace that prints on stderr (`print`) and keeps every entry.
    pub(crate) fn new(print: bool) -> Self {
        Self {
            print,
            ..Self::default()
        }
    }

    /// Installs the layer as the process's subscriber.
    pub(crate) fn install(&self) {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(VerboseLayer {
            trace: self.clone(),
        });
        // Only fails when a subscriber is already set, which `main` never does.
        let _ = tracing::subscriber::set_global_default(subscriber);
    }

    /// Every entry so far, for JSON output.
    pub(crate) fn entries(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn emit(&self, entry: serde_json::Value, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
        if self.print {
            let mut err = anstream::stderr();
            let _ = writeln!(err, "{line}");
        }
    }
}

struct VerboseLayer {
    trace: Trace,
}

/// The stack's targets: our crates only, at debug and above.
fn wanted(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("integration") && *metadata.level() <= Level::DEBUG
}

/// An attempt span is the log layer's `client` span.
fn is_attempt(metadata: &Metadata<'_>, fields: &Fields) -> bool {
    metadata.target() == "integration_log"
        && fields.0.get("otel.kind").map(String::as_str) == Some("client")
}

impl<S> Layer<S> for VerboseLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        wanted(metadata)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if !is_attempt(attrs.metadata(), &fields) {
            return;
        }
        let number = self.trace.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let method = attrs.metadata().name();
        let url = fields.0.get("url.full").cloned().unwrap_or_default();
        self.trace.emit(
            serde_json::json!({"event": "attempt", "attempt": number, "method": method, "url": url}),
            paint(output::BOLD, format!("> attempt {number}: {method} {url}")),
        );
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Attempt {
                number,
                started: Instant::now(),
                fields,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(attempt) = span.extensions_mut().get_mut::<Attempt>()
        {
            values.record(&mut attempt.fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let extensions = span.extensions();
        let Some(attempt) = extensions.get::<Attempt>() else {
            return;
        };
        let took = attempt.started.elapsed();
        let status = attempt.fields.0.get("http.response.status_code").cloned();
        let error = attempt.fields.0.get("error.type").cloned();
        let outcome = match (&status, &error) {
            (Some(status), _) => {
                let code: u16 = status.parse().unwrap_or(0);
                let reason = http::StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                let text = format!("{status} {reason}");
                if code >= 400 {
                    paint(RED, text)
                } else {
                    paint(GREEN, text)
                }
            }
            (None, Some(error)) => paint(RED, format!("failed: {error}")),
            (None, None) => paint(YELLOW, "no answer"),
        };
        let number = attempt.number;
        self.trace.emit(
            serde_json::json!({
                "event": "attempt_end",
                "attempt": number,
                "status": status.and_then(|s| s.parse::<u16>().ok()),
                "error_type": error,
                "duration_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            }),
            format!(
                "< attempt {number}: {outcome} in {}",
                output::duration(took)
            ),
        );
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let target = event.metadata().target();
        // `integration_retry::future` reads better as `retry`.
        let short = target
            .split("::")
            .next()
            .unwrap_or(target)
            .trim_start_matches("integration_");
        let details: Vec<String> = fields
            .0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let mut entry = serde_json::json!({
            "event": "log",
            "level": event.metadata().level().as_str(),
            "source": short,
            "message": message,
        });
        for (name, value) in &fields.0 {
            entry[name] = serde_json::Value::String(value.clone());
        }
        let line = format!(
            "* {} {message} {}",
            paint(DIM, format!("[{short}]")),
            paint(DIM, details.join(" "))
        );
        self.trace.emit(entry, line.trim_end().to_owned());
    }
}
