//! `integration call NAME METHOD PATH`: one call through the integration's whole stack (auth, rate
//! limits, retries, breaker, deadline, logs), built from the same configuration sources as the
//! service, with `-v` showing each attempt.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use http::{HeaderName, HeaderValue, Method};
use integration_client::Client;
use integration_config::Config;
use serde_json::json;

use crate::cli::Global;
use crate::exit::{Exit, Failure};
use crate::output::{self, Format, GREEN, RED, paint};
use crate::verbose::Trace;

/// `call` arguments.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The integration, as configured
    name: String,

    /// The HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD, ...
    method: String,

    /// The path, joined under the integration's base URL (a query may follow)
    path: String,

    /// A request header, NAME:VALUE (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,

    /// The request body: text, @FILE, or @- for standard input (JSON is sent as application/json)
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    data: Option<String>,

    /// Time for the whole call, every attempt and wait included (e.g. 10s) [default: the
    /// integration's timeout]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// Show every attempt on standard error: status, duration, why it retried or waited, the
    /// throttle signals read, token fetches (secrets redacted as in the logs)
    #[arg(short, long)]
    verbose: bool,
}

/// The body given with `-d`.
fn body(data: &str) -> Result<Vec<u8>, Failure> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| {
                Failure::new(Exit::Failure, format!("cannot read standard input: {e}"))
            })?;
            Ok(bytes)
        }
        Some(file) => std::fs::read(Path::new(file))
            .map_err(|e| Failure::new(Exit::Failure, format!("cannot read {file}: {e}"))),
        None => Ok(data.as_bytes().to_vec()),
    }
}

/// A `-H NAME:VALUE` header.
fn header(text: &str) -> Result<(HeaderName, HeaderValue), Failure> {
    let usage = || {
        Failure::new(
            Exit::Usage,
            format!("-H {text:?}: expected NAME:VALUE with a valid header name and value"),
        )
    };
    let (name, value) = text.split_once(':').ok_or_else(usage)?;
    let name = HeaderName::try_from(name.trim()).map_err(|_| usage())?;
    let value = HeaderValue::try_from(value.trim()).map_err(|_| usage())?;
    Ok((name, value))
}

pub(crate) async fn run(args: CallArgs, global: &Global) -> Result<Exit, Failure> {
    let format = global.format();
    // Installed first, so the stack's spans and events are seen from the start.
    let trace = Trace::new(args.verbose);
    if args.verbose {
        trace.install();
    }
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
        Failure::new(
            Exit::Usage,
            format!("{:?} is not an HTTP method", args.method),
        )
    })?;
    let headers = args
        .headers
        .iter()
        .map(|h| header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let body = args.data.as_deref().map(body).transpose()?;

    // Only this integration is built (and only its secrets need resolving).
    let config = global.sources.load(false).await?;
    let integration = config.integrations.get(&args.name).ok_or_else(|| {
        Failure::config(format!(
            "unknown integration {:?}; configured: {}",
            args.name,
            config
                .integrations
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    integration.validate().map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("integrations.{}.{}: {}", args.name, e.path, e.message))
            .collect();
        Failure::config(format!("invalid configuration:\n{}", lines.join("\n")))
    })?;
    let mut one = Config::new().with_integration(&args.name, integration.clone());
    if let Some(redis) = &config.redis {
        one = one.with_redis(redis.clone());
    }
    let client = Client::connect(one).await?;

    let mut request = client.api(&args.name)?.request(method, &args.path);
    let has_content_type = headers
        .iter()
        .any(|(name, _)| name == http::header::CONTENT_TYPE);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        if !has_content_type && serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
            request = request.header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        request = request.body(body);
    }
    if let Some(timeout) = args.timeout {
        request = request.timeout(timeout);
    }

    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let failure = Failure::from(error);
            if format == Format::Json {
                output::json(&json!({
                    "integration": args.name,
                    "error": failure.message,
                    "exit_code": failure.exit as u8,
                    "trace": trace.entries(),
                }))?;
            }
            return Err(failure);
        }
    };
    let status = response.status();
    let attempts = response.attempts();
    let redactor = integration_client::stack::redactor(&integration.log, &integration.auth);
    let response_headers: serde_json::Map<String, serde_json::Value> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                redactor
                    .redact_header_value(name, value)
                    .into_owned()
                    .into(),
            )
        })
        .collect();
    let bytes = response.bytes().await?;
    let exit = Exit::of_status(status);
    if args.verbose {
        let summary = format!("= {status} after {attempts} attempt(s)",);
        let mut err = anstream::stderr();
        let painted = if exit == Exit::Success {
            paint(GREEN, summary)
        } else {
            paint(RED, summary)
        };
        let _ = writeln!(err, "{painted}");
    }
    match format {
        Format::Json => {
            let body = serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into());
            output::json(&json!({
                "integration": args.name,
                "status": status.as_u16(),
                "attempts": attempts,
                "headers": response_headers,
                "body": body,
                "trace": trace.entries(),
            }))?;
        }
        Format::Table => {
            let mut out = std::io::stdout();
            let written = out.write_all(&bytes).and_then(|()| {
                if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
                out.flush()
            });
            written.map_err(|e| Failure::new(Exit::Failure, format!("cannot write: {e}")))?;
        }
    }
    Ok(exit)
}
