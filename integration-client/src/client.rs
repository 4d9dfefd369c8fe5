//! The [`Client`]: named APIs, each with its assembled stack, swapped atomically on reload.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use integration_config::{Config, IntegrationConfig, ProxyConfig, TlsConfig};
use integration_core::ext::IntegrationName;
use integration_core::{Body, BoxError, Error, ErrorKind};
use tokio::sync::Notify;
use tower_service::Service;
use url::Url;

use crate::graphql::GraphQlRequest;
use crate::path::BaseUrl;
use crate::request::RequestBuilder;
use crate::stack::{HttpService, SharedHandles, SharedState, build_stack};
use crate::transport::{ClientIdentity, Proxy, Transport, TransportBuilder};

/// One integration as the client holds it: its base URL, defaults, stack and state.
pub(crate) struct ApiEntry {
    pub(crate) name: IntegrationName,
    pub(crate) base: BaseUrl,
    pub(crate) default_headers: HeaderMap,
    pub(crate) max_response_bytes: usize,
    pub(crate) service: Services,
    /// The configuration it was built from; `None` for a stack given by the user.
    pub(crate) config: Option<IntegrationConfig>,
    pub(crate) state: Option<SharedState>,
    /// The key of its transport in the client's cache; `None` for a stack given by the user.
    pub(crate) transport_key: Option<TransportKey>,
}

/// An API's stack, and the clones of it that have made a call, kept for the calls after them.
///
/// A tower service is called through `&mut`, so a stack shared by every call is cloned for each:
/// an allocation, and one increment of every layer's shared state (then as many decrements and a
/// free when the clone is dropped): ~280 instructions a call, the work of a call of any layer (issue
/// 19). A clone that has made its call is as good as a new one (`poll_ready` is asked again before
/// its next call, as tower requires), so the call gives it back here and the next call takes it.
/// The list is never waited for: a call that finds it locked, or empty, clones the stack, and a
/// clone given back to a locked or full list is dropped.
pub(crate) struct Services {
    stack: HttpService,
    spares: Mutex<Vec<HttpService>>,
}

impl Services {
    /// At most this many clones are kept: about the number of threads that start calls at the same
    /// instant (a clone is taken only from a call's first poll to its `call`, not while it waits
    /// for its response).
    const MAX_SPARES: usize = 16;

    pub(crate) fn new(stack: HttpService) -> Self {
        Self {
            stack,
            spares: Mutex::new(Vec::new()),
        }
    }

    /// The stack itself, to clone.
    pub(crate) fn stack(&self) -> &HttpService {
        &self.stack
    }

    /// A clone of the stack to call: one that has made a call before, or a new one.
    pub(crate) fn take(&self) -> HttpService {
        if let Ok(mut spares) = self.spares.try_lock()
            && let Some(service) = spares.pop()
        {
            return service;
        }
        self.stack.clone()
    }

    /// Gives back a clone taken with [`Services::take`] once it has been called (never one whose
    /// `poll_ready` failed, or that was not called after it was ready).
    pub(crate) fn give_back(&self, service: HttpService) {
        if let Ok(mut spares) = self.spares.try_lock()
            && spares.len() < Self::MAX_SPARES
        {
            spares.push(service);
        }
    }

    /// How many clones are kept now.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        self.spares.lock().map_or(0, |spares| spares.len())
    }
}

#[cfg(test)]
mod services_tests {
    use super::*;

    fn stack() -> HttpService {
        HttpService::new(tower::service_fn(|_: Request<Body>| async {
            Ok::<_, BoxError>(http::Response::new(crate::ResponseBody::empty()))
        }))
    }

    #[test]
    fn the_spares_kept_are_bounded_and_taken_before_a_new_clone_is_made() {
        let services = Services::new(stack());
        assert_eq!(services.spares(), 0);
        let taken: Vec<_> = (0..Services::MAX_SPARES + 4)
            .map(|_| services.take())
            .collect();
        for service in taken {
            services.give_back(service);
        }
        assert_eq!(
            services.spares(),
            Services::MAX_SPARES,
            "the extra clones are dropped"
        );
        let _one = services.take();
        assert_eq!(services.spares(), Services::MAX_SPARES - 1);
    }
}

/// What makes two integrations' transports the same: connect timeout, TLS settings, a digest of
/// the TLS files' contents, and a digest of the proxy settings (0 for the environment's).
pub(crate) type TransportKey = (Duration, TlsConfig, u64, u64);

