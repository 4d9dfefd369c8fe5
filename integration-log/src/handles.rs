//! The histogram handles of the duration metrics, kept per label set and recorder.
//!
//! Registering a histogram with a recorder on every call costs what the recorder's registry costs:
//! with the Prometheus recorder, a copy of the key, a sharded read lock and a comparison of every
//! label (~1 µs per call and per attempt, measured end to end). Handles can be kept: a recorder
//! hands out handles that stay bound to its storage. They are kept here by label values and by the
//! recorder they came from, so a recorder installed later (or a local one in a test) gets its own
//! registration; what is not caught is a *different* recorder at the address of a dropped one,
//! which only a local recorder rebuilt in place while the same layer lives on could be.

use std::sync::Arc;

use arc_swap::ArcSwap;
use integration_core::ext::IntegrationName;
use metrics::{Histogram, Key, Metadata, Recorder};

use crate::service::Scope;

/// Label sets kept per policy; past this many, further label sets are registered on each call
/// (the set is one entry per scope, method, host, status and integration seen, a handful).
const MAX_ENTRIES: usize = 64;

/// What the histograms of this crate are registered with (what `metrics::histogram!` would give).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The label values a handle was registered with, and the recorder it belongs to.
#[derive(Clone)]
struct Entry {
    recorder: (usize, usize),
    scope: Scope,
    method: &'static str,
    host: Option<Arc<str>>,
    code: Option<u16>,
    integration: Option<IntegrationName>,
    histogram: Histogram,
}

/// The labels of one duration sample, borrowed from the call.
pub(crate) struct Labels<'a> {
    pub(crate) scope: Scope,
    pub(crate) method: &'static str,
    pub(crate) host: Option<&'a Arc<str>>,
    pub(crate) code: Option<u16>,
    pub(crate) integration: Option<&'a IntegrationName>,
}

impl Entry {
    fn matches(&self, recorder: (usize, usize), labels: &Labels<'_>) -> bool {
        self.recorder == recorder
            && self.scope == labels.scope
            && self.code == labels.code
            && self.method == labels.method
            && self.host.as_deref() == labels.host.map(|h| &**h)
            && self.integration.as_ref().map(IntegrationName::as_str)
                == labels.integration.map(IntegrationName::as_str)
    }
}

/// Shared by the clones of a policy: read without a lock, copied on the rare insert.
#[derive(Default)]
pub(crate) struct Handles {
    entries: ArcSwap<Vec<Entry>>,
}

impl Handles {
    /// Records `value` in the histogram of `labels` of the current recorder; `key` builds the
    /// metric key when this label set is new for it.
    pub(crate) fn record(&self, labels: &Labels<'_>, value: f64, key: impl FnOnce() -> Key) {
        metrics::with_recorder(|recorder| {
            let Some(id) = recorder_id(recorder) else {
                recorder.register_histogram(&key(), &METADATA).record(value);
                return;
            };
            let entries = self.entries.load();
            if let Some(entry) = entries.iter().find(|e| e.matches(id, labels)) {
                entry.histogram.record(value);
                return;
            }
            let histogram = recorder.register_histogram(&key(), &METADATA);
            histogram.record(value);
            if entries.len() < MAX_ENTRIES {
                let entry = Entry {
                    recorder: id,
                    scope: labels.scope,
                    method: labels.method,
                    host: labels.host.cloned(),
                    code: labels.code,
                    integration: labels.integration.cloned(),
                    histogram,
                };
                // Two calls racing to add the same labels may both add them; the first found wins.
                self.entries.rcu(|old| {
                    let mut new = Vec::clone(old);
                    new.push(entry.clone());
                    new
                });
            }
        });
    }

    /// Histograms registered without a label set kept (failures, whose `error.type` varies).
    pub(crate) fn record_uncached(value: f64, key: &Key) {
        metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
            .record(value);
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("entries", &self.entries.load().len())
            .finish()
    }
}

/// Which recorder this is: its address and size, or `None` for a zero-sized recorder, whose
/// address says nothing (the no-op recorder and a leaked zero-sized global recorder may share one),
/// so its handles are not kept. The global recorder lives for the program; a local one at least as
/// long as the closure it is set for.
fn recorder_id(recorder: &dyn Recorder) -> Option<(usize, usize)> {
    let size = std::mem::size_of_val(recorder);
    (size > 0).then(|| (std::ptr::from_ref(recorder).cast::<()>() as usize, size))
}
