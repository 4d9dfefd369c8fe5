//! Test support (feature `test-util`): capturing `tracing` spans and events in tests that run in
//! parallel, and a `redis-server` of a test's own ([`RedisServer`]) for outage tests. Never for
//! production code.
//!
//! # Why not a thread-local subscriber per test
//!
//! The obvious capture, `tracing::subscriber::set_default(my_subscriber)` in each test, is not
//! correct when tests run in parallel threads of one process (what `cargo test` does). `tracing`
//! caches, for each callsite, the [`Interest`] of *all* the subscribers it knows at that moment,
//! process-wide, and a global maximum level:
//!
//! - while exactly one thread-local subscriber is registered, a callsite first hit on *another*
//!   thread (a test with no subscriber) asks only that thread's default (none), and caches `never`
//!   for everyone: the test whose subscriber wanted the event never sees it;
//! - a callsite cached `always` skips the subscriber's `enabled` check, so a test whose filter
//!   rejects the event can see it anyway;
//! - a rebuild of the caches (on each `set_default`) racing with another test's first hit of a
//!   callsite can leave either state behind.
//!
//! Alone, each test passes; on a loaded machine, where tests overlap more, they fail at random.
//!
//! # What this module does instead
//!
//! One global subscriber per test binary, installed once ([`tracing::subscriber::set_global_default`]
//! behind a `OnceLock`). It answers [`Interest::sometimes`] for every callsite and `TRACE` as its
//! maximum level hint, so nothing is ever cached as `never` or `always` and every span and event is
//! asked about each time. It routes each one to the capture of the test that emitted it:
//!
//! - the capture made current on this thread by a [`CaptureGuard`] (from [`capture`]); tokio tests
//!   on a current-thread runtime (the default of `#[tokio::test]`) run every task on the test's
//!   thread, so a guard at the top of the test covers everything it spawns;
//! - otherwise the capture that owns the current span (or the event's parent span), so a task on
//!   a multi-thread runtime that was instrumented with a captured span (`.in_current_span()`) is
//!   captured too; [`Captured::enter`] makes a capture current on another thread by hand;
//! - otherwise nothing: a test without a capture records nothing and disturbs nobody.
//!
//! Each capture applies its own filter ([`CaptureFilter`]: a level, `Targets`, or a closure) in the
//! subscriber's `enabled` check, so tests with different filters share the process safely.
//!
//! A test that needs a process with no subscriber at all, or a global filter of its own (the
//! global maximum level is process-wide), belongs in a test binary of its own, without this
//! module. Once a capture is used, no other subscriber may be installed in the binary: [`capture`]
//! panics when the thread has a thread-local default of its own, which would hide the captures.
//!
//! # Example
//!
//! ```
//! use integration_core::testing::capture;
//! use tracing::Level;
//!
//! let captured = capture(Level::DEBUG);
//! tracing::info_span!("call", integration.name = "github").in_scope(|| {
//!     tracing::debug!(attempt = 1, "retrying");
//!     tracing::trace!("below the capture's level");
//! });
//!
//! let span = &captured.span_named("call")[0];
//! assert_eq!(span.field("integration.name"), Some("github"));
//! let event = captured.event("retrying").unwrap();
//! assert_eq!(event.field("attempt"), Some("1"));
//! assert_eq!(event.span, Some(span.id));
//! assert_eq!(captured.events().len(), 1);
//! ```

mod redis_server;

pub use redis_server::RedisServer;

/// The shared Redis the tests use: `REDIS_URL`, by default `redis://127.0.0.1:6379` (the machine's
/// instance; never stopped or flushed by a test, see [`delete_prefixed`]).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes the keys of the shared Redis under a test's own prefix (those matching `{prefix:*`: every
/// Redis-backed layer names its keys `{prefix:key}:what`, the hash tag holding the prefix), so a
/// test cleans up after itself without touching any other test's keys.
///
/// # Panics
///
/// When Redis at [`redis_url`] cannot be reached: the test cannot mean anything without it.
#[cfg(feature = "redis")]
pub async fn delete_prefixed(prefix: &str) {
    let client = ::redis::Client::open(redis_url()).expect("REDIS_URL is a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("the shared Redis is reachable");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        ::redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut connection)
            .await
            .expect("DEL");
    }
}

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Starts capturing on this thread: every span and event that `filter` lets through, emitted on
/// this thread (or inside a span this capture recorded) until the guard is dropped.
///
/// Installs the binary's global capturing subscriber on first use. Guards nest: dropping one makes
/// the previous capture of the thread current again.
///
/// # Panics
///
/// When another global subscriber was installed in this binary, or when this thread has a
/// thread-local default subscriber (`set_default`): either would hide the captures.
pub fn capture(filter: impl Into<CaptureFilter>) -> CaptureGuard {
    Captured::new(filter.into()).enter()
}

