//! The load generators: open loop on a schedule, and a closed loop for the scenarios the issues
//! state that way.
//!
//! The open loop computes every send time up front ([`Schedule`]) and spawns each call at its time,
//! whether or not the earlier ones have finished, so a client that stalls cannot send less during
//! its stall (no coordinated omission). Every call is bounded by a hard limit: one that has not
//! completed by then is dropped and counted as *hung*, never waited for forever. Every call's
//! outcome, attempts and times are kept ([`CallRecord`]).
//!
//! Times are offsets from the run's epoch, shared with the fault server, so the timeline of the
//! client and what the server saw line up second by second.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

/// How one call ended, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOutcome {
    /// `None` for a success, else the error kind (`circuit_open`, `status_503`, `connect`...).
    pub error: Option<String>,
    /// Attempts the call took, as the client reported them (0 when nothing was sent).
    pub attempts: u32,
    /// Anything the scenario wants kept (the configuration that served the call).
    pub detail: Option<String>,
}

impl CallOutcome {
    /// A success after `attempts` attempts.
    pub fn ok(attempts: u32) -> Self {
        Self {
            error: None,
            attempts,
            detail: None,
        }
    }

    /// A failure of kind `error` after `attempts` attempts.
    pub fn failed(error: impl Into<String>, attempts: u32) -> Self {
        Self {
            error: Some(error.into()),
            attempts,
            detail: None,
        }
    }

    /// True for a success.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// One call of a scenario.
pub trait ChaosCaller: Clone + Send + Sync + 'static {
    /// Makes call number `index` (unique in the run) and says how it ended.
    fn call(&self, index: u64) -> impl Future<Output = CallOutcome> + Send;
}

/// What became of one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call's number.
    pub index: u64,
    /// When it was due (open loop) or started (closed loop), from the epoch.
    pub due: Duration,
    /// When it was actually started.
    pub started: Duration,
    /// When it ended; for a hung call, when it was given up.
    pub ended: Duration,
    /// How it ended; `None` when it had not completed by the hard bound (hung).
    pub outcome: Option<CallOutcome>,
}

impl CallRecord {
    /// True when the call never completed within the hard bound.
    pub fn hung(&self) -> bool {
        self.outcome.is_none()
    }

    /// True for a success.
    pub fn is_ok(&self) -> bool {
        self.outcome.as_ref().is_some_and(CallOutcome::is_ok)
    }

    /// From start to end.
    pub fn latency(&self) -> Duration {
        self.ended.saturating_sub(self.started)
    }
}

/// Send times at a fixed rate: call `i` is due at `offset + i / rate`, for every `i` with a due
/// time before `offset + duration`.
///
/// ```
/// use integration_tests::chaos::load::Schedule;
/// use std::time::Duration;
///
/// let schedule = Schedule::new(1000.0, Duration::from_secs(2), Duration::ZERO);
/// assert_eq!(schedule.len(), 2000);
/// assert_eq!(schedule.due(500), Duration::from_millis(500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
    duration: Duration,
    offset: Duration,
}

impl Schedule {
    /// `rate` calls per second for `duration`, the first at `offset` from the epoch.
    ///
    /// # Panics
    ///
    /// When `rate` is not a positive finite number.
    pub fn new(rate: f64, duration: Duration, offset: Duration) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "the rate must be positive");
        Self {
            rate,
            duration,
            offset,
        }
    }

    /// Calls in the schedule.
    pub fn len(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate - 1e-9)
            .ceil()
            .max(0.0) as u64
    }

    /// True when no call is due.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When call `index` is due, from the epoch.
    pub fn due(&self, index: u64) -> Duration {
        self.offset + Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// The offered rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Runs one call under the hard bound and records it.
async fn run_one<C: ChaosCaller>(
    caller: C,
    index: u64,
    due: Duration,
    epoch: Instant,
    hard_bound: Duration,
) -> CallRecord {
    let started = epoch.elapsed();
    let outcome = timeout(hard_bound, caller.call(index)).await.ok();
    CallRecord {
        index,
        due,
        started,
        ended: epoch.elapsed(),
        outcome,
    }
}

/// Waits for every spawned call; each is bounded, so this ends. A panicking call is re-raised.
async fn collect(mut tasks: JoinSet<CallRecord>) -> Vec<CallRecord> {
    let mut records = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(record) => records.push(record),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a chaos call was cancelled: {error}"),
        }
    }
    records.sort_by_key(|record| record.index);
    records
}

/// Runs `schedule` open loop against `caller`: each call spawned at its due time, none waited for
/// longer than `hard_bound`. Returns one record per scheduled call, in index order.
///
/// # Panics
///
/// When a call panics (the panic is passed on).
///
/// # Example
///
/// ```
/// use integration_tests::chaos::load::{open_loop, CallOutcome, ChaosCaller, Schedule};
/// use std::time::Duration;
///
/// #[derive(Clone, Debug)]
/// struct Instant0;
/// impl ChaosCaller for Instant0 {
///     async fn call(&self, _index: u64) -> CallOutcome {
///         CallOutcome::ok(1)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let epoch = tokio::time::Instant::now();
/// let schedule = Schedule::new(200.0, Duration::from_millis(100), Duration::ZERO);
/// let records = open_loop(&schedule, &Instant0, epoch, Duration::from_secs(1)).await;
/// assert_eq!(records.len(), 20);
/// assert!(records.iter().all(|r| r.is_ok()));
/// # }
/// ```
pub async fn open_loop<C: ChaosCaller>(
    schedule: &Schedule,
    caller: &C,
    epoch: Instant,
    hard_bound: Duration,
) -> Vec<CallRecord> {
    let mut tasks = JoinSet::new();
    for index in 0..schedule.len() {
        let due = schedule.due(index);
        sleep_until(epoch + due).await;
        tasks.spawn(run_one(caller.clone(), index, due, epoch, hard_bound));
    }
    collect(tasks).await
}

