//! [`Watched`]: a typed value kept up to date by a background task that holds the
//! `/v1/watch` WebSocket (ARCHITECTURE.md §6).
//!
//! The task connects to the servers in failover order (respecting their circuit
//! breakers), subscribes with the digest of the value it holds, and applies every
//! `config` frame: validator, then deserialization into `T`, then an atomic swap. On any
//! failure of the connection (closed, malformed stream) it reconnects with backoff and
//! jitter and resubscribes with its digest, so it never misses the latest config. It
//! pings the server every `watch_ping_interval`; a stream silent (no frame, ping or
//! pong) for `watch_silence_timeout` is stalled: it counts as a failure of that server
//! and the reconnection starts with the next one. A labelled client polls over HTTP
//! instead.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, Origin};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::transport::{Fetched, Inner, Permit, Server};
use crate::util::{lock, truncate};
use crate::wire::{ClientFrame, ConfigResponse, ServerFrame};

type Callback<T> = Arc<dyn Fn(&T, &T) + Send + Sync>;

/// The value a [`Watched`] holds, with the version, digest and origin of the config it
/// was taken from, read together: see [`Watched::snapshot`].
#[non_exhaustive]
pub struct Snapshot<T> {
    /// The value.
    pub value: Arc<T>,
    /// Version (commit sha) of the config the value was taken from.
    pub version: String,
    /// Digest of that config.
    pub digest: String,
    /// Where that config came from.
    pub origin: Origin,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            value: self.value.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
            origin: self.origin.clone(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("value", &self.value)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .finish()
    }
}

impl<T> Snapshot<T> {
    fn of(value: Arc<T>, config: &Config) -> Self {
        Snapshot {
            value,
            version: config.version().to_string(),
            digest: config.digest().to_string(),
            origin: config.origin().clone(),
        }
    }
}

struct Shared<T> {
    current: ArcSwap<Snapshot<T>>,
    tx: watch::Sender<Arc<T>>,
    last_error: ArcSwapOption<Error>,
    callbacks: Mutex<Vec<Callback<T>>>,
}

/// Aborts the background task when the last [`Watched`] clone is dropped.
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A config value of type `T` kept up to date in the background. Made by
/// [`Client::watch`](crate::Client::watch) and
/// [`Client::watch_path`](crate::Client::watch_path).
///
/// - [`get`](Self::get) is lock-free and always returns the latest accepted value.
/// - [`changed`](Self::changed) waits for the next accepted value;
///   [`subscribe`](Self::subscribe) hands out a [`tokio::sync::watch::Receiver`];
///   [`on_change`](Self::on_change) registers a callback with the old and new values.
/// - An update is accepted only if it passes the
///   [validator](crate::ClientBuilder::validator) and deserializes into `T`; otherwise
///   the old value stays, and the error is logged and kept in
///   [`last_error`](Self::last_error).
///
/// Clones share the value and the task; the task stops when the last clone is dropped
/// (receivers from [`subscribe`](Self::subscribe) then see the channel closed).
///
/// ```no_run
/// # async fn run() -> Result<(), confhub_client::Error> {
/// #[derive(serde::Deserialize)]
/// struct Db { pool: u32 }
///
/// let client = confhub_client::Client::builder()
///     .server("http://127.0.0.1:8888")
///     .service("orders")
///     .env("prod")
///     .build()?;
/// let mut db = client.watch_path::<Db>("db").await?;
/// db.on_change(|old, new| println!("pool {} -> {}", old.pool, new.pool));
/// loop {
///     let db = db.changed().await;
///     println!("pool is now {}", db.pool);
/// }
/// # }
/// ```
pub struct Watched<T> {
    shared: Arc<Shared<T>>,
    rx: watch::Receiver<Arc<T>>,
    _task: Arc<TaskGuard>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Watched {
            shared: self.shared.clone(),
            rx: self.rx.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meta = self.shared.current.load();
        f.debug_struct("Watched")
            .field("type", &std::any::type_name::<T>())
            .field("version", &meta.version)
            .field("digest", &meta.digest)
            .field("origin", &meta.origin)
            .field("last_error", &self.shared.last_error.load())
            .finish()
    }
}

