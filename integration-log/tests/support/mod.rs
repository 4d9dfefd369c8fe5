//! A capturing subscriber: a `tracing_subscriber::Layer` that records every span (name, fields,
//! parent) and every event (level, fields, span) into shared vectors.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub id: u64,
    pub name: String,
    pub level: Level,
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

impl SpanRecord {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub level: Level,
    pub span: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

impl EventRecord {
    pub fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Captured {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
}

impl Captured {
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().unwrap().clone()
    }
    pub fn events(&self) -> Vec<EventRecord> {
        self.events.lock().unwrap().clone()
    }
    pub fn span_named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
    pub fn event(&self, message: &str) -> Option<EventRecord> {
        self.events().into_iter().find(|e| e.message() == message)
    }
    /// Every recorded text: span names and fields, event fields.
    pub fn all_text(&self) -> Vec<String> {
        let mut out = Vec::new();
        for span in self.spans() {
            out.push(span.name.clone());
            out.extend(span.fields.iter().map(|(k, v)| format!("{k}={v}")));
        }
        for event in self.events() {
            out.extend(event.fields.iter().map(|(k, v)| format!("{k}={v}")));
        }
        out
    }
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The layer; `Captured` reads what it saw.
pub struct CaptureLayer(pub Captured);

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Visitor(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        self.0.spans.lock().unwrap().push(SpanRecord {
            id: id.into_u64(),
            name: attrs.metadata().name().to_owned(),
            level: *attrs.metadata().level(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.spans.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Visitor(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        let span = ctx.event_span(event).map(|s| s.id().into_u64());
        self.0.events.lock().unwrap().push(EventRecord {
            level: *event.metadata().level(),
            span,
            fields,
        });
    }
}

/// A subscriber at `level` that captures into the returned handle.
pub fn subscriber(
    level: tracing_subscriber::filter::LevelFilter,
) -> (impl Subscriber + Send + Sync, Captured) {
    use tracing_subscriber::prelude::*;
    let captured = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(CaptureLayer(captured.clone()).with_filter(level));
    (subscriber, captured)
}
