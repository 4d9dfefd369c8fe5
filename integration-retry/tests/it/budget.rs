//! The retry budget under a full outage: the measurement the issue asks for.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use integration_retry::{Jitter, RetryBudget, RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// Runs `rate` calls per second for `seconds` of paused time against an upstream that always answers
/// 503, with the default policy (3 attempts, full jitter) and the default budget (20 % over 10 s,
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