impl<T> Watched<T> {
    /// The latest accepted value. Lock-free.
    pub fn get(&self) -> Arc<T> {
        self.shared.current.load().value.clone()
    }

    /// The latest accepted value together with its version, digest and origin, all
    /// from the same config. Lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// Wait until a new value is accepted, and return it. Values accepted before this
    /// handle last saw one (through `changed`) count: none is missed, though several
    /// quick updates may be seen as one.
    pub async fn changed(&mut self) -> Arc<T> {
        // The sender lives in `shared`, which this handle keeps alive, so this never
        // reports a closed channel.
        let _ = self.rx.changed().await;
        self.rx.borrow_and_update().clone()
    }

    /// A receiver that sees every accepted value (the current one is marked seen).
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.shared.tx.subscribe()
    }

    /// Call `f(old, new)` after every accepted change, on the background task. Keep it
    /// quick; a panic in it is caught and logged.
    pub fn on_change<F>(&self, f: F)
    where
        F: Fn(&T, &T) + Send + Sync + 'static,
    {
        lock(&self.shared.callbacks).push(Arc::new(f));
    }

    /// Why the most recent update was not accepted (did not deserialize, failed the
    /// validator, lacked the watched path), or the server's last `error` frame.
    /// `None` once a later update is accepted.
    pub fn last_error(&self) -> Option<Arc<Error>> {
        self.shared.last_error.load_full()
    }

    /// Version (commit sha) of the current value.
    pub fn version(&self) -> String {
        self.shared.current.load().version.clone()
    }

    /// Digest of the config the current value was taken from.
    pub fn digest(&self) -> String {
        self.shared.current.load().digest.clone()
    }

    /// Where the current value came from: a server, or the cache until a server
    /// answers.
    pub fn origin(&self) -> Origin {
        self.shared.current.load().origin.clone()
    }

    /// True while the current value is the one read from the last-known-good cache.
    pub fn is_from_cache(&self) -> bool {
        matches!(self.shared.current.load().origin, Origin::Cache { .. })
    }
}

/// Fetch the initial value and spawn the task.
pub(crate) async fn start<T>(inner: Arc<Inner>, path: Option<String>) -> Result<Watched<T>, Error>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let config = inner.fetch_accepted().await?;
    let raw = select(&config, path.as_deref())?.clone();
    let value: Arc<T> = Arc::new(deserialize(&raw, path.as_deref())?);
    let (tx, rx) = watch::channel(value.clone());
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Snapshot::of(value, &config)),
        tx,
        last_error: ArcSwapOption::empty(),
        callbacks: Mutex::new(Vec::new()),
    });
    let task = Task {
        inner,
        shared: shared.clone(),
        path,
        raw,
        label: config.label().to_string(),
        ack: None,
    };
    let handle = tokio::spawn(task.run());
    Ok(Watched {
        shared,
        rx,
        _task: Arc::new(TaskGuard(handle.abort_handle())),
    })
}

fn select<'a>(config: &'a Config, path: Option<&str>) -> Result<&'a Value, Error> {
    match path {
        None => Ok(config.values()),
        Some(p) => config.get_value(p).ok_or_else(|| Error::MissingKey {
            path: p.to_string(),
        }),
    }
}

fn deserialize<T: DeserializeOwned>(raw: &Value, path: Option<&str>) -> Result<T, Error> {
    T::deserialize(raw).map_err(|source| Error::Deserialize {
        path: path.map(str::to_string),
        source,
    })
}

/// How a WebSocket session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// The server spoke the protocol for a while: reconnect soon.
    Healthy,
    /// No server could be reached, or the one reached misbehaved: back off.
    Failed,
}

