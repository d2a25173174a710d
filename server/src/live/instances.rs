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
//!
//! Cost: each WebSocket connection keeps its part ([`Live`]) behind a lock of its own,
//! which only its session and readers of the listing take; the table's lock is taken when
//! a connection opens or closes, and once per HTTP fetch. A push to 10,000 subscribers
//! takes no shared lock here, and records share the version and digest strings of the
//! frame they were sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use confhub_client::wire::instance::{format_labels, Labels};
use confhub_client::wire::names::shown_at_most;
use confhub_client::wire::{InstanceInfo, InstancePair};

use super::hub::PairKey;
use crate::store::entry::PairEntry;
use crate::sync::lock;
use crate::timefmt::rfc3339_of;

/// Pairs remembered per instance; the one heard of longest ago makes room.
pub const MAX_PAIRS_PER_INSTANCE: usize = 64;

/// Longest rejection error kept, in characters (escaped when shown).
pub const MAX_ERROR_CHARS: usize = 512;

/// Pairs whose rejections are counted, and whose releases are named in the metrics.
const MAX_COUNTED_PAIRS: usize = 4096;

/// How an instance is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum InstanceKey {
    /// The id it sent.
    Named(Arc<str>),
    /// No id: its address.
    Anonymous(Arc<str>),
}

impl InstanceKey {
    /// The id rollouts hash and the listing shows.
    pub(crate) fn id(&self) -> &str {
        match self {
            InstanceKey::Named(id) | InstanceKey::Anonymous(id) => id,
        }
    }
}

/// An instance's labels in one small allocation (none for no labels): the checked
/// `k=v,k2=v2` form, sorted by key, which is also what the header carries. Most
/// instances carry a handful, every connection keeps them, and a lookup by key is a
/// short scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InstanceLabels(Option<Arc<str>>);

impl InstanceLabels {
    pub(crate) fn new(labels: &Labels) -> InstanceLabels {
        if labels.is_empty() {
            return InstanceLabels(None);
        }
        InstanceLabels(Some(format_labels(labels).into()))
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .as_deref()
            .into_iter()
            .flat_map(|text| text.split(','))
            .filter_map(|item| item.split_once('='))
    }

    /// The value of label `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn to_map(&self) -> Labels {
        self.pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Who an instance is: its key and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) key: InstanceKey,
    pub(crate) labels: InstanceLabels,
}

/// What an instance said of the newest config it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HoldState {
    Sent,
    Applied,
    Rejected(Box<str>),
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

/// An instance's pairs: a few at most (64), so a list, searched in place, costs one
/// small allocation where a map would cost a table.
#[derive(Debug, Default)]
struct Holds(Vec<(Arc<PairKey>, Hold)>);

