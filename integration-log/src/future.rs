//! The response future of [`Log`](crate::Log).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Method, Response, StatusCode, Uri};
use integration_core::ext::{Attempts, IntegrationName};
use integration_core::{BoxError, Error, ErrorKind, names};
use metrics::{Key, Label, SharedString};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::Span;
use tracing::field::display;

use crate::body::{Capture, LogBody};
use crate::handles::{Handles, Labels};
use crate::policy::LogPolicy;
use crate::redact::Redactor;
use crate::service::{LazyUrl, Scope, capturable_type, method_attribute};

pin_project! {
    /// The response future of [`Log`](crate::Log): polls the inner future inside the span, then
    /// records the outcome (span fields, event, metric) and wraps the response body for capture.
    ///
    /// Dropped before it completes, it records the call as cancelled.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.on_cancel();
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }

    /// A future that records nothing: logs and metrics are both off.
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.pending.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body,
{
    type Output = Result<Response<LogBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.pending.as_ref().map(|p| p.span.enter());
            ready!(this.inner.poll(cx))
        };
        let Some(pending) = this.pending.take() else {
            // Nothing to record (or, against the `Future` contract, polled after completion: the
            // inner future's own answer to that is passed on).
            return Poll::Ready(
                result
                    .map(|response| response.map(|body| LogBody::new(body, None)))
                    .map_err(Into::into),
            );
        };
        Poll::Ready(match result {
            Ok(response) => Ok(pending.on_response(response)),
            Err(error) => {
                let error = error.into();
                pending.on_error(&*error);
                Err(error)
            }
        })
    }
}

/// What the future needs to record the outcome.
pub(crate) struct Pending {
    pub(crate) span: Span,
    pub(crate) start: Instant,
    pub(crate) policy: Arc<LogPolicy>,
    pub(crate) scope: Scope,
    pub(crate) method: Method,
    pub(crate) host: Option<Arc<str>>,
    pub(crate) integration: Option<IntegrationName>,
    /// For the failure events; `None` when no event can be recorded.
    pub(crate) uri: Option<Uri>,
    /// The attempt's number (1 for the first), for an attempt's events; `None` for a call's.
    pub(crate) attempt: Option<u32>,
}

impl Pending {
    fn on_response<B: http_body::Body>(self, response: Response<B>) -> Response<LogBody<B>> {
        let elapsed = self.start.elapsed();
        let status = response.status();
        let attempts = response.extensions().get::<Attempts>();
        let retries = attempts.map_or(0, Attempts::retries);
        let failed = status.is_client_error() || status.is_server_error();
        let error_type = failed.then(|| status.as_str());
        if self.policy.metrics {
            self.record_duration(elapsed, Some(status), error_type);
        }
        let Some(uri) = &self.uri else {
            // No span or event can be recorded: nothing more to do, and nothing to capture.
            return response.map(|body| LogBody::new(body, None));
        };
        if !self.span.is_disabled() {
            self.span
                .record(names::HTTP_RESPONSE_STATUS_CODE, status.as_u16());
            if let Some(error_type) = error_type {
                self.span.record(names::ERROR_TYPE, display(error_type));
                self.span.record("otel.status_code", "ERROR");
            }
            // OpenTelemetry: set only when the request was resent (one record, one formatting
            // pass of the subscriber, fewer per call).
            if self.scope == Scope::Call
                && let Some(retries) = attempts.map(Attempts::retries).filter(|&n| n > 0)
            {
                self.span.record(names::HTTP_REQUEST_RESEND_COUNT, retries);
            }
        }

        let policy = &*self.policy;
        let level = policy.level_for_status(status, retries);
        if !event_enabled_at!(level) {
            // No line to write at this level, and so no body to capture (a capture logs at the
            // response's level): the span is not even entered (an enter and an exit cost the
            // subscriber ~280 instructions; at the defaults, a success's line is off, issue 19).
            return response.map(|body| LogBody::new(body, None));
        }
        let capture = {
            let _entered = self.span.enter();
            let headers = policy
                .capture_headers
                .then(|| display(policy.redactor.redact_headers(response.headers())));
            event_at!(
                level,
                { names::INTEGRATION } =
                    self.integration.as_ref().map(|name| display(name.as_str())),
                { names::HTTP_REQUEST_METHOD } = display(method_attribute(&self.method)),
                { names::URL_FULL } = failed.then(|| display(LazyUrl(&policy.redactor, uri))),
                { names::HTTP_RESPONSE_STATUS_CODE } = status.as_u16(),
                { names::ERROR_TYPE } = error_type.map(display),
                elapsed_ms = millis(elapsed),
                attempts = attempts.map(Attempts::count),
                "retry.reasons" = attempts
                    .filter(|a| a.retries() > 0)
                    .map(|a| display(Reasons(a))),
                "retry.waited_ms" = attempts
                    .filter(|a| a.retries() > 0)
                    .map(|a| millis(a.waited())),
                "http.response.headers" = headers,
                attempt = self.attempt,
                "{}",
                // An attempt's line and the call's outcome say which they are.
                if self.attempt.is_some() {
                    "attempt response"
                } else {
                    "response"
                }
            );
            // The level is on (above): the cheap checks before the headers are looked at.
            let wanted = policy.capture_bodies && !response.body().is_end_stream();
            match wanted
                .then(|| capturable_type(response.headers()))
                .flatten()
            {
                Some(content_type) => Some(Capture::new(
                    content_type.to_owned(),
                    policy.body_limit,
                    level,
                    policy.redactor.clone(),
                    self.span.clone(),
                    self.integration.clone(),
                )),
                _ => None,
            }
        };
        response.map(|body| LogBody::new(body, capture))
    }