fn parse_frame(bytes: &[u8], server: &str) -> Result<ServerFrame, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        server: server.to_string(),
        message: format!(
            "malformed watch frame ({e}): {}",
            truncate(&String::from_utf8_lossy(bytes), 120)
        ),
    })
}

/// How long an answer (`applied` / `rejected`) waits before it is sent: a random delay
/// between these, longer than a push to 10,000 subscribers takes on a small machine, so
/// the instances answering a push do not slow its delivery to the others. A rejection
/// halts a rollout within `ACK_DELAY.1`.
pub(crate) const ACK_DELAY: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(250),
    std::time::Duration::from_millis(1000),
);

fn ack_delay() -> std::time::Duration {
    use rand::Rng;
    let (min, max) = ACK_DELAY;
    min + (max - min).mul_f64(rand::rng().random::<f64>())
}

/// Send a ping or an acknowledgement; `Err(stalled)` ends the stream. A write can block
/// too, on a peer that stopped reading: that is a stall, like silence.
async fn send<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    message: Message,
    deadline: tokio::time::Instant,
    server: &str,
    silence: std::time::Duration,
) -> Result<(), bool>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout_at(deadline, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(server, error = %e, "writing to the server failed");
            Err(false)
        }
        Err(_) => {
            tracing::warn!(server, "the watch stream stalled: nothing could be written for {silence:?}; trying the next server");
            Err(true)
        }
    }
}

/// How one stream ended.
struct StreamEnd {
    /// Whether the server spoke the protocol.
    healthy: bool,
    /// Nothing came for the silence timeout: the server, or the path to it, is stuck.
    stalled: bool,
}

struct Task<T> {
    inner: Arc<Inner>,
    shared: Arc<Shared<T>>,
    path: Option<String>,
    /// The accepted (sub-)value, to notice updates that do not change it.
    raw: Value,
    /// The label of the initial config; pushed frames carry none.
    label: String,
    /// What to tell the server about the config last pushed: applied or rejected.
    ack: Option<ClientFrame>,
}

