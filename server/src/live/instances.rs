//! Which instance holds which config (ARCHITECTURE.md §6.2): every instance connected
//! over `/v1/watch`, and every one that fetched over HTTP within `limits.instance_ttl`,
//! with what it was sent of each pair and whether it applied or rejected it.
//!
//! An instance is known by the id it sends (`instance` on `subscribe`, or the
//! `X-Confhub-Instance` header), or, when it sends none, by its address: the socket
//! address of its WebSocket connection, the IP of its HTTP requests. The table is
//! bounded in count: `limits.max_instances` instances, [`MAX_PAIRS_PER_INSTANCE`] pairs
//! each, an error message of at most [`MAX_ERROR_CHARS`] characters; past the bound a new
//! instance is served as usual but not listed (and counted as such in the log).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use confhub_client::wire::instance::Labels;
use confhub_client::wire::names::shown_at_most;
use confhub_client::wire::{InstanceInfo, InstancePair};

use super::hub::PairKey;
use crate::timefmt::rfc3339_of;

/// Pairs remembered per instance; the one heard of longest ago makes room.
pub const MAX_PAIRS_PER_INSTANCE: usize = 64;

/// Longest rejection error kept, in characters (escaped when shown).
pub const MAX_ERROR_CHARS: usize = 512;

/// How an instance is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum InstanceKey {
    /// The id it sent.
    Named(String),
    /// No id: its address.
    Anonymous(String),
}

impl InstanceKey {
    /// The id rollouts hash and the listing shows.
    pub(crate) fn id(&self) -> &str {
        match self {
            InstanceKey::Named(id) | InstanceKey::Anonymous(id) => id,
        }
    }
}

/// Who an instance is: its key and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) key: InstanceKey,
    pub(crate) labels: Labels,
}

/// What an instance said of the newest config it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HoldState {
    Sent,
    Applied,
    Rejected(String),
}

#[derive(Debug, Clone)]
struct Hold {
    version: Option<Arc<str>>,
    digest: Option<Arc<str>>,
    state: HoldState,
    since: SystemTime,
    rollout: Option<Arc<str>>,
    heard: Instant,
}

#[derive(Debug)]
struct Record {
    labels: Labels,
    address: String,
    /// Open WebSocket connections of this instance.
    connections: u32,
    connected_since: Option<SystemTime>,
    last_seen: SystemTime,
    /// Last HTTP fetch: keeps the instance listed for `ttl` after it.
    http_seen: Option<Instant>,
    pairs: Holds,
}

/// An instance's pairs: a few at most (64), so a list, searched in place, costs one
/// allocation per instance where a map would cost a table.
#[derive(Debug, Default)]
struct Holds(Vec<(PairKey, Hold)>);

impl Holds {
    fn position(&self, pair: &PairKey) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == pair)
    }

    fn contains_key(&self, pair: &PairKey) -> bool {
        self.position(pair).is_some()
    }

    fn get_mut(&mut self, pair: &PairKey) -> Option<&mut Hold> {
        let i = self.position(pair)?;
        Some(&mut self.0[i].1)
    }

    fn remove(&mut self, pair: &PairKey) {
        if let Some(i) = self.position(pair) {
            self.0.swap_remove(i);
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&PairKey, &Hold)> {
        self.0.iter().map(|(k, h)| (k, h))
    }
}

impl Record {
    fn hold(&mut self, pair: &PairKey) -> &mut Hold {
        if !self.pairs.contains_key(pair) && self.pairs.len() >= MAX_PAIRS_PER_INSTANCE {
            let oldest = self
                .pairs
                .iter()
                .min_by_key(|(_, h)| h.heard)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.pairs.remove(&oldest);
            }
        }
        let i = match self.pairs.position(pair) {
            Some(i) => i,
            None => {
                let hold = Hold {
                    version: None,
                    digest: None,
                    state: HoldState::Sent,
                    since: SystemTime::now(),
                    rollout: None,
                    heard: Instant::now(),
                };
                self.pairs.0.push((pair.clone(), hold));
                self.pairs.0.len() - 1
            }
        };
        &mut self.pairs.0[i].1
    }

    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.connections == 0 && self.http_seen.is_none_or(|t| now.duration_since(t) >= ttl)
    }
}

/// What a config sent to an instance was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent<'a> {
    pub(crate) version: &'a str,
    pub(crate) digest: &'a str,
    pub(crate) rollout: Option<&'a str>,
}

