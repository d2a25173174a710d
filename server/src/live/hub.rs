//! Live push (ARCHITECTURE.md §6): subscriptions by (service, env) and fan-out of
//! changed pairs to the connections of `GET /v1/watch` (served by [`super::session`]).
//!
//! Data flow: the refresh loop ([`super::refresh`]) hands each changed
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
//! [`super::refresh`]; the hub counts them, once each however many connections watch
//! them, and refuses new ones past `ws_max_extra_pairs`.
//!
//! Each connection is one task ([`super::session`]); the hub holds only its queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch, Notify};

use super::events::ConsoleEvents;
use super::instances::{Identity, Sent};
use crate::resolve::catalog::Access;
use crate::settings::LiveSettings;
use crate::store::entry::{Body, PairEntry};
use crate::store::rollouts::Rollout;

/// (service, env as written: `prod` or `prod,eu`).
pub type PairKey = (String, String);

/// A `config` frame of one pair at one version: serialized once, shared by every subscriber.
#[derive(Debug)]
pub struct Frame {
    /// The pair.
    pub key: PairKey,
    /// Digest of the values in `text`.
    pub digest: Arc<str>,
    /// The commit (or content hash) it was resolved at.
    pub version: Arc<str>,
    /// The rollout it comes from, if any.
    pub rollout: Option<Arc<str>>,
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
            version: entry.version.clone(),
            digest: entry.resolved.digest.clone(),
            rollout: entry.rollout.clone(),
            access: entry.access.clone(),
            text,
        }))
    }

    /// What the instance table records when this frame is sent.
    pub(crate) fn sent(&self) -> Sent<'_> {
        Sent {
            version: &self.version,
            digest: &self.digest,
            rollout: self.rollout.as_ref(),
        }
    }
}

/// A pair's new state, as queued to each of its subscribers: the tracked config's
/// frame, and when a rollout is on the pair, the rollout with its candidate's frame. Each
/// session picks the one for its instance ([`Update::frame_for`]); both are serialized
/// once, whatever the number of subscribers.
#[derive(Debug)]
pub struct Update {
    /// The pair.
    pub key: PairKey,
    /// What instances outside the rollout get.
    pub tracked: Arc<Frame>,
    /// The rollout, and the frame of its candidate.
    pub rollout: Option<(Arc<Rollout>, Arc<Frame>)>,
}

impl Update {
    /// The update for `tracked` (the pair's tracked entry) under `rollout`.
    pub(crate) fn of(tracked: &PairEntry, rollout: Option<&Arc<Rollout>>) -> Option<Arc<Update>> {
        let frame = Frame::of(tracked)?;
        let env = &frame.key.1;
        let rollout = rollout.and_then(|r| {
            let candidate = r.candidate.as_ref().ok()?.entries.get(env)?;
            Some((r.clone(), Frame::of(candidate)?))
        });
        Some(Arc::new(Update {
            key: frame.key.clone(),
            tracked: frame,
            rollout,
        }))
    }

    /// The frame for the instance `who`: the candidate's when a served rollout picks
    /// it (checked now, so a halt made since this was queued is honoured).
    pub(crate) fn frame_for(&self, who: Option<&Identity>) -> &Arc<Frame> {
        match (&self.rollout, who) {
            (Some((rollout, candidate)), Some(who))
                if rollout
                    .candidate_for(&self.key.1, who.key.id(), |k| who.labels.get(k))
                    .is_some() =>
            {
                candidate
            }
            _ => &self.tracked,
        }
    }
}

/// The hub's handle on one connection.
#[derive(Debug)]
pub(crate) struct Peer {
    tx: mpsc::Sender<Arc<Update>>,
    /// Woken when the hub gives up on this connection (its queue overflowed).
    pub(super) slow: Notify,
}

