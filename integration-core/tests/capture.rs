//! `integration_core::testing`: what a capture records, which thread's work it gets, and its
//! filters. The parallel race it exists for is replayed in `capture_race.rs`.

#![cfg(feature = "test-util")]

use integration_core::testing::{CaptureFilter, Captured, capture};
use tracing::{Instrument, Level};
use tracing_subscriber::filter::{LevelFilter, Targets};

#[test]
fn spans_and_events_are_recorded_with_their_fields_parents_and_updates() {
    let captured = capture(LevelFilter::TRACE);
    let outer = tracing::info_span!(
        "outer",
        integration.name = "github",
        status = tracing::field::Empty
    );
    outer.in_scope(|| {
        tracing::debug_span!("inner", attempt = 2_u32).in_scope(|| {
            tracing::warn!(wait_ms = 50_u64, reason = %"server_error", "retrying");
        });
    });
    outer.record("status", 503_u16);

    let outer_record = &captured.span_named("outer")[0];
    let inner_record = &captured.span_named("inner")[0];
    assert_eq!(outer_record.field("integration.name"), Some("github"));
    assert_eq!(
        outer_record.field("status"),
        Some("503"),
        "a later record() is kept"
    );
    assert_eq!(outer_record.parent, None);
    assert_eq!(inner_record.parent, Some(outer_record.id));
    assert_eq!(inner_record.level, Level::DEBUG);
    assert_ne!(inner_record.id, outer_record.id);

    let event = captured.event("retrying").expect("the event");
    assert_eq!(event.level, Level::WARN);
    assert_eq!(event.field("wait_ms"), Some("50"));
    assert_eq!(event.field("reason"), Some("server_error"));
    assert_eq!(event.span, Some(inner_record.id));
    assert_eq!(event.scope, [inner_record.id, outer_record.id]);
    assert!(captured.contains("reason=server_error"));
    assert!(!captured.contains("nothing like this"));
}

#[test]
fn a_level_filter_keeps_that_level_and_above() {
    let captured = capture(Level::INFO);
    tracing::debug_span!("quiet").in_scope(|| {
        tracing::info!("kept");
        tracing::debug!("dropped");
    });
    assert!(captured.spans().is_empty(), "{captured:?}");
    let messages: Vec<String> = captured
        .events()
        .iter()
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(messages, ["kept"]);
    // Outside any captured span.
    assert_eq!(captured.event("kept").unwrap().span, None);
}

#[test]
fn targets_and_predicates_filter_by_target() {
    let captured = capture(
        Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target("noisy", LevelFilter::OFF),
    );
    tracing::info!(target: "noisy", "dropped");
    tracing::info!(target: "quiet", "kept");
    assert_eq!(captured.events().len(), 1, "{captured:?}");
    assert_eq!(captured.events()[0].target, "quiet");
    drop(captured);

    let only_warn = capture(CaptureFilter::new(|m| *m.level() == Level::WARN));
    tracing::error!("dropped");
    tracing::warn!("kept");
    assert_eq!(only_warn.events().len(), 1);
    assert_eq!(only_warn.events()[0].message(), "kept");
}

#[test]
fn guards_nest_and_a_capture_ends_with_its_guard() {
    let outer = capture(LevelFilter::TRACE);
    tracing::info!("one");
    {
        let inner = capture(LevelFilter::TRACE);
        tracing::info!("two");
        assert_eq!(inner.events().len(), 1);
    }
    tracing::info!("three");
    let kept = outer.captured();
    drop(outer);
    tracing::info!("four");
    let messages: Vec<String> = kept
        .events()
        .iter()
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(messages, ["one", "three"]);
}

#[test]
fn other_threads_are_not_captured_unless_they_enter_the_capture() {
    let captured = capture(LevelFilter::TRACE);
    std::thread::spawn(|| tracing::info!("another test's thread"))
        .join()
        .unwrap();
    let handle = captured.captured();
    std::thread::spawn(move || {
        let _entered = handle.enter();
        tracing::info!("a thread of this test");
    })
    .join()
    .unwrap();
    let messages: Vec<String> = captured
        .events()
        .iter()
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(messages, ["a thread of this test"]);
}

/// A multi-thread runtime runs tasks on worker threads without the test's guard: what runs inside a
/// captured span still reaches the capture, through the span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_in_a_captured_span_on_a_worker_thread_is_captured() {
    let captured = capture(LevelFilter::DEBUG);
    let span = tracing::info_span!("call");
    let task = tokio::spawn(
        async {
            tracing::debug!(worker = ?std::thread::current().id(), "on a worker");
            tracing::trace!("below the filter");
            tracing::info_span!("child").in_scope(|| tracing::info!("in a child"));
        }
        .instrument(span),
    );
    task.await.unwrap();
    let call = &captured.span_named("call")[0];
    let child = &captured.span_named("child")[0];
    assert_eq!(child.parent, Some(call.id));
    assert_eq!(captured.event("on a worker").unwrap().span, Some(call.id));
    assert_eq!(captured.event("in a child").unwrap().span, Some(child.id));
    assert!(captured.event("below the filter").is_none());
}

#[test]
#[should_panic(expected = "not the capturing one")]
#[allow(clippy::disallowed_methods)] // The mistake this test is about.
fn a_thread_local_subscriber_is_refused() {
    let _local = tracing::subscriber::set_default(tracing_subscriber::registry());
    let _captured = capture(LevelFilter::TRACE);
}

#[test]
fn a_capture_made_elsewhere_reads_the_same_records() {
    let captured = Captured::new(LevelFilter::TRACE);
    {
        let _guard = captured.enter();
        tracing::info!("via enter");
    }
    assert_eq!(captured.events().len(), 1);
    assert!(format!("{captured:?}").contains("via enter"));
}