impl<'a> Sent<'a> {
    /// What serving `entry` sends.
    pub(crate) fn of(entry: &'a crate::store::entry::PairEntry) -> Sent<'a> {
        Sent {
            version: &entry.version,
            digest: entry.digest(),
            rollout: entry.rollout.as_deref(),
        }
    }
}

/// Every instance known now.
#[derive(Debug)]
pub struct Instances {
    table: Mutex<HashMap<InstanceKey, Record>>,
    ttl: Duration,
    max: usize,
    /// `rejected` answers per pair since start (pairs a connection watched only).
    rejected: Mutex<HashMap<PairKey, u64>>,
    /// Per pair, the newest digest sent and the one before: the only two the metrics
    /// name (so their cardinality stays bounded); instances holding others are `other`.
    releases: Mutex<HashMap<PairKey, Releases>>,
}

#[derive(Debug, Clone, Default)]
struct Releases {
    current: Option<Arc<str>>,
    previous: Option<Arc<str>>,
}

/// Pairs whose rejections are counted; the count of a pair past it is not kept.
const MAX_REJECTED_PAIRS: usize = 4096;

impl Default for Instances {
    fn default() -> Self {
        Instances::new(Duration::from_secs(600), 20_000)
    }
}

impl Instances {
    /// A table keeping HTTP-only instances for `ttl`, with room for `max`.
    pub fn new(ttl: Duration, max: usize) -> Instances {
        Instances {
            table: Mutex::new(HashMap::new()),
            ttl,
            max,
            rejected: Mutex::new(HashMap::new()),
            releases: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<InstanceKey, Record>> {
        crate::sync::lock(&self.table)
    }

    /// The record of `who`, made if there is room.
    fn record<'t>(
        &self,
        table: &'t mut HashMap<InstanceKey, Record>,
        who: &Identity,
        address: &str,
    ) -> Option<&'t mut Record> {
        if !table.contains_key(&who.key) {
            if table.len() >= self.max {
                tracing::debug!(
                    max = self.max,
                    "instance table full: not listing a new instance (limits.max_instances)"
                );
                return None;
            }
            table.insert(
                who.key.clone(),
                Record {
                    labels: who.labels.clone(),
                    address: address.to_string(),
                    connections: 0,
                    connected_since: None,
                    last_seen: SystemTime::now(),
                    http_seen: None,
                    pairs: Holds::default(),
                },
            );
        }
        let record = table.get_mut(&who.key)?;
        record.labels.clone_from(&who.labels);
        record.last_seen = SystemTime::now();
        address.clone_into(&mut record.address);
        Some(record)
    }

    /// A WebSocket connection of `who` opened; it is listed until the guard drops.
    pub(crate) fn connect(self: &Arc<Self>, who: Identity, peer: SocketAddr) -> Connected {
        let mut table = self.table();
        let listed = match self.record(&mut table, &who, &peer.to_string()) {
            Some(record) => {
                record.connections += 1;
                record.connected_since.get_or_insert_with(SystemTime::now);
                true
            }
            None => false,
        };
        Connected {
            instances: self.clone(),
            who,
            listed,
        }
    }

    /// `who` fetched `pair` over HTTP and was served `sent`.
    pub(crate) fn fetched(&self, who: &Identity, ip: &str, pair: &PairKey, sent: Sent<'_>) {
        let mut table = self.table();
        let Some(record) = self.record(&mut table, who, ip) else {
            return;
        };
        record.http_seen = Some(Instant::now());
        set_sent(record.hold(pair), sent);
        drop(table);
        self.note_release(pair, sent.digest);
    }

    fn with_listed(&self, who: &Identity, f: impl FnOnce(&mut Record)) {
        if let Some(record) = self.table().get_mut(&who.key) {
            record.last_seen = SystemTime::now();
            f(record);
        }
    }

    /// Forget instances that have no connection and have not fetched within the TTL.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let ttl = self.ttl;
        self.table().retain(|_, r| !r.expired(now, ttl));
    }

    /// Every listed instance, sorted by id, with only the pairs `visible` lets through;
    /// an instance left with no pair is shown only when `show_bare` (callers who may
    /// read everything).
    pub(crate) fn list(
        &self,
        visible: impl Fn(&PairKey) -> bool,
        show_bare: bool,
    ) -> Vec<InstanceInfo> {
        let now = Instant::now();
        let table = self.table();
        let mut out: Vec<InstanceInfo> = table
            .iter()
            .filter(|(_, r)| !r.expired(now, self.ttl))
            .filter_map(|(key, record)| {
                let mut pairs: Vec<InstancePair> = record
                    .pairs
                    .iter()
                    .filter(|(pair, _)| visible(pair))
                    .map(|(pair, hold)| pair_info(pair, hold))
                    .collect();
                if pairs.is_empty() && !(show_bare && record.pairs.is_empty()) {
                    return None;
                }
                pairs.sort_by(|a, b| (&a.service, &a.env).cmp(&(&b.service, &b.env)));
                Some(instance_info(key, record, pairs))
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id).then(a.address.cmp(&b.address)));
        out
    }