impl Holds {
    fn position(&self, pair: &PairKey) -> Option<usize> {
        self.0.iter().position(|(k, _)| **k == *pair)
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

    /// The hold of `pair`, made (making room if need be) if there is none, keyed by
    /// `shared` (the hub's key of the pair when there is one: the record then holds no
    /// copy of the names).
    fn hold(&mut self, pair: &PairKey, shared: impl FnOnce() -> Arc<PairKey>) -> &mut Hold {
        let i = match self.position(pair) {
            Some(i) => i,
            None => {
                if self.0.len() >= MAX_PAIRS_PER_INSTANCE {
                    let oldest = (0..self.0.len()).min_by_key(|&i| self.0[i].1.heard);
                    if let Some(oldest) = oldest {
                        self.0.swap_remove(oldest);
                    }
                }
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.push((shared(), Hold::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

impl Hold {
    fn new() -> Hold {
        Hold {
            version: None,
            digest: None,
            state: HoldState::Sent,
            since: SystemTime::now(),
            rollout: None,
            heard: Instant::now(),
        }
    }
}

/// One WebSocket connection's part of the table.
#[derive(Debug)]
pub(crate) struct Live {
    state: Mutex<LiveState>,
}

#[derive(Debug)]
struct LiveState {
    pairs: Holds,
    address: SocketAddr,
    connected_since: SystemTime,
    last_seen: SystemTime,
}

/// An instance's HTTP fetches.
#[derive(Debug)]
struct HttpSide {
    address: String,
    seen: Instant,
    last_seen: SystemTime,
    pairs: Holds,
}

#[derive(Debug)]
struct Record {
    labels: InstanceLabels,
    /// Its open WebSocket connections: almost always one, so no list for it.
    live: Option<Arc<Live>>,
    more_live: Vec<Arc<Live>>,
    /// Its HTTP fetches, kept for the TTL after the last one.
    http: Option<Box<HttpSide>>,
}

impl Record {
    fn lives(&self) -> impl Iterator<Item = &Arc<Live>> {
        self.live.iter().chain(&self.more_live)
    }

    fn add_live(&mut self, live: Arc<Live>) {
        match self.live {
            None => self.live = Some(live),
            Some(_) => self.more_live.push(live),
        }
    }

    fn remove_live(&mut self, live: &Arc<Live>) {
        if self.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, live)) {
            self.live = self.more_live.pop();
        } else {
            self.more_live.retain(|l| !Arc::ptr_eq(l, live));
        }
    }

    fn http_current(&self, now: Instant, ttl: Duration) -> Option<&HttpSide> {
        self.http
            .as_deref()
            .filter(|h| now.duration_since(h.seen) < ttl)
    }

    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.live.is_none() && self.http_current(now, ttl).is_none()
    }

    /// Every pair it holds, newest word per pair, through `f`.
    fn each_pair(&self, now: Instant, ttl: Duration, mut f: impl FnMut(&PairKey, &Hold)) {
        let mut seen: Vec<(PairKey, Hold)> = Vec::new();
        let mut add = |pair: &PairKey, hold: &Hold| match seen.iter_mut().find(|(p, _)| p == pair) {
            Some((_, h)) if h.heard < hold.heard => *h = hold.clone(),
            Some(_) => {}
            None => seen.push((pair.clone(), hold.clone())),
        };
        if let Some(http) = self.http_current(now, ttl) {
            http.pairs.0.iter().for_each(|(p, h)| add(p, h));
        }
        for live in self.lives() {
            lock(&live.state)
                .pairs
                .0
                .iter()
                .for_each(|(p, h)| add(p, h));
        }
        for (pair, hold) in &seen {
            f(pair, hold);
        }
    }

    fn has_pair(&self, now: Instant, ttl: Duration, pairs: &[PairKey]) -> bool {
        let mut found = false;
        self.each_pair(now, ttl, |p, _| found |= pairs.contains(p));
        found
    }
}

/// What a config sent to an instance was; the strings are the entry's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent<'a> {
    pub(crate) version: &'a Arc<str>,
    pub(crate) digest: &'a Arc<str>,
    pub(crate) rollout: Option<&'a Arc<str>>,
}

impl<'a> Sent<'a> {
    /// What serving `entry` sends.
    pub(crate) fn of(entry: &'a PairEntry) -> Sent<'a> {
        Sent {
            version: &entry.version,
            digest: &entry.resolved.digest,
            rollout: entry.rollout.as_ref(),
        }
    }
}

/// A config was sent (or, with the digest the instance holds, stood for what it holds:
/// a promoted candidate, the same values at a new commit): the version and rollout are
/// always the newest; the state starts over only for a new digest.
fn set_sent(hold: &mut Hold, sent: Sent<'_>) {
    hold.heard = Instant::now();
    if hold.version.as_deref() != Some(&**sent.version) {
        hold.version = Some(sent.version.clone());
    }
    if hold.rollout.as_deref() != sent.rollout.map(|r| &**r) {
        hold.rollout = sent.rollout.cloned();
    }
    if hold.digest.as_deref() == Some(&**sent.digest) {
        return;
    }
    hold.digest = Some(sent.digest.clone());
    hold.state = HoldState::Sent;
    hold.since = SystemTime::now();
}

/// Per pair, the digest published last and the one before: the only ones the metrics
/// name besides a rollout's candidate, so their series stay few.
#[derive(Debug, Clone, Default)]
struct Releases {
    current: Option<Arc<str>>,
    previous: Option<Arc<str>>,
}

/// Every instance known now.
#[derive(Debug)]
pub struct Instances {
    table: Mutex<HashMap<InstanceKey, Record>>,
    ttl: Duration,
    max: usize,
    /// `rejected` answers per pair since start (pairs a connection watched only).
    rejected: Mutex<HashMap<PairKey, u64>>,
    releases: Mutex<HashMap<PairKey, Releases>>,
}

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
        lock(&self.table)
    }

    /// The record of `who`, made if there is room; its labels are the newest said.
    fn record<'t>(
        &self,
        table: &'t mut HashMap<InstanceKey, Record>,
        who: &Identity,
    ) -> Option<&'t mut Record> {
        if !table.contains_key(&who.key) {
            if table.len() >= self.max {
                tracing::debug!(
                    max = self.max,
                    "instance table full: not listing a new instance (limits.max_instances)"
                );
                return None;
            }
            let record = Record {
                labels: who.labels.clone(),
                live: None,
                more_live: Vec::new(),
                http: None,
            };
            table.insert(who.key.clone(), record);
        }
        let record = table.get_mut(&who.key)?;
        if record.labels != who.labels {
            record.labels = who.labels.clone();
        }
        Some(record)
    }

