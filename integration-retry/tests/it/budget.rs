//! The retry budget under a full outage: the measurement the issue asks for.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_core::Error;
use integration_core::ext::Attempts;
use integration_retry::{Jitter, RetryBudget, RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use crate::common::*;

/// Runs `rate` calls per second for `seconds` of paused time against an upstream that always answers
/// 503, with the default policy (4 attempts, full jitter) and the default budget (20 % over 10 s,
/// floor 10/s).
/// Returns (calls, attempts, elapsed).
async fn outage(rate: u64, seconds: u64) -> (u64, u64, Duration) {
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = attempts.clone();
    let upstream = tower::service_fn(move |_request: Request<String>| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    // Seeded randomness: realistic spread, the same figures on every run.
    let rng = std::sync::Mutex::new(fastrand::Rng::with_seed(7));
    let jitter = Jitter::from_fn(move || rng.lock().unwrap().f64());
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default().with_jitter(jitter)))
        .service(upstream);

    let start = Instant::now();
    let gap = Duration::from_secs(1) / u32::try_from(rate).unwrap();
    let calls = rate * seconds;
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let service = service.clone();
        tasks.push(tokio::spawn(
            service.oneshot(
                Request::get("https://api.example.com/")
                    .body(String::new())
                    .unwrap(),
            ),
        ));
        tokio::time::sleep(gap).await;
    }
    for task in tasks {
        // A 503 response or a budget refusal: both fine, only the attempts count.
        let _ = task.await.unwrap();
    }
    (calls, attempts.load(Ordering::Relaxed), start.elapsed())
}

/// Under a full outage at steady load, attempts per call stay at or under `1 + ratio`, plus the
/// floor's contribution.
///
/// The floor lets `min_per_second * window` retries through per window whatever the traffic. The
/// window forgets one slot (a tenth of it) at a time, so it spans between 0.9 and 1.0 window; each
/// 0.9 window of the run may therefore spend the floor once: `floor_total = min_per_second * window *
/// ceil(run / (0.9 * window))`, which is what a quiet client gets and what a busy one barely notices
/// (about 0.01 attempts per call at 1000 calls/s).
#[tokio::test(start_paused = true)]
async fn budget_bounds_attempts_per_call_under_a_full_outage() {
    let budget = RetryBudget::default();
    let window = budget.window().as_secs_f64();
    for (rate, seconds) in [(100, 30), (1000, 30)] {
        let (calls, attempts, elapsed) = outage(rate, seconds).await;
        let per_call = attempts as f64 / calls as f64;
        let windows = (elapsed.as_secs_f64() / (0.9 * window)).ceil();
        let floor = f64::from(budget.min_per_second()) * window * windows;
        let bound = 1.0 + budget.ratio() + floor / calls as f64;
        println!(
            "outage at {rate} calls/s for {seconds} s (run lasted {:.1} s): {calls} calls, {attempts} \
             attempts, {per_call:.3} attempts/call; bound 1 + {} + floor {floor:.0}/{calls} = {bound:.3} \
             (3.000 without a budget)",
            elapsed.as_secs_f64(),
            budget.ratio(),
        );
        assert!(per_call <= bound, "{per_call} > {bound}");
        assert!(per_call > 1.0, "the budget still allows some retries");
    }
}