/// Which spans and events a capture keeps: a [`LevelFilter`], a [`Level`], [`Targets`], or any
/// predicate on their metadata ([`CaptureFilter::new`]).
#[derive(Clone)]
pub struct CaptureFilter(Arc<dyn Fn(&Metadata<'_>) -> bool + Send + Sync>);

impl CaptureFilter {
    /// A filter that keeps what `predicate` accepts.
    pub fn new(predicate: impl Fn(&Metadata<'_>) -> bool + Send + Sync + 'static) -> Self {
        CaptureFilter(Arc::new(predicate))
    }

    /// Whether a span or event with this metadata is kept.
    pub fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        (self.0)(metadata)
    }
}

impl From<LevelFilter> for CaptureFilter {
    fn from(max: LevelFilter) -> Self {
        CaptureFilter::new(move |metadata| *metadata.level() <= max)
    }
}

impl From<Level> for CaptureFilter {
    fn from(max: Level) -> Self {
        LevelFilter::from_level(max).into()
    }
}

impl From<Targets> for CaptureFilter {
    fn from(targets: Targets) -> Self {
        CaptureFilter::new(move |metadata| {
            targets.would_enable(metadata.target(), metadata.level())
        })
    }
}

impl fmt::Debug for CaptureFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureFilter").finish_non_exhaustive()
    }
}

/// A span as recorded: its fields as created, updated by later `record` calls.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Unique in the process (never reused, unlike `tracing`'s span ids).
    pub id: u64,
    /// The span's name.
    pub name: String,
    /// The span's target.
    pub target: String,
    /// The span's level.
    pub level: Level,
    /// The [`SpanRecord::id`] of its parent, when the parent was captured.
    pub parent: Option<u64>,
    /// Each field's value: strings as they are, anything else in its `Debug` form (which is its
    /// `Display` form for a `%value`).
    pub fields: BTreeMap<String, String>,
    /// How many times the span was entered (a layer's cost per call counts them).
    pub enters: u64,
}

impl SpanRecord {
    /// The value of the field `name`, if it was set.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// An event as recorded.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The event's level.
    pub level: Level,
    /// The event's target.
    pub target: String,
    /// The [`SpanRecord::id`] of the span it happened in, when that span was captured.
    pub span: Option<u64>,
    /// The ids of every captured span around it, innermost first.
    pub scope: Vec<u64>,
    /// Each field's value, `message` included, as in [`SpanRecord::fields`].
    pub fields: BTreeMap<String, String>,
}

impl EventRecord {
    /// The event's message, or `""`.
    pub fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }

    /// The value of the field `name`, if it was set.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// What one capture recorded; cheap to clone (clones share the records).
#[derive(Clone)]
pub struct Captured {
    inner: Arc<Inner>,
}

