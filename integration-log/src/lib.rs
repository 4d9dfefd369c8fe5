//! Redacted logging, OpenTelemetry-named spans and metrics for HTTP API calls: filled by its own issue.
