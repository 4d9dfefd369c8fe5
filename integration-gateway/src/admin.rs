//! The admin listener: liveness, readiness, Prometheus metrics and the read-only view of the
//! integrations.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::names::{HEALTHZ_PATH, INTEGRATIONS_PATH, METRICS_PATH, READYZ_PATH};
use crate::proxy::{GatewayBody, json_response};
use crate::state::Shared;

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<GatewayBody> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn integration_view(shared: &Shared, name: &str) -> Option<serde_json::Value> {
    let api = shared.client.api(name).ok()?;
    let base_url = api.base_url().ok()?;
    let stats = shared.stats(name);
    Some(serde_json::json!({
        "name": name,
        "base_url": base_url.as_str(),
        "version": shared.versions().get(name),
        "requests": stats.requests,
        "in_flight": stats.in_flight,
        "responses": stats.responses,
        "failures": stats.failures,
        "last_failure": stats.last_failure,
    }))
}

/// Serves one request of the admin listener. Read-only: `GET` and `HEAD` only.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, std::convert::Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin endpoints are read-only\n",
            "text/plain",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let path = request.uri().path();
    let response = match path {
        HEALTHZ_PATH => text(StatusCode::OK, "ok\n", "text/plain"),
        READYZ_PATH => {
            if shared.is_ready() {
                text(StatusCode::OK, "ready\n", "text/plain")
            } else if shared.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", "text/plain")
            }
        }
        METRICS_PATH => match &metrics {
            Some(handle) => {
                handle.run_upkeep();
                text(StatusCode::OK, handle.render(), "text/plain; version=0.0.4")
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "another metrics recorder was installed in this process before the gateway's\n",
                "text/plain",
            ),
        },
        INTEGRATIONS_PATH => {
            let integrations: Vec<serde_json::Value> = shared
                .client
                .names()
                .iter()
                .filter_map(|name| integration_view(&shared, name))
                .collect();
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "ready": shared.is_ready(),
                    "draining": shared.is_draining(),
                    "caller_auth": shared.caller.is_on(),
                    "source": shared.source,
                    "integrations": integrations,
                }),
            )
        }
        _ => match path
            .strip_prefix(INTEGRATIONS_PATH)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|name| integration_view(&shared, name))
        {
            Some(view) => json_response(StatusCode::OK, &view),
            None => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "not_found", "message": format!("nothing at {path}") }),
            ),
        },
    };
    Ok(response)
}