impl<T> Task<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    async fn run(mut self) {
        if self.inner.label.is_some() {
            return self.poll_forever().await;
        }
        let policy = self.inner.retry.clone();
        let mut failures = 0u32;
        loop {
            match self.session().await {
                SessionEnd::Healthy => failures = 0,
                SessionEnd::Failed => {}
            }
            failures = failures.saturating_add(1);
            let delay = policy.delay(failures);
            tracing::debug!(?delay, "reconnecting to the confhub watch stream");
            tokio::time::sleep(delay).await;
        }
    }

    /// Connect to the first server that accepts, and stream from it until it fails.
    async fn session(&mut self) -> SessionEnd {
        let inner = self.inner.clone();
        for i in inner.server_order() {
            let server = &inner.servers[i];
            let Some(permit) = inner.permit(i) else {
                continue;
            };
            let Some(ws) = self.connect(server, permit).await else {
                continue;
            };
            inner.set_preferred(i);
            tracing::info!(server = %server.url, service = %inner.service, env = %inner.env, "watching for config changes");
            let end = self.stream(ws, &server.url).await;
            if end.stalled {
                // Reconnecting to it first would cost a connect and handshake timeout
                // for a server that just proved unresponsive.
                inner.server_stalled(i);
            }
            return if end.healthy {
                SessionEnd::Healthy
            } else {
                SessionEnd::Failed
            };
        }
        SessionEnd::Failed
    }

    /// Open the watch stream to `server`, telling its breaker (`permit`) how it went.
    async fn connect(&self, server: &Server, permit: Permit<'_>) -> Option<WsStream> {
        let request = watch_request(&self.inner, server)?;
        let handshake = tokio::time::timeout(
            self.inner.connect_timeout + self.inner.request_timeout,
            tokio_tungstenite::connect_async(request),
        )
        .await;
        match handshake {
            Ok(Ok((ws, _response))) => {
                permit.success();
                Some(ws)
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let e = refused(server, &resp);
                tracing::warn!(server = %server.url, error = %e, "watch handshake refused");
                if e.is_retryable() {
                    permit.failure();
                } else {
                    // A definite answer (401, 403, 404): the server is up but will
                    // not serve this watch. Say so, and keep trying with backoff.
                    permit.success();
                    self.shared.last_error.store(Some(Arc::new(e)));
                }
                None
            }
            Ok(Err(e)) => {
                permit.failure();
                tracing::warn!(server = %server.url, error = %e, "watch connection failed");
                None
            }
            Err(_) => {
                permit.failure();
                tracing::warn!(server = %server.url, "watch connection timed out");
                None
            }
        }
    }

    async fn stream<S>(
        &mut self,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
        server: &str,
    ) -> StreamEnd
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let silence = self.inner.watch_silence_timeout;
        if let Err(end) = self.subscribe(&mut ws, server).await {
            return end;
        }
        let ping_every = self.inner.watch_ping_interval;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        let mut healthy = false;
        // The answer to the last config, sent a moment later (see `ACK_DELAY`).
        let mut answer: Option<(tokio::time::Instant, ClientFrame)> = None;
        let stalled = loop {
            let deadline = heard + silence;
            let answer_due = answer.as_ref().map(|(at, _)| *at);
            let next = tokio::select! {
                next = ws.next() => next,
                _ = ping.tick() => match send(&mut ws, Message::Ping(Default::default()), deadline, server, silence).await {
                    Ok(()) => continue,
                    Err(stalled) => break stalled,
                },
                () = tokio::time::sleep_until(answer_due.unwrap_or(deadline)), if answer_due.is_some() => {
                    let Some(text) = answer.take().and_then(|(_, a)| serde_json::to_string(&a).ok()) else {
                        continue;
                    };
                    match send(&mut ws, Message::text(text), deadline, server, silence).await {
                        Ok(()) => continue,
                        Err(stalled) => break stalled,
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(server, "nothing from the server for {silence:?} (not even a pong): the watch stream stalled; trying the next server");
                    break true;
                }
            };
            heard = tokio::time::Instant::now();
            match self.on_message(next, server).await {
                Some(well_formed) => healthy |= well_formed,
                None => break false,
            }
            // Only the newest answer matters: the server keeps the newest config's.
            if let Some(ack) = self.ack.take() {
                let at = answer
                    .as_ref()
                    .map_or_else(|| heard + ack_delay(), |(at, _)| *at);
                answer = Some((at, ack));
            }
        };
        StreamEnd { healthy, stalled }
    }

    /// Handle what the stream yielded: `Some(well_formed)` for a frame, `None` once the
    /// stream has ended.
    async fn on_message(
        &mut self,
        next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        server: &str,
    ) -> Option<bool> {
        match next {
            None => {
                tracing::info!(server, "watch stream closed by the server");
                None
            }
            Some(Err(e)) => {
                tracing::warn!(server, error = %e, "watch stream failed");
                None
            }
            Some(Ok(Message::Text(text))) => Some(self.on_frame(text.as_bytes(), server).await),
            Some(Ok(Message::Binary(bytes))) => Some(self.on_frame(&bytes, server).await),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Some(true),
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(server, ?frame, "watch stream closed by the server");
                None
            }
            Some(Ok(Message::Frame(_))) => Some(false),
        }
    }

    /// Send the subscription (with the digest held, so an unchanged config is not sent
    /// again); the end of the stream if that fails.
    async fn subscribe<S>(
        &self,
        ws: &mut tokio_tungstenite::WebSocketStream<S>,
        server: &str,
    ) -> Result<(), StreamEnd>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let failed = StreamEnd {
            healthy: false,
            stalled: false,
        };
        let silence = self.inner.watch_silence_timeout;
        let digest = self.shared.current.load().digest.clone();
        let subscribe = ClientFrame::Subscribe {
            service: self.inner.service.clone(),
            env: self.inner.env.clone(),
            digest: (!digest.is_empty()).then_some(digest),
            instance: Some(self.inner.identity.id.clone()),
            labels: Some(self.inner.identity.labels.clone()),
        };
        let text = match serde_json::to_string(&subscribe) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize the subscribe frame");
                return Err(failed);
            }
        };
        match tokio::time::timeout(silence, ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(server, error = %e, "sending the subscription failed");
                Err(failed)
            }
            Err(_) => {
                tracing::warn!(
                    server,
                    "sending the subscription stalled for {silence:?}: reconnecting"
                );
                Err(StreamEnd {
                    healthy: false,
                    stalled: true,
                })
            }
        }
    }

    /// Handle one frame; true if it was a well-formed frame.
    async fn on_frame(&mut self, bytes: &[u8], server: &str) -> bool {
        let frame = match parse_frame(bytes, server) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed frame");
                self.shared.last_error.store(Some(Arc::new(e)));
                return false;
            }
        };
        match frame {
            ServerFrame::Config {
                service,
                env,
                version,
                digest,
                values,
                rollout,
            } => {
                if service != self.inner.service || env != self.inner.env {
                    tracing::debug!(%service, %env, "ignored a frame for another pair");
                    return true;
                }
                let config = ConfigResponse {
                    service,
                    env,
                    label: self.label.clone(),
                    version,
                    digest,
                    values,
                    sources: Vec::new(),
                    rollout,
                };
                let origin = Origin::Server {
                    url: server.to_string(),
                };
                self.ack = Some(self.apply(Config::new(config, origin)).await);
            }
            ServerFrame::Error {
                service,
                env,
                error,
                message,
            } => {
                let ours = service.as_deref().is_none_or(|s| s == self.inner.service)
                    && env.as_deref().is_none_or(|e| e == self.inner.env);
                if ours {
                    let e = Error::Server {
                        code: error,
                        message,
                    };
                    tracing::warn!(server, error = %e, "the server reported an error for this subscription");
                    self.shared.last_error.store(Some(Arc::new(e)));
                }
            }
        }
        true
    }

    /// Accept `config` if it passes the validator and deserializes; otherwise keep the
    /// old value and record why. This is where a pushed value is swapped in. Returns
    /// what to tell the server: `applied`, or `rejected` with the error.
    async fn apply(&mut self, config: Config) -> ClientFrame {
        let current = self.shared.current.load_full();
        if config.digest() == current.digest {
            if current.origin != *config.origin() {
                // Same value, now confirmed by a server (e.g. after starting from cache).
                self.set_meta(&config);
                self.inner.set_origin(config.origin().clone());
                tracing::info!(origin = %config.origin(), "config confirmed by the server");
            }
            return self.applied(&config);
        }
        let accepted = self
            .inner
            .validate(&config)
            .and_then(|()| select(&config, self.path.as_deref()).cloned());
        let raw = match accepted {
            Ok(raw) => raw,
            Err(e) => return self.reject(&config, e),
        };
        if raw == self.raw {
            // Some other part of the config changed: nothing to tell subscribers.
            tracing::debug!(version = %config.version(), "config changed outside the watched path");
            self.set_meta(&config);
            self.shared.last_error.store(None);
            self.inner.set_origin(config.origin().clone());
            self.inner.write_cache(&config).await;
            return self.applied(&config);
        }
        let new: Arc<T> = match deserialize(&raw, self.path.as_deref()) {
            Ok(v) => Arc::new(v),
            Err(e) => return self.reject(&config, e),
        };
        // Everything a woken reader may look at is in place before the notification.
        self.raw = raw;
        self.shared.last_error.store(None);
        self.inner.set_origin(config.origin().clone());
        let old = self
            .shared
            .current
            .swap(Arc::new(Snapshot::of(new.clone(), &config)));
        self.shared.tx.send_replace(new.clone());
        tracing::info!(version = %config.version(), digest = %config.digest(), "new config accepted");
        self.inner.write_cache(&config).await;
        let callbacks = lock(&self.shared.callbacks).clone();
        for cb in callbacks {
            if std::panic::catch_unwind(AssertUnwindSafe(|| cb(&old.value, &new))).is_err() {
                tracing::error!("an on_change callback panicked");
            }
        }
        self.applied(&config)
    }

    fn applied(&self, config: &Config) -> ClientFrame {
        ClientFrame::Applied {
            service: self.inner.service.clone(),
            env: self.inner.env.clone(),
            digest: config.digest().to_string(),
        }
    }

    fn reject(&self, config: &Config, e: Error) -> ClientFrame {
        tracing::warn!(version = %config.version(), error = %e, "config update rejected; keeping the current value");
        let frame = ClientFrame::Rejected {
            service: self.inner.service.clone(),
            env: self.inner.env.clone(),
            digest: config.digest().to_string(),
            error: e.to_string(),
        };
        self.shared.last_error.store(Some(Arc::new(e)));
        frame
    }

    /// A config with the same (sub-)value: keep the value, take its version and origin.
    fn set_meta(&self, config: &Config) {
        let value = self.shared.current.load().value.clone();
        self.shared
            .current
            .store(Arc::new(Snapshot::of(value, config)));
    }

    /// Labelled clients: conditional GETs every poll interval.
    async fn poll_forever(mut self) {
        let policy = RetryPolicy::none().deadline(self.inner.request_timeout);
        loop {
            tokio::time::sleep(self.inner.poll_interval).await;
            let digest = self.shared.current.load().digest.clone();
            let etag = (!digest.is_empty()).then_some(digest.as_str());
            match self.inner.fetch_remote(etag, &policy).await {
                Ok(Fetched::Fresh(config)) => {
                    // Over HTTP there is nobody to tell: pinned clients poll, and are in
                    // no rollout.
                    let _ = self.apply(*config).await;
                }
                Ok(Fetched::NotModified { server }) => {
                    let current = self.shared.current.load_full();
                    if matches!(current.origin, Origin::Cache { .. }) {
                        let origin = Origin::Server { url: server };
                        self.shared.current.store(Arc::new(Snapshot {
                            origin: origin.clone(),
                            ..(*current).clone()
                        }));
                        self.inner.set_origin(origin);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "polling for config changes failed"),
            }
        }
    }
}

