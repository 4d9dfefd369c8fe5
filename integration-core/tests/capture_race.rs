//! The race that made log-capturing tests fail on a loaded machine, replayed against
//! `integration_core::testing`: threads that capture at different levels, and threads that capture
//! nothing, hit the same callsites at once.
//!
//! With one thread-local subscriber per test (`tracing::subscriber::set_default`), tracing's
//! process-wide interest cache lets one thread's subscriber (or the lack of one) decide for the
//! others, and captures lose events. Set `CAPTURE_RACE_NAIVE=1` to run the same scenario with that
//! naive capture and see it fail; the `testing` module explains the cause. In a binary of its own:
//! the naive mode must be the only kind of subscriber in its process.

#![cfg(feature = "test-util")]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use integration_core::testing::{Captured, capture};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What a capture saw, reduced to what the scenario checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    /// `"span"` or the event's message.
    what: String,
    level: Level,
    thread: String,
    round: String,
    /// For an event: whether it was recorded inside the captured `work` span.
    in_span: bool,
}

/// One running capture, either kind.
enum Session {
    Support(integration_core::testing::CaptureGuard),
    Naive(
        Arc<Mutex<Vec<Seen>>>,
        #[allow(dead_code)] tracing::subscriber::DefaultGuard,
    ),
    None,
}

impl Session {
    // The naive capture is the point of the naive mode.
    #[allow(clippy::disallowed_methods)]
    fn start(filter: Option<LevelFilter>) -> Session {
        let Some(filter) = filter else {
            return Session::None;
        };
        if naive() {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let subscriber =
                tracing_subscriber::registry().with(NaiveLayer(seen.clone()).with_filter(filter));
            Session::Naive(seen, tracing::subscriber::set_default(subscriber))
        } else {
            Session::Support(capture(filter))
        }
    }

    fn seen(&self) -> Vec<Seen> {
        let mut seen = match self {
            Session::Support(captured) => from_support(captured),
            Session::Naive(seen, _) => seen.lock().unwrap().clone(),
            Session::None => Vec::new(),
        };
        seen.sort();
        seen
    }
}

fn naive() -> bool {
    std::env::var_os("CAPTURE_RACE_NAIVE").is_some_and(|v| v == "1")
}

fn from_support(captured: &Captured) -> Vec<Seen> {
    let spans = captured.spans();
    let mut seen: Vec<Seen> = spans
        .iter()
        .map(|span| Seen {
            what: "span".to_owned(),
            level: span.level,
            thread: span.field("thread").unwrap_or_default().to_owned(),
            round: span.field("round").unwrap_or_default().to_owned(),
            in_span: false,
        })
        .collect();
    seen.extend(captured.events().into_iter().map(|event| {
        let span = event
            .span
            .and_then(|id| spans.iter().find(|s| s.id == id && s.name == "work"));
        Seen {
            what: event.message().to_owned(),
            level: event.level,
            thread: event.field("thread").unwrap_or_default().to_owned(),
            round: event.field("round").unwrap_or_default().to_owned(),
            in_span: span.is_some(),
        }
    }));
    seen
}

/// The naive capture, as the tests had it: a layer of a thread-local subscriber.
struct NaiveLayer(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for NaiveLayer {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            what: "span".to_owned(),
            level: *attrs.metadata().level(),
            thread: fields.0.remove("thread").unwrap_or_default(),
            round: fields.0.remove("round").unwrap_or_default(),
            in_span: false,
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let in_span = ctx.event_span(event).is_some_and(|s| s.name() == "work");
        self.0.lock().unwrap().push(Seen {
            what: fields.0.remove("message").unwrap_or_default(),
            level: *event.metadata().level(),
            thread: fields.0.remove("thread").unwrap_or_default(),
            round: fields.0.remove("round").unwrap_or_default(),
            in_span,
        });
    }
}

/// The code under test: a span and one event per level, the same callsites for every thread.
fn work(thread: usize, round: usize) {
    let span = tracing::info_span!("work", thread, round);
    let _entered = span.enter();
    tracing::error!(thread, round, "e");
    tracing::warn!(thread, round, "w");
    tracing::info!(thread, round, "i");
    tracing::debug!(thread, round, "d");
    tracing::trace!(thread, round, "t");
}

