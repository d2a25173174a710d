//! [`Client`], its [`ClientBuilder`], and the HTTP side: timeouts, retries, circuit
//! breakers, failover and the last-known-good cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, IF_NONE_MATCH};
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::breaker::{Breaker, BreakerPolicy, ServerStatus};
use crate::cache;
use crate::config::{Config, Origin};
use crate::error::Error;
use crate::retry::{RetryPolicy, MAX_DURATION};
use crate::trace::{self, TraceHeaders, TraceparentFn};
use crate::watch::{self, Watched};
use crate::wire::{ConfigResponse, ErrorBody};

/// Largest response body accepted from a server.
const MAX_BODY: usize = 32 * 1024 * 1024;

pub(crate) type Validator = Arc<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Builds a [`Client`]. Get one with [`Client::builder`].
///
/// Required: at least one server, a service and an environment. Everything else has a
/// default: 2 s connect timeout, 5 s request timeout, [`RetryPolicy::default`],
/// [`BreakerPolicy::default`], no cache, start from the cache when every server is down
/// (if a cache directory is set), no validator, a watch stream pinged every 10 s and
/// given up after 25 s of silence.
#[must_use]
pub struct ClientBuilder {
    servers: Vec<String>,
    service: Option<String>,
    envs: Vec<String>,
    label: Option<String>,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
    cache_dir: Option<PathBuf>,
    fail_fast: bool,
    validator: Option<Validator>,
    poll_interval: Duration,
    traceparent: Option<TraceparentFn>,
    watch_ping_interval: Duration,
    watch_silence_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("servers", &self.servers)
            .field("service", &self.service)
            .field("envs", &self.envs)
            .field("label", &self.label)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("cache_dir", &self.cache_dir)
            .field("fail_fast", &self.fail_fast)
            .field("validator", &self.validator.is_some())
            .field("poll_interval", &self.poll_interval)
            .field("traceparent_from", &self.traceparent.is_some())
            .field("watch_ping_interval", &self.watch_ping_interval)
            .field("watch_silence_timeout", &self.watch_silence_timeout)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            servers: Vec::new(),
            service: None,
            envs: Vec::new(),
            label: None,
            token: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            cache_dir: None,
            fail_fast: false,
            validator: None,
            poll_interval: Duration::from_secs(30),
            traceparent: None,
            watch_ping_interval: Duration::from_secs(10),
            watch_silence_timeout: Duration::from_secs(25),
        }
    }
}

