//! One `GET /v1/watch` WebSocket connection (ARCHITECTURE.md §6): a task that owns the
//! socket, the connection's queue and its subscriptions (pair → last digest the client
//! holds, used to send only what differs), pings every `ws_ping_interval` and drops a
//! peer silent for `ws_idle_timeout`. Frames from the hub arrive on the queue; frames
//! from the client are `subscribe` and `unsubscribe`, and `applied` / `rejected`, the
//! client's answers to the configs it was sent (recorded in [`super::instances`]; a
//! rejected rollout candidate may halt the rollout).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use confhub_client::wire::instance::{check_instance_id, check_labels, Labels};
use confhub_client::wire::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use tokio::time::Instant;

use super::hub::{Connection, Frame, PairKey, Peer, Update};
use super::instances::{Connected, Identity, InstanceKey, InstanceLabels, Instances};
use crate::auth::Principal;
use crate::errors::{LookupCode, LookupError};
use crate::names::{check_name, parse_envs, shown_at_most};
use crate::settings::LiveSettings;
use crate::store::entry::PairEntry;
use crate::store::Store;

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer left or the socket failed.
    Gone,
    /// The peer sent its close (axum answers it; the answer is flushed out).
    PeerClosed,
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
    /// Where the connection comes from: an instance that does not name itself is known
    /// by it.
    peer_addr: SocketAddr,
    instances: Arc<Instances>,
    /// This connection's instance, from its first `subscribe`.
    me: Option<Connected>,
}

/// Serve one upgraded connection until it ends.
///
/// Not an `async fn`: the session is built before the future, so the task stores it
/// once (an `async fn` keeps its arguments beside the locals made of them). Every idle
/// connection is one such task, so its size is the server's memory per subscriber.
pub(crate) fn run_session(
    socket: WebSocket,
    conn: Connection,
    store: Arc<Store>,
    principal: Principal,
    peer: (SocketAddr, Arc<Instances>),
) -> impl std::future::Future<Output = ()> + Send {
    let (peer_addr, instances) = peer;
    let mut session = Session {
        socket,
        conn,
        store,
        bad_frames: 0,
        principal,
        peer_addr,
        instances,
        me: None,
    };
    async move {
        let hub = session.conn.hub.clone();
        // Borrowed from the hub, not copied: every idle connection keeps this task's state.
        let settings = hub.settings();
        let end = session.serve(settings).await;
        session.end(end, settings).await;
    }
}

/// What handling one event leaves to do. Handlers decide synchronously and the loop
/// does the rest, so an idle connection's task keeps room for one write in flight
/// rather than one per kind of event.
enum Action {
    Nothing,
    Write(Message),
    /// A subscription that passed its checks: look up what to send (the one step that
    /// awaits the store, boxed so idle tasks keep no room for it).
    Subscribe(Box<Subscription>),
}

/// A `subscribe` frame's request.
struct Subscription {
    service: String,
    env: String,
    digest: Option<String>,
}

type Step = Result<Action, End>;

impl From<Option<Message>> for Action {
    fn from(msg: Option<Message>) -> Action {
        msg.map_or(Action::Nothing, Action::Write)
    }
}