#[derive(Debug, Default)]
struct Topic {
    /// The pair, shared with every subscription to it (and the instance records).
    key: Arc<PairKey>,
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
pub(super) struct TooManyExtraPairs;

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
    /// The console's open pages: told which pairs changed.
    console: ConsoleEvents,
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
            console: ConsoleEvents::default(),
        }
    }

    /// What the console's open pages hear of.
    pub(crate) fn console(&self) -> &ConsoleEvents {
        &self.console
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
    pub(crate) fn connect(self: &Arc<Self>) -> Option<Connection> {
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
            subs: Subs::default(),
        })
    }

    /// Push `update` to every subscriber of its pair. Never waits: a subscriber whose
    /// queue is full is disconnected as a slow consumer.
    pub fn publish(&self, update: Arc<Update>) {
        self.fan_out(update, false);
    }

    /// Like [`Hub::publish`], but only if the tracked digest differs from the last one
    /// published for that pair (for pairs recomputed by lookup after each refresh).
    pub fn publish_if_new(&self, update: Arc<Update>) {
        self.fan_out(update, true);
    }

    fn fan_out(&self, update: Arc<Update>, only_if_new: bool) {
        let key = &update.key;
        let mut topics = self.topics();
        let Some(topic) = topics.map.get_mut(key) else {
            return;
        };
        let frame = &update.tracked;
        if only_if_new && topic.published.as_deref() == Some(&*frame.digest) {
            return;
        }
        topic.published = Some(frame.digest.clone());
        let mut gone = Vec::new();
        for (id, peer) in &topic.subscribers {
            match peer.tx.try_send(update.clone()) {
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
            topics.remove(key);
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

    /// `true` once [`Hub::shutdown`] was called.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
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

/// A connection's subscriptions: pair → digest of the config the client holds. Most
/// connections hold one or two (at most `ws_max_subscriptions`), so a list searched in
/// place: one small allocation per connection, where a map costs a table.
#[derive(Debug, Default)]
pub(crate) struct Subs(Vec<(Arc<PairKey>, Option<Arc<str>>)>);

impl Subs {
    fn position(&self, key: &PairKey) -> Option<usize> {
        self.0.iter().position(|(k, _)| **k == *key)
    }

    pub(super) fn get_mut(&mut self, key: &PairKey) -> Option<&mut Option<Arc<str>>> {
        let i = self.position(key)?;
        Some(&mut self.0[i].1)
    }

    /// The subscription to `key`: the shared key, and the digest the client holds.
    pub(super) fn entry(
        &mut self,
        key: &PairKey,
    ) -> Option<(&Arc<PairKey>, &mut Option<Arc<str>>)> {
        let i = self.position(key)?;
        let (k, held) = &mut self.0[i];
        Some((&*k, held))
    }

    pub(super) fn contains_key(&self, key: &PairKey) -> bool {
        self.position(key).is_some()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, key: Arc<PairKey>, digest: Option<Arc<str>>) {
        match self.get_mut(&key) {
            Some(held) => *held = digest,
            None => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.push((key, digest));
            }
        }
    }

    fn remove(&mut self, key: &PairKey) -> Option<Option<Arc<str>>> {
        let i = self.position(key)?;
        Some(self.0.swap_remove(i).1)
    }

    fn drain(&mut self) -> impl Iterator<Item = (Arc<PairKey>, Option<Arc<str>>)> + '_ {
        self.0.drain(..)
    }
}

/// One connection's side of the hub: its queue and subscriptions. Unregisters
/// everything when dropped.
pub(crate) struct Connection {
    pub(super) hub: Arc<Hub>,
    id: u64,
    pub(super) peer: Arc<Peer>,
    pub(super) rx: mpsc::Receiver<Arc<Update>>,
    /// Pair → digest of the config the client holds (`None`: nothing yet).
    pub(super) subs: Subs,
}

impl Connection {
    /// Register for `key`. `extra`: it is not a pair of the current snapshot; a new
    /// topic of that kind is refused once the hub follows `ws_max_extra_pairs` of them
    /// (joining one already followed is free).
    pub(super) fn subscribe(
        &mut self,
        key: PairKey,
        digest: Option<Arc<str>>,
        extra: bool,
    ) -> Result<Arc<PairKey>, TooManyExtraPairs> {
        let mut guard = self.hub.topics();
        let topics = &mut *guard;
        let topic = match topics.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(topic) => topic.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                if extra {
                    if topics.extra >= self.hub.settings.ws_max_extra_pairs {
                        return Err(TooManyExtraPairs);
                    }
                    topics.extra += 1;
                }
                let key = Arc::new(new.key().clone());
                new.insert(Topic {
                    key,
                    extra,
                    ..Topic::default()
                })
            }
        };
        topic.subscribers.insert(self.id, self.peer.clone());
        let shared = topic.key.clone();
        drop(guard);
        self.subs.insert(shared.clone(), digest);
        Ok(shared)
    }

    pub(super) fn unsubscribe(&mut self, key: &PairKey) {
        if self.subs.remove(key).is_none() {
            return;
        }
        self.hub.topics().leave(key, self.id);
    }

    /// Leave every topic (the connection is closing: nothing more is queued for it).
    pub(super) fn leave_all(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn update(dir: &std::path::Path, pool: u32) -> Arc<Update> {
        Update::of(&entry(dir, pool), None).expect("an update")
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
        hub.publish(update(dir.path(), 1));
        let frames: Vec<Arc<Frame>> = conns
            .iter_mut()
            .map(|c| c.rx.try_recv().expect("a frame").tracked.clone())
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
        hub.publish_if_new(update(dir.path(), 1));
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
            hub.publish(update(dir.path(), pool));
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