/// Runs `rate` calls per second for `seconds` of paused time against an upstream that answers 503
/// to a share `failing` of attempts (seeded), with 4 attempts and `budget`.
/// Returns (calls, attempts, successes).
async fn partial(rate: u64, seconds: u64, failing: f64, budget: RetryBudget) -> (u64, u64, u64) {
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = attempts.clone();
    let draws = Arc::new(std::sync::Mutex::new(fastrand::Rng::with_seed(12)));
    let upstream = tower::service_fn(move |_request: Request<String>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let status = if draws.lock().unwrap().f64() < failing {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let rng = std::sync::Mutex::new(fastrand::Rng::with_seed(7));
    let jitter = Jitter::from_fn(move || rng.lock().unwrap().f64());
    let service = ServiceBuilder::new()
        .layer(
            RetryLayer::new(
                RetryPolicy::default()
                    .with_max_attempts(4)
                    .with_jitter(jitter),
            )
            .with_budget(budget),
        )
        .service(upstream);
    let gap = Duration::from_secs(1) / u32::try_from(rate).unwrap();
    let calls = rate * seconds;
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let service = service.clone();
        tasks.push(tokio::spawn(
            service.oneshot(
                Request::get("https://api.example.com/")
                    .body(String::new())
                    .unwrap(),
            ),
        ));
        tokio::time::sleep(gap).await;
    }
    let mut successes = 0;
    for task in tasks {
        if task
            .await
            .unwrap()
            .is_ok_and(|response| response.status() == StatusCode::OK)
        {
            successes += 1;
        }
    }
    (calls, attempts.load(Ordering::Relaxed), successes)
}

/// The measurement behind the budget's default (issue 12, part 3): a budget that refunds the
/// retries that succeed against one that charges every retry, at 1,000 calls/s for 10 s against
/// an upstream failing 35 % of its attempts (4 attempts per call).
///
/// Refunds let every retry through (98.5 % succeed, the most 4 attempts can give) but cost about
/// 1.5 attempts per call, past the 1.25 the issue sets for this load: a partial failure is often
/// an overload, which 50 % more traffic feeds. Charging every retry holds attempts per call at
/// `1 + ratio` (plus the floor's share) and lets about 80 % succeed, `(1 - p) * (1 + ratio)` and
/// a little: so the default charges, and refunds are an option for upstreams whose failures are
/// not load.
#[tokio::test(start_paused = true)]
async fn budget_with_and_without_refunds_under_35_percent_failures() {
    let (calls, charged_attempts, charged_ok) =
        partial(1000, 10, 0.35, RetryBudget::default()).await;
    let (_, refunded_attempts, refunded_ok) =
        partial(1000, 10, 0.35, RetryBudget::default().with_refunds(true)).await;
    let per_call = |attempts: u64| attempts as f64 / calls as f64;
    let share = |ok: u64| ok as f64 / calls as f64 * 100.0;
    println!(
        "35 % of attempts failing, 1000 calls/s for 10 s, 4 attempts: every retry charged (the \
         default): {:.1} % succeeded, {:.3} attempts/call; successful retries refunded: {:.1} % \
         succeeded, {:.3} attempts/call",
        share(charged_ok),
        per_call(charged_attempts),
        share(refunded_ok),
        per_call(refunded_attempts),
    );
    assert!(per_call(charged_attempts) <= 1.25);
    assert!(share(charged_ok) > 75.0 && share(charged_ok) < 85.0);
    // Refunds: every retry allowed, so success is what 4 attempts give, 1 - 0.35^4 = 98.5 %.
    assert!(share(refunded_ok) > 97.5);
    assert!(per_call(refunded_attempts) > 1.4);
}

/// Regression (issue 13, part 3): a call answered 429 with `Retry-After` failed
/// `retry_budget_exhausted` when the budget was spent, though it only had to wait its turn: a
/// throttled retry is not charged.
#[tokio::test(start_paused = true)]
async fn regression_a_throttled_retry_is_not_charged_to_the_budget() {
    // A budget that allows not a single retry.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.0);
    let layer = RetryLayer::new(RetryPolicy::default()).with_budget(budget.clone());
    let (call, mut handle) = spawn_call(layer.clone(), request("GET"));
    answer(&mut handle, status_retry_after(429, 1)).await;
    answer(&mut handle, status(429)).await;
    answer(&mut handle, status(200)).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.count(), 3);
    assert!(
        attempts.waited() >= Duration::from_secs(1),
        "the hint is honoured"
    );

    // A 503, with or without `Retry-After`, is charged: the budget refuses.
    for response in [status(503), status_retry_after(503, 1)] {
        let (call, mut handle) = spawn_call(layer.clone(), request("GET"));
        answer(&mut handle, response).await;
        let error = Error::from(call.await.unwrap().unwrap_err());
        assert!(error.is_budget_exhausted());
    }
}

/// With refunds on, a retry that gets through is paid back through the layer; one that fails is
/// not.
#[tokio::test(start_paused = true)]
async fn with_refunds_a_successful_retry_is_paid_back() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).with_refunds(true);
    let layer = RetryLayer::new(RetryPolicy::default()).with_budget(budget.clone());
    let (call, mut handle) = spawn_call(layer.clone(), request("GET"));
    answer(&mut handle, status(503)).await;
    answer(&mut handle, status(200)).await;
    call.await.unwrap().unwrap();
    // One call deposited, its retry refunded: one retry left.
    assert_eq!(budget.remaining(), 1);
    let (call, mut handle) = spawn_call(layer, request("GET"));
    answer(&mut handle, status(503)).await;
    answer(&mut handle, status(502)).await;
    answer(&mut handle, status(200)).await;
    call.await.unwrap().unwrap();
    // Two calls: the failed retry stays charged, the successful one is refunded.
    assert_eq!(budget.remaining(), 1);
}