impl fmt::Debug for ApiEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiEntry")
            .field("name", &self.name)
            .field("base_url", &self.base.as_url().as_str())
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// The integrations by name, looked up on every call: foldhash (seeded at random per process) rather
/// than SipHash, several times cheaper for a short name (issue 19).
type Apis = HashMap<String, Arc<ApiEntry>, foldhash::fast::RandomState>;

/// Counts calls in flight so that [`Client::shutdown`] can wait for them.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by a call while it runs; dropping it (call finished or cancelled) releases the count.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    shared: Arc<ClientShared>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let in_flight = &self.shared.in_flight;
        if in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            in_flight.idle.notify_waiters();
        }
    }
}

pub(crate) struct ClientShared {
    apis: ArcSwap<Apis>,
    /// Bumped after every change of `apis`: an [`Api`] handle whose entry was looked up at the
    /// same generation sends on it without looking it up again.
    generation: AtomicU64,
    removed: ArcSwap<BTreeSet<String>>,
    in_flight: InFlight,
    closed: AtomicBool,
    transport: TransportBuilder,
    handles: SharedHandles,
    /// Transports by connect timeout, TLS settings and a digest of the TLS files' contents:
    /// integrations with the same settings share one pool, and the pool survives reloads.
    transports: Mutex<HashMap<TransportKey, Transport>>,
    /// Serialises [`Client::update`] calls; never held across an `.await`.
    updating: Mutex<()>,
}

impl fmt::Debug for ClientShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apis = self.apis.load();
        let mut names: Vec<&String> = apis.keys().collect();
        names.sort();
        f.debug_struct("ClientShared")
            .field("apis", &names)
            .field("in_flight", &self.in_flight.count.load(Ordering::Relaxed))
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ClientShared {
    fn transport_for(
        &self,
        name: &str,
        config: &IntegrationConfig,
    ) -> Result<(Transport, TransportKey), Error> {
        // The files are read on every build of the integration, and their contents are part of the
        // key: a rebuild after the files changed gets a transport with the new certificates.
        let builder = self
            .transport
            .clone()
            .connect_timeout(config.connect_timeout);
        let (builder, contents) = with_tls(builder, name, &config.tls)?;
        let (builder, proxy) = with_proxy(builder, name, &config.proxy)?;
        let key = (config.connect_timeout, config.tls.clone(), contents, proxy);
        let mut transports = self.transports.lock().expect("transport cache poisoned");
        if let Some(transport) = transports.get(&key) {
            return Ok((transport.clone(), key));
        }
        let transport = builder.build().map_err(|e| {
            config_error(format!(
                "integrations.{name}.tls: the TLS settings are unusable"
            ))
            .with_source(e)
        })?;
        transports.insert(key.clone(), transport.clone());
        Ok((transport, key))
    }

    /// Forgets the transports no integration of `apis` uses (an old pool after certificates were
    /// rotated, say); stacks still running on one keep their own handle to it until they finish.
    fn prune_transports(&self, apis: &Apis) {
        let used: HashSet<&TransportKey> = apis
            .values()
            .filter_map(|entry| entry.transport_key.as_ref())
            .collect();
        self.transports
            .lock()
            .expect("transport cache poisoned")
            .retain(|key, _| used.contains(key));
    }

    fn entry_from_config(
        &self,
        name: &str,
        config: &IntegrationConfig,
        previous: Option<&SharedState>,
    ) -> Result<ApiEntry, Error> {
        let (transport, transport_key) = self.transport_for(name, config)?;
        let state = SharedState::derive(name, config, previous, &self.handles, &transport)?;
        let service = build_stack(
            config,
            &state,
            transport.with_redactor(crate::stack::redirect_redactor(&config.log, &config.auth)),
        )?;
        let mut default_headers = HeaderMap::new();
        if let Some(agent) = &config.user_agent {
            let value = HeaderValue::from_str(agent).map_err(|e| {
                config_error(format!(
                    "integrations.{name}.user_agent: not a valid header value"
                ))
                .with_source(e)
            })?;
            default_headers.insert(http::header::USER_AGENT, value);
        }
        for (key, value) in &config.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|e| {
                config_error(format!(
                    "integrations.{name}.headers: `{key}` is not a header name"
                ))
                .with_source(e)
            })?;
            let value = HeaderValue::from_str(value).map_err(|e| {
                config_error(format!(
                    "integrations.{name}.headers.{key}: not a valid header value"
                ))
                .with_source(e)
            })?;
            default_headers.append(header, value);
        }
        Ok(ApiEntry {
            name: IntegrationName::new(name),
            base: BaseUrl::new(&config.base_url).map_err(|e| {
                config_error(format!("integrations.{name}.base_url: not usable")).with_source(e)
            })?,
            default_headers,
            max_response_bytes: usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX),
            service: Services::new(service),
            config: Some(config.clone()),
            state: Some(state),
            transport_key: Some(transport_key),
        })
    }

    pub(crate) fn entry(&self, name: &str) -> Result<Arc<ApiEntry>, Error> {
        if let Some(entry) = self.apis.load().get(name) {
            return Ok(entry.clone());
        }
        Err(self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        if self.removed.load().contains(name) {
            return config_error(format!(
                "integration `{name}` was removed from the configuration"
            ))
            .with_integration(name);
        }
        let apis = self.apis.load();
        let mut known: Vec<&str> = apis.keys().map(String::as_str).collect();
        known.sort_unstable();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        config_error(format!("no integration named `{name}` (known: {known})"))
    }

    pub(crate) fn enter(self: &Arc<Self>) -> Result<InFlightGuard, Error> {
        // SeqCst here and in `shutdown`: each side writes one atomic and then reads the other's
        // (count then `closed`; `closed` then count). With acquire/release only, both reads may miss
        // both writes (store-load reordering), so a call could start after `shutdown` saw no call in
        // flight. With SeqCst one of the two sees the other.
        self.in_flight.count.fetch_add(1, Ordering::SeqCst);
        let guard = InFlightGuard {
            shared: self.clone(),
        };
        if self.closed.load(Ordering::SeqCst) {
            // Dropping the guard releases the count again.
            return Err(Error::new(ErrorKind::Cancelled)
                .with_message("the client is shutting down and takes no new calls"));
        }
        Ok(guard)
    }
}