    fn on_error(self, error: &(dyn StdError + 'static)) {
        let elapsed = self.start.elapsed();
        let ours = error.downcast_ref::<Error>();
        let status = ours.and_then(Error::status);
        // The layer passes the error through unchanged; core finds its kind without taking it.
        let kind = ErrorKind::of(error);
        let attempts = ours.map(Error::attempts).filter(|&n| n > 0);
        let error_type = match (kind, status.as_ref()) {
            (ErrorKind::Status, Some(status)) => status.as_str(),
            _ => kind.as_str(),
        };
        if self.policy.metrics {
            self.record_duration(elapsed, status, Some(error_type));
        }
        let Some(uri) = &self.uri else {
            return;
        };
        if !self.span.is_disabled() {
            if let Some(status) = status {
                self.span
                    .record(names::HTTP_RESPONSE_STATUS_CODE, status.as_u16());
            }
            self.span.record(names::ERROR_TYPE, display(error_type));
            self.span.record("otel.status_code", "ERROR");
            if self.scope == Scope::Call
                && let Some(attempts) = attempts.filter(|&n| n > 1)
            {
                self.span
                    .record(names::HTTP_REQUEST_RESEND_COUNT, attempts - 1);
            }
        }
        let policy = &*self.policy;
        let level = match status {
            Some(status) if status.is_client_error() || status.is_server_error() => {
                policy.level_for_status(status, 0)
            }
            _ => policy.error_level,
        };
        let _entered = self.span.enter();
        event_at!(
            level,
            { names::INTEGRATION } = self.integration.as_ref().map(|name| display(name.as_str())),
            { names::HTTP_REQUEST_METHOD } = display(method_attribute(&self.method)),
            { names::URL_FULL } = display(LazyUrl(&policy.redactor, uri)),
            { names::ERROR_TYPE } = display(error_type),
            error = display(LazyError(&policy.redactor, error)),
            elapsed_ms = millis(elapsed),
            attempts = attempts,
            attempt = self.attempt,
            "{}",
            if self.attempt.is_some() {
                "attempt failed"
            } else {
                "failed"
            }
        );
    }

    fn on_cancel(self) {
        let elapsed = self.start.elapsed();
        let error_type = ErrorKind::Cancelled.as_str();
        if self.policy.metrics {
            self.record_duration(elapsed, None, Some(error_type));
        }
        if self.uri.is_none() {
            return;
        }
        if !self.span.is_disabled() {
            self.span.record(names::ERROR_TYPE, display(error_type));
        }
        let _entered = self.span.enter();
        tracing::event!(
            target: "integration_log",
            tracing::Level::DEBUG,
            { names::ERROR_TYPE } = display(error_type),
            elapsed_ms = millis(elapsed),
            "cancelled before a response"
        );
    }

    fn record_duration(
        &self,
        elapsed: Duration,
        status: Option<StatusCode>,
        error_type: Option<&str>,
    ) {
        let value = elapsed.as_secs_f64();
        // A failure's label set is registered afresh (failures are rare, and `error.type` varies);
        // a success's handle is kept by the policy.
        if error_type.is_some() {
            Handles::record_uncached(value, &self.key(status, error_type));
            return;
        }
        let labels = Labels {
            scope: self.scope,
            method: method_attribute(&self.method),
            host: self.host.as_ref(),
            code: status.map(|status| status.as_u16()),
            integration: self.integration.as_ref(),
        };
        self.policy
            .handles
            .record(&labels, value, || self.key(status, None));
    }

    /// The metric key (name and labels) of this call's duration.
    fn key(&self, status: Option<StatusCode>, error_type: Option<&str>) -> Key {
        let name = match self.scope {
            Scope::Call => names::HTTP_CLIENT_REQUEST_DURATION,
            Scope::Attempt => names::ATTEMPT_DURATION,
        };
        // Every label value is static or shares an allocation the call already has.
        let mut labels = Vec::with_capacity(5);
        labels.push(Label::from_static_parts(
            names::HTTP_REQUEST_METHOD,
            method_attribute(&self.method),
        ));
        if let Some(host) = &self.host {
            labels.push(Label::new(names::SERVER_ADDRESS, host.clone()));
        }
        if let Some(status) = status {
            labels.push(Label::new(
                names::HTTP_RESPONSE_STATUS_CODE,
                status_label(status),
            ));
        }
        if let Some(error_type) = error_type {
            labels.push(Label::new(names::ERROR_TYPE, error_type.to_owned()));
        }
        if let Some(integration) = &self.integration {
            labels.push(Label::new(names::INTEGRATION, integration.as_arc().clone()));
        }
        Key::from_parts(name, labels)
    }
}

/// Milliseconds, rounded to a tenth: a log line reads `90.4`, not `90.44062699999999`.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The retry reasons, comma-separated.
struct Reasons<'a>(&'a Attempts);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.0.reasons().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(reason.as_str())?;
        }
        Ok(())
    }
}

/// An error chain through the redactor, formatted only when recorded.
struct LazyError<'a>(&'a Redactor, &'a (dyn StdError + 'static));

impl fmt::Display for LazyError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.redact_error(self.1))
    }
}

/// The `http.response.status_code` label of `status`: a shared string made once per code.
fn status_label(status: StatusCode) -> SharedString {
    static CODES: OnceLock<Box<[Arc<str>]>> = OnceLock::new();
    let codes = CODES.get_or_init(|| {
        (100..1000u16)
            .map(|code| Arc::from(code.to_string()))
            .collect()
    });
    match codes.get(usize::from(status.as_u16()).wrapping_sub(100)) {
        Some(code) => SharedString::from(code.clone()),
        None => SharedString::from(status.as_str().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 15, part 6): durations printed as `90.44062699999999` in every line.
    #[test]
    fn regression_log_durations_are_rounded_to_a_tenth_of_a_millisecond() {
        assert_eq!(millis(Duration::from_nanos(90_440_626)).to_string(), "90.4");
        assert_eq!(millis(Duration::from_nanos(57_029_655)).to_string(), "57");
        assert_eq!(
            millis(Duration::from_micros(1_363_510)).to_string(),
            "1363.5"
        );
    }
}