impl Session {
    /// Pushes, client frames and pings until something ends the session.
    async fn serve(&mut self, settings: &LiveSettings) -> End {
        let shutdown = self.conn.hub.shutdown_signal();
        tokio::pin!(shutdown);
        let mut ping = tokio::time::interval_at(
            Instant::now() + settings.ws_ping_interval,
            settings.ws_ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let peer = self.conn.peer.clone();
        loop {
            let step: Step = tokio::select! {
                biased;
                () = &mut shutdown => Err(End::Close(close_code::AWAY, "going away")),
                () = peer.slow.notified() => Err(End::Slow),
                update = self.conn.rx.recv() => match update {
                    Some(update) => Ok(self.push(&update).into()),
                    None => Err(End::Gone),
                },
                msg = self.socket.recv() => {
                    last_heard = Instant::now();
                    self.on_message(msg)
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= settings.ws_idle_timeout {
                        Err(End::Close(close_code::AWAY, IDLE_TIMEOUT))
                    } else {
                        Ok(Action::Write(Message::Ping(bytes::Bytes::new())))
                    }
                }
            };
            let msg = match step {
                Err(end) => return end,
                Ok(Action::Nothing) => continue,
                Ok(Action::Write(msg)) => msg,
                Ok(Action::Subscribe(sub)) => {
                    match Box::pin(self.subscribe(*sub, settings)).await {
                        Some(msg) => msg,
                        None => continue,
                    }
                }
            };
            if let Err(end) = self.send(msg, settings, &peer, shutdown.as_mut()).await {
                return end;
            }
        }
    }

    /// Leave every topic and close as `end` says.
    async fn end(&mut self, end: End, settings: &LiveSettings) {
        let (code, reason) = match end {
            End::Gone => return,
            End::PeerClosed => {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.flush()).await;
                return;
            }
            End::Slow => {
                tracing::info!(
                    subscriptions = self.conn.subs.len(),
                    "closing a slow WebSocket consumer"
                );
                (close_code::AGAIN, "slow consumer")
            }
            End::Close(code, reason) => {
                tracing::debug!(code, reason, "closing WebSocket");
                (code, reason)
            }
        };
        self.conn.leave_all();
        // Frames still in the queue are never written: the close goes next, right after
        // the bytes already handed to the socket. A peer that stopped reading sees it once
        // it reads those, so it gets a whole write timeout to do so (not when the server
        // stops, nor for a peer that already went silent).
        let stopping = self.conn.hub.is_stopping();
        let within = if stopping || reason == IDLE_TIMEOUT {
            SHUTDOWN_CLOSE
        } else {
            settings.ws_write_timeout
        };
        if stopping {
            self.close(code, reason, within).await;
        } else {
            let shutdown = self.conn.hub.shutdown_signal();
            tokio::select! {
                () = self.close(code, reason, within) => {}
                // The server is stopping: it waits for this connection, which already
                // said why it ends.
                () = shutdown => {}
            }
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

impl Session {
    /// Write one message, giving up if the peer is too slow, the hub drops it or the
    /// server stops (`shutdown`, the session's own signal: a pending write needs no
    /// second one).
    async fn send(
        &mut self,
        msg: Message,
        settings: &LiveSettings,
        peer: &Peer,
        shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), End> {
        tokio::select! {
            sent = tokio::time::timeout(settings.ws_write_timeout, self.socket.send(msg)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Slow),
            },
            () = peer.slow.notified() => Err(End::Slow),
            () = shutdown => Err(End::Close(close_code::AWAY, "going away")),
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

    /// An update from the hub: send this instance's frame of it (the tracked config, or
    /// a rollout's candidate) unless the client already holds that digest.
    fn push(&mut self, update: &Update) -> Option<Message> {
        let frame = update.frame_for(self.me.as_ref().map(Connected::identity));
        // `None`: unsubscribed meanwhile.
        let (key, held) = self.conn.subs.entry(&frame.key)?;
        if held.as_deref() == Some(&*frame.digest) {
            // Nothing to send; the rollout it holds this under may have changed.
            if let Some(me) = &self.me {
                me.sent(key, frame.sent());
            }
            return None;
        }
        // The pair itself was checked at `subscribe`; a commit can make it read another
        // pair's file (ARCHITECTURE.md, "Who may read what"), which this token may not see.
        if !frame.access.foreign.is_empty() {
            if let Err(denied) = self.principal.may_read(&frame.access) {
                let (service, env) = (&frame.key.0, &frame.key.1);
                let msg = denied.message(self.principal.who());
                return Some(error_frame(Some(service), Some(env), "forbidden", msg));
            }
        }
        *held = Some(frame.digest.clone());
        if let Some(me) = &self.me {
            me.sent(key, frame.sent());
        }
        Some(Message::Text(frame.text.clone()))
    }

    fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Step {
        match msg {
            None | Some(Ok(Message::Close(_))) => Err(End::PeerClosed),
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
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Action::Nothing),
            Some(Ok(Message::Binary(_))) => self.bad_frame(
                "bad_frame",
                "binary frames are not accepted: send JSON text frames",
            ),
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
        }
    }

    fn bad_frame(&mut self, code: &str, message: impl Into<String>) -> Step {
        self.bad_frames += 1;
        if self.bad_frames > MAX_BAD_FRAMES {
            return Err(End::Close(close_code::POLICY, "too many malformed frames"));
        }
        Ok(Action::Write(error_frame(None, None, code, message)))
    }

    fn on_text(&mut self, text: &str) -> Step {
        // The frames clients send: parsed in one pass. Anything else is looked at
        // again, for an error that says what is wrong with it.
        if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
            return self.on_frame(frame);
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.bad_frame("bad_frame", format!("not a JSON frame: {e}")),
        };
        match value.get("op").and_then(|op| op.as_str()) {
            Some("subscribe" | "unsubscribe" | "applied" | "rejected") => {}
            Some(op) => {
                let message = format!(
                    "unknown op `{}`: use `subscribe`, `unsubscribe`, `applied` or `rejected`",
                    shown_at_most(op, 64)
                );
                return self.bad_frame("unknown_op", message);
            }
            None => {
                return self.bad_frame(
                    "bad_frame",
                    "a frame must be a JSON object with a string `op`",
                )
            }
        }
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => return self.bad_frame("bad_frame", e.to_string()),
        };
        self.on_frame(frame)
    }

    fn on_frame(&mut self, frame: ClientFrame) -> Step {
        match frame {
            ClientFrame::Subscribe {
                service,
                env,
                digest,
                instance,
                labels,
            } => {
                if let Err(refusal) = self.identify(instance, labels) {
                    return self.bad_frame("bad_instance", refusal);
                }
                Ok(Action::Subscribe(Box::new(Subscription {
                    service,
                    env,
                    digest,
                })))
            }
            ClientFrame::Unsubscribe { service, env } => {
                let key = (service, env);
                self.conn.unsubscribe(&key);
                if let Some(me) = &self.me {
                    me.left(&key);
                }
                Ok(Action::Nothing)
            }
            ClientFrame::Applied {
                service,
                env,
                digest,
            } => {
                self.answered((service, env), &digest, Ok(()));
                Ok(Action::Nothing)
            }
            ClientFrame::Rejected {
                service,
                env,
                digest,
                error,
            } => {
                self.answered((service, env), &digest, Err(&error));
                Ok(Action::Nothing)
            }
        }
    }

    /// The connection's instance, set by its first `subscribe`: the id and labels it
    /// names, or its address. A later `subscribe` naming another id is refused (one
    /// connection is one instance); its labels must be valid, and are not taken.
    fn identify(&mut self, instance: Option<String>, labels: Option<Labels>) -> Result<(), String> {
        let labels = labels.unwrap_or_default();
        if let Some(id) = &instance {
            check_instance_id(id).map_err(|e| e.to_string())?;
        }
        check_labels(&labels).map_err(|e| e.to_string())?;
        if let Some(me) = &self.me {
            let held = &me.identity().key;
            return match &instance {
                Some(id) if !matches!(held, InstanceKey::Named(h) if **h == **id) => Err(format!(
                    "this connection is instance `{}`; a connection is one instance: open another for `{}`",
                    held.id(),
                    id
                )),
                _ => Ok(()),
            };
        }
        let key = match instance {
            Some(id) => InstanceKey::Named(id.into()),
            None => InstanceKey::Anonymous(self.peer_addr.to_string().into()),
        };
        let who = Identity {
            key,
            labels: InstanceLabels::new(&labels),
        };
        self.me = Some(self.instances.connect(who, self.peer_addr));
        Ok(())
    }

    /// A rollout's candidate for this connection's instance instead of the tracked
    /// config of (service, envs), if a served rollout picks it.
    fn candidate(
        &self,
        service: &str,
        envs: &[String],
    ) -> Result<Option<Arc<PairEntry>>, LookupError> {
        let Some(me) = &self.me else { return Ok(None) };
        let who = me.identity();
        self.store
            .candidate(&self.principal, service, envs, who.key.id(), |k| {
                who.labels.get(k)
            })
    }

    /// An `applied` or `rejected` answer: recorded for pairs this connection watches;
    /// a rejection of a rollout's candidate may halt the rollout.
    fn answered(&mut self, key: PairKey, digest: &str, outcome: Result<(), &str>) {
        if !self.conn.subs.contains_key(&key) {
            return;
        }
        let Some(me) = &self.me else { return };
        if outcome.is_err() {
            self.instances.count_rejected(&key);
        }
        me.answered(&key, digest, outcome);
        self.conn.hub.console().changed(|| vec![key.clone()]);
        let rollouts = self.store.rollouts();
        let Some(rollout) = rollouts.on(&key.0, &key.1) else {
            return;
        };
        if rollout.candidate_digest(&key.1) != Some(digest) {
            return;
        }
        rollout.count(outcome.is_ok());
        let who = me.identity();
        let Err(error) = outcome else { return };
        if !rollout.spec.halt_on_reject
            || !rollout.spec.selects(who.key.id(), |k| who.labels.get(k))
        {
            return;
        }
        let error = shown_at_most(error, crate::live::instances::MAX_ERROR_CHARS);
        if rollout.halt(who.key.id(), &error) {
            tracing::warn!(rollout = %rollout.name, service = %key.0, env = %key.1, instance = %who.key.id(), error = %error, "rollout halted: an instance rejected its candidate; its instances get the tracked config back");
            super::refresh::republish(
                &self.store.snapshot(),
                &rollouts,
                &self.conn.hub,
                &key.0,
                &key.1,
            );
        }
    }

    /// A `subscribe`: the refusal, or the current config unless the client holds it.
    async fn subscribe(&mut self, sub: Subscription, settings: &LiveSettings) -> Option<Message> {
        let Subscription {
            service,
            env,
            digest,
        } = sub;
        match self.admit(service, env, digest, settings) {
            Ok((key, envs)) => self.current(&key, &envs).await,
            Err(refusal) => Some(refusal),
        }
    }

    /// Check a subscription (names, scopes, limits) and register it; the refusal is
    /// the `error` frame to send.
    fn admit(
        &mut self,
        service: String,
        env: String,
        digest: Option<String>,
        settings: &LiveSettings,
    ) -> Result<(PairKey, Vec<String>), Message> {
        let names = check_name("service", &service).and_then(|()| parse_envs(&env));
        let envs = match names {
            Ok(envs) => envs,
            Err(e) => {
                let (s, v) = (shown_at_most(&service, 128), shown_at_most(&env, 128));
                return Err(error_frame(Some(&s), Some(&v), "bad_name", e.to_string()));
            }
        };
        if !self.principal.can_read(&service, &envs) {
            let who = self.principal.name.as_deref().unwrap_or("anonymous");
            let message = format!("token `{who}` has no scope for `{service}/{env}`");
            return Err(error_frame(
                Some(&service),
                Some(&env),
                "forbidden",
                message,
            ));
        }
        let key = (service, env);
        if !self.conn.subs.contains_key(&key)
            && self.conn.subs.len() >= settings.ws_max_subscriptions
        {
            return Err(error_frame(
                Some(&key.0),
                Some(&key.1),
                "too_many_subscriptions",
                format!(
                    "a connection may hold {} subscriptions; unsubscribe first or open another connection",
                    settings.ws_max_subscriptions
                ),
            ));
        }
        // Register before looking up: a change published meanwhile reaches the queue,
        // and is sent after whatever the lookup finds, so the client ends on the newest.
        let extra = self.store.snapshot().pair(&key.0, &key.1).is_none();
        let held: Option<Arc<str>> = digest.map(Arc::from);
        let subscribed = self.conn.subscribe(key.clone(), held.clone(), extra);
        if let (Some(me), Ok(shared), Some(digest)) = (&self.me, &subscribed, &held) {
            me.holds(shared, digest);
        }
        if subscribed.is_err() {
            let max = settings.ws_max_extra_pairs;
            return Err(error_frame(
                Some(&key.0),
                Some(&key.1),
                "too_many_watched_pairs",
                format!(
                    "`{}/{}` is not a (service, env) pair of the tracked version (several envs, an undeclared env or an unknown service), and the server already follows {max} such pairs for all connections together (limits.ws_max_extra_pairs); watch single declared envs, or retry once others unsubscribe",
                    key.0, key.1
                ),
            ));
        }
        Ok((key, envs))
    }

    /// What to send a new subscriber of `key` now: the current config unless it holds
    /// that digest already (`None`), or the `error` frame of a pair it cannot have.
    async fn current(&mut self, key: &PairKey, envs: &[String]) -> Option<Message> {
        let (service, env) = (&key.0, &key.1);
        match self.store.lookup(&self.principal, None, service, envs).await {
            Ok(entry) if !entry.service_known => Some(error_frame(
                Some(service),
                Some(env),
                "unknown_service",
                format!("unknown service `{service}`: no {service}.yml or {service}-{{env}}.yml on the tracked branch; a commit that adds one will be pushed"),
            )),
            Ok(entry) => {
                let entry = match self.candidate(service, envs) {
                    Ok(Some(candidate)) => candidate,
                    Ok(None) => entry,
                    Err(e) => {
                        let body = e.to_body();
                        return Some(error_frame(Some(service), Some(env), &body.error, body.message));
                    }
                };
                let (shared, held) = self.conn.subs.entry(key)?;
                if held.as_deref() == Some(entry.digest()) {
                    if let Some(me) = &self.me {
                        me.sent(shared, crate::live::instances::Sent::of(&entry));
                    }
                    return None;
                }
                let frame = Frame::of(&entry)?;
                *held = Some(frame.digest.clone());
                if let Some(me) = &self.me {
                    me.sent(shared, frame.sent());
                }
                Some(Message::Text(frame.text.clone()))
            }
            Err(e) => {
                if e.code() == LookupCode::Source {
                    tracing::warn!(%service, %env, error = %e, "lookup for a subscription failed");
                }
                let body = e.to_body();
                Some(error_frame(Some(service), Some(env), &body.error, body.message))
            }
        }
    }
}