/// The client's transport settings with an integration's `proxy` applied, and a digest of it (0 for
/// the default, which leaves the proxy set on [`ClientBuilder::transport`], or the environment's).
/// The digest keeps the password out of the cache key while telling two passwords apart.
fn with_proxy(
    builder: TransportBuilder,
    name: &str,
    proxy: &ProxyConfig,
) -> Result<(TransportBuilder, u64), Error> {
    use secrecy::ExposeSecret;
    use std::hash::{Hash, Hasher};
    let server = match proxy {
        ProxyConfig::Server(server) => server,
        ProxyConfig::Off => return Ok((builder.no_proxy(), 1)),
        _ => return Ok((builder, 0)),
    };
    let mut given = Proxy::all(server.url.as_str()).map_err(|e| {
        config_error(format!("integrations.{name}.proxy.url: not a usable proxy")).with_source(e)
    })?;
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    (server.url.as_str(), &server.username, &server.no_proxy).hash(&mut digest);
    if let (Some(username), Some(password)) = (&server.username, &server.password) {
        password.expose_secret().hash(&mut digest);
        given = given.basic_auth(
            username.clone(),
            secrecy::SecretString::from(password.expose_secret().to_owned()),
        );
    }
    given = given.no_proxy(&server.no_proxy);
    // 0 and 1 are the environment's and none.
    Ok((builder.proxy(given), digest.finish().max(2)))
}

/// The client's transport settings with an integration's TLS section added, and a digest of the
/// files read (0 for none). The section adds to what the code set on [`ClientBuilder::transport`]:
/// a default section changes nothing, and roots and a client certificate from files come on top.
fn with_tls(
    mut builder: TransportBuilder,
    name: &str,
    tls: &TlsConfig,
) -> Result<(TransportBuilder, u64), Error> {
    use std::hash::{Hash, Hasher};
    if tls.is_default() {
        return Ok((builder, 0));
    }
    // A digest, not the bytes: the key's contents are not kept beside the transport.
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    let mut read = |field: &str, path: &std::path::Path| {
        let bytes = std::fs::read(path).map_err(|e| {
            config_error(format!(
                "integrations.{name}.tls.{field}: cannot read {}: {e}",
                path.display()
            ))
        })?;
        bytes.hash(&mut digest);
        Ok::<_, Error>(bytes)
    };
    if !tls.webpki_roots {
        builder = builder.webpki_roots(false);
    }
    if tls.native_roots {
        builder = builder.native_roots(true);
    }
    for (i, path) in tls.ca_files.iter().enumerate() {
        let field = format!("ca_files[{i}]");
        builder = builder
            .add_root_certificates_pem(&read(&field, path)?)
            .map_err(|e| {
                config_error(format!(
                    "integrations.{name}.tls.{field}: {} holds no usable certificate",
                    path.display()
                ))
                .with_source(e)
            })?;
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
        let identity = ClientIdentity::from_pem(
            &read("client_cert_file", cert)?,
            &read("client_key_file", key)?,
        )
        .map_err(|e| {
            config_error(format!(
                "integrations.{name}.tls: the client certificate {} or its key {} is unusable",
                cert.display(),
                key.display()
            ))
            .with_source(e)
        })?;
        builder = builder.client_identity(identity);
    }
    Ok((builder, digest.finish()))
}

pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config).with_message(message)
}

/// One client for every configured third-party API.
///
/// Holds the named APIs, each with its own tower stack (logging, deadline, retries, circuit breaker,
/// rate limit, auth, transport) assembled from its [`IntegrationConfig`]. Get a handle with
/// [`api`](Client::api) and build requests from it.
///
/// ```
/// use integration_client::{Client, ResponseBody};
/// use integration_core::Body;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), integration_core::Error> {
/// // A client over any tower service (here an in-memory one), as tests do.
/// let upstream = tower::service_fn(|request: http::Request<Body>| async move {
///     let body = format!("{{\"path\":\"{}\"}}", request.uri().path());
///     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from(body)))
/// });
/// let client = Client::from_service("echo", "https://echo.example/v1/", upstream)?;
///
/// let reply: serde_json::Value = client.api("echo")?.get("/users/42").send().await?.json().await?;
/// assert_eq!(reply["path"], "/v1/users/42");
///
/// // An unknown name says which ones exist.
/// let error = client.api("github").unwrap_err();
/// assert!(error.is_config());
/// assert!(error.to_string().contains("known: `echo`"));
/// # Ok(())
/// # }
/// ```
///
/// # Clone
///
/// Cheap: clones share the APIs, their state and the connection pools. `Client` is `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) shared: Arc<ClientShared>,
}

/// What [`Client::update`] did, by integration name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdateReport {
    /// New integrations.
    pub added: Vec<String>,
    /// Integrations whose configuration changed: rebuilt, with unchanged sections' state kept.
    pub changed: Vec<String>,
    /// Integrations no longer configured: new calls fail with a clear error.
    pub removed: Vec<String>,
    /// Integrations left exactly as they were.
    pub unchanged: Vec<String>,
}

impl Client {
    /// Starts a [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for every integration of `config`, validated first.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] listing every problem with its path
    /// (`integrations.stripe.retry.max_attempts: must be at least 1`), or when a stack cannot be built.
    pub fn from_config(config: Config) -> Result<Self, Error> {
        Self::builder().config(config).build()
    }

    /// Like [`from_config`](Client::from_config), first opening the `[redis]` section's connection
    /// when there is one, for `store = "redis"` rate limits and tokens.
    ///
    /// The connection is bounded by the section's `command_timeout` (default 50 ms) and
    /// `connect_timeout` (default 500 ms). When Redis does not answer at start, the client starts
    /// anyway, within about the connect timeout, on the local fallbacks (each replica's share of the
    /// rate limits, tokens in this process), with one `warn`; it moves to Redis when Redis answers.
    /// With `required = true` in the section it fails instead.
    ///
    /// # Errors
    ///
    /// As [`from_config`](Client::from_config), and [`ErrorKind::Connect`] when Redis cannot be
    /// reached and the `[redis]` section says `required = true`. In a build without the `redis`
    /// feature, a `[redis]` section is refused with [`ErrorKind::Config`] and a
    /// [`FeatureDisabled`](integration_core::error::FeatureDisabled) source naming the key (`redis`)
    /// and the feature, as is any `store = "redis"` (by every constructor).
    pub async fn connect(config: Config) -> Result<Self, Error> {
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut builder = Self::builder();
        #[cfg(not(feature = "redis"))]
        if config.redis.is_some() {
            return Err(crate::stack::feature_disabled("redis".into(), "redis"));
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &config.redis {
            use integration_core::redis::{SharedRedis, SharedRedisConfig};
            use secrecy::ExposeSecret;
            let bounds = SharedRedisConfig::new()
                .with_command_timeout(redis.command_timeout)
                .with_connect_timeout(redis.connect_timeout);
            // The error of a malformed URL may quote it: not passed on (it may hold a password).
            let connection = SharedRedis::open(redis.url.expose_secret(), bounds)
                .map_err(|_| config_error("redis.url: not a Redis URL"))?;
            if !connection.check().await && redis.required {
                return Err(Error::new(ErrorKind::Connect).with_message(
                    "Redis could not be reached and the [redis] section says required = true",
                ));
            }
            builder = builder.redis(connection, redis.key_prefix.clone());
        }
        builder.config(config).build()
    }

    /// A client with one API, `name`, whose requests go to `service` (any tower service) under
    /// `base_url`. No layer is added: `service` is the whole stack. For tests and for users who
    /// compose their own stack.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `base_url` is not an absolute `http(s)` URL.
    pub fn from_service<S, B>(name: &str, base_url: &str, service: S) -> Result<Self, Error>
    where
        S: Service<Request<Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::builder().service(name, base_url, service).build()
    }

