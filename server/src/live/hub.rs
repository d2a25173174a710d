//! Live push (ARCHITECTURE.md §6): subscriptions by (service, env), fan-out of changed pairs, and
//! the `GET /v1/watch` WebSocket session.
//!
//! Data flow: the refresh loop ([`crate::live::detect`]) hands each changed
//! [`PairEntry`] to [`Hub::publish`], which turns it into one [`Frame`] (the
//! pre-rendered `config` frame as [`Utf8Bytes`], serialized once per change) and
//! `try_send`s an `Arc` of it into the bounded queue of every subscribed connection.
//! Publishing never waits for a connection: a connection whose queue is full is told
//! to close as a slow consumer (it resumes by digest when it reconnects). Its close
//! frame goes ahead of whatever is still queued, and the closing handshake gets
//! `ws_write_timeout` to reach a peer that is behind in reading.
//!
//! Watched pairs that are not pairs of the snapshot (several envs, undeclared envs,
//! unknown services) are resolved again after every version by
//! [`crate::live::detect`]; the hub counts them, once each however many connections watch
//! them, and refuses new ones past `ws_max_extra_pairs`.
//!
//! Each connection is one task ([`serve`]) that owns its socket, its queue and its
//! subscriptions (pair → last digest the client holds, used to send only what
//! differs), pings every `ws_ping_interval` and drops a peer silent for
//! `ws_idle_timeout`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confhub_client::wire::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::http::{ApiError, AppState};
use crate::names::{check_name, parse_envs};
use crate::resolve::catalog::Access;
use crate::settings::LiveSettings;
use crate::store::entry::{Body, PairEntry};
use crate::store::{LookupError, Store};

/// (service, env as written: `prod` or `prod,eu`).
pub type PairKey = (String, String);

/// A `config` frame of one pair at one version: serialized once, shared by every subscriber.
#[derive(Debug)]
pub struct Frame {
    /// The pair.
    pub key: PairKey,
    /// Digest of the values in `text`.
    pub digest: Arc<str>,
    /// Whose files the config read: each subscriber's token is checked against it.
    pub access: Access,
    /// `{"op":"config",...}`.
    pub text: Utf8Bytes,
}

impl Frame {
    /// The frame of `entry` (its pre-rendered [`Body::Frame`]).
    pub fn of(entry: &PairEntry) -> Option<Arc<Frame>> {
        let text = Utf8Bytes::try_from(entry.body(Body::Frame)).ok()?;
        Some(Arc::new(Frame {
            key: (entry.service.clone(), entry.env_string()),
            digest: entry.digest().into(),
            access: entry.access.clone(),
            text,
        }))
    }
}

/// The hub's handle on one connection.
#[derive(Debug)]
struct Peer {
    tx: mpsc::Sender<Arc<Frame>>,
    /// Woken when the hub gives up on this connection (its queue overflowed).
    slow: Notify,
}

#[derive(Debug, Default)]
struct Topic {
    subscribers: HashMap<u64, Arc<Peer>>,
    /// Digest last published for this pair (used for pairs recomputed by lookup).
    published: Option<Arc<str>>,
    /// Not a pair of the snapshot (several envs, an undeclared env, an unknown
    /// service): it is resolved again after every new version, so it counts against
    /// `ws_max_extra_pairs`.
    extra: bool,
}

/// Every topic, and how many of them are extra pairs.
#[derive(Debug, Default)]
struct Topics {
    map: HashMap<PairKey, Topic>,
    extra: usize,
}

impl Topics {
    /// `id` leaves `key`; the topic goes with its last subscriber.
    fn leave(&mut self, key: &PairKey, id: u64) {
        let Some(topic) = self.map.get_mut(key) else {
            return;
        };
        topic.subscribers.remove(&id);
        if topic.subscribers.is_empty() {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: &PairKey) {
        if self.map.remove(key).is_some_and(|t| t.extra) {
            self.extra = self.extra.saturating_sub(1);
        }
    }
}

/// Why a subscription was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooManyExtraPairs;

/// Subscriptions of every connection, by pair.
#[derive(Debug)]
pub struct Hub {
    topics: Mutex<Topics>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    idle: Notify,
    shutdown: watch::Sender<bool>,
    settings: LiveSettings,
    frames_sent: AtomicU64,
    slow_dropped: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(LiveSettings::default())
    }
}

