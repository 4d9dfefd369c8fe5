//! The histogram handles of the duration metrics, kept per label set and recorder (see
//! [`integration_core::kept`]): registering a histogram on every call cost ~1 µs per call and per
//! attempt with the Prometheus recorder.

use std::sync::Arc;

use integration_core::ext::IntegrationName;
use integration_core::kept::Kept;
use metrics::{Histogram, Key};

use crate::service::Scope;

/// What the histograms of this crate are registered with (what `metrics::histogram!` would give).
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The label values a handle was registered with.
#[derive(Clone)]
struct Owned {
    scope: Scope,
    method: &'static str,
    host: Option<Arc<str>>,
    code: Option<u16>,
    integration: Option<IntegrationName>,
}

/// The labels of one duration sample, borrowed from the call.
pub(crate) struct Labels<'a> {
    pub(crate) scope: Scope,
    pub(crate) method: &'static str,
    pub(crate) host: Option<&'a Arc<str>>,
    pub(crate) code: Option<u16>,
    pub(crate) integration: Option<&'a IntegrationName>,
}

impl Labels<'_> {
    fn matches(&self, kept: &Owned) -> bool {
        kept.scope == self.scope
            && kept.code == self.code
            && kept.method == self.method
            && kept.host.as_deref() == self.host.map(|h| &**h)
            && kept.integration.as_ref().map(IntegrationName::as_str)
                == self.integration.map(IntegrationName::as_str)
    }

    fn to_owned(&self) -> Owned {
        Owned {
            scope: self.scope,
            method: self.method,
            host: self.host.cloned(),
            code: self.code,
            integration: self.integration.cloned(),
        }
    }
}

/// Shared by the clones of a policy.
#[derive(Default, Debug)]
pub(crate) struct Handles(Kept<Owned, Histogram>);

impl Handles {
    /// Records `value` in the histogram of `labels` of the current recorder; `key` builds the
    /// metric key when this label set is new for it.
    pub(crate) fn record(&self, labels: &Labels<'_>, value: f64, key: impl FnOnce() -> Key) {
        self.0.with(
            |kept| labels.matches(kept),
            || labels.to_owned(),
            |recorder| recorder.register_histogram(&key(), &METADATA),
            |histogram| histogram.record(value),
        );
    }

    /// Histograms registered without a label set kept (failures, whose `error.type` varies).
    pub(crate) fn record_uncached(value: f64, key: &Key) {
        metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
            .record(value);
    }
}
