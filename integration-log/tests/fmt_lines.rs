//! What a `tracing_subscriber::fmt` subscriber prints for the log layer's span and events: the
//! string attributes (method, host, integration, `error.type`) are recorded as display values, so a
//! line reads `http.request.method=GET`, as the other crates' `integration.name=..` fields do, and the
//! subscriber does not escape them character by character (`<str as Debug>`) on every call (issue
//! 19). In its own test binary: it installs a process-wide subscriber.

use std::io;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use integration_core::ext::IntegrationName;
use integration_log::{LogLayer, LogPolicy};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_fmt_line_shows_string_attributes_unquoted() {
    let lines = Lines::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(lines.clone())
        .init();

    let service = ServiceBuilder::new()
        .layer(LogLayer::new(LogPolicy::default()))
        .service_fn(|_: Request<String>| async {
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, std::convert::Infallible>(response)
        });
    let mut request = Request::get("https://api.payments.test:8443/v1/charges")
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(IntegrationName::new("payments"));
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let printed = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    // The 503's line (at `warn`), inside the call span, which the subscriber prints as context.
    let line = printed
        .lines()
        .find(|line| line.contains("response"))
        .unwrap_or_else(|| panic!("no response line in {printed:?}"));
    for field in [
        "http.request.method=GET",
        "server.address=api.payments.test",
        "server.port=8443",
        "url.full=https://api.payments.test:8443/v1/charges",
        "integration.name=payments",
        "error.type=503",
        "http.response.status_code=503",
    ] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
    // `otel.*` fields stay strings: OpenTelemetry bridges read them by `record_str`.
    let quoted = line.replace(r#"otel.status_code="ERROR""#, "");
    assert!(!quoted.contains('"'), "a quoted value in {line:?}");
}
