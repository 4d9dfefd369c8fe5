//! The histogram handles of the duration metrics, kept per label set and recorder (see
//! [`integration_core::kept`]): registering a histogram on every call cost ~1 µs per call and per
//! attempt with the Prometheus recorder.

use std::sync::Arc;

use integration_core::ext::IntegrationName;
use integration_core::kept::{Kept, same_optional_str, same_str};
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
    /// Whether `kept` was registered with these labels. The strings are usually the very ones the
    /// handle was registered with (the method's static name, the host the layer's cache keeps, the
    /// integration's shared name): the same pointer and length settle it before the bytes are
    /// compared (issue 19: three lookups a call).
    fn matches(&self, kept: &Owned) -> bool {
        kept.scope == self.scope
            && kept.code == self.code
            && same_str(kept.method, self.method)
            && same_optional_str(kept.host.as_deref(), self.host.map(|h| &**h))
            && same_optional_str(
                kept.integration.as_ref().map(IntegrationName::as_str),
                self.integration.map(IntegrationName::as_str),
            )
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

/// Shared by the clones of a policy, so by a stack's call and attempt layers (the attempt layer's
/// policy is the call layer's, cloned): one [`Kept`] per scope, so that each layer finds its usual
/// label set in its own first slot (one atomic load) rather than one of the two always missing it
/// for the list behind (issue 19).
#[derive(Default, Debug)]
pub(crate) struct Handles {
    call: Kept<Owned, Histogram>,
    attempt: Kept<Owned, Histogram>,
}

impl Handles {
    /// Records `value` in the histogram of `labels` of the current recorder; `key` builds the
    /// metric key when this label set is new for it.
    pub(crate) fn record(&self, labels: &Labels<'_>, value: f64, key: impl FnOnce() -> Key) {
        let kept = match labels.scope {
            Scope::Call => &self.call,
            Scope::Attempt => &self.attempt,
        };
        kept.with(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(
        host: Option<&'a Arc<str>>,
        integration: Option<&'a IntegrationName>,
    ) -> Labels<'a> {
        Labels {
            scope: Scope::Call,
            method: "GET",
            host,
            code: Some(200),
            integration,
        }
    }

    /// A label set matches the handle registered with it whether its strings are the registered
    /// ones (the same pointers) or equal copies of them, and never one that differs in any label.
    #[test]
    fn labels_match_by_value_whatever_their_pointers() {
        let host: Arc<str> = Arc::from("api.example.com");
        let name = IntegrationName::new("github");
        let kept = labels(Some(&host), Some(&name)).to_owned();
        assert!(
            labels(Some(&host), Some(&name)).matches(&kept),
            "same pointers"
        );

        let other_host: Arc<str> = Arc::from(String::from("api.example.com"));
        let other_name = IntegrationName::new(String::from("github"));
        assert!(
            labels(Some(&other_host), Some(&other_name)).matches(&kept),
            "equal copies"
        );

        let different: Arc<str> = Arc::from("api.example.org");
        assert!(!labels(Some(&different), Some(&name)).matches(&kept));
        assert!(!labels(None, Some(&name)).matches(&kept));
        assert!(!labels(Some(&host), None).matches(&kept));
        assert!(!labels(Some(&host), Some(&IntegrationName::new("gitlab"))).matches(&kept));
        let mut other_method = labels(Some(&host), Some(&name));
        other_method.method = "POST";
        assert!(!other_method.matches(&kept));
        let mut other_code = labels(Some(&host), Some(&name));
        other_code.code = Some(503);
        assert!(!other_code.matches(&kept));
        let mut other_scope = labels(Some(&host), Some(&name));
        other_scope.scope = Scope::Attempt;
        assert!(!other_scope.matches(&kept));
        assert!(labels(None, None).matches(&labels(None, None).to_owned()));
    }

    /// A stack's call and attempt layers share their policy's handles (issue 19): each scope's
    /// label set is kept apart, so both are in a first slot, and each is recorded in its own
    /// histogram.
    #[test]
    fn each_scope_keeps_its_handle_apart() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let handles = Handles::default();
        let host: Arc<str> = Arc::from("api.example.com");
        let name = IntegrationName::new("github");
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                for scope in [Scope::Call, Scope::Attempt] {
                    let labels = Labels {
                        scope,
                        ..labels(Some(&host), Some(&name))
                    };
                    let metric = match scope {
                        Scope::Call => "call",
                        Scope::Attempt => "attempt",
                    };
                    handles.record(&labels, 0.5, || Key::from_name(metric));
                }
            }
        });
        assert_eq!(format!("{:?}", handles.call), "Kept { entries: 1 }");
        assert_eq!(format!("{:?}", handles.attempt), "Kept { entries: 1 }");
        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(snapshot.len(), 2, "one histogram per scope");
        for (key, _, _, value) in snapshot {
            let DebugValue::Histogram(samples) = value else {
                panic!("{key:?} is not a histogram");
            };
            assert_eq!(samples.len(), 3, "{key:?}");
        }
    }
}
