//! Metric handles kept between calls, per recorder.
//!
//! `metrics::counter!` and `histogram!` register their key with the recorder on every call: with
//! the Prometheus recorder, a copy of the key, another inside the recorder, a sharded read lock and
//! a comparison of every label, about a microsecond per call end to end. A recorder hands out
//! handles that stay bound to its storage, so a layer may keep them. [`Kept`] keeps them by a
//! key of the caller's (the label values) and by the recorder they came from: a recorder installed
//! after the first calls, or a local one in a test, gets its own registration. Zero-sized
//! recorders (the no-op one among them) are not kept, their address saying nothing; what is not
//! caught is a *different* recorder at the address of a dropped one, which only a local recorder
//! rebuilt in place while the same layer lives on could be.
//!
//! ```
//! use integration_core::kept::Kept;
//! use metrics::{Counter, Key, Level, Metadata};
//!
//! static METADATA: Metadata<'static> =
//!     Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
//!
//! let attempts: Kept<&'static str, Counter> = Kept::new();
//! attempts.with(
//!     |label| *label == "github",
//!     || "github",
//!     |recorder| recorder.register_counter(&Key::from_name("attempts"), &METADATA),
//!     |counter| counter.increment(1),
//! );
//! ```

use std::fmt;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics::Recorder;

/// Handles kept in the list beside the first slot; past this many, further keys are registered on
/// each call (a layer sees one key per label set, a handful).
const MAX_ENTRIES: usize = 64;

/// Which recorder this is: its address and size, or `None` for a zero-sized recorder.
type RecorderId = (usize, usize);

fn recorder_id(recorder: &dyn Recorder) -> Option<RecorderId> {
    let size = std::mem::size_of_val(recorder);
    (size > 0).then(|| (std::ptr::from_ref(recorder).cast::<()>() as usize, size))
}

/// Metric handles `H` kept by key `K` and recorder; shared by clones, read without a lock.
pub struct Kept<K, H> {
    shared: Arc<Entries<K, H>>,
}

struct Entries<K, H> {
    /// The first handle kept: a layer sees one label set most of the time (one integration, one
    /// host, one method, status 200), found here with one atomic load instead of an `ArcSwap`
    /// guard (~100 instructions a lookup, three lookups a call in the full stack, issue 19).
    first: OnceLock<(RecorderId, K, H)>,
    /// The others.
    rest: ArcSwap<Vec<(RecorderId, K, H)>>,
}

impl<K, H> Kept<K, H> {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Entries {
                first: OnceLock::new(),
                rest: ArcSwap::default(),
            }),
        }
    }

    /// How many handles are kept.
    fn len(&self) -> usize {
        usize::from(self.shared.first.get().is_some()) + self.shared.rest.load().len()
    }
}

impl<K, H> Default for Kept<K, H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, H> Clone for Kept<K, H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, H> fmt::Debug for Kept<K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kept")
            .field("entries", &self.len())
            .finish()
    }
}

impl<K: Clone, H: Clone> Kept<K, H> {
    /// Runs `apply` on the handle of the current recorder whose key `matches`; when there is none,
    /// `register`s one with the recorder (keeping it under `key()`). `register` gives the metadata
    /// the `metrics` macros would (the caller's module as target), so filters by target still work.
    pub fn with(
        &self,
        matches: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        register: impl FnOnce(&dyn Recorder) -> H,
        apply: impl FnOnce(&H),
    ) {
        metrics::with_recorder(|recorder| {
            let Some(id) = recorder_id(recorder) else {
                apply(&register(recorder));
                return;
            };
            let shared = &*self.shared;
            let first = shared.first.get();
            if let Some((r, k, handle)) = first
                && *r == id
                && matches(k)
            {
                apply(handle);
                return;
            }
            let entries = shared.rest.load();
            if let Some((_, _, handle)) = entries.iter().find(|(r, k, _)| *r == id && matches(k)) {
                apply(handle);
                return;
            }
            let handle = register(recorder);
            apply(&handle);
            if first.is_some() && entries.len() >= MAX_ENTRIES {
                // Past the bound: registered on each call, and no key built for nothing.
                return;
            }
            let mut entry = (id, key(), handle);
            if first.is_none() {
                // The first slot is set once; a call racing to set it with another key keeps its
                // handle in the list instead.
                match shared.first.set(entry) {
                    Ok(()) => return,
                    Err(back) => entry = back,
                }
            }
            if entries.len() < MAX_ENTRIES {
                // Two calls racing to add the same key may both add it; the first found wins.
                shared.rest.rcu(|old| {
                    let mut new = Vec::clone(old);
                    new.push(entry.clone());
                    new
                });
            }
        });
    }
}