impl ClientBuilder {
    /// Add one server base URL (`http://host:8888`, or with a path prefix
    /// `https://host/confhub`). Servers are tried in the order given; the client sticks
    /// to the last one that answered.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Add several server base URLs, in failover order.
    pub fn servers<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The service whose config to read (`orders` reads `orders.yml`, `orders-prod.yml`, …).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The environment (`prod`). Replaces any set before. `prod,eu` is accepted too.
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.envs = vec![env.into()];
        self
    }

    /// Several environments; the later wins on conflicts (ARCHITECTURE.md §2). Replaces any set
    /// before.
    pub fn envs<I, S>(mut self, envs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.envs = envs.into_iter().map(Into::into).collect();
        self
    }

    /// Read at this label (branch, tag or sha) instead of the server's tracked branch.
    ///
    /// The WebSocket push only follows the tracked branch, so a labelled
    /// [`watch`](Client::watch) polls instead, every
    /// [`poll_interval`](Self::poll_interval).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Bearer token sent with every request (`Authorization: Bearer …`). Never logged.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Time allowed to open a TCP (and TLS) connection. Default 2 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d.min(MAX_DURATION);
        self
    }

    /// Time allowed for one whole request (or WebSocket handshake), body included.
    /// Default 5 s.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d.min(MAX_DURATION);
        self
    }

    /// How fetches retry and the watch task reconnects.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// When each server's circuit breaker trips and for how long.
    pub fn circuit_breaker(mut self, policy: BreakerPolicy) -> Self {
        self.breaker = policy;
        self
    }

    /// Directory of the last-known-good cache. Every accepted config is written there
    /// atomically; when every server is unreachable, [`Client::fetch`] and
    /// [`Client::watch`] start from it (unless [`fail_fast`](Self::fail_fast)).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// With `true`, a fetch with every server unreachable fails instead of starting from
    /// the cache (the cache is still written). Default `false`.
    pub fn fail_fast(mut self, yes: bool) -> Self {
        self.fail_fast = yes;
        self
    }

    /// A check every config must pass to be accepted: by [`Client::fetch`] (which then
    /// fails with [`Error::Rejected`]), when starting from the cache, and for every
    /// pushed update of a [`Watched`] (which then keeps the old value). Runs before
    /// deserialization into the watched type.
    ///
    /// ```
    /// # fn main() -> Result<(), confhub_client::Error> {
    /// let client = confhub_client::Client::builder()
    ///     .server("http://127.0.0.1:8888")
    ///     .service("orders")
    ///     .env("prod")
    ///     .validator(|config| match config.get::<u32>("db.pool") {
    ///         Ok(n) if n > 0 => Ok(()),
    ///         _ => Err("db.pool must be a positive number"),
    ///     })
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn validator<F, E>(mut self, f: F) -> Self
    where
        F: Fn(&Config) -> Result<(), E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        self.validator = Some(Arc::new(move |c: &Config| f(c).map_err(|e| e.to_string())));
        self
    }

    /// How often a labelled [`watch`](Client::watch) polls. Default 30 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d.min(MAX_DURATION);
        self
    }

    /// How often a [`Watched`] value pings its server over the WebSocket, so a healthy
    /// stream is never silent for long. Default 10 s.
    pub fn watch_ping_interval(mut self, d: Duration) -> Self {
        self.watch_ping_interval = d.min(MAX_DURATION);
        self
    }

    /// A watch stream that brings nothing (no frame, ping or pong) for this long is
    /// taken for stalled — a frozen server, a dead network path that still holds the
    /// TCP connection: it is dropped, counted as a failure of that server (its
    /// circuit breaker), and the reconnection starts with the next server in failover
    /// order. Must be longer than the [ping interval](Self::watch_ping_interval).
    /// Default 25 s.
    pub fn watch_silence_timeout(mut self, d: Duration) -> Self {
        self.watch_silence_timeout = d.min(MAX_DURATION);
        self
    }

    /// Send a W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`) with every
    /// request: `f` is called once per HTTP request and per WebSocket handshake, on the
    /// task making it, and returns the value for the current trace, or `None` to send
    /// none. Invalid values are dropped (and logged at DEBUG). Without this option no
    /// `traceparent` is sent.
    ///
    /// The client cannot find the trace on its own: a `tracing` span id is a
    /// process-local number, not a trace id, and fields recorded on a span cannot be
    /// read back. Format it from whatever owns your traces (OpenTelemetry's current
    /// context, say). For [`Client::fetch`] `f` runs on the caller's task; for the
    /// reconnections of a [`Watched`] value, on the client's background task.
    ///
    /// Independently of this option, every request carries a fresh random
    /// `x-request-id`, which the server echoes and logs.
    ///
    /// ```
    /// # fn main() -> Result<(), confhub_client::Error> {
    /// let client = confhub_client::Client::builder()
    ///     .server("http://127.0.0.1:8888")
    ///     .service("orders")
    ///     .env("prod")
    ///     .traceparent_from(|| {
    ///         // e.g. from the OpenTelemetry context of the current request
    ///         Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string())
    ///     })
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn traceparent_from<F>(mut self, f: F) -> Self
    where
        F: Fn() -> Option<String> + Send + Sync + 'static,
    {
        self.traceparent = Some(Arc::new(f));
        self
    }

    /// Check the settings and build the client. Does no network I/O.
    pub fn build(self) -> Result<Client, Error> {
        if self.servers.is_empty() {
            return Err(Error::Builder("no server URL given".into()));
        }
        let service = self
            .service
            .ok_or_else(|| Error::Builder("no service given".into()))?;
        check_name("service", &service)?;
        if self.envs.is_empty() {
            return Err(Error::Builder("no env given".into()));
        }
        let mut envs = Vec::new();
        for env in self.envs.iter().flat_map(|e| e.split(',')) {
            check_name("env", env)?;
            envs.push(env.to_string());
        }
        let env = envs.join(",");
        if let Some(label) = &self.label {
            check_label(label)?;
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Builder("the poll interval must not be zero".into()));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Builder("timeouts must not be zero".into()));
        }
        if self.watch_ping_interval.is_zero() {
            return Err(Error::Builder(
                "the watch ping interval must not be zero".into(),
            ));
        }
        if self.watch_silence_timeout <= self.watch_ping_interval {
            return Err(Error::Builder(format!(
                "the watch silence timeout ({:?}) must be longer than the watch ping interval ({:?}): a pong needs time to come back",
                self.watch_silence_timeout, self.watch_ping_interval
            )));
        }
        if let Some(token) = &self.token {
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Builder("the token is not a valid header value".into()))?;
        }
        let mut servers = Vec::new();
        for raw in &self.servers {
            servers.push(Server::new(
                raw,
                &service,
                &env,
                self.label.as_deref(),
                &self.breaker,
            )?);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("confhub-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Builder(format!("cannot build the HTTP client: {e}")))?;
        let cache_file = self
            .cache_dir
            .as_ref()
            .map(|d| cache::file_path(d, &service, &env, self.label.as_deref()));
        Ok(Client {
            inner: Arc::new(Inner {
                servers,
                service,
                env,
                label: self.label,
                token: self.token,
                http,
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                retry: self.retry,
                cache_file,
                fail_fast: self.fail_fast,
                validator: self.validator,
                poll_interval: self.poll_interval,
                traceparent: self.traceparent,
                watch_ping_interval: self.watch_ping_interval,
                watch_silence_timeout: self.watch_silence_timeout,
                preferred: AtomicUsize::new(0),
                status: Mutex::new(StatusInner::default()),
            }),
        })
    }
}