struct Inner {
    filter: CaptureFilter,
    spans: Mutex<Vec<SpanRecord>>,
    events: Mutex<Vec<EventRecord>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves records that are still worth reading.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Captured {
    /// A capture that keeps what `filter` lets through, not yet current anywhere (see
    /// [`Captured::enter`]).
    pub fn new(filter: impl Into<CaptureFilter>) -> Self {
        Captured {
            inner: Arc::new(Inner {
                filter: filter.into(),
                spans: Mutex::new(Vec::new()),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Makes this capture the current one of this thread until the guard is dropped (a thread of
    /// the test's own, say, or a worker that runs un-instrumented work of the test).
    ///
    /// # Panics
    ///
    /// As [`capture`].
    pub fn enter(&self) -> CaptureGuard {
        install();
        let routed = tracing::dispatcher::get_default(|dispatch| dispatch.is::<Router>());
        assert!(
            routed,
            "this thread's default subscriber is not the capturing one: a test of this binary \
             called `tracing::subscriber::set_default`/`with_default` or installed a global \
             subscriber, which hides the captures (use `integration_core::testing::capture`)"
        );
        let previous = CURRENT.with(|current| current.replace(Some(self.clone())));
        CaptureGuard {
            captured: self.clone(),
            previous,
            _not_send: PhantomData,
        }
    }

    /// Every span recorded, in order of creation.
    pub fn spans(&self) -> Vec<SpanRecord> {
        lock(&self.inner.spans).clone()
    }

    /// Every event recorded, in order.
    pub fn events(&self) -> Vec<EventRecord> {
        lock(&self.inner.events).clone()
    }

    /// The spans named `name`, in order of creation.
    pub fn span_named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// The first event whose message is `message`.
    pub fn event(&self, message: &str) -> Option<EventRecord> {
        self.events().into_iter().find(|e| e.message() == message)
    }

    /// Every recorded text: span names, `name=value` of every span and event field.
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

    /// Whether any recorded text (see [`Captured::all_text`]) contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.all_text().iter().any(|text| text.contains(needle))
    }

    fn push_span(&self, span: SpanRecord) {
        lock(&self.inner.spans).push(span);
    }

    fn push_event(&self, event: EventRecord) {
        lock(&self.inner.events).push(event);
    }

    fn record(&self, id: u64, fields: BTreeMap<String, String>) {
        let mut spans = lock(&self.inner.spans);
        if let Some(span) = spans.iter_mut().find(|s| s.id == id) {
            span.fields.extend(fields);
        }
    }
}

impl fmt::Debug for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Captured")
            .field("spans", &*lock(&self.inner.spans))
            .field("events", &*lock(&self.inner.events))
            .finish()
    }
}

/// Keeps a capture current on this thread; reads as the [`Captured`] it keeps. Dropping it makes the
/// thread's previous capture (if any) current again. Not `Send`: it belongs to its thread.
#[must_use = "the capture stops when the guard is dropped"]
pub struct CaptureGuard {
    captured: Captured,
    previous: Option<Captured>,
    _not_send: PhantomData<*const ()>,
}

impl CaptureGuard {
    /// A handle on the records that outlives the guard.
    pub fn captured(&self) -> Captured {
        self.captured.clone()
    }
}

impl Deref for CaptureGuard {
    type Target = Captured;

    fn deref(&self) -> &Captured {
        &self.captured
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // `try_with`: a guard dropped while the thread's locals are torn down has nothing to restore.
        let _ = CURRENT.try_with(|current| current.replace(previous));
    }
}

impl fmt::Debug for CaptureGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CaptureGuard").field(&self.captured).finish()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

fn thread_capture() -> Option<Captured> {
    CURRENT
        .try_with(|current| current.borrow().clone())
        .ok()
        .flatten()
}

/// The global subscriber: the registry (span storage, parents, the current span of each thread)
/// under the routing layer.
type Router = Layered<Route, Registry>;

fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Route)).expect(
            "another global tracing subscriber is installed in this test binary; captures \
                 need the global one (move that test to a binary of its own)",
        );
    });
}

/// Which capture a span belongs to, and its id in the records; kept in the span's extensions.
#[derive(Clone)]
struct Owner {
    captured: Captured,
    id: u64,
}

static NEXT_SPAN_ID: AtomicU64 = AtomicU64::new(1);

/// The routing layer: interest `sometimes` for every callsite, each span and event to its capture.
struct Route;

impl Route {
    /// This thread's capture, else the capture of the current span.
    fn current<S>(ctx: &Context<'_, S>) -> Option<Captured>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        thread_capture().or_else(|| {
            let span = ctx.lookup_current()?;
            let extensions = span.extensions();
            extensions.get::<Owner>().map(|o| o.captured.clone())
        })
    }
}

impl<S> Layer<S> for Route
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // Never `never` (a test with no capture would switch the callsite off for all) and never
        // `always` (that would skip the per-capture filter in `enabled`).
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // The global maximum level must let everything through: each capture filters on its own.
        Some(LevelFilter::TRACE)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Self::current(&ctx).is_some_and(|captured| captured.inner.filter.enabled(metadata))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Owner>().cloned());
        let Some(captured) =
            thread_capture().or_else(|| parent.as_ref().map(|p| p.captured.clone()))
        else {
            return;
        };
        // Fields are formatted before any lock is taken: a value's `Debug` may log in turn.
        let mut fields = BTreeMap::new();
        attrs.record(&mut Visitor(&mut fields));
        let owner = Owner {
            captured: captured.clone(),
            id: NEXT_SPAN_ID.fetch_add(1, Ordering::Relaxed),
        };
        captured.push_span(SpanRecord {
            id: owner.id,
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            level: *attrs.metadata().level(),
            parent: parent.map(|p| p.id),
            fields,
            enters: 0,
        });
        span.extensions_mut().insert(owner);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(owner) = span.extensions().get::<Owner>().cloned() else {
            return;
        };
        let mut spans = lock(&owner.captured.inner.spans);
        if let Some(span) = spans.iter_mut().find(|s| s.id == owner.id) {
            span.enters += 1;
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(owner) = span.extensions().get::<Owner>().cloned() else {
            return;
        };
        let mut fields = BTreeMap::new();
        values.record(&mut Visitor(&mut fields));
        owner.captured.record(owner.id, fields);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let scope: Vec<Owner> = ctx
            .event_scope(event)
            .into_iter()
            .flatten()
            .filter_map(|span| span.extensions().get::<Owner>().cloned())
            .collect();
        let Some(captured) = thread_capture().or_else(|| scope.first().map(|o| o.captured.clone()))
        else {
            return;
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        captured.push_event(EventRecord {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            span: scope.first().map(|o| o.id),
            scope: scope.iter().map(|o| o.id).collect(),
            fields,
        });
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