    /// A handle on the API named `name`.
    ///
    /// The handle looks the API up again at each call, so it follows [`update`](Client::update)s.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for an unknown name, listing the known ones.
    pub fn api(&self, name: &str) -> Result<Api, Error> {
        // Read before the entry: a change of the APIs between the two makes the handle look its
        // entry up again at `send`, never keep one older than its generation says.
        let generation = self.shared.generation.load(Ordering::Acquire);
        let entry = self.shared.entry(name)?;
        Ok(Api {
            client: self.clone(),
            name: entry.name.clone(),
            entry: Arc::downgrade(&entry),
            generation,
        })
    }

    /// The names of the configured APIs, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.apis.load().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.count.load(Ordering::Acquire)
    }

    /// Applies a new configuration: validates it, rebuilds only the integrations whose configuration
    /// changed (keeping the state of their unchanged sections: rate limiter, retry budget, breaker,
    /// token cache), and swaps them in atomically. Calls in flight finish on the stack they started
    /// on; new calls take the new one. A removed integration answers new calls with a
    /// [`ErrorKind::Config`] error naming it. APIs given as services (not from configuration) are kept.
    ///
    /// Nothing is applied when anything fails.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] with every validation problem and its path, or the first stack that could
    /// not be built.
    pub fn update(&self, config: Config) -> Result<UpdateReport, Error> {
        validate(&config)?;
        let _serial = self.shared.updating.lock().expect("update lock poisoned");
        let current = self.shared.apis.load_full();
        let mut next: Apis =
            Apis::with_capacity_and_hasher(config.integrations.len(), Default::default());
        let mut report = UpdateReport::default();
        for (name, integration) in &config.integrations {
            match current.get(name) {
                Some(entry) if entry.config.as_ref() == Some(integration) => {
                    next.insert(name.clone(), entry.clone());
                    report.unchanged.push(name.clone());
                }
                Some(entry) => {
                    let rebuilt =
                        self.shared
                            .entry_from_config(name, integration, entry.state.as_ref())?;
                    next.insert(name.clone(), Arc::new(rebuilt));
                    report.changed.push(name.clone());
                }
                None => {
                    let built = self.shared.entry_from_config(name, integration, None)?;
                    next.insert(name.clone(), Arc::new(built));
                    report.added.push(name.clone());
                }
            }
        }
        for (name, entry) in current.iter() {
            if next.contains_key(name) {
                continue;
            }
            if entry.config.is_none() {
                // Given as a service, not from configuration: a config update does not own it.
                next.insert(name.clone(), entry.clone());
            } else {
                report.removed.push(name.clone());
            }
        }
        // Every stack was built: only now may kept limiters take their new quotas (a failure above
        // left the running stacks untouched).
        for name in &report.changed {
            if let Some(state) = next.get(name).and_then(|entry| entry.state.as_ref()) {
                state.commit();
            }
        }
        report.removed.sort();
        let mut removed: BTreeSet<String> = (**self.shared.removed.load()).clone();
        removed.extend(report.removed.iter().cloned());
        for name in next.keys() {
            removed.remove(name);
        }
        self.shared.removed.store(Arc::new(removed));
        self.shared.prune_transports(&next);
        self.shared.apis.store(Arc::new(next));
        self.shared.generation.fetch_add(1, Ordering::Release);
        tracing::info!(
            added = ?report.added,
            changed = ?report.changed,
            removed = ?report.removed,
            "integration configuration applied"
        );
        Ok(report)
    }

    /// Follows a stream of configuration snapshots (for example [`PgStore::watch`]): applies the current
    /// one, then every new one with [`update`](Client::update), in a background task.
    ///
    /// A snapshot the client cannot apply (a stack that cannot be built) is refused: the previous
    /// configuration stays in force, the refusal is logged at warn and counted in
    /// `integration.config.reloads{outcome="rejected"}`. The task ends when the sender is dropped or the
    /// client is shut down.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use integration_client::Client;
    /// use integration_config::{Config, IntegrationConfig, Snapshot};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = Client::from_config(Config::new()).unwrap();
    /// let (publish, snapshots) = tokio::sync::watch::channel(Arc::new(Snapshot::new(Config::new())));
    /// let follower = client.follow(snapshots);
    ///
    /// let api = IntegrationConfig::builder("https://api.example.com").build().unwrap();
    /// publish.send(Arc::new(Snapshot::new(Config::new().with_integration("example", api)))).unwrap();
    /// # tokio::time::timeout(std::time::Duration::from_secs(5), async {
    /// #     while client.api("example").is_err() { tokio::task::yield_now().await; }
    /// # }).await.unwrap();
    /// assert!(client.api("example").is_ok());
    /// drop(publish);
    /// follower.await.unwrap();
    /// # }
    /// ```
    ///
    /// [`PgStore::watch`]: integration_config::PgStore::watch
    pub fn follow(
        &self,
        mut snapshots: tokio::sync::watch::Receiver<Arc<integration_config::Snapshot>>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            loop {
                if client.is_shut_down() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                client.apply_snapshot(&snapshot);
                if snapshots.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    fn apply_snapshot(&self, snapshot: &integration_config::Snapshot) {
        use integration_core::names::{CONFIG_RELOADS, OUTCOME};
        match self.update(snapshot.config().clone()) {
            Ok(_) => {}
            Err(error) => {
                metrics::counter!(CONFIG_RELOADS, OUTCOME => "rejected").increment(1);
                tracing::warn!(
                    revision = snapshot.revision(),
                    error = %error,
                    "configuration snapshot refused; the previous configuration stays in force"
                );
            }
        }
    }

    /// Stops taking calls (new ones fail with [`ErrorKind::Cancelled`]) and waits up to `timeout` for
    /// the calls in flight to finish.
    ///
    /// Returns the number of calls still in flight when it gave up (0: all finished).
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        // SeqCst: see `ClientShared::enter`.
        self.shared.closed.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                let idle = self.shared.in_flight.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.shared.in_flight.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.in_flight()
    }

    /// True once [`shutdown`](Client::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

fn validate(config: &Config) -> Result<(), Error> {
    config
        .validate()
        .map_err(|errors| config_error(errors.to_string()).with_source(errors))
}

enum Pending {
    Config(String, Box<IntegrationConfig>),
    Service {
        name: String,
        base_url: String,
        service: HttpService,
    },
}

/// Builds a [`Client`] in code.
///
/// ```
/// use integration_client::Client;
/// use integration_config::IntegrationConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder()
///     .api("github", IntegrationConfig::builder("https://api.github.com").user_agent("acme/1.0").build()?)
///     .api("stripe", IntegrationConfig::builder("https://api.stripe.com/v1/").max_attempts(5).build()?)
///     .build()?;
/// assert_eq!(client.names(), ["github", "stripe"]);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
#[must_use]
pub struct ClientBuilder {
    pending: Vec<Pending>,
    config: Option<Config>,
    transport: TransportBuilder,
    handles: SharedHandles,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .pending
            .iter()
            .map(|p| match p {
                Pending::Config(name, _) => name.as_str(),
                Pending::Service { name, .. } => name.as_str(),
            })
            .collect();
        f.debug_struct("ClientBuilder")
            .field("apis", &names)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Adds an integration from its configuration.
    pub fn api(mut self, name: impl Into<String>, config: IntegrationConfig) -> Self {
        self.pending
            .push(Pending::Config(name.into(), Box::new(config)));
        self
    }

    /// Adds every integration of `config` (validated at [`build`](ClientBuilder::build)).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Adds an API whose stack is `service`, used as it is (no layer added).
    pub fn service<S, B>(
        mut self,
        name: impl Into<String>,
        base_url: impl Into<String>,
        service: S,
    ) -> Self
    where
        S: Service<Request<Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = crate::stack::boxed(service);
        self.pending.push(Pending::Service {
            name: name.into(),
            base_url: base_url.into(),
            service,
        });
        self
    }

    /// The transport settings (TLS roots, client certificate, pool, redirects) of every integration.
    /// Each integration's `connect_timeout` overrides the one set here.
    pub fn transport(mut self, transport: TransportBuilder) -> Self {
        self.transport = transport;
        self
    }

    /// Sends every integration's calls through `proxy` rather than the environment's proxies; an
    /// integration's own `proxy` key still wins. Shorthand for the transport's
    /// [`proxy`](TransportBuilder::proxy); call it after [`transport`](Self::transport).
    ///
    /// ```
    /// use integration_client::Client;
    /// use integration_client::transport::Proxy;
    ///
    /// # fn main() -> Result<(), integration_core::Error> {
    /// let client = Client::builder()
    ///     .proxy(Proxy::all("http://proxy.corp:3128")?.no_proxy(["localhost"]))
    ///     .build()?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.transport = self.transport.proxy(proxy);
        self
    }

    /// Connects directly, ignoring the environment's proxy variables (an integration's own `proxy`
    /// key still wins). Shorthand for the transport's [`no_proxy`](TransportBuilder::no_proxy).
    pub fn no_proxy(mut self) -> Self {
        self.transport = self.transport.no_proxy();
        self
    }

    /// Shares rate limits and tokens of `store = "redis"` sections through this connection, keys
    /// under `key_prefix`. [`Client::connect`] opens it from the configuration's `[redis]` section.
    ///
    /// Give it an [`integration_core::redis::SharedRedis`]: it does no I/O until first used, so a
    /// client built with it starts whether Redis is up or not, and its bounded commands send every
    /// limiter and token store to its fallback at once when Redis is lost. A `redis` connection
    /// manager is accepted too and given the default bounds.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(
        mut self,
        connection: impl Into<integration_core::redis::SharedRedis>,
        key_prefix: impl Into<String>,
    ) -> Self {
        self.handles = self.handles.with_redis(connection, key_prefix);
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`]: every validation problem with its path, a duplicate name, a base URL that
    /// is not usable, TLS settings that do not load.
    pub fn build(self) -> Result<Client, Error> {
        let mut config = self.config.unwrap_or_default();
        let mut services = Vec::new();
        for pending in self.pending {
            match pending {
                Pending::Config(name, integration) => {
                    if config.integrations.contains_key(&name) {
                        return Err(config_error(format!(
                            "integration `{name}` is defined twice"
                        )));
                    }
                    config.integrations.insert(name, *integration);
                }
                Pending::Service {
                    name,
                    base_url,
                    service,
                } => services.push((name, base_url, service)),
            }
        }
        validate(&config)?;
        let shared = Arc::new(ClientShared {
            apis: ArcSwap::from_pointee(Apis::default()),
            generation: AtomicU64::new(0),
            removed: ArcSwap::from_pointee(BTreeSet::new()),
            in_flight: InFlight::default(),
            closed: AtomicBool::new(false),
            transport: self.transport,
            handles: self.handles,
            transports: Mutex::new(HashMap::new()),
            updating: Mutex::new(()),
        });
        let mut apis: Apis = Apis::default();
        for (name, integration) in &config.integrations {
            let entry = shared.entry_from_config(name, integration, None)?;
            apis.insert(name.clone(), Arc::new(entry));
        }
        for (name, base_url, service) in services {
            if apis.contains_key(&name) {
                return Err(config_error(format!(
                    "integration `{name}` is defined twice"
                )));
            }
            let url = Url::parse(&base_url).map_err(|e| {
                config_error(format!(
                    "integration `{name}`: base URL is not an absolute URL"
                ))
                .with_source(e)
            })?;
            let base = BaseUrl::new(&url).map_err(|e| {
                config_error(format!("integration `{name}`: base URL is not usable")).with_source(e)
            })?;
            let entry = ApiEntry {
                name: IntegrationName::new(name.as_str()),
                base,
                default_headers: HeaderMap::new(),
                max_response_bytes: usize::try_from(integration_config::DEFAULT_MAX_RESPONSE_BYTES)
                    .unwrap_or(usize::MAX),
                service: Services::new(service),
                config: None,
                state: None,
                transport_key: None,
            };
            apis.insert(name, Arc::new(entry));
        }
        shared.apis.store(Arc::new(apis));
        Ok(Client { shared })
    }
}

/// A handle on one named API of a [`Client`]: builds its requests.
///
/// ```
/// # use integration_client::{Client, ResponseBody};
/// # use integration_core::Body;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), integration_core::Error> {
/// # let upstream = tower::service_fn(|_: http::Request<Body>| async {
/// #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from("{\"id\":7}")))
/// # });
/// # let client = Client::from_service("billing", "https://billing.example/", upstream)?;
/// let billing = client.api("billing")?;
/// let invoice: serde_json::Value = billing
///     .post("/invoices")
///     .json(&serde_json::json!({ "amount": 100 }))
///     .idempotency_key("order-7")
///     .send()
///     .await?
///     .error_for_status()?
///     .json()
///     .await?;
/// assert_eq!(invoice["id"], 7);
/// # Ok(())
/// # }
/// ```
///
/// # Clone
///
/// Cheap; clones refer to the same client.
#[derive(Clone)]
pub struct Api {
    pub(crate) client: Client,
    pub(crate) name: IntegrationName,
    /// The entry found by [`Client::api`], and the APIs' generation then: a request sent while the
    /// generation is unchanged uses it as it is (no second lookup by name a call, issue 19); after
    /// an update, the entry is looked up again, so a handle never sends on a replaced or removed
    /// API. Weak: a handle kept for long does not keep a replaced API's stack (its connection
    /// pool, its limiter) alive.
    entry: Weak<ApiEntry>,
    generation: u64,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("client", &self.client)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API's entry as it is now: the one found by [`Client::api`] while the APIs are
    /// unchanged, else looked up again.
    pub(crate) fn current_entry(&self) -> Result<Arc<ApiEntry>, Error> {
        let shared = &self.client.shared;
        if shared.generation.load(Ordering::Acquire) == self.generation
            && let Some(entry) = self.entry.upgrade()
        {
            return Ok(entry);
        }
        shared.entry(self.name.as_str())
    }

    /// The API's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The API's base URL as it is now (with a trailing `/`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the API was removed by an update.
    pub fn base_url(&self) -> Result<Url, Error> {
        Ok(self.current_entry()?.base.as_url().clone())
    }

    /// A request with `method` to `path`, joined under the base URL (see
    /// [`RequestBuilder`] for the rules).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, path)
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` request.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// A `HEAD` request.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// A GraphQL request: `query` POSTed to `graphql` under the base URL (see [`GraphQlRequest`]).
    pub fn graphql(&self, query: impl Into<String>) -> GraphQlRequest {
        GraphQlRequest::new(self.clone(), query.into())
    }

    /// The assembled stack of this API as it is now, for users who compose their own calls: a
    /// `tower::Service<http::Request<Body>>`. Requests sent through it should carry absolute URIs and
    /// the [`IntegrationName`] extension; the [`RequestBuilder`] does this for you.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the API was removed by an update.
    pub fn service(&self) -> Result<HttpService, Error> {
        Ok(self
            .client
            .shared
            .entry(self.name.as_str())?
            .service
            .stack()
            .clone())
    }
}

#[cfg(test)]
mod transport_cache_tests {
    use super::*;

    fn config(ca_file: &std::path::Path, timeout: &str, with_bank: bool) -> Config {
        let bank = format!(
            r#"
            [integrations.bank]
            base_url = "https://bank.example.com/"
            timeout = "{timeout}"
            tls = {{ ca_files = ["{}"] }}
            "#,
            ca_file.display()
        );
        let text = format!(
            r#"
            [integrations.plain]
            base_url = "https://plain.example.com/"
            {}
            "#,
            if with_bank { bank } else { String::new() }
        );
        Config::from_toml_str(&text).unwrap()
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn cached(client: &Client) -> usize {
        client.shared.transports.lock().unwrap().len()
    }

    /// Regression: every certificate rotation left the old transport (and its pool) in the client's
    /// cache for as long as the client lived; an update now forgets the transports nothing uses.
    #[tokio::test]
    async fn an_update_forgets_the_transports_no_integration_uses() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem()).unwrap();
        let client = Client::from_config(config(&ca_file, "30s", true)).unwrap();
        assert_eq!(cached(&client), 2, "the default transport and the bank's");

        // Rotated in place, then a rebuild: a new transport for the bank, the old one forgotten.
        std::fs::write(&ca_file, ca_pem()).unwrap();
        client.update(config(&ca_file, "31s", true)).unwrap();
        assert_eq!(cached(&client), 2);

        // The bank removed: only the default transport is left.
        client.update(config(&ca_file, "31s", false)).unwrap();
        assert_eq!(cached(&client), 1);
    }
}

#[cfg(test)]
mod api_handle_tests {
    use super::*;

    fn config(base_url: &str) -> Config {
        Config::from_toml_str(&format!("[integrations.svc]\nbase_url = \"{base_url}\"\n")).unwrap()
    }

    /// Issue 19: a handle keeps the entry `Client::api` found, but weakly. While the APIs are
    /// unchanged it sends on that entry; an update replaces it, and a handle kept for long neither
    /// sends on the old entry nor keeps it (its stack, its connection pool) alive.
    #[tokio::test]
    async fn a_handle_uses_its_entry_until_an_update_and_does_not_keep_the_old_one() {
        let client = Client::builder()
            .config(config("http://127.0.0.1:9/one/"))
            .build()
            .unwrap();
        let api = client.api("svc").unwrap();
        let found = api.current_entry().unwrap();
        assert!(Arc::ptr_eq(&found, &api.entry.upgrade().unwrap()));
        drop(found);

        client.update(config("http://127.0.0.1:9/two/")).unwrap();
        assert_eq!(
            api.entry.strong_count(),
            0,
            "the replaced entry was kept alive"
        );
        assert_eq!(api.base_url().unwrap().as_str(), "http://127.0.0.1:9/two/");
        assert_eq!(
            api.get("/x").build().unwrap().uri(),
            "http://127.0.0.1:9/two/x"
        );
    }
}