/// `[A-Za-z0-9][A-Za-z0-9._+@-]*`, as the server checks (ARCHITECTURE.md §2).
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::Builder(format!(
            "invalid {what} `{}`: use letters, digits and . _ + @ -",
            name.escape_default()
        )))
    }
}

/// Labels may also contain `/`.
fn check_label(label: &str) -> Result<(), Error> {
    for part in label.split('/') {
        check_name("label", part)?;
    }
    Ok(())
}

/// A confhub client for one (service, env[, label]). Cheap to clone; clones share
/// connections, circuit breakers and status.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "servers",
                &self
                    .inner
                    .servers
                    .iter()
                    .map(|s| &s.url)
                    .collect::<Vec<_>>(),
            )
            .field("service", &self.inner.service)
            .field("env", &self.inner.env)
            .field("label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

/// What a [`Client`] knows about its servers and where its config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Where the most recent config this client produced (fetch, watch start or pushed
    /// update) came from; `None` before the first.
    pub origin: Option<Origin>,
    /// The last problem with the cache file (corrupt, unreadable, unwritable), if any.
    pub cache_error: Option<String>,
    /// Each server's circuit breaker, in the configured order.
    pub servers: Vec<ServerStatus>,
}

impl Status {
    /// True when the most recent config came from the last-known-good cache.
    pub fn is_from_cache(&self) -> bool {
        matches!(self.origin, Some(Origin::Cache { .. }))
    }
}

#[derive(Debug, Default)]
struct StatusInner {
    origin: Option<Origin>,
    cache_error: Option<String>,
}