    /// Ids of the listed instances that read one of `pairs` and that `picks` takes.
    pub(crate) fn picked(
        &self,
        pairs: &[PairKey],
        picks: impl Fn(&str, &Labels) -> bool,
    ) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .table()
            .iter()
            .filter(|(_, r)| !r.expired(now, self.ttl))
            .filter(|(_, r)| pairs.iter().any(|p| r.pairs.contains_key(p)))
            .filter(|(key, r)| picks(key.id(), &r.labels))
            .map(|(key, _)| key.id().to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// An instance rejected a config of `pair`.
    pub(crate) fn count_rejected(&self, pair: &PairKey) {
        let mut rejected = crate::sync::lock(&self.rejected);
        if let Some(n) = rejected.get_mut(pair) {
            *n += 1;
        } else if rejected.len() < MAX_REJECTED_PAIRS {
            rejected.insert(pair.clone(), 1);
        }
    }

    /// `rejected` answers per pair since start.
    pub(crate) fn rejected_counts(&self) -> Vec<(PairKey, u64)> {
        let mut out: Vec<_> = crate::sync::lock(&self.rejected)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        out.sort();
        out
    }

    /// `digest` was sent for `pair`: it becomes the pair's current release.
    fn note_release(&self, pair: &PairKey, digest: &str) {
        let mut releases = crate::sync::lock(&self.releases);
        if !releases.contains_key(pair) && releases.len() >= MAX_REJECTED_PAIRS {
            return;
        }
        let r = releases.entry(pair.clone()).or_default();
        if r.current.as_deref() != Some(digest) {
            r.previous = r.current.take();
            r.current = Some(digest.into());
        }
    }

    /// Per pair, how many listed instances hold its current release, its previous one,
    /// and any other digest (`"other"`): for metrics, sorted.
    pub(crate) fn release_counts(&self) -> Vec<(PairKey, String, u64)> {
        let releases = crate::sync::lock(&self.releases).clone();
        let now = Instant::now();
        let mut counts: HashMap<(PairKey, String), u64> = HashMap::new();
        for record in self.table().values().filter(|r| !r.expired(now, self.ttl)) {
            for (pair, hold) in record.pairs.iter() {
                let Some(digest) = &hold.digest else { continue };
                let named = releases.get(pair).is_some_and(|r| {
                    r.current.as_ref() == Some(digest) || r.previous.as_ref() == Some(digest)
                });
                let which = if named {
                    digest.to_string()
                } else {
                    "other".to_string()
                };
                *counts.entry((pair.clone(), which)).or_default() += 1;
            }
        }
        let mut out: Vec<_> = counts.into_iter().map(|((p, d), n)| (p, d, n)).collect();
        out.sort();
        out
    }
}

/// A config was sent (or, with the digest the instance holds, stood for what it holds:
/// a promoted candidate, the same values at a new commit): the version and rollout are
/// always the newest; the state starts over only for a new digest.
fn set_sent(hold: &mut Hold, sent: Sent<'_>) {
    hold.heard = Instant::now();
    if hold.version.as_deref() != Some(sent.version) {
        hold.version = Some(sent.version.into());
    }
    if hold.rollout.as_deref() != sent.rollout {
        hold.rollout = sent.rollout.map(Arc::from);
    }
    if hold.digest.as_deref() == Some(sent.digest) {
        return;
    }
    hold.digest = Some(sent.digest.into());
    hold.state = HoldState::Sent;
    hold.since = SystemTime::now();
}

fn pair_info(pair: &PairKey, hold: &Hold) -> InstancePair {
    let (state, error) = match &hold.state {
        HoldState::Sent => ("sent", None),
        HoldState::Applied => ("applied", None),
        HoldState::Rejected(e) => ("rejected", Some(e.clone())),
    };
    InstancePair {
        service: pair.0.clone(),
        env: pair.1.clone(),
        version: hold.version.as_deref().map(str::to_string),
        digest: hold.digest.as_deref().map(str::to_string),
        state: state.to_string(),
        error,
        since: rfc3339_of(hold.since),
        rollout: hold.rollout.as_deref().map(str::to_string),
    }
}

fn instance_info(key: &InstanceKey, record: &Record, pairs: Vec<InstancePair>) -> InstanceInfo {
    InstanceInfo {
        id: key.id().to_string(),
        anonymous: matches!(key, InstanceKey::Anonymous(_)),
        labels: record.labels.clone(),
        address: record.address.clone(),
        transport: if record.connections > 0 {
            "websocket"
        } else {
            "http"
        }
        .to_string(),
        connected_since: (record.connections > 0)
            .then_some(record.connected_since)
            .flatten()
            .map(rfc3339_of),
        last_seen: rfc3339_of(record.last_seen),
        pairs,
    }
}

/// A WebSocket connection's place in the table; leaving it (drop) ends the listing
/// unless the instance has another connection or a recent HTTP fetch.
#[derive(Debug)]
pub(crate) struct Connected {
    instances: Arc<Instances>,
    who: Identity,
    listed: bool,
}

impl Connected {
    /// Who this connection is.
    pub(crate) fn identity(&self) -> &Identity {
        &self.who
    }