/// What a capture at `filter` must have seen of `work(thread, round)`: exactly its levels.
fn expected(filter: Option<LevelFilter>, thread: usize, round: usize) -> Vec<Seen> {
    let Some(filter) = filter else {
        return Vec::new();
    };
    let span = Level::INFO <= filter;
    let mut seen = Vec::new();
    if span {
        seen.push(Seen {
            what: "span".to_owned(),
            level: Level::INFO,
            thread: thread.to_string(),
            round: round.to_string(),
            in_span: false,
        });
    }
    for (what, level) in [
        ("e", Level::ERROR),
        ("w", Level::WARN),
        ("i", Level::INFO),
        ("d", Level::DEBUG),
        ("t", Level::TRACE),
    ] {
        if level <= filter {
            seen.push(Seen {
                what: what.to_owned(),
                level,
                thread: thread.to_string(),
                round: round.to_string(),
                in_span: span,
            });
        }
    }
    seen.sort();
    seen
}

/// A callsite hit first by a thread without a capture, while another thread's capture is the only
/// one alive: with thread-local subscribers, tracing asks only the first thread's default (none),
/// caches `never` for the callsite, and the capturing thread then misses its event.
fn first_hit_elsewhere() {
    tracing::debug!("first hit elsewhere");
}

fn a_callsite_first_hit_by_a_thread_without_capture_stays_on_for_the_others() -> Vec<String> {
    let (to_other, other_waits) = mpsc::channel::<()>();
    let (to_capturing, capturing_waits) = mpsc::channel::<()>();
    let other = thread::spawn(move || {
        other_waits.recv().unwrap();
        first_hit_elsewhere();
        to_capturing.send(()).unwrap();
    });
    let session = Session::start(Some(LevelFilter::TRACE));
    to_other.send(()).unwrap();
    capturing_waits.recv().unwrap();
    first_hit_elsewhere();
    let seen = session.seen();
    drop(session);
    other.join().unwrap();
    let messages: Vec<String> = seen.into_iter().map(|s| s.what).collect();
    if messages == ["first hit elsewhere"] {
        Vec::new()
    } else {
        vec![format!(
            "the capturing thread saw {messages:?} of the callsite another thread hit first"
        )]
    }
}

/// The filters of the parallel threads: none at all, and every level.
const FILTERS: [Option<LevelFilter>; 7] = [
    None,
    Some(LevelFilter::OFF),
    Some(LevelFilter::ERROR),
    Some(LevelFilter::WARN),
    Some(LevelFilter::INFO),
    Some(LevelFilter::DEBUG),
    Some(LevelFilter::TRACE),
];

const THREADS: usize = 14;
const ROUNDS: usize = 200;

fn parallel_threads_with_different_filters_each_see_exactly_their_own() -> Vec<String> {
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let start = start.clone();
            thread::spawn(move || {
                let filter = FILTERS[thread % FILTERS.len()];
                let mut failures = Vec::new();
                start.wait();
                for round in 0..ROUNDS {
                    let session = Session::start(filter);
                    work(thread, round);
                    let seen = session.seen();
                    drop(session);
                    let want = expected(filter, thread, round);
                    if seen != want {
                        failures.push(format!(
                            "thread {thread} at {filter:?}, round {round}: saw {seen:?}, want {want:?}"
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[test]
fn captures_are_exact_while_other_threads_capture_at_other_levels_or_not_at_all() {
    // First the interleaving that fails the naive capture every time, then the free-for-all.
    let mut failures = a_callsite_first_hit_by_a_thread_without_capture_stays_on_for_the_others();
    failures.extend(parallel_threads_with_different_filters_each_see_exactly_their_own());
    let mode = if naive() {
        "naive thread-local subscribers"
    } else {
        "integration_core::testing"
    };
    assert!(
        failures.is_empty(),
        "{mode}: {} captures were wrong; the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