/// Counters reported by `GET /v1/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubStats {
    /// Open WebSocket connections.
    pub connections: u64,
    /// `config` frames queued to connections since start.
    pub frames_sent: u64,
    /// Connections closed as slow consumers since start.
    pub slow_dropped: u64,
}

impl Hub {
    /// An empty hub with these limits.
    pub fn new(settings: LiveSettings) -> Hub {
        Hub {
            topics: Mutex::new(Topics::default()),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: watch::channel(false).0,
            settings,
            frames_sent: AtomicU64::new(0),
            slow_dropped: AtomicU64::new(0),
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        // Nothing panics while holding the lock; recover rather than propagate if it ever did.
        crate::sync::lock(&self.topics)
    }

    /// Register a new connection, unless `ws_max_connections` are open.
    fn connect(self: &Arc<Self>) -> Option<Connection> {
        let max = self.settings.ws_max_connections;
        let admitted = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return None;
        }
        let capacity = self
            .settings
            .ws_send_buffer
            .saturating_add(self.settings.ws_max_subscriptions)
            .max(1);
        let (tx, rx) = mpsc::channel(capacity);
        Some(Connection {
            hub: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer: Arc::new(Peer {
                tx,
                slow: Notify::new(),
            }),
            rx,
            subs: HashMap::new(),
        })
    }

    /// Push `entry` to every subscriber of its pair. Never waits: a subscriber whose
    /// queue is full is disconnected as a slow consumer.
    pub fn publish(&self, entry: &PairEntry) {
        self.fan_out(entry, false);
    }

    /// Like [`Hub::publish`], but only if the digest differs from the last one
    /// published for that pair (for pairs recomputed by lookup after each refresh).
    pub fn publish_if_new(&self, entry: &PairEntry) {
        self.fan_out(entry, true);
    }