    /// `sent` was queued to the instance for `pair`.
    pub(crate) fn sent(&self, pair: &PairKey, sent: Sent<'_>) {
        self.instances
            .with_listed(&self.who, |r| set_sent(r.hold(pair), sent));
        self.instances.note_release(pair, sent.digest);
    }

    /// The instance subscribed holding `digest`: it has applied it.
    pub(crate) fn holds(&self, pair: &PairKey, digest: &str) {
        self.instances.with_listed(&self.who, |r| {
            let hold = r.hold(pair);
            hold.heard = Instant::now();
            if hold.digest.as_deref() != Some(digest) {
                hold.digest = Some(digest.into());
                hold.version = None;
                hold.rollout = None;
            }
            hold.state = HoldState::Applied;
            hold.since = SystemTime::now();
        });
    }

    /// The instance said what it did with the config of `digest`. An answer about a
    /// digest it was not sent last is stale and only refreshes `last_seen`.
    pub(crate) fn answered(&self, pair: &PairKey, digest: &str, outcome: Result<(), &str>) {
        self.instances.with_listed(&self.who, |r| {
            let Some(hold) = r.pairs.get_mut(pair) else {
                return;
            };
            if hold.digest.as_deref() != Some(digest) {
                return;
            }
            let state = match outcome {
                Ok(()) => HoldState::Applied,
                Err(e) => HoldState::Rejected(shown_at_most(e, MAX_ERROR_CHARS)),
            };
            if hold.state != state {
                hold.state = state;
                hold.since = SystemTime::now();
            }
            hold.heard = Instant::now();
        });
    }

    /// The instance unsubscribed from `pair`.
    pub(crate) fn left(&self, pair: &PairKey) {
        self.instances.with_listed(&self.who, |r| {
            r.pairs.remove(pair);
        });
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if !self.listed {
            return;
        }
        let mut table = self.instances.table();
        let now = Instant::now();
        let ttl = self.instances.ttl;
        let gone = table.get_mut(&self.who.key).is_some_and(|r| {
            r.connections = r.connections.saturating_sub(1);
            r.last_seen = SystemTime::now();
            if r.connections == 0 {
                r.connected_since = None;
            }
            r.expired(now, ttl)
        });
        if gone {
            table.remove(&self.who.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: &str) -> Identity {
        Identity {
            key: InstanceKey::Named(id.into()),
            labels: Labels::from([("zone".to_string(), "eu-1a".to_string())]),
        }
    }

    fn pair() -> PairKey {
        ("orders".into(), "prod".into())
    }

    const SENT: Sent<'static> = Sent {
        version: "c1",
        digest: "d1",
        rollout: None,
    };

    #[test]
    fn a_connection_is_listed_while_open_and_records_answers() {
        let instances = Arc::new(Instances::default());
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let conn = instances.connect(named("a"), peer);
        conn.sent(&pair(), SENT);
        conn.answered(&pair(), "d0", Err("stale")); // not the digest sent: ignored
        let list = instances.list(|_| true, true);
        assert_eq!(list[0].pairs[0].state, "sent");
        conn.answered(&pair(), "d1", Err("pool: invalid type\u{1b}"));
        let list = instances.list(|_| true, true);
        assert_eq!(list[0].transport, "websocket");
        assert_eq!(list[0].pairs[0].state, "rejected");
        let error = list[0].pairs[0].error.clone().expect("error");
        assert!(!error.contains('\u{1b}'), "{error}");
        let counts = instances.release_counts();
        assert_eq!(counts, vec![(pair(), "d1".to_string(), 1)]);
        assert!(instances.list(|_| false, false).is_empty(), "scoped out");
        drop(conn);
        assert!(instances.list(|_| true, true).is_empty());
    }

    #[test]
    fn http_fetches_expire_and_the_table_is_bounded() {
        let instances = Instances::new(Duration::ZERO, 2);
        for id in ["a", "b", "c"] {
            instances.fetched(&named(id), "10.0.0.1", &pair(), SENT);
        }
        assert_eq!(
            instances.table().len(),
            2,
            "the third is served, not listed"
        );
        instances.prune();
        assert!(instances.table().is_empty(), "a zero TTL keeps nothing");
        let instances = Instances::default();
        let who = named("a");
        for n in 0..(MAX_PAIRS_PER_INSTANCE + 10) {
            let pair = ("svc".to_string(), format!("e{n}"));
            instances.fetched(&who, "10.0.0.1", &pair, SENT);
        }
        assert_eq!(
            instances.list(|_| true, true)[0].pairs.len(),
            MAX_PAIRS_PER_INSTANCE
        );
    }
}