impl Client {
    /// Start building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Fetch the resolved config once.
    ///
    /// Tries the servers in order (skipping those whose circuit breaker is open) with the
    /// configured timeouts, retrying with backoff until the retry deadline. 4xx answers
    /// other than 408 and 429 are returned at once ([`Error::Status`]). The config must
    /// pass the [validator](ClientBuilder::validator); it is then written to the cache.
    ///
    /// When every server is unreachable and a cache directory is set, the cached config
    /// is returned instead ([`Config::is_from_cache`], [`Status::is_from_cache`], and a
    /// warning in the log), unless [fail-fast](ClientBuilder::fail_fast) was chosen. A
    /// corrupt cache file is logged, recorded in [`Status::cache_error`], and never
    /// used: the result is then [`Error::Unavailable`] naming it.
    pub async fn fetch(&self) -> Result<Config, Error> {
        self.inner.fetch_accepted().await
    }

    /// Fetch once and deserialize the whole config into `T`.
    pub async fn fetch_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.fetch().await?.deserialize()
    }

    /// Fetch the config, deserialize it into `T`, and keep it up to date in the
    /// background over the WebSocket (ARCHITECTURE.md §6); see [`Watched`].
    ///
    /// The initial value is obtained as by [`fetch`](Self::fetch) (so it may come from
    /// the cache). Use `T = serde_json::Value` for a dynamic config. Must be called
    /// inside a Tokio runtime.
    pub async fn watch<T>(&self) -> Result<Watched<T>, Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        watch::start(self.inner.clone(), None).await
    }

    /// Like [`watch`](Self::watch), but for the value at one `path` (`db`, `db.pool`,
    /// same syntax as [`Config::get`]): `T` is deserialized from that sub-value, and
    /// [`Watched::changed`], subscribers and callbacks fire only when that part changed.
    /// A config without the path is rejected like one that does not deserialize.
    pub async fn watch_path<T>(&self, path: &str) -> Result<Watched<T>, Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        watch::start(self.inner.clone(), Some(path.to_string())).await
    }

    /// Circuit-breaker state of each server, where the last config came from, and the
    /// last cache problem.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        let servers = self
            .inner
            .servers
            .iter()
            .map(|s| {
                let b = lock(&s.breaker);
                ServerStatus {
                    url: s.url.clone(),
                    breaker: b.state(now),
                    consecutive_failures: b.failures(),
                }
            })
            .collect();
        let st = lock(&self.inner.status);
        Status {
            origin: st.origin.clone(),
            cache_error: st.cache_error.clone(),
            servers,
        }
    }

    /// The service this client reads.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The environment(s) this client reads, comma-joined.
    pub fn env(&self) -> &str {
        &self.inner.env
    }
}

/// Lock a std mutex, recovering from poisoning (every critical section here leaves the
/// data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Server {
    /// The base URL as given (for logs, errors and status).
    pub(crate) url: String,
    config_url: Url,
    pub(crate) watch_url: Url,
    breaker: Mutex<Breaker>,
}

impl Server {
    fn new(
        raw: &str,
        service: &str,
        env: &str,
        label: Option<&str>,
        breaker: &BreakerPolicy,
    ) -> Result<Self, Error> {
        let bad = |why: &str| Error::Builder(format!("server URL `{raw}`: {why}"));
        let base = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment"));
        }
        let mut config_url = base.clone();
        config_url
            .path_segments_mut()
            .map_err(|()| bad("cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v1", "config", service, env]);
        if let Some(label) = label {
            config_url.query_pairs_mut().append_pair("label", label);
        }
        let mut watch_url = base.clone();
        watch_url
            .path_segments_mut()
            .map_err(|()| bad("cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v1", "watch"]);
        let scheme = if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        watch_url
            .set_scheme(scheme)
            .map_err(|()| bad("cannot make a WebSocket URL"))?;
        Ok(Server {
            url: raw.trim_end_matches('/').to_string(),
            config_url,
            watch_url,
            breaker: Mutex::new(Breaker::new(breaker.clone())),
        })
    }
}

/// Permission from a server's breaker to send it one request. Report the outcome with
/// [`success`](Self::success) or [`failure`](Self::failure); dropping it unreported (a
/// cancelled request) frees a half-open probe slot.
pub(crate) struct Permit<'a> {
    server: &'a Server,
    done: bool,
}