/// The WebSocket stream of a watch.
type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The watch handshake request for `server`: token and trace headers. `None` (logged) if
/// the URL cannot make one.
fn watch_request(inner: &Inner, server: &Server) -> Option<Request> {
    let mut request = match server.watch_url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(server = %server.url, error = %e, "cannot build the watch request");
            return None;
        }
    };
    if let Some(token) = inner.token() {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            request.headers_mut().insert("authorization", v);
        }
    }
    let trace = inner.trace_headers();
    if let Ok(v) = HeaderValue::from_str(&trace.request_id) {
        request.headers_mut().insert(crate::trace::REQUEST_ID, v);
    }
    if let Some(Ok(v)) = trace.traceparent.as_deref().map(HeaderValue::from_str) {
        request.headers_mut().insert(crate::trace::TRACEPARENT, v);
    }
    tracing::debug!(server = %server.url, request_id = %trace.request_id, "opening the watch stream");
    Some(request)
}

/// The handshake answer `resp` of `server` as an error, with its JSON error body when
/// it sent one.
fn refused(
    server: &Server,
    resp: &tokio_tungstenite::tungstenite::handshake::client::Response,
) -> Error {
    let body = resp.body().as_deref();
    Error::Status {
        server: server.url.clone(),
        status: resp.status().as_u16(),
        body: body
            .and_then(|b| serde_json::from_slice(b).ok())
            .map(Box::new),
        message: body
            .map(|b| truncate(&String::from_utf8_lossy(b), 200))
            .unwrap_or_default(),
    }
}
