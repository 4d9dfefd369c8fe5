//! The load drivers: closed loop for throughput, open loop for latency.
//!
//! Both measure inside a window that starts after a warm-up (connections opened, pools and caches
//! filled) and both read the process's CPU time at the window's edges ([`CpuTime`]), so CPU per call
//! covers exactly the calls counted.

use super::BoxError;
use super::measure::CpuTime;
use hdrhistogram::Histogram;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::{Instant, sleep, sleep_until};

/// How long a driver waits for the calls still in flight when its window has closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One call of the scenario under test: send the request, read the whole response body, and fail
/// unless the status is a success.
///
/// Implementations are cheap handles (a client or a service) cloned into every in-flight call.
pub trait Caller: Clone + Send + Sync + 'static {
    /// Makes one call.
    ///
    /// # Errors
    ///
    /// Whatever the client under test failed with, or a non-success status.
    fn call(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Counts shared by every in-flight call of a run.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn record(&self, result: &Result<(), BoxError>) {
        match result {
            Ok(()) => {
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.is_none() {
                    *first = Some(error_chain(error.as_ref()));
                }
            }
        }
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An error and its sources on one line, for the report.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A closed-loop driver: a fixed number of calls in flight, each replaced as soon as it completes.
///
/// Throughput at fixed concurrency is what a saturated client sustains; with the server in another
/// process and the client runtime on its own threads, it is bounded by the client's CPU per call.
#[derive(Clone, Copy, Debug)]
pub struct ClosedLoop {
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
}

/// What a [`ClosedLoop`] run measured inside its window.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// Calls completed successfully inside the window.
    pub calls: u64,
    /// Calls failed inside the window.
    pub errors: u64,
    /// The window's wall-clock length.
    pub elapsed: Duration,
    /// CPU time of the whole process inside the window.
    pub cpu: Duration,
    /// The kernel's part of `cpu` (system time).
    pub system: Duration,
    /// The first error seen (during warm-up or the window), with its sources.
    pub first_error: Option<String>,
}

impl Throughput {
    /// Successful calls per second.
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Process CPU microseconds per successful call.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    /// The kernel's part of [`cpu_us_per_call`](Self::cpu_us_per_call): system CPU microseconds
    /// per successful call.
    pub fn system_us_per_call(&self) -> f64 {
        self.system.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }
}

impl ClosedLoop {
    /// A driver with `concurrency` calls in flight, measuring for `duration` after `warmup`.
    ///
    /// # Panics
    ///
    /// When `concurrency` is zero.
    pub fn new(concurrency: usize, warmup: Duration, duration: Duration) -> Self {
        assert!(
            concurrency > 0,
            "a closed loop needs at least one call in flight"
        );
        Self {
            concurrency,
            warmup,
            duration,
        }
    }

    /// Runs the loop against `caller` on the current tokio runtime.
    ///
    /// Calls still in flight when the window closes are awaited but not counted.
    ///
    /// # Errors
    ///
    /// Only when the process's CPU time cannot be read; failed calls are counted, not returned.
    pub async fn run<C: Caller>(&self, caller: &C) -> io::Result<Throughput> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.concurrency {
            let caller = caller.clone();
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = caller.call().await;
                    let failed = result.is_err();
                    counters.record(&result);
                    if failed {
                        // A call that fails without I/O must not starve the runtime's timer.
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        sleep(self.warmup).await;
        let (calls0, errors0) = counters.snapshot();
        let cpu0 = CpuTime::now()?;
        let start = Instant::now();
        sleep(self.duration).await;
        let (calls1, errors1) = counters.snapshot();
        let cpu1 = CpuTime::now()?;
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        // Calls in flight finish (uncounted); one that hangs is abandoned after the drain timeout.
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(joined) = tasks.join_next().await {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        })
        .await;
        if drained.is_err() {
            tasks.shutdown().await;
        }
        Ok(Throughput {
            calls: calls1 - calls0,
            errors: errors1 - errors0,
            elapsed,
            cpu: cpu1.since(cpu0),
            system: cpu1.system_since(cpu0),
            first_error: counters.first_error(),
        })
    }
}

/// An open-loop driver: calls are due at a fixed rate on a schedule computed up front, and each
/// latency is measured from the moment its call was *due*, not from when it was sent.
///
/// A dedicated pacing thread sends each call at its due time (with `std::thread::sleep`, finer than
/// the runtime's millisecond timer); when it falls behind, it sends the late calls at once and their
/// lateness counts in their latency. This is what avoids coordinated omission: a client that stalls
/// does not get to send fewer calls during the stall.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    rate: f64,
    warmup: Duration,
    duration: Duration,
    drain_timeout: Duration,
}

/// What an [`OpenLoop`] run measured for the calls due inside its window.
#[derive(Clone, Debug)]
pub struct LatencyRun {
    /// Calls due in the window that succeeded.
    pub calls: u64,
    /// Calls due in the window that failed.
    pub errors: u64,
    /// Calls due in the window still unfinished after the drain timeout (not in the histogram).
    pub unfinished: u64,
    /// Latencies of the successful calls, in nanoseconds from their due time.
    pub histogram: Histogram<u64>,
    /// From the window's start until the last of its calls finished.
    pub elapsed: Duration,
    /// CPU time of the whole process over `elapsed`.
    pub cpu: Duration,
    /// The first error seen, with its sources.
    pub first_error: Option<String>,
}

impl LatencyRun {
    /// The latency at `quantile` (0.5 for the median), in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1e3
    }

    /// Process CPU microseconds per successful call at this offered rate.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }
}