impl Permit<'_> {
    pub(crate) fn success(mut self) {
        self.done = true;
        lock(&self.server.breaker).success();
    }

    pub(crate) fn failure(mut self) {
        self.done = true;
        server_failed(self.server);
    }
}

fn server_failed(server: &Server) {
    if lock(&server.breaker).failure(Instant::now()) {
        tracing::warn!(server = %server.url, "circuit breaker opened: skipping this server until its cool-down ends");
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.server.breaker).abandon();
        }
    }
}

/// The result of one successful HTTP exchange.
pub(crate) enum Fetched {
    Fresh(Config),
    /// 304: the server (base URL) holds the same digest.
    NotModified {
        server: String,
    },
}

pub(crate) struct Inner {
    pub(crate) servers: Vec<Server>,
    pub(crate) service: String,
    pub(crate) env: String,
    pub(crate) label: Option<String>,
    token: Option<String>,
    http: reqwest::Client,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    cache_file: Option<PathBuf>,
    fail_fast: bool,
    validator: Option<Validator>,
    pub(crate) poll_interval: Duration,
    traceparent: Option<TraceparentFn>,
    pub(crate) watch_ping_interval: Duration,
    pub(crate) watch_silence_timeout: Duration,
    preferred: AtomicUsize,
    status: Mutex<StatusInner>,
}