    /// A WebSocket connection of `who` opened; it is listed until the guard drops.
    pub(crate) fn connect(self: &Arc<Self>, who: Identity, peer: SocketAddr) -> Connected {
        let mut table = self.table();
        let live = self.record(&mut table, &who).map(|record| {
            let now = SystemTime::now();
            let live = Arc::new(Live {
                state: Mutex::new(LiveState {
                    pairs: Holds::default(),
                    address: peer,
                    connected_since: now,
                    last_seen: now,
                }),
            });
            record.add_live(live.clone());
            live
        });
        Connected {
            instances: self.clone(),
            who,
            live,
        }
    }

    /// `who` fetched `pair` over HTTP from `ip` and was served `sent`.
    pub(crate) fn fetched(&self, who: &Identity, ip: &str, pair: &PairKey, sent: Sent<'_>) {
        let mut table = self.table();
        let Some(record) = self.record(&mut table, who) else {
            return;
        };
        let http = record.http.get_or_insert_with(|| {
            Box::new(HttpSide {
                address: ip.to_string(),
                seen: Instant::now(),
                last_seen: SystemTime::now(),
                pairs: Holds::default(),
            })
        });
        http.seen = Instant::now();
        http.last_seen = SystemTime::now();
        if http.address != ip {
            ip.clone_into(&mut http.address);
        }
        set_sent(http.pairs.hold(pair, || Arc::new(pair.clone())), sent);
    }

    /// Forget instances that have no connection and have not fetched within the TTL.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut table = self.table();
        table.retain(|_, r| !r.expired(now, ttl));
        for record in table.values_mut() {
            if record.http_current(now, ttl).is_none() {
                record.http = None;
            }
        }
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
                let (mut pairs, mut any) = (Vec::new(), false);
                record.each_pair(now, self.ttl, |pair, hold| {
                    any = true;
                    if visible(pair) {
                        pairs.push(pair_info(pair, hold));
                    }
                });
                // An instance with no pair at all is shown to those who see everything.
                if pairs.is_empty() && (any || !show_bare) {
                    return None;
                }
                pairs.sort_by(|a, b| (&a.service, &a.env).cmp(&(&b.service, &b.env)));
                Some(instance_info(key, record, now, self.ttl, pairs))
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id).then(a.address.cmp(&b.address)));
        out
    }

    /// Ids of the listed instances that read one of `pairs` and that `picks` takes.
    pub(crate) fn picked(
        &self,
        pairs: &[PairKey],
        picks: impl Fn(&str, &InstanceLabels) -> bool,
    ) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .table()
            .iter()
            .filter(|(_, r)| !r.expired(now, self.ttl))
            .filter(|(_, r)| r.has_pair(now, self.ttl, pairs))
            .filter(|(key, r)| picks(key.id(), &r.labels))
            .map(|(key, _)| key.id().to_string())
            .collect();
        out.sort();
        out
    }

    /// How many listed instances hold each pair (the console's overview).
    pub(crate) fn counts(&self) -> HashMap<PairKey, usize> {
        let now = Instant::now();
        let mut out: HashMap<PairKey, usize> = HashMap::new();
        for record in self.table().values().filter(|r| !r.expired(now, self.ttl)) {
            record.each_pair(now, self.ttl, |pair, _| {
                *out.entry(pair.clone()).or_default() += 1;
            });
        }
        out
    }

    /// An instance rejected a config of `pair`.
    pub(crate) fn count_rejected(&self, pair: &PairKey) {
        let mut rejected = lock(&self.rejected);
        if let Some(n) = rejected.get_mut(pair) {
            *n += 1;
        } else if rejected.len() < MAX_COUNTED_PAIRS {
            rejected.insert(pair.clone(), 1);
        }
    }

    /// `rejected` answers per pair since start.
    pub(crate) fn rejected_counts(&self) -> Vec<(PairKey, u64)> {
        let mut out: Vec<_> = lock(&self.rejected)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        out.sort();
        out
    }

    /// `digest` was published for `pair` (the refresh loop, once per change).
    pub(crate) fn note_release(&self, pair: &PairKey, digest: &Arc<str>) {
        let mut releases = lock(&self.releases);
        if !releases.contains_key(pair) && releases.len() >= MAX_COUNTED_PAIRS {
            return;
        }
        let r = releases.entry(pair.clone()).or_default();
        if r.current.as_deref() != Some(&**digest) {
            r.previous = r.current.replace(digest.clone());
        }
    }

    /// Per pair, how many listed instances hold each release: a digest `named` names
    /// (the pair's current config, its rollout's candidate) or the one published before
    /// the current one, by digest; any other as `"other"`. Sorted.
    pub(crate) fn release_counts(
        &self,
        named: impl Fn(&PairKey, &str) -> bool,
    ) -> Vec<(PairKey, String, u64)> {
        let releases = lock(&self.releases).clone();
        let now = Instant::now();
        let mut counts: HashMap<(PairKey, String), u64> = HashMap::new();
        for record in self.table().values().filter(|r| !r.expired(now, self.ttl)) {
            record.each_pair(now, self.ttl, |pair, hold| {
                let Some(digest) = &hold.digest else { return };
                let previous = releases
                    .get(pair)
                    .is_some_and(|r| r.previous.as_ref() == Some(digest));
                let which = if previous || named(pair, digest) {
                    digest.to_string()
                } else {
                    "other".to_string()
                };
                *counts.entry((pair.clone(), which)).or_default() += 1;
            });
        }
        let mut out: Vec<_> = counts.into_iter().map(|((p, d), n)| (p, d, n)).collect();
        out.sort();
        out
    }
}