    fn fan_out(&self, entry: &PairEntry, only_if_new: bool) {
        let key = (entry.service.clone(), entry.env_string());
        let mut topics = self.topics();
        let Some(topic) = topics.map.get_mut(&key) else {
            return;
        };
        if only_if_new && topic.published.as_deref() == Some(entry.digest()) {
            return;
        }
        let Some(frame) = Frame::of(entry) else {
            return;
        };
        topic.published = Some(frame.digest.clone());
        let mut gone = Vec::new();
        for (id, peer) in &topic.subscribers {
            match peer.tx.try_send(frame.clone()) {
                Ok(()) => {
                    self.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.slow_dropped.fetch_add(1, Ordering::Relaxed);
                    peer.slow.notify_one();
                    gone.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            topic.subscribers.remove(&id);
        }
        tracing::debug!(service = %key.0, env = %key.1, digest = %frame.digest, subscribers = topic.subscribers.len(), "pushed");
        if topic.subscribers.is_empty() {
            topics.remove(&key);
        }
    }

    /// Watched pairs that `in_snapshot` says are not pairs of the current snapshot,
    /// each once however many connections watch it. Pairs that moved into or out of
    /// the snapshot since they were first watched are counted again accordingly.
    pub fn extra_pairs(&self, in_snapshot: impl Fn(&str, &str) -> bool) -> Vec<PairKey> {
        let mut topics = self.topics();
        let mut out = Vec::new();
        let mut count = 0;
        for (key, topic) in &mut topics.map {
            topic.extra = !in_snapshot(&key.0, &key.1);
            if topic.extra {
                count += 1;
                out.push(key.clone());
            }
        }
        topics.extra = count;
        out
    }

    /// Subscriber count per pair, sorted.
    pub fn subscriber_counts(&self) -> Vec<(PairKey, usize)> {
        let mut out: Vec<_> = self
            .topics()
            .map
            .iter()
            .map(|(k, t)| (k.clone(), t.subscribers.len()))
            .collect();
        out.sort();
        out
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.connections.load(Ordering::Acquire) as u64,
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            slow_dropped: self.slow_dropped.load(Ordering::Relaxed),
        }
    }

    /// Ask every connection (and the refresh loop) to stop: WebSockets close with
    /// 1001 "going away".
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Hub::shutdown`] was called.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            // Err means the hub is gone: stop as well.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Wait until every connection has closed, or `limit` passed.
    pub async fn wait_closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.connections.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

/// One connection's side of the hub: its queue and subscriptions. Unregisters
/// everything when dropped.
struct Connection {
    hub: Arc<Hub>,
    id: u64,
    peer: Arc<Peer>,
    rx: mpsc::Receiver<Arc<Frame>>,
    /// Pair → digest of the config the client holds (`None`: nothing yet).
    subs: HashMap<PairKey, Option<Arc<str>>>,
}

impl Connection {
    /// Register for `key`. `extra`: it is not a pair of the current snapshot; a new
    /// topic of that kind is refused once the hub follows `ws_max_extra_pairs` of them
    /// (joining one already followed is free).
    fn subscribe(
        &mut self,
        key: PairKey,
        digest: Option<Arc<str>>,
        extra: bool,
    ) -> Result<(), TooManyExtraPairs> {
        let mut topics = self.hub.topics();
        if !topics.map.contains_key(&key) {
            if extra {
                if topics.extra >= self.hub.settings.ws_max_extra_pairs {
                    return Err(TooManyExtraPairs);
                }
                topics.extra += 1;
            }
            topics.map.insert(
                key.clone(),
                Topic {
                    extra,
                    ..Topic::default()
                },
            );
        }
        if let Some(topic) = topics.map.get_mut(&key) {
            topic.subscribers.insert(self.id, self.peer.clone());
        }
        drop(topics);
        self.subs.insert(key, digest);
        Ok(())
    }

    fn unsubscribe(&mut self, key: &PairKey) {
        if self.subs.remove(key).is_none() {
            return;
        }
        self.hub.topics().leave(key, self.id);
    }

    /// Leave every topic (the connection is closing: nothing more is queued for it).
    fn leave_all(&mut self) {
        let mut topics = self.hub.topics();
        for (key, _) in self.subs.drain() {
            topics.leave(&key, self.id);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave_all();
        if self.hub.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.hub.idle.notify_waiters();
        }
    }
}

/// `GET /v1/watch`: upgrade to a WebSocket and serve subscriptions on it.
pub(crate) async fn watch_handler(
    State(state): State<Arc<AppState>>,
    axum::Extension(principal): axum::Extension<Principal>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::new(e.status(), "not_websocket", e.body_text()).into_response(),
    };
    let Some(store) = state.store.get().cloned() else {
        return ApiError::not_ready().into_response();
    };
    let hub = state.hub.clone();
    let Some(conn) = hub.connect() else {
        tracing::warn!(
            limit = hub.settings.ws_max_connections,
            "refusing a WebSocket: connection limit reached"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server holds as many WebSocket connections as it accepts; retry later",
        )
        .into_response();
    };
    let max = hub.settings.ws_max_message;
    ws.max_frame_size(max)
        .max_message_size(max)
        // Small buffers keep an idle connection cheap; they grow for large frames.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(socket, conn, store, principal))
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer left or the socket failed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer cannot keep up: close without waiting on it.
    Slow,
}

/// Largest number of malformed frames tolerated on one connection.
const MAX_BAD_FRAMES: u32 = 64;

/// How long the close frame (and the peer's answer) may take when the server stops:
/// shutdown waits for every connection, and must stay prompt.
const SHUTDOWN_CLOSE: Duration = Duration::from_secs(1);

struct Session {
    socket: WebSocket,
    conn: Connection,
    store: Arc<Store>,
    bad_frames: u32,
    /// Who opened the connection: each subscription is checked against its scopes.
    principal: Principal,
    /// Set when the server stops: a write blocked on a peer that does not read gives
    /// way to the 1001 close at once instead of holding shutdown for `ws_write_timeout`.
    stopping: watch::Receiver<bool>,
}

async fn serve(socket: WebSocket, conn: Connection, store: Arc<Store>, principal: Principal) {
    let hub = conn.hub.clone();
    let settings = hub.settings.clone();
    let mut session = Session {
        socket,
        conn,
        store,
        bad_frames: 0,
        principal,
        stopping: hub.shutdown.subscribe(),
    };
    let shutdown = hub.shutdown_signal();
    tokio::pin!(shutdown);
    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ws_ping_interval,
        settings.ws_ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let peer = session.conn.peer.clone();

    let end = loop {
        let step = tokio::select! {
            biased;
            () = &mut shutdown => Err(End::Close(close_code::AWAY, "going away")),
            () = peer.slow.notified() => Err(End::Slow),
            frame = session.conn.rx.recv() => match frame {
                Some(frame) => session.push(&frame, &settings, &peer).await,
                None => Err(End::Gone),
            },
            msg = session.socket.recv() => {
                last_heard = Instant::now();
                session.on_message(msg, &settings, &peer).await
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= settings.ws_idle_timeout {
                    Err(End::Close(close_code::AWAY, IDLE_TIMEOUT))
                } else {
                    session.send(Message::Ping(bytes::Bytes::new()), &settings, &peer).await
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };

    let (code, reason) = match end {
        End::Gone => return,
        End::Slow => {
            tracing::info!(
                subscriptions = session.conn.subs.len(),
                "closing a slow WebSocket consumer"
            );
            (close_code::AGAIN, "slow consumer")
        }
        End::Close(code, reason) => {
            tracing::debug!(code, reason, "closing WebSocket");
            (code, reason)
        }
    };
    session.conn.leave_all();
    // Frames still in the queue are never written: the close goes next, right after
    // the bytes already handed to the socket. A peer that stopped reading sees it once
    // it reads those, so it gets a whole write timeout to do so (not when the server
    // stops, nor for a peer that already went silent).
    let stopping = *session.stopping.borrow();
    let within = if stopping || reason == IDLE_TIMEOUT {
        SHUTDOWN_CLOSE
    } else {
        settings.ws_write_timeout
    };
    if stopping {
        session.close(code, reason, within).await;
    } else {
        tokio::select! {
            () = session.close(code, reason, within) => {}
            // The server is stopping: it waits for this connection, which already
            // said why it ends.
            () = &mut shutdown => {}
        }
    }
}

/// Reason of the close for a peer that answered nothing for `ws_idle_timeout`.
const IDLE_TIMEOUT: &str = "idle timeout";

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn error_frame(
    service: Option<&str>,
    env: Option<&str>,
    code: &str,
    message: impl Into<String>,
) -> Message {
    let frame = ServerFrame::Error {
        service: service.map(str::to_string),
        env: env.map(str::to_string),
        error: code.to_string(),
        message: message.into(),
    };
    Message::Text(serde_json::to_string(&frame).unwrap_or_default().into())
}

/// At most `max` characters of `s`, escaped, for echoing client input in messages.
fn shown(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .collect::<String>()
        .escape_default()
        .to_string();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

impl Session {
    /// Write one message, giving up if the peer is too slow, the hub drops it or the
    /// server stops.
    async fn send(
        &mut self,
        msg: Message,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        let stopping = &mut self.stopping;
        tokio::select! {
            sent = tokio::time::timeout(settings.ws_write_timeout, self.socket.send(msg)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Slow),
            },
            () = peer.slow.notified() => Err(End::Slow),
            _ = stopping.wait_for(|stop| *stop) => Err(End::Close(close_code::AWAY, "going away")),
        }
    }

    /// The closing handshake, all of it within `within`: send the close frame, then
    /// read (and drop) whatever the peer still sends until it answers with its own
    /// close. Closing the TCP connection while its input is unread would turn it into
    /// a reset, which can destroy the close frame before the peer reads it.
    async fn close(&mut self, code: u16, reason: &'static str, within: Duration) {
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(within, async {
            if socket.send(close_frame(code, reason)).await.is_err() {
                return;
            }
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// A frame from the hub: send it unless the client already holds that digest.
    async fn push(
        &mut self,
        frame: &Frame,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        let Some(held) = self.conn.subs.get_mut(&frame.key) else {
            return Ok(()); // unsubscribed meanwhile
        };
        if held.as_deref() == Some(&*frame.digest) {
            return Ok(());
        }
        // The pair itself was checked at `subscribe`; a commit can make it read another
        // pair's file (ARCHITECTURE.md, "Who may read what"), which this token may not see.
        if !frame.access.foreign.is_empty() {
            if let Err(denied) = self.principal.may_read(&frame.access) {
                let (service, env) = (&frame.key.0, &frame.key.1);
                let msg = denied.message(self.principal.who());
                let msg = error_frame(Some(service), Some(env), "forbidden", msg);
                return self.send(msg, settings, peer).await;
            }
        }
        *held = Some(frame.digest.clone());
        self.send(Message::Text(frame.text.clone()), settings, peer)
            .await
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        match msg {
            None | Some(Ok(Message::Close(_))) => {
                // axum answers the close; flush it out before dropping the socket.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.flush()).await;
                Err(End::Gone)
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit exceeded") {
                    tracing::debug!(error = %text, "WebSocket message over the size limit");
                    Err(End::Close(close_code::SIZE, "message too big"))
                } else {
                    tracing::debug!(error = %text, "WebSocket read failed");
                    Err(End::Gone)
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(Message::Binary(_))) => {
                self.bad_frame(
                    "bad_frame",
                    "binary frames are not accepted: send JSON text frames",
                    settings,
                    peer,
                )
                .await
            }
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str(), settings, peer).await,
        }
    }

    async fn bad_frame(
        &mut self,
        code: &str,
        message: impl Into<String>,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        self.bad_frames += 1;
        if self.bad_frames > MAX_BAD_FRAMES {
            return Err(End::Close(close_code::POLICY, "too many malformed frames"));
        }
        self.send(error_frame(None, None, code, message), settings, peer)
            .await
    }

    async fn on_text(
        &mut self,
        text: &str,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .bad_frame(
                        "bad_frame",
                        format!("not a JSON frame: {e}"),
                        settings,
                        peer,
                    )
                    .await
            }
        };
        match value.get("op").and_then(|op| op.as_str()) {
            Some("subscribe" | "unsubscribe") => {}
            Some(op) => {
                let message = format!(
                    "unknown op `{}`: use `subscribe` or `unsubscribe`",
                    shown(op, 64)
                );
                return self.bad_frame("unknown_op", message, settings, peer).await;
            }
            None => {
                return self
                    .bad_frame(
                        "bad_frame",
                        "a frame must be a JSON object with a string `op`",
                        settings,
                        peer,
                    )
                    .await
            }
        }
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .bad_frame("bad_frame", e.to_string(), settings, peer)
                    .await
            }
        };
        match frame {
            ClientFrame::Subscribe {
                service,
                env,
                digest,
            } => self.subscribe(service, env, digest, settings, peer).await,
            ClientFrame::Unsubscribe { service, env } => {
                self.conn.unsubscribe(&(service, env));
                Ok(())
            }
        }
    }

    async fn subscribe(
        &mut self,
        service: String,
        env: String,
        digest: Option<String>,
        settings: &LiveSettings,
        peer: &Peer,
    ) -> Result<(), End> {
        let names = check_name("service", &service).and_then(|()| parse_envs(&env));
        let envs = match names {
            Ok(envs) => envs,
            Err(e) => {
                let (s, v) = (shown(&service, 128), shown(&env, 128));
                let msg = error_frame(Some(&s), Some(&v), "bad_name", e.to_string());
                return self.send(msg, settings, peer).await;
            }
        };
        if !self.principal.can_read(&service, &envs) {
            let who = self.principal.name.as_deref().unwrap_or("anonymous");
            let message = format!("token `{who}` has no scope for `{service}/{env}`");
            let msg = error_frame(Some(&service), Some(&env), "forbidden", message);
            return self.send(msg, settings, peer).await;
        }
        let key = (service, env);
        if !self.conn.subs.contains_key(&key)
            && self.conn.subs.len() >= settings.ws_max_subscriptions
        {
            let msg = error_frame(
                Some(&key.0),
                Some(&key.1),
                "too_many_subscriptions",
                format!(
                    "a connection may hold {} subscriptions; unsubscribe first or open another connection",
                    settings.ws_max_subscriptions
                ),
            );
            return self.send(msg, settings, peer).await;
        }
        // Register before looking up: a change published meanwhile reaches the queue,
        // and is sent after whatever the lookup finds, so the client ends on the newest.
        let extra = self.store.snapshot().slot(&key.0, &key.1).is_none();
        if self
            .conn
            .subscribe(key.clone(), digest.map(Arc::from), extra)
            .is_err()
        {
            let max = settings.ws_max_extra_pairs;
            let msg = error_frame(
                Some(&key.0),
                Some(&key.1),
                "too_many_watched_pairs",
                format!(
                    "`{}/{}` is not a (service, env) pair of the tracked version (several envs, an undeclared env or an unknown service), and the server already follows {max} such pairs for all connections together (limits.ws_max_extra_pairs); watch single declared envs, or retry once others unsubscribe",
                    key.0, key.1
                ),
            );
            return self.send(msg, settings, peer).await;
        }
        let (service, env) = (&key.0, &key.1);
        let reply = match self.store.lookup(&self.principal, None, service, &envs).await {
            Ok(entry) if !entry.service_known => error_frame(
                Some(service),
                Some(env),
                "unknown_service",
                format!("unknown service `{service}`: no {service}.yml or {service}-{{env}}.yml on the tracked branch; a commit that adds one will be pushed"),
            ),
            Ok(entry) => {
                let held = self.conn.subs.get_mut(&key);
                let Some(held) = held else { return Ok(()) };
                if held.as_deref() == Some(entry.digest()) {
                    return Ok(());
                }
                let Some(frame) = Frame::of(&entry) else {
                    return Ok(());
                };
                *held = Some(frame.digest.clone());
                Message::Text(frame.text.clone())
            }
            Err(LookupError::UnknownEnv(_)) => error_frame(
                Some(service),
                Some(env),
                "unknown_env",
                format!("unknown environment in `{env}`: not declared in confhub.yml"),
            ),
            Err(LookupError::Config(e)) => {
                let body = e.to_body();
                error_frame(Some(service), Some(env), &body.error, body.message)
            }
            Err(LookupError::Forbidden(message)) => {
                error_frame(Some(service), Some(env), "forbidden", message)
            }
            Err(e @ (LookupError::UnknownLabel(_) | LookupError::Source(_))) => {
                tracing::warn!(%service, %env, error = %e, "lookup for a subscription failed");
                error_frame(Some(service), Some(env), "unavailable", e.to_string())
            }
        };
        self.send(reply, settings, peer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_truncates_and_escapes() {
        assert_eq!(shown("abc", 10), "abc");
        assert_eq!(shown("a\nb", 10), "a\\nb");
        assert_eq!(shown("abcdef", 3), "abc…");
    }

    fn entry(dir: &std::path::Path, pool: u32) -> PairEntry {
        std::fs::write(dir.join("orders.yml"), format!("db:\n  pool: {pool}\n")).expect("write");
        let source = crate::source::dir::DirSource::open(&dir.display().to_string(), None)
            .expect("dir source");
        let mut view = source.view().expect("view");
        let catalog = crate::resolve::catalog::Catalog::of(&mut view).expect("catalog");
        let uri: Arc<str> = "file:///test".into();
        PairEntry::build(
            &mut view,
            &catalog,
            &uri,
            "dev",
            "orders",
            &["prod".to_string()],
        )
        .expect("entry")
    }

    #[test]
    fn fan_out_shares_one_serialization() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hub = Arc::new(Hub::default());
        let key: PairKey = ("orders".into(), "prod".into());
        let mut conns: Vec<Connection> = (0..3).map(|_| hub.connect().expect("conn")).collect();
        for c in &mut conns {
            c.subscribe(key.clone(), None, false).expect("subscribed");
        }
        let other = {
            let mut c = hub.connect().expect("conn");
            c.subscribe(("billing".into(), "prod".into()), None, false)
                .expect("subscribed");
            c
        };
        hub.publish(&entry(dir.path(), 1));
        let frames: Vec<Arc<Frame>> = conns
            .iter_mut()
            .map(|c| c.rx.try_recv().expect("a frame"))
            .collect();
        for f in &frames[1..] {
            assert!(
                Arc::ptr_eq(f, &frames[0]),
                "one frame shared by every subscriber"
            );
            assert_eq!(f.text.as_str().as_ptr(), frames[0].text.as_str().as_ptr());
        }
        assert!(frames[0].text.as_str().starts_with(r#"{"op":"config""#));
        let mut other = other;
        assert!(other.rx.try_recv().is_err(), "other pairs get nothing");
        // Only if new: the same digest is not published twice.
        hub.publish_if_new(&entry(dir.path(), 1));
        assert!(conns[0].rx.try_recv().is_err());
        assert_eq!(hub.stats().frames_sent, 3);
    }

    #[test]
    fn full_queue_drops_the_subscriber_not_the_publisher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = LiveSettings {
            ws_send_buffer: 0,
            ws_max_subscriptions: 2,
            ..LiveSettings::default()
        };
        let hub = Arc::new(Hub::new(settings));
        let key: PairKey = ("orders".into(), "prod".into());
        let mut slow = hub.connect().expect("conn");
        slow.subscribe(key.clone(), None, false)
            .expect("subscribed");
        let mut fast = hub.connect().expect("conn");
        fast.subscribe(key.clone(), None, false)
            .expect("subscribed");
        for pool in 0..3 {
            hub.publish(&entry(dir.path(), pool));
            fast.rx.try_recv().expect("fast keeps up");
        }
        // Capacity 2: the third frame did not fit; the slow one is out and told so.
        assert_eq!(hub.stats().slow_dropped, 1);
        assert_eq!(hub.subscriber_counts(), vec![(key, 1)]);
        let told = slow.peer.slow.notified();
        futures_util::pin_mut!(told);
        assert!(futures_util::FutureExt::now_or_never(told).is_some());
    }

    #[test]
    fn extra_pairs_are_counted_once_and_bounded() {
        let settings = LiveSettings {
            ws_max_extra_pairs: 2,
            ..LiveSettings::default()
        };
        let hub = Arc::new(Hub::new(settings));
        let pair = |env: &str| -> PairKey { ("orders".into(), env.into()) };
        let mut a = hub.connect().expect("conn");
        let mut b = hub.connect().expect("conn");
        a.subscribe(pair("prod,eu"), None, true).expect("first");
        // The same pair from another connection is one pair.
        b.subscribe(pair("prod,eu"), None, true).expect("shared");
        a.subscribe(pair("prod,us"), None, true).expect("second");
        assert_eq!(
            b.subscribe(pair("prod,ap"), None, true),
            Err(TooManyExtraPairs)
        );
        assert!(!b.subs.contains_key(&pair("prod,ap")), "not registered");
        // Snapshot pairs are not limited by it.
        b.subscribe(pair("prod"), None, false)
            .expect("snapshot pair");
        let mut extra = hub.extra_pairs(|_, env| env == "prod");
        extra.sort();
        assert_eq!(extra, vec![pair("prod,eu"), pair("prod,us")]);
        // Leaving frees the slot once the last subscriber of the pair is gone.
        a.unsubscribe(&pair("prod,us"));
        b.subscribe(pair("prod,ap"), None, true).expect("freed");
        a.unsubscribe(&pair("prod,eu"));
        assert_eq!(
            a.subscribe(pair("prod,sa"), None, true),
            Err(TooManyExtraPairs),
            "prod,eu is still watched by b"
        );
        drop(b);
        a.subscribe(pair("prod,sa"), None, true).expect("b is gone");
    }

    #[test]
    fn connection_limit_and_cleanup() {
        let settings = LiveSettings {
            ws_max_connections: 2,
            ..LiveSettings::default()
        };
        let hub = Arc::new(Hub::new(settings));
        let mut a = hub.connect().expect("first");
        let b = hub.connect().expect("second");
        assert!(hub.connect().is_none());
        a.subscribe(("orders".into(), "prod".into()), None, false)
            .expect("subscribed");
        assert_eq!(hub.subscriber_counts().len(), 1);
        drop(a);
        assert!(hub.subscriber_counts().is_empty());
        assert_eq!(hub.stats().connections, 1);
        drop(b);
        assert_eq!(hub.stats().connections, 0);
    }
}