impl OpenLoop {
    /// A driver offering `rate` calls per second, measuring the calls due in `duration` after
    /// `warmup`, and waiting up to 10 s for the last of them.
    ///
    /// # Panics
    ///
    /// When `rate` is not a positive finite number.
    pub fn new(rate: f64, warmup: Duration, duration: Duration) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "the offered rate must be positive"
        );
        Self {
            rate,
            warmup,
            duration,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }

    /// How long to wait after the window for its last calls to finish (default 10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Runs the schedule against `caller` on the current (multi-thread or current-thread) runtime.
    ///
    /// # Errors
    ///
    /// When the pacing thread cannot be started or the CPU time cannot be read; failed calls are
    /// counted, not returned.
    pub async fn run<C: Caller>(&self, caller: &C) -> io::Result<LatencyRun> {
        let histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("static histogram bounds are valid");
        let histogram = Arc::new(Mutex::new(histogram));
        let counters = Arc::new(Counters::default());
        let outstanding = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let start = Instant::now() + Duration::from_millis(1);
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;

        let pacer = {
            let runtime = tokio::runtime::Handle::current();
            let caller = caller.clone();
            let histogram = Arc::clone(&histogram);
            let counters = Arc::clone(&counters);
            let outstanding = Arc::clone(&outstanding);
            std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || {
                    let mut index: u32 = 0;
                    loop {
                        let due = start + interval * index;
                        if due >= end {
                            break;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let measured = due >= measure_from;
                        if measured {
                            outstanding.fetch_add(1, Ordering::Relaxed);
                        }
                        let caller = caller.clone();
                        let histogram = Arc::clone(&histogram);
                        let counters = Arc::clone(&counters);
                        let outstanding = Arc::clone(&outstanding);
                        runtime.spawn(async move {
                            let result = caller.call().await;
                            let latency = due.elapsed();
                            if measured {
                                if result.is_ok() {
                                    let nanos =
                                        u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                                    histogram
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .saturating_record(nanos.max(1));
                                }
                                counters.record(&result);
                                outstanding.fetch_sub(1, Ordering::Relaxed);
                            }
                        });
                        index += 1;
                    }
                })?
        };

        sleep_until(measure_from).await;
        let cpu0 = CpuTime::now()?;
        let window_start = Instant::now();
        sleep_until(end).await;
        while !pacer.is_finished() {
            sleep(Duration::from_millis(1)).await;
        }
        if let Err(panic) = pacer.join() {
            std::panic::resume_unwind(panic);
        }
        let drain_deadline = Instant::now() + self.drain_timeout;
        while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
            sleep(Duration::from_millis(1)).await;
        }
        let cpu1 = CpuTime::now()?;
        let elapsed = window_start.elapsed();
        let (calls, errors) = counters.snapshot();
        let histogram = histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(LatencyRun {
            calls,
            errors,
            unfinished: outstanding.load(Ordering::Relaxed),
            histogram,
            elapsed,
            cpu: cpu1.since(cpu0),
            first_error: counters.first_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct Sleepy(Duration);

    impl Caller for Sleepy {
        async fn call(&self) -> Result<(), BoxError> {
            sleep(self.0).await;
            Ok(())
        }
    }

    #[derive(Clone, Debug)]
    struct Failing;

    impl Caller for Failing {
        async fn call(&self) -> Result<(), BoxError> {
            Err("refused".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn closed_loop_keeps_its_concurrency_in_flight() {
        // 8 in flight, each call 10 ms: about 800 calls per second, whatever the machine.
        let run = ClosedLoop::new(8, Duration::from_millis(20), Duration::from_millis(300))
            .run(&Sleepy(Duration::from_millis(10)))
            .await
            .unwrap();
        assert_eq!(run.errors, 0);
        let rate = run.per_second();
        assert!((300.0..=900.0).contains(&rate), "rate {rate}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn closed_loop_counts_errors_and_keeps_the_first() {
        let run = ClosedLoop::new(2, Duration::ZERO, Duration::from_millis(50))
            .run(&Failing)
            .await
            .unwrap();
        assert_eq!(run.calls, 0);
        assert!(run.errors > 0);
        assert_eq!(run.first_error.as_deref(), Some("refused"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn open_loop_sends_the_offered_rate_and_measures_from_the_due_time() {
        // 500 calls per second for 200 ms: 100 calls due in the window, each taking at least 2 ms.
        let run = OpenLoop::new(500.0, Duration::from_millis(20), Duration::from_millis(200))
            .run(&Sleepy(Duration::from_millis(2)))
            .await
            .unwrap();
        assert_eq!(run.errors, 0);
        assert_eq!(run.unfinished, 0);
        assert!((99..=101).contains(&run.calls), "calls {}", run.calls);
        assert_eq!(run.histogram.len(), run.calls);
        assert!(
            run.quantile_us(0.5) >= 2_000.0,
            "p50 {}",
            run.quantile_us(0.5)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn open_loop_charges_a_stall_to_every_call_due_during_it() {
        // One worker thread blocked for 100 ms: the calls due meanwhile wait, and that wait is
        // latency, even though they were not sent late by the pacer's own clock.
        let blocker = tokio::spawn(async {
            sleep(Duration::from_millis(60)).await;
            std::thread::sleep(Duration::from_millis(100));
        });
        let run = OpenLoop::new(
            1000.0,
            Duration::from_millis(10),
            Duration::from_millis(200),
        )
        .run(&Sleepy(Duration::ZERO))
        .await
        .unwrap();
        blocker.await.unwrap();
        assert!(run.calls >= 190, "calls {}", run.calls);
        // A tenth of the calls were due during the stall, so p99 sits inside it.
        assert!(
            run.quantile_us(0.99) >= 20_000.0,
            "p99 {}",
            run.quantile_us(0.99)
        );
    }
}