impl Inner {
    /// Server indices in the order to try them: the last one that worked first.
    pub(crate) fn server_order(&self) -> impl Iterator<Item = usize> {
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| (first + k) % n)
    }

    pub(crate) fn set_preferred(&self, i: usize) {
        self.preferred.store(i, Ordering::Relaxed);
    }

    /// Server `i` failed after it had been let through (a watch stream that stalled):
    /// count it against its breaker, and make the next server the first to try.
    pub(crate) fn server_stalled(&self, i: usize) {
        server_failed(&self.servers[i]);
        self.set_preferred((i + 1) % self.servers.len());
    }

    /// Ask server `i`'s breaker for a permit.
    pub(crate) fn permit(&self, i: usize) -> Option<Permit<'_>> {
        let server = &self.servers[i];
        if lock(&server.breaker).allow(Instant::now()) {
            Some(Permit {
                server,
                done: false,
            })
        } else {
            None
        }
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A fresh `x-request-id`, and the application's `traceparent` if it gives one.
    pub(crate) fn trace_headers(&self) -> TraceHeaders {
        TraceHeaders::new(self.traceparent.as_ref())
    }

    pub(crate) fn set_origin(&self, origin: Origin) {
        lock(&self.status).origin = Some(origin);
    }

    fn set_cache_error(&self, e: &Error) {
        lock(&self.status).cache_error = Some(e.to_string());
    }

    /// Run the user validator.
    pub(crate) fn validate(&self, config: &Config) -> Result<(), Error> {
        match &self.validator {
            Some(v) => v(config).map_err(|message| Error::Rejected {
                version: config.version().to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Fetch, validate, cache; fall back to the cache when every server is down.
    pub(crate) async fn fetch_accepted(&self) -> Result<Config, Error> {
        match self.fetch_remote(None, &self.retry).await {
            Ok(Fetched::Fresh(config)) => {
                self.validate(&config)?;
                self.write_cache(&config).await;
                self.set_origin(config.origin().clone());
                Ok(config)
            }
            Ok(Fetched::NotModified { .. }) => Err(Error::Protocol {
                server: String::new(),
                message: "304 Not Modified to an unconditional request".into(),
            }),
            Err(e) if e.is_unavailable() => self.start_from_cache(e).await,
            Err(e) => Err(e),
        }
    }

    async fn start_from_cache(&self, unavailable: Error) -> Result<Config, Error> {
        let Some(path) = self.cache_file.clone() else {
            return Err(unavailable);
        };
        let why = unavailable.to_string();
        let with_cache_reason = |reason: Error| match unavailable {
            Error::Unavailable {
                attempts,
                elapsed,
                last,
                ..
            } => Error::Unavailable {
                attempts,
                elapsed,
                last,
                cache: Some(Box::new(reason)),
            },
            other => other,
        };
        if self.fail_fast {
            return Err(with_cache_reason(Error::Cache {
                path,
                message: "not used: fail-fast was chosen".into(),
            }));
        }
        let (service, env, label) = (self.service.clone(), self.env.clone(), self.label.clone());
        let p = path.clone();
        let loaded =
            tokio::task::spawn_blocking(move || cache::load(&p, &service, &env, label.as_deref()))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::Cache {
                        path: path.clone(),
                        message: format!("reading task failed: {e}"),
                    })
                });
        let response = match loaded {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(with_cache_reason(Error::Cache {
                    path,
                    message: "no cached config yet".into(),
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, "the last-known-good cache is unusable and was ignored");
                self.set_cache_error(&e);
                return Err(with_cache_reason(e));
            }
        };
        let config = Config::new(response, Origin::Cache { path: path.clone() });
        if let Err(e) = self.validate(&config) {
            let e = Error::Cache {
                path,
                message: format!("not used: {e}"),
            };
            tracing::error!(error = %e, "the cached config fails the validator");
            self.set_cache_error(&e);
            return Err(with_cache_reason(e));
        }
        tracing::warn!(
            service = %self.service,
            env = %self.env,
            version = %config.version(),
            cache = %path.display(),
            error = %why,
            "every confhub server is unreachable: starting from the last-known-good cache"
        );
        self.set_origin(config.origin().clone());
        Ok(config)
    }

    /// Write an accepted config to the cache, if one is configured. Failures are logged
    /// and recorded in the status, never fatal.
    pub(crate) async fn write_cache(&self, config: &Config) {
        let Some(path) = self.cache_file.clone() else {
            return;
        };
        if config.is_from_cache() {
            return;
        }
        let response = config.as_response().clone();
        let result = tokio::task::spawn_blocking(move || cache::store(&path, &response)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not write the last-known-good cache");
                self.set_cache_error(&e);
            }
            Err(e) => tracing::warn!(error = %e, "cache writing task failed"),
        }
    }

    /// GET the config from the servers with retries, backoff, breakers and failover.
    /// `etag` makes the request conditional.
    pub(crate) async fn fetch_remote(
        &self,
        etag: Option<&str>,
        policy: &RetryPolicy,
    ) -> Result<Fetched, Error> {
        let start = Instant::now();
        let deadline = start + policy.get_deadline();
        let mut attempts = 0u32;
        let mut last: Option<Error> = None;
        loop {
            attempts += 1;
            let mut tried = false;
            for i in self.server_order() {
                let server = &self.servers[i];
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                let Some(permit) = self.permit(i) else {
                    tracing::debug!(server = %server.url, "circuit breaker open: skipped");
                    if last.is_none() {
                        last = Some(Error::Transport {
                            server: server.url.clone(),
                            source: "circuit breaker open".into(),
                        });
                    }
                    continue;
                };
                tried = true;
                match self
                    .get_once(server, self.request_timeout.min(remaining), etag)
                    .await
                {
                    Ok(fetched) => {
                        permit.success();
                        self.set_preferred(i);
                        return Ok(fetched);
                    }
                    Err(e) if e.is_retryable() => {
                        permit.failure();
                        tracing::warn!(server = %server.url, error = %e, "confhub server failed; trying the next");
                        last = Some(e);
                    }
                    Err(e) => {
                        permit.success();
                        return Err(e);
                    }
                }
            }
            if policy.get_max_attempts().is_some_and(|max| attempts >= max) {
                break;
            }
            let mut delay = policy.delay(attempts);
            if !tried {
                // Every breaker is open: nothing can happen before the first cool-down ends.
                let reopen = self
                    .servers
                    .iter()
                    .filter_map(|s| lock(&s.breaker).open_until())
                    .min();
                if let Some(at) = reopen {
                    delay = delay.max(at.saturating_duration_since(Instant::now()));
                }
            }
            if Instant::now() + delay >= deadline {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        Err(Error::Unavailable {
            attempts,
            elapsed: start.elapsed(),
            last: last.map(Box::new),
            cache: None,
        })
    }

    /// One GET against one server.
    async fn get_once(
        &self,
        server: &Server,
        timeout: Duration,
        etag: Option<&str>,
    ) -> Result<Fetched, Error> {
        let transport = |e: reqwest::Error| Error::Transport {
            server: server.url.clone(),
            source: Box::new(e.without_url()),
        };
        let mut req = self
            .http
            .get(server.config_url.clone())
            .timeout(timeout)
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(etag) = etag {
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                req = req.header(IF_NONE_MATCH, v);
            }
        }
        let trace = self.trace_headers();
        req = req.header(trace::REQUEST_ID, &trace.request_id);
        if let Some(tp) = &trace.traceparent {
            req = req.header(trace::TRACEPARENT, tp);
        }
        tracing::debug!(server = %server.url, request_id = %trace.request_id, "requesting config");
        // Keep the token out of any Debug output of the request.
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(Fetched::NotModified {
                server: server.url.clone(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::Protocol {
                    server: server.url.clone(),
                    message: format!("response body larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if status != 200 {
            let parsed = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .map(Box::new);
            let message = if parsed.is_some() {
                String::new()
            } else {
                truncate(&String::from_utf8_lossy(&body), 200)
            };
            return Err(Error::Status {
                server: server.url.clone(),
                status,
                body: parsed,
                message,
            });
        }
        let response: ConfigResponse =
            serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                server: server.url.clone(),
                message: format!("not a config response: {e}"),
            })?;
        Ok(Fetched::Fresh(Config::new(
            response,
            Origin::Server {
                url: server.url.clone(),
            },
        )))
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn builder() -> ClientBuilder {
        Client::builder()
            .server("http://127.0.0.1:1")
            .service("orders")
            .env("prod")
    }

    #[test]
    fn builder_requires_server_service_env() {
        assert!(Client::builder().service("a").env("b").build().is_err());
        assert!(Client::builder()
            .server("http://x")
            .env("b")
            .build()
            .is_err());
        assert!(Client::builder()
            .server("http://x")
            .service("a")
            .build()
            .is_err());
        assert!(builder().build().is_ok());
    }

    #[test]
    fn builder_rejects_bad_input() {
        for b in [
            builder().server("ftp://x"),
            builder().server("not a url"),
            builder().server("http://x/?a=b"),
            builder().service("../etc"),
            builder().service(""),
            builder().env("prod/x"),
            builder().envs(["prod", ""]),
            builder().label("a/../b"),
            builder().token("bad\ntoken"),
            builder().poll_interval(Duration::ZERO),
            builder().request_timeout(Duration::ZERO),
            builder().watch_ping_interval(Duration::ZERO),
            builder()
                .watch_ping_interval(Duration::from_secs(10))
                .watch_silence_timeout(Duration::from_secs(10)),
        ] {
            let e = b.build().unwrap_err();
            assert!(matches!(e, Error::Builder(_)), "{e}");
        }
    }

    #[test]
    fn urls_are_built_from_the_base() {
        let c = Client::builder()
            .servers(["http://a:8888", "https://b/prefix/"])
            .service("orders")
            .envs(["prod", "eu"])
            .label("feature/x")
            .build()
            .unwrap();
        let s = &c.inner.servers;
        assert_eq!(
            s[0].config_url.as_str(),
            "http://a:8888/v1/config/orders/prod,eu?label=feature%2Fx"
        );
        assert_eq!(s[0].watch_url.as_str(), "ws://a:8888/v1/watch");
        assert_eq!(
            s[1].config_url.as_str(),
            "https://b/prefix/v1/config/orders/prod,eu?label=feature%2Fx"
        );
        assert_eq!(s[1].watch_url.as_str(), "wss://b/prefix/v1/watch");
        assert_eq!(s[1].url, "https://b/prefix");
        assert_eq!(c.env(), "prod,eu");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = builder().token("s3cret");
        assert!(!format!("{b:?}").contains("s3cret"));
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn truncate_counts_chars() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