/// Whether `a` and `b` are the same string, their pointers and lengths compared before their
/// bytes. A value kept between calls (a metric handle, a breaker's key) is usually looked up again
/// with the very strings it was kept under (a static name, an integration's shared name, an
/// authority shared by every request of an integration): then no byte is read.
///
/// ```
/// use integration_core::kept::same_str;
///
/// let name: std::sync::Arc<str> = "github".into();
/// assert!(same_str(&name, &name));
/// assert!(same_str(&name, "github"));
/// assert!(!same_str(&name, "gitlab"));
/// ```
pub fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// [`same_str`] for optional strings: both absent, or both present and the same.
///
/// ```
/// use integration_core::kept::same_optional_str;
///
/// assert!(same_optional_str(None, None));
/// assert!(same_optional_str(Some("a"), Some("a")));
/// assert!(!same_optional_str(Some("a"), None));
/// ```
pub fn same_optional_str(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_str(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit,
    };

    use super::*;

    /// Counts its registrations and the increments of its one counter.
    #[derive(Default)]
    struct Counting {
        registrations: Mutex<u64>,
        total: Arc<AtomicU64>,
    }

    struct Total(Arc<AtomicU64>);

    impl CounterFn for Total {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            *self.registrations.lock().unwrap() += 1;
            Counter::from_arc(Arc::new(Total(self.total.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

    fn count(kept: &Kept<&'static str, Counter>, label: &'static str) {
        kept.with(
            |k| *k == label,
            || label,
            |recorder| recorder.register_counter(&Key::from_name("calls"), &METADATA),
            |counter| counter.increment(1),
        );
    }

    #[test]
    fn a_handle_is_registered_once_per_recorder_and_key() {
        let kept = Kept::new();
        let (first, second) = (Counting::default(), Counting::default());
        metrics::with_local_recorder(&first, || {
            for _ in 0..5 {
                count(&kept, "a");
            }
            count(&kept, "b");
        });
        metrics::with_local_recorder(&second, || count(&kept, "a"));
        metrics::with_local_recorder(&first, || count(&kept, "a"));
        assert_eq!(*first.registrations.lock().unwrap(), 2, "one per key");
        assert_eq!(first.total.load(Ordering::SeqCst), 7);
        assert_eq!(*second.registrations.lock().unwrap(), 1);
        assert_eq!(second.total.load(Ordering::SeqCst), 1);
        // The first handle in its own slot, the two others in the rest; a clone shares them.
        assert_eq!(kept.len(), 3);
        let clone = kept.clone();
        metrics::with_local_recorder(&second, || count(&clone, "b"));
        assert_eq!(*second.registrations.lock().unwrap(), 2);
        assert_eq!(kept.len(), 4);
        assert_eq!(format!("{kept:?}"), "Kept { entries: 4 }");
    }

    /// Past the bound, a key is registered on each call and no key is built for it (nothing keeps
    /// it); the first slot is not part of the bound.
    #[test]
    fn past_the_bound_keys_are_registered_each_call_and_not_built() {
        let kept: Kept<usize, Counter> = Kept::new();
        let recorder = Counting::default();
        let built = std::cell::Cell::new(0);
        let call = |label: usize| {
            kept.with(
                |k| *k == label,
                || {
                    built.set(built.get() + 1);
                    label
                },
                |recorder| recorder.register_counter(&Key::from_name("calls"), &METADATA),
                |counter| counter.increment(1),
            );
        };
        metrics::with_local_recorder(&recorder, || {
            for label in 0..=MAX_ENTRIES {
                call(label);
                call(label);
            }
            assert_eq!(kept.len(), MAX_ENTRIES + 1);
            assert_eq!(built.get(), MAX_ENTRIES + 1);
            let over = MAX_ENTRIES + 1;
            call(over);
            call(over);
        });
        assert_eq!(built.get(), MAX_ENTRIES + 1, "no key built past the bound");
        assert_eq!(
            *recorder.registrations.lock().unwrap(),
            MAX_ENTRIES as u64 + 3
        );
        assert_eq!(
            recorder.total.load(Ordering::SeqCst),
            2 * (MAX_ENTRIES as u64 + 2)
        );
    }

    #[test]
    fn zero_sized_recorders_are_asked_every_time() {
        let kept = Kept::new();
        metrics::with_local_recorder(&metrics::NoopRecorder, || {
            count(&kept, "a");
            count(&kept, "a");
        });
        assert_eq!(kept.len(), 0);
    }
}
