//! The cache's figures (issue 16), apart from the scenarios of the main benchmark:
//!
//! - **hit / miss**: the mean time of a call through the full stack (API-key auth, rate limit,
//!   retry, breaker, logging) answered by the memory cache, against the same call that misses
//!   (its path answers `no-store`) and goes to the loopback server; the ratio of the two.
//! - **Redis hits per second**: 64 callers in a closed loop, every call a hit from the Redis store.
//!
//! The server is in this process (its `cache-control` is the point), and every call is checked: a
//! wrong status, body or cache status is an error, not a figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use integration_client::{CacheStatus, Client};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::BoxError;
use super::server::BODY;

/// Callers of the Redis measurement.
pub const REDIS_CALLERS: usize = 64;

/// What the cache measurement found.
#[derive(Debug, Clone)]
pub struct CacheFigures {
    /// Mean time of a memory-cache hit through the full stack.
    pub hit: Duration,
    /// Mean time of a miss through the same stack to the loopback server.
    pub miss: Duration,
    /// Hits per second with the Redis store and [`REDIS_CALLERS`] callers (`None`: no Redis).
    pub redis_hits_per_second: Option<f64>,
}

impl CacheFigures {
    /// `hit / miss`: the share of a miss's cost a hit takes.
    pub fn ratio(&self) -> f64 {
        self.hit.as_secs_f64() / self.miss.as_secs_f64()
    }

    /// The figures as Markdown lines.
    pub fn markdown(&self) -> String {
        let redis = match self.redis_hits_per_second {
            Some(rate) => format!("{rate:.0} hits/s ({REDIS_CALLERS} callers)"),
            None => "not measured (no Redis)".to_owned(),
        };
        format!(
            "| figure | value |\n| --- | --- |\n\
             | memory hit, full stack | {:.1} µs |\n\
             | loopback miss, full stack | {:.1} µs |\n\
             | hit / miss | {:.3} |\n\
             | Redis store | {redis} |\n",
            self.hit.as_secs_f64() * 1e6,
            self.miss.as_secs_f64() * 1e6,
            self.ratio(),
        )
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let cache_control = if request.uri().path().ends_with("/fresh") {
        "max-age=3600"
    } else {
        "no-store"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", cache_control)
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("a valid response"))
}

async fn start_server() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(respond))
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The full stack with the cache on, in `store` (`memory`, or `redis` with `redis` the section).
fn config(addr: SocketAddr, store: &str, redis: &str) -> String {
    format!(
        r#"{redis}
[integrations.cached]
base_url = "http://{addr}/"
timeout = "30s"

[integrations.cached.auth]
type = "api_key"
key = "bench-api-key-5f0c2a9e"

[integrations.cached.rate_limit]
quotas = [{{ rate = 100000, per = "1s" }}]

[integrations.cached.cache]
enabled = true
store = "{store}"
"#
    )
}

/// One call of `path`: its cache status; fails unless it is a 200 with the body.
async fn call_status(client: &Client, path: &str) -> Result<Option<CacheStatus>, BoxError> {
    let response = client.api("cached")?.get(path).send().await?;
    let status = response.cache_status();
    if response.status() != StatusCode::OK {
        return Err(format!("{path}: {}, not 200", response.status()).into());
    }
    let body = response.bytes().await?;
    if body.len() != BODY.len() {
        return Err(format!("{path}: a body of {} bytes", body.len()).into());
    }
    Ok(status)
}

/// One call of `path`; fails unless it is a 200 with the body and the cache status expected.
async fn call(client: &Client, path: &str, expected: CacheStatus) -> Result<(), BoxError> {
    match call_status(client, path).await? {
        Some(status) if status == expected => Ok(()),
        other => Err(format!("{path}: cache status {other:?}, not {expected:?}").into()),
    }
}

/// The mean time of `calls` sequential calls of `path`.
async fn mean(
    client: &Client,
    path: &str,
    expected: CacheStatus,
    calls: u32,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    for _ in 0..calls {
        call(client, path, expected).await?;
    }
    Ok(started.elapsed() / calls)
}

/// Measures the figures: `calls` sequential calls for hit and miss, and the Redis closed loop for
/// `window` (skipped when `redis_url` is `None`).
///
/// # Errors
///
/// The first call that failed or was not answered as expected; a Redis that cannot be reached.
pub async fn measure(
    calls: u32,
    window: Duration,
    redis_url: Option<&str>,
) -> Result<CacheFigures, BoxError> {
    let addr = start_server().await?;
    let client = Client::from_config(integration_config::Config::from_toml_str(&config(
        addr, "memory", "",
    ))?)?;
    call(&client, "v1/fresh", CacheStatus::Miss).await?;
    // Warm both paths (connections, allocator), then measure each.
    mean(&client, "v1/fresh", CacheStatus::Hit, calls / 10 + 1).await?;
    mean(&client, "v1/item", CacheStatus::Miss, calls / 10 + 1).await?;
    let hit = mean(&client, "v1/fresh", CacheStatus::Hit, calls).await?;
    let miss = mean(&client, "v1/item", CacheStatus::Miss, calls).await?;

    let redis_hits_per_second = match redis_url {
        Some(url) => Some(redis_hits(addr, url, window).await?),
        None => None,
    };
    Ok(CacheFigures {
        hit,
        miss,
        redis_hits_per_second,
    })
}

async fn redis_hits(addr: SocketAddr, url: &str, window: Duration) -> Result<f64, BoxError> {
    let prefix = format!("bench-cache:{}:{}", std::process::id(), fastrand::u64(..));
    // A generous command bound: on a loaded machine the default 50 ms would send lookups to the
    // outage path (a miss), which measures the machine, not the store.
    let section =
        format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\ncommand_timeout = \"1s\"\n");
    let config = integration_config::Config::from_toml_str(&config(addr, "redis", &section))?;
    let client = Client::connect(config).await?;
    call(&client, "v1/fresh", CacheStatus::Miss).await?;
    // The entry is stored in the background: wait (bounded) for the first hit.
    let mut stored = false;
    for _ in 0..200 {
        if call(&client, "v1/fresh", CacheStatus::Hit).await.is_ok() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !stored {
        return Err("the Redis store never answered a hit".into());
    }
    let hits = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..REDIS_CALLERS {
        let client = client.clone();
        let hits = hits.clone();
        callers.spawn(async move {
            while Instant::now() < deadline {
                // A lookup Redis did not answer in time is a miss (the cache steps aside): the
                // call is still answered, by the upstream, and is not counted as a hit.
                if call_status(&client, "v1/fresh").await? == Some(CacheStatus::Hit) {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, BoxError>(())
        });
    }
    let started = Instant::now();
    while let Some(joined) = callers.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed();
    Ok(hits.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