fn pair_info(pair: &PairKey, hold: &Hold) -> InstancePair {
    let (state, error) = match &hold.state {
        HoldState::Sent => ("sent", None),
        HoldState::Applied => ("applied", None),
        HoldState::Rejected(e) => ("rejected", Some(e.to_string())),
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

fn instance_info(
    key: &InstanceKey,
    record: &Record,
    now: Instant,
    ttl: Duration,
    pairs: Vec<InstancePair>,
) -> InstanceInfo {
    let mut address = None;
    let mut connected_since: Option<SystemTime> = None;
    let mut last_seen: Option<SystemTime> = None;
    for live in record.lives() {
        let state = lock(&live.state);
        address.get_or_insert_with(|| state.address.to_string());
        connected_since =
            Some(connected_since.map_or(state.connected_since, |t| t.min(state.connected_since)));
        last_seen = Some(last_seen.map_or(state.last_seen, |t| t.max(state.last_seen)));
    }
    if let Some(http) = record.http_current(now, ttl) {
        address.get_or_insert_with(|| http.address.clone());
        last_seen = Some(last_seen.map_or(http.last_seen, |t| t.max(http.last_seen)));
    }
    InstanceInfo {
        id: key.id().to_string(),
        anonymous: matches!(key, InstanceKey::Anonymous(_)),
        labels: record.labels.to_map(),
        address: address.unwrap_or_default(),
        transport: if record.live.is_none() {
            "http"
        } else {
            "websocket"
        }
        .to_string(),
        connected_since: connected_since.map(rfc3339_of),
        last_seen: rfc3339_of(last_seen.unwrap_or_else(SystemTime::now)),
        pairs,
    }
}

/// A WebSocket connection's place in the table; leaving it (drop) ends the listing
/// unless the instance has another connection or a recent HTTP fetch. Its methods take
/// only this connection's own lock.
#[derive(Debug)]
pub(crate) struct Connected {
    instances: Arc<Instances>,
    who: Identity,
    /// `None`: the table was full, and this connection is not listed.
    live: Option<Arc<Live>>,
}

impl Connected {
    /// Who this connection is.
    pub(crate) fn identity(&self) -> &Identity {
        &self.who
    }

    fn with_state(&self, f: impl FnOnce(&mut LiveState)) {
        if let Some(live) = &self.live {
            let mut state = lock(&live.state);
            state.last_seen = SystemTime::now();
            f(&mut state);
        }
    }

    /// `sent` was queued to the instance for `pair` (the hub's key).
    pub(crate) fn sent(&self, pair: &Arc<PairKey>, sent: Sent<'_>) {
        self.with_state(|s| set_sent(s.pairs.hold(pair, || pair.clone()), sent));
    }

    /// The instance subscribed holding `digest`: it has applied it.
    pub(crate) fn holds(&self, pair: &Arc<PairKey>, digest: &str) {
        self.with_state(|s| {
            let hold = s.pairs.hold(pair, || pair.clone());
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
        self.with_state(|s| {
            let Some(hold) = s.pairs.get_mut(pair) else {
                return;
            };
            if hold.digest.as_deref() != Some(digest) {
                return;
            }
            let state = match outcome {
                Ok(()) => HoldState::Applied,
                Err(e) => HoldState::Rejected(shown_at_most(e, MAX_ERROR_CHARS).into()),
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
        self.with_state(|s| s.pairs.remove(pair));
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        let mut table = self.instances.table();
        let now = Instant::now();
        let ttl = self.instances.ttl;
        let gone = table.get_mut(&self.who.key).is_some_and(|r| {
            r.remove_live(&live);
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
            labels: InstanceLabels::new(&Labels::from([("zone".to_string(), "eu-1a".to_string())])),
        }
    }

    fn pair() -> PairKey {
        ("orders".into(), "prod".into())
    }

    fn ids() -> (Arc<str>, Arc<str>) {
        ("c1".into(), "d1".into())
    }

    fn sent(ids: &(Arc<str>, Arc<str>)) -> Sent<'_> {
        Sent {
            version: &ids.0,
            digest: &ids.1,
            rollout: None,
        }
    }

    #[test]
    fn labels_are_compact_and_searchable() {
        let labels = Labels::from([
            ("zone".to_string(), "eu-1a".to_string()),
            ("canary".to_string(), "true".to_string()),
        ]);
        let compact = InstanceLabels::new(&labels);
        assert_eq!(compact.get("zone"), Some("eu-1a"));
        assert_eq!(compact.get("canary"), Some("true"));
        assert_eq!(compact.get("version"), None);
        assert_eq!(compact.to_map(), labels);
        assert_eq!(
            InstanceLabels::new(&Labels::new()),
            InstanceLabels::default()
        );
    }

    #[test]
    fn a_connection_is_listed_while_open_and_records_answers() {
        let instances = Arc::new(Instances::default());
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let conn = instances.connect(named("a"), peer);
        let ids = ids();
        let shared = Arc::new(pair());
        conn.sent(&shared, sent(&ids));
        conn.answered(&pair(), "d0", Err("stale")); // not the digest sent: ignored
        let list = instances.list(|_| true, true);
        assert_eq!(list[0].pairs[0].state, "sent");
        conn.answered(&pair(), "d1", Err("pool: invalid type\u{1b}"));
        let list = instances.list(|_| true, true);
        assert_eq!(list[0].transport, "websocket");
        assert_eq!(list[0].address, "127.0.0.1:4000");
        assert_eq!(list[0].labels["zone"], "eu-1a");
        assert_eq!(list[0].pairs[0].state, "rejected");
        let error = list[0].pairs[0].error.clone().expect("error");
        assert!(!error.contains('\u{1b}'), "{error}");
        let counts = instances.release_counts(|_, d| d == "d1");
        assert_eq!(counts, vec![(pair(), "d1".to_string(), 1)]);
        let counts = instances.release_counts(|_, _| false);
        assert_eq!(counts, vec![(pair(), "other".to_string(), 1)]);
        instances.note_release(&pair(), &"d1".into());
        instances.note_release(&pair(), &"d2".into());
        let counts = instances.release_counts(|_, _| false);
        assert_eq!(
            counts,
            vec![(pair(), "d1".to_string(), 1)],
            "the previous release"
        );
        assert!(instances.list(|_| false, false).is_empty(), "scoped out");
        // The record shares the frame's strings.
        let held = lock(&conn.live.as_ref().expect("listed").state).pairs.0[0]
            .1
            .clone();
        assert!(Arc::ptr_eq(held.digest.as_ref().expect("digest"), &ids.1));
        drop(conn);
        assert!(instances.list(|_| true, true).is_empty());
    }

    #[test]
    fn an_instance_with_two_connections_stays_until_both_close() {
        let instances = Arc::new(Instances::default());
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:4000".parse().expect("addr"),
            "127.0.0.1:4001".parse().expect("addr"),
        );
        let first = instances.connect(named("a"), a);
        let second = instances.connect(named("a"), b);
        let ids = ids();
        second.sent(&Arc::new(pair()), sent(&ids));
        assert_eq!(instances.list(|_| true, true).len(), 1, "one instance");
        drop(first);
        let list = instances.list(|_| true, true);
        assert_eq!(list[0].transport, "websocket");
        assert_eq!(list[0].pairs.len(), 1, "the second connection's pair");
        drop(second);
        assert!(instances.list(|_| true, true).is_empty());
    }

    #[test]
    fn http_fetches_expire_and_the_table_is_bounded() {
        let ids = ids();
        let instances = Instances::new(Duration::ZERO, 2);
        for id in ["a", "b", "c"] {
            instances.fetched(&named(id), "10.0.0.1", &pair(), sent(&ids));
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
            instances.fetched(&who, "10.0.0.1", &pair, sent(&ids));
        }
        assert_eq!(
            instances.list(|_| true, true)[0].pairs.len(),
            MAX_PAIRS_PER_INSTANCE
        );
    }
}