/// Runs `calls` calls with `concurrency` in flight, each started as soon as one ends (the shape of
/// issue 13's "300 calls at 64 concurrency"), none waited for longer than `hard_bound`.
///
/// # Panics
///
/// When a call panics (the panic is passed on), or when `concurrency` is 0.
pub async fn closed_loop<C: ChaosCaller>(
    calls: u64,
    concurrency: usize,
    caller: &C,
    epoch: Instant,
    hard_bound: Duration,
) -> Vec<CallRecord> {
    assert!(concurrency > 0, "a closed loop needs a call in flight");
    let mut tasks = JoinSet::new();
    let mut records = Vec::with_capacity(calls as usize);
    let mut next = 0;
    while next < calls || !tasks.is_empty() {
        while next < calls && tasks.len() < concurrency {
            let started = epoch.elapsed();
            tasks.spawn(run_one(caller.clone(), next, started, epoch, hard_bound));
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok(record)) => records.push(record),
            Some(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Some(Err(error)) => panic!("a chaos call was cancelled: {error}"),
            None => {}
        }
    }
    records.sort_by_key(|record| record.index);
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Takes as long as its index says, in milliseconds; never returns for index 7.
    #[derive(Clone, Debug, Default)]
    struct Timed {
        in_flight: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl ChaosCaller for Timed {
        async fn call(&self, index: u64) -> CallOutcome {
            /// Leaves the count when the call ends or is dropped at the hard bound.
            struct InFlight(Arc<AtomicUsize>);
            impl Drop for InFlight {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let _in_flight = InFlight(Arc::clone(&self.in_flight));
            self.peak.fetch_max(now, Ordering::SeqCst);
            if index == 7 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(index * 10)).await;
            if index.is_multiple_of(2) {
                CallOutcome::ok(1)
            } else {
                CallOutcome::failed("status_503", 3)
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn open_loop_sends_on_schedule_whatever_the_calls_take() {
        let epoch = Instant::now();
        // 100 calls/s for 200 ms: 20 calls, every 10 ms, while each takes up to 190 ms.
        let schedule = Schedule::new(100.0, Duration::from_millis(200), Duration::from_millis(50));
        let caller = Timed::default();
        let records = open_loop(&schedule, &caller, epoch, Duration::from_secs(1)).await;
        assert_eq!(records.len(), 20);
        for record in &records {
            assert_eq!(record.due, Duration::from_millis(50 + 10 * record.index));
            // Sent at its time (paused clock: exactly), not after the previous call ended.
            assert_eq!(record.started, record.due);
        }
        assert!(caller.peak.load(Ordering::SeqCst) > 10, "calls overlapped");
        assert_eq!(records[4].latency(), Duration::from_millis(40));
        assert_eq!(
            records[3].outcome,
            Some(CallOutcome::failed("status_503", 3))
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_call_that_never_completes_is_counted_hung_at_the_bound() {
        let epoch = Instant::now();
        let schedule = Schedule::new(100.0, Duration::from_millis(100), Duration::ZERO);
        let records = open_loop(&schedule, &Timed::default(), epoch, Duration::from_secs(2)).await;
        let hung: Vec<_> = records.iter().filter(|r| r.hung()).collect();
        assert_eq!(hung.len(), 1);
        assert_eq!(hung[0].index, 7);
        assert_eq!(hung[0].latency(), Duration::from_secs(2));
        // The run ended at the bound, not never.
        assert_eq!(
            epoch.elapsed(),
            Duration::from_millis(70) + Duration::from_secs(2)
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn closed_loop_keeps_its_concurrency() {
        let epoch = Instant::now();
        let caller = Timed::default();
        let records = closed_loop(30, 4, &caller, epoch, Duration::from_secs(1)).await;
        assert_eq!(records.len(), 30);
        assert_eq!(caller.peak.load(Ordering::SeqCst), 4);
        assert_eq!(records.iter().filter(|r| r.hung()).count(), 1);
    }

    #[test]
    fn schedule_counts_and_spaces_calls() {
        let schedule = Schedule::new(3.0, Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(schedule.len(), 3);
        assert_eq!(schedule.due(0), Duration::from_secs(5));
        assert_eq!(schedule.due(2).as_millis(), 5_666);
        assert!(Schedule::new(10.0, Duration::ZERO, Duration::ZERO).is_empty());
        assert_eq!(
            Schedule::new(1000.0, Duration::from_secs(60), Duration::ZERO).len(),
            60_000
        );
    }
}
