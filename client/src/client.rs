//! [`Client`], its [`ClientBuilder`], and the HTTP side: timeouts, retries, circuit
//! breakers, failover and the last-known-good cache.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;

use crate::breaker::{BreakerPolicy, ServerStatus};
use crate::cache;
use crate::config::{Config, Origin};
use crate::error::Error;
use crate::identity::Identity;
use crate::retry::{RetryPolicy, MAX_DURATION};
use crate::trace::TraceparentFn;
use crate::transport::{Inner, Server, StatusInner, Validator};
use crate::util::lock;
use crate::watch::{self, Watched};
use crate::wire::instance::Labels;
use crate::wire::names::{check_label, check_name, NameError};

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
    instance: Option<String>,
    instance_labels: Labels,
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
            .field("instance", &self.instance)
            .field("instance_labels", &self.instance_labels)
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
            instance: None,
            instance_labels: Labels::new(),
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

    /// This instance's id, as the server shows it in `GET /v1/instances` and as rollouts
    /// pick it. Default: `CONFHUB_INSTANCE`, else `HOSTNAME` (a Kubernetes pod's name),
    /// else the host name and the process id. 1 to 253 bytes of `[A-Za-z0-9._:-]`.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// Add a label of this instance (`zone=eu-1a`, `canary=true`, the app's version),
    /// which rollouts can select on. Labels from `CONFHUB_LABELS` (`k=v,k2=v2`) are
    /// added first; one set here wins over the same key there.
    pub fn instance_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.instance_labels.insert(key.into(), value.into());
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
        let (service, env) = self.checked_pair()?;
        if let Some(label) = &self.label {
            check_label(label).map_err(bad_name)?;
        }
        self.check_timing()?;
        let identity = Identity::resolve(self.instance.clone(), self.instance_labels.clone())
            .map_err(Error::Builder)?;
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
                identity,
            }),
        })
    }

    /// The service and the env list (`prod,eu`), checked by the server's naming rules.
    fn checked_pair(&self) -> Result<(String, String), Error> {
        let service = self
            .service
            .clone()
            .ok_or_else(|| Error::Builder("no service given".into()))?;
        check_name("service", &service).map_err(bad_name)?;
        if self.envs.is_empty() {
            return Err(Error::Builder("no env given".into()));
        }
        let mut envs = Vec::new();
        for env in self.envs.iter().flat_map(|e| e.split(',')) {
            check_name("env", env).map_err(bad_name)?;
            envs.push(env.to_string());
        }
        Ok((service, envs.join(",")))
    }

    /// Intervals and timeouts that can work: none zero, and a silence timeout that
    /// leaves a pong time to come back.
    fn check_timing(&self) -> Result<(), Error> {
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
        Ok(())
    }
}

/// A builder error for a name the server would refuse: the rules are the server's own
/// ([`wire::names`](crate::wire::names)).
fn bad_name(e: NameError) -> Error {
    Error::Builder(e.to_string())
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
}
