//! History and diff of a pair's *resolved* config, computed from git: a commit is in a
//! pair's history only if it changed what that pair resolves to, not merely touched a file.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confhub_client::wire::{DiffResponse, HistoryEntry, ValueChange};
use git2::{Oid, Tree};
use lru::LruCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::auth::{Denied, Principal};
use crate::errors::SourceError;
use crate::resolve::catalog::{Access, Catalog, MANIFEST};
use crate::resolve::flatten;
use crate::resolve::parse::EXTENSIONS;
use crate::source::git::GitSource;
use crate::store::entry::PairEntry;

/// How many commits of the branch history are scanned at most.
pub(crate) const MAX_SCAN: usize = 20_000;

/// What is shown instead of a value that is encrypted in the repository.
pub(crate) const MASK: &str = "******";

/// Flat key → resolved value.
pub fn flat(entry: &PairEntry) -> BTreeMap<String, Value> {
    flatten(&entry.resolved.values)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect()
}

/// `v`, or the mask if the value at `key` is or embeds a decrypted secret of `entry`
/// (or, where ciphers were left undecrypted, is ciphertext).
fn masked(entry: &PairEntry, key: &str, v: &Value) -> Value {
    let secret = entry.resolved.holds_secret(key)
        || v.as_str()
            .is_some_and(|s| s.starts_with(crate::crypto::PREFIX));
    if secret {
        Value::String(MASK.into())
    } else {
        v.clone()
    }
}

/// Key-level differences between two flat configs.
pub(crate) fn diff_flat(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> (
    Map<String, Value>,
    Map<String, Value>,
    BTreeMap<String, ValueChange>,
) {
    let mut added = Map::new();
    let mut removed = Map::new();
    let mut changed = BTreeMap::new();
    for (k, v) in new {
        match old.get(k) {
            None => {
                added.insert(k.clone(), v.clone());
            }
            Some(o) if o != v => {
                changed.insert(
                    k.clone(),
                    ValueChange {
                        old: o.clone(),
                        new: v.clone(),
                    },
                );
            }
            Some(_) => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            removed.insert(k.clone(), v.clone());
        }
    }
    (added, removed, changed)
}

/// The diff response between two resolved entries of a pair.
pub fn diff(from_label: &str, to_label: &str, from: &PairEntry, to: &PairEntry) -> DiffResponse {
    // Compared in clear (a rotated password is a change), shown masked.
    let (added, removed, changed) = diff_flat(&flat(from), &flat(to));
    let added = added
        .into_iter()
        .map(|(k, v)| {
            let v = masked(to, &k, &v);
            (k, v)
        })
        .collect();
    let removed = removed
        .into_iter()
        .map(|(k, v)| {
            let v = masked(from, &k, &v);
            (k, v)
        })
        .collect();
    let changed = changed
        .into_iter()
        .map(|(k, c)| {
            let change = ValueChange {
                old: masked(from, &k, &c.old),
                new: masked(to, &k, &c.new),
            };
            (k, change)
        })
        .collect();
    DiffResponse {
        service: to.service.clone(),
        env: to.env_string(),
        from: from_label.to_string(),
        to: to_label.to_string(),
        from_version: from.version.to_string(),
        to_version: to.version.to_string(),
        added,
        removed,
        changed,
    }
}

/// Blob ids of every file a pair's resolution can depend on at one commit; equal
/// fingerprints mean equal resolved configs, so only commits that change it are resolved.
fn fingerprint(
    tree: &Tree<'_>,
    prefix: &str,
    service: &str,
    envs: &[String],
) -> Vec<(String, Oid)> {
    let mut bases = vec![service.to_string(), "application".to_string()];
    for env in envs {
        bases.push(format!("{service}-{env}"));
        bases.push(format!("application-{env}"));
    }
    let mut paths = vec![MANIFEST.to_string()];
    for base in &bases {
        for ext in EXTENSIONS {
            paths.push(format!("{base}.{ext}"));
            paths.push(format!("{service}/{base}.{ext}"));
        }
    }
    let mut out: Vec<(String, Oid)> = paths
        .into_iter()
        .filter_map(|p| {
            let id = tree
                .get_path(std::path::Path::new(&format!("{prefix}{p}")))
                .ok()?
                .id();
            Some((p, id))
        })
        .collect();
    // Schemas live anywhere; a change to the schemas folder must count too.
    if let Ok(entry) = tree.get_path(std::path::Path::new(&format!("{prefix}schemas"))) {
        out.push(("schemas/".into(), entry.id()));
    }
    out
}

/// Pairs whose history is kept; the least recently asked is dropped first.
pub(crate) const MAX_PAIRS: usize = 256;
/// Entries kept per pair, the oldest dropped first: the most `?limit=` can ask for.
pub(crate) const MAX_ENTRIES: usize = 1000;
/// Bytes kept per pair (its entries and the key digests of its last good config); the
/// oldest entries are dropped first.
pub(crate) const MAX_PAIR_BYTES: usize = 1024 * 1024;
/// History scans and diffs from git that run at once: each takes a core.
pub(crate) const PERMITS: usize = 2;
/// Distinct scope footprints remembered per pair. Past it the pair's history is shown
/// to admins only: forgetting one could show a token what a file out of its scope did.
const MAX_ACCESSES: usize = 64;

/// How much the history cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Pairs kept.
    pub pairs: usize,
    /// Entries kept per pair.
    pub entries: usize,
    /// Bytes kept per pair (estimated from the lengths of what is stored).
    pub bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            pairs: MAX_PAIRS,
            entries: MAX_ENTRIES,
            bytes: MAX_PAIR_BYTES,
        }
    }
}

/// A digest of one resolved value: history compares values and shows only key names,
/// so the cache never holds a value (nor a decrypted secret).
type ValueId = [u8; 16];

fn value_id(v: &Value) -> ValueId {
    // Serializing a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Estimated heap and inline bytes of one stored key digest (map node overhead included).
fn value_id_bytes(key: &str) -> usize {
    key.len() + std::mem::size_of::<String>() + std::mem::size_of::<ValueId>() + 16
}

fn entry_bytes(e: &HistoryEntry) -> usize {
    std::mem::size_of::<HistoryEntry>()
        + e.sha.len()
        + e.author.len()
        + e.email.len()
        + e.time.len()
        + e.message.len()
        + e.changed_keys
            .iter()
            .map(|k| k.len() + std::mem::size_of::<String>())
            .sum::<usize>()
}

/// What is known of one pair's history, the same for every caller: scopes are checked
/// per request against the accesses recorded here ([`Answer::for_principal`]).
#[derive(Debug, Default)]
pub struct PairHistory {
    /// The newest first-parent commit scanned; the next scan starts after it.
    scanned_to: Option<Oid>,
    last_print: Option<Vec<(String, Oid)>>,
    last_good: Option<BTreeMap<String, ValueId>>,
    last_good_bytes: usize,
    /// Oldest first.
    entries: VecDeque<HistoryEntry>,
    entry_bytes: usize,
    /// What the pair read at every commit that made an entry, dropped entries included
    /// (the next entry's keys are relative to a dropped one's config).
    accesses: Vec<Access>,
    admin_only: bool,
    branch: String,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every commit up to the head is scanned.
    Done,
    /// The time ran out with `left` commits still to scan; what was scanned is kept.
    Unfinished {
        /// Commits not scanned yet.
        left: usize,
    },
}

/// A pair's history as scanned, before the scope check.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The branch scanned.
    pub branch: String,
    entries: Vec<HistoryEntry>,
    accesses: Vec<Access>,
    admin_only: bool,
}

impl Answer {
    /// The entries, if `principal` may read everything the pair read at every commit of
    /// its history. Refused as a whole, not filtered: leaving commits out would show
    /// which commits touched a file out of the token's scope.
    pub(crate) fn for_principal(self, principal: &Principal) -> Result<Vec<HistoryEntry>, Denied> {
        for access in &self.accesses {
            principal.may_read(access).map_err(|d| Denied {
                because: Some(match d.because {
                    Some(why) => {
                        format!("one of its past versions {}", why.trim_start_matches("it "))
                    }
                    None => "one of its past versions is out of scope".to_string(),
                }),
                ..d
            })?;
        }
        if self.admin_only && !principal.is_admin() {
            return Err(Denied {
                pair: self
                    .accesses
                    .first()
                    .map(|a| format!("`{}/{}`'s history", a.service, a.envs.join(",")))
                    .unwrap_or_default(),
                because: Some(format!(
                    "its past versions read files of more than {MAX_ACCESSES} different sets of owners; only an admin may read it"
                )),
            });
        }
        Ok(self.entries)
    }
}

impl PairHistory {
    /// Scan the first-parent commits of the tracked branch not scanned yet, oldest first,
    /// until the head or `deadline` (at least one commit per call, so repeated calls
    /// finish). When the head does not descend from the commit scanned last (a force
    /// push), the history is rebuilt from scratch. At most [`MAX_SCAN`] commits back from
    /// the head. Blocking.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &mut self,
        git: &GitSource,
        uri: &Arc<str>,
        service: &str,
        envs: &[String],
        bounds: &Bounds,
        deadline: Instant,
        scanned: &AtomicU64,
    ) -> Result<Scan, SourceError> {
        git.with_repo(|repo| {
            // A deleted branch still has the history of the commit served for it.
            let (branch, head) = git.serving_commit(repo, None)?;
            let (pending, continues) = self.pending(repo, head)?;
            if !continues {
                tracing::info!(%service, env = %envs.join(","), %head, "the branch was rewritten; rebuilding the pair's history");
                *self = PairHistory::default();
            }
            self.branch = branch;
            let walk = Walk {
                git,
                repo,
                uri,
                prefix: git.search_prefix(),
                service,
                envs,
                bounds,
            };
            for (i, &oid) in pending.iter().enumerate() {
                if i > 0 && Instant::now() >= deadline {
                    return Ok(Scan::Unfinished {
                        left: pending.len() - i,
                    });
                }
                self.step(&walk, oid)?;
                self.scanned_to = Some(oid);
                scanned.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Scan::Done)
        })
    }

    /// The first-parent commits from `head` back to the one scanned last, oldest first,
    /// and whether they continue what was scanned: false when the commit scanned last
    /// is not among them (a force push), true when nothing was scanned yet.
    fn pending(&self, repo: &git2::Repository, head: Oid) -> Result<(Vec<Oid>, bool), SourceError> {
        let mut pending = Vec::new();
        let mut next = Some(head);
        let mut continues = self.scanned_to.is_none();
        while let Some(oid) = next {
            if Some(oid) == self.scanned_to {
                continues = true;
                break;
            }
            if pending.len() == MAX_SCAN {
                break;
            }
            pending.push(oid);
            next = repo
                .find_commit(oid)
                .map_err(SourceError::git(format!("reading {oid}")))?
                .parent_ids()
                .next();
        }
        pending.reverse();
        Ok((pending, continues))
    }

    /// Take in one commit. Fails before changing anything, so a failed commit is
    /// scanned again next time.
    fn step(&mut self, walk: &Walk<'_>, oid: Oid) -> Result<(), SourceError> {
        let commit = walk
            .repo
            .find_commit(oid)
            .map_err(SourceError::git(format!("reading {oid}")))?;
        let tree = commit
            .tree()
            .map_err(SourceError::git(format!("reading {oid}")))?;
        let print = walk.fingerprint(&tree);
        if self.last_print.as_ref() == Some(&print) {
            return Ok(());
        }
        let mut view = walk.git.view(walk.repo, oid)?;
        self.last_print = Some(print);
        // A commit that does not resolve was never served: it changes nothing.
        let Some(entry) = walk.resolve(&mut view, &self.branch) else {
            return Ok(());
        };
        let values = value_ids(&entry);
        let keys = changed_keys(self.last_good.as_ref(), &values);
        if !keys.is_empty() {
            self.record(history_entry(&commit, keys), &entry.access);
        }
        self.last_good_bytes = values.keys().map(|k| value_id_bytes(k)).sum();
        self.last_good = Some(values);
        self.trim(walk.bounds);
        Ok(())
    }

    fn record(&mut self, found: HistoryEntry, access: &Access) {
        if !self.accesses.contains(access) {
            if self.accesses.len() < MAX_ACCESSES {
                self.accesses.push(access.clone());
            } else {
                self.admin_only = true;
            }
        }
        self.entry_bytes += entry_bytes(&found);
        self.entries.push_back(found);
    }

    /// Drop the oldest entries beyond the bounds (the newest one always stays).
    fn trim(&mut self, bounds: &Bounds) {
        while self.entries.len() > bounds.entries.max(1)
            || (self.entries.len() > 1 && self.bytes() > bounds.bytes)
        {
            if let Some(old) = self.entries.pop_front() {
                self.entry_bytes -= entry_bytes(&old);
            }
        }
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.entry_bytes + self.last_good_bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries held?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest `limit` entries, newest first, with what a caller must be allowed to read.
    pub fn answer(&self, limit: usize) -> Answer {
        Answer {
            branch: self.branch.clone(),
            entries: self.entries.iter().rev().take(limit).cloned().collect(),
            accesses: self.accesses.clone(),
            admin_only: self.admin_only,
        }
    }
}

/// What every commit of one scan is read with.
struct Walk<'a> {
    git: &'a GitSource,
    repo: &'a git2::Repository,
    uri: &'a Arc<str>,
    prefix: String,
    service: &'a str,
    envs: &'a [String],
    bounds: &'a Bounds,
}

impl Walk<'_> {
    /// What the pair's resolution can depend on at `tree`. Spring search paths read
    /// folders named after any app or profile asked: the whole tree is the fingerprint
    /// there (every commit is resolved).
    fn fingerprint(&self, tree: &Tree<'_>) -> Vec<(String, Oid)> {
        match self.git.search() {
            crate::source::SearchPath::Spring(_) => vec![(String::new(), tree.id())],
            _ => fingerprint(tree, &self.prefix, self.service, self.envs),
        }
    }

    /// The pair as it would have been served from `view`, if it resolves.
    fn resolve(&self, view: &mut crate::source::View<'_>, branch: &str) -> Option<PairEntry> {
        let catalog = Catalog::of(view).ok()?;
        let entry =
            PairEntry::build(view, &catalog, self.uri, branch, self.service, self.envs).ok()?;
        (entry.placeholder_error.is_none() && entry.cipher_error.is_none()).then_some(entry)
    }
}

/// The digest of every resolved value of `entry` (none for an unknown service).
fn value_ids(entry: &PairEntry) -> BTreeMap<String, ValueId> {
    if !entry.service_known {
        return BTreeMap::new();
    }
    flatten(&entry.resolved.values)
        .into_iter()
        .map(|(k, v)| (k, value_id(v)))
        .collect()
}

/// The history entry of `commit`, which changed `keys`.
fn history_entry(commit: &git2::Commit<'_>, keys: Vec<String>) -> HistoryEntry {
    let author = commit.author();
    HistoryEntry {
        sha: commit.id().to_string(),
        author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        time: crate::timefmt::rfc3339(commit.time().seconds()),
        message: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        changed_keys: keys,
    }
}

/// Keys added, removed or changed, sorted.
fn changed_keys(
    old: Option<&BTreeMap<String, ValueId>>,
    new: &BTreeMap<String, ValueId>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let old = old.unwrap_or(&empty);
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(old.keys().filter(|k| !new.contains_key(*k)).cloned())
        .collect();
    keys.sort();
    keys
}

/// Commits of the tracked branch that changed the resolved config of (service, envs),
/// newest first, at most `limit`, scanned to the head without a time limit and shown
/// whatever they read (`confhub history --repo`: whoever can read the repository may).
/// Blocking.
pub fn history(
    git: &GitSource,
    uri: &Arc<str>,
    service: &str,
    envs: &[String],
    limit: usize,
) -> Result<(String, Vec<HistoryEntry>), SourceError> {
    let bounds = Bounds {
        pairs: 1,
        entries: limit.max(1),
        bytes: usize::MAX,
    };
    let mut pair = PairHistory::default();
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    pair.scan(git, uri, service, envs, &bounds, far, &AtomicU64::new(0))?;
    let answer = pair.answer(limit);
    Ok((answer.branch, answer.entries))
}

type PairKey = (String, Vec<String>);

/// Pair histories, kept between requests so that a request scans only the commits
/// pushed since the last one, plus the permits that bound how many scans run at once.
#[derive(Debug)]
pub struct HistoryCache {
    pairs: Mutex<LruCache<PairKey, Arc<tokio::sync::Mutex<PairHistory>>>>,
    permits: Arc<Semaphore>,
    bounds: Bounds,
    budget: Duration,
    scanned: AtomicU64,
}

impl Default for HistoryCache {
    fn default() -> Self {
        HistoryCache::new(crate::settings::HttpLimits::default().request_timeout)
    }
}

impl HistoryCache {
    /// A cache with the default bounds for a server whose requests must be answered
    /// within `request_timeout`.
    pub fn new(request_timeout: Duration) -> HistoryCache {
        HistoryCache::with_bounds(Bounds::default(), request_timeout)
    }

    /// A cache with `bounds`.
    pub(crate) fn with_bounds(bounds: Bounds, request_timeout: Duration) -> HistoryCache {
        let cap = NonZeroUsize::new(bounds.pairs.max(1)).unwrap_or(NonZeroUsize::MIN);
        HistoryCache {
            pairs: Mutex::new(LruCache::new(cap)),
            permits: Arc::new(Semaphore::new(PERMITS)),
            bounds,
            // Three quarters of the request timeout, so that the 503 saying how far the
            // scan got is sent before the timeout answers 408.
            budget: request_timeout.saturating_mul(3) / 4,
            scanned: AtomicU64::new(0),
        }
    }

    /// The history of (service, envs), empty the first time.
    pub fn pair(&self, service: &str, envs: &[String]) -> Arc<tokio::sync::Mutex<PairHistory>> {
        let mut pairs = crate::sync::lock(&self.pairs);
        let key = (service.to_string(), envs.to_vec());
        pairs.get_or_insert(key, Default::default).clone()
    }

    /// Pairs held.
    pub(crate) fn pairs_len(&self) -> usize {
        crate::sync::lock(&self.pairs).len()
    }

    /// The permits every history scan and diff takes.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// What is kept.
    pub(crate) fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// How long one request may wait and scan.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Commits scanned since the start, every pair counted.
    pub fn commits_scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    /// Where scans count the commits they take in.
    pub(crate) fn scanned_counter(&self) -> &AtomicU64 {
        &self.scanned
    }
}

/// `confhub diff --repo`: the diff of a pair between two labels of a local repository. Blocking.
pub fn diff_repo(
    repo: &std::path::Path,
    search_path: Option<&str>,
    service: &str,
    env: &str,
    from: &str,
    to: Option<&str>,
) -> Result<DiffResponse, crate::errors::DiffError> {
    use crate::errors::DiffError;
    let envs = crate::names::parse_envs(env)?;
    let from = crate::names::parse_label(from)?;
    let to = to.map(crate::names::parse_label).transpose()?;
    let mut settings = crate::settings::Settings::new(repo.display().to_string());
    settings.search_path = search_path.map(str::to_string);
    let git = GitSource::open(&settings)?;
    let uri: Arc<str> = git.uri().into();
    let entries = git.with_repo(|r| {
        let to_label = match &to {
            Some(t) => t.clone(),
            None => git.tracked(r)?.0,
        };
        let mut out = Vec::new();
        for label in [from.as_str(), to_label.as_str()] {
            let Some(oid) = git.resolve_label(r, label)? else {
                return Ok(Err(DiffError::UnknownLabel(label.to_string())));
            };
            let mut view = git.view(r, oid)?;
            let entry = Catalog::of(&mut view).and_then(|catalog| {
                PairEntry::build(&mut view, &catalog, &uri, label, service, &envs)
            });
            match entry {
                Ok(PairEntry {
                    placeholder_error: Some(e),
                    ..
                })
                | Ok(PairEntry {
                    cipher_error: Some(e),
                    ..
                })
                | Err(e) => return Ok(Err(DiffError::Config(e))),
                Ok(e) => out.push(e),
            }
        }
        Ok(Ok((out, to_label)))
    })??;
    let (entries, to_label) = entries;
    Ok(diff(&from, &to_label, &entries[0], &entries[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(i: usize, message_len: usize) -> HistoryEntry {
        HistoryEntry {
            sha: format!("{i:040}"),
            author: "a".into(),
            email: "a@example.invalid".into(),
            time: "2026-01-01T00:00:00Z".into(),
            message: "m".repeat(message_len),
            changed_keys: vec!["pool".into()],
        }
    }

    fn own() -> Access {
        Access::own("orders", &["prod".to_string()])
    }

    fn principal(scope: &str) -> Principal {
        let auth = crate::auth::Auth::new(&[crate::auth::TokenConfig {
            name: "t".into(),
            sha256: crate::auth::token_hash("tok"),
            scopes: vec![scope.into()],
        }])
        .expect("token");
        auth.principal_for(Some("tok")).expect("principal")
    }

    #[test]
    fn the_cache_keeps_at_most_its_pairs_least_recently_asked_dropped() {
        let bounds = Bounds {
            pairs: 2,
            ..Bounds::default()
        };
        let cache = HistoryCache::with_bounds(bounds, Duration::from_secs(4));
        let env = |e: &str| vec![e.to_string()];
        let a = cache.pair("orders", &env("prod"));
        let b = cache.pair("orders", &env("dev"));
        assert!(Arc::ptr_eq(&a, &cache.pair("orders", &env("prod"))));
        let _c = cache.pair("payments", &env("prod"));
        assert_eq!(cache.pairs_len(), 2);
        assert!(Arc::ptr_eq(&a, &cache.pair("orders", &env("prod"))));
        assert!(!Arc::ptr_eq(&b, &cache.pair("orders", &env("dev"))));
        assert_eq!(cache.budget(), Duration::from_secs(3));
    }

    #[test]
    fn a_pair_keeps_at_most_its_entries_the_newest() {
        let bounds = Bounds {
            entries: 3,
            ..Bounds::default()
        };
        let mut pair = PairHistory::default();
        for i in 0..10 {
            pair.record(found(i, 10), &own());
            pair.trim(&bounds);
        }
        assert_eq!(pair.len(), 3);
        let answer = pair.answer(1000);
        let shas: Vec<String> = answer.entries.iter().map(|e| e.sha.clone()).collect();
        assert_eq!(shas, [found(9, 0).sha, found(8, 0).sha, found(7, 0).sha]);
        assert_eq!(pair.answer(1).entries.len(), 1);
        let held: usize = pair.entries.iter().map(entry_bytes).sum();
        assert_eq!(pair.bytes(), held, "dropped entries no longer counted");
    }

    #[test]
    fn a_pair_keeps_at_most_its_bytes() {
        let bounds = Bounds {
            bytes: 5_000,
            ..Bounds::default()
        };
        let mut pair = PairHistory::default();
        for i in 0..20 {
            pair.record(found(i, 1_000), &own());
            pair.trim(&bounds);
            assert!(pair.bytes() <= 5_000, "{} bytes", pair.bytes());
        }
        assert!((3..=4).contains(&pair.len()), "{} entries", pair.len());
        // The last good config's key digests count too.
        pair.last_good_bytes = 3_000;
        pair.trim(&bounds);
        assert!(pair.bytes() <= 5_000);
        assert!(pair.len() < 3);
        // One entry bigger than the bound is still shown rather than an empty history.
        pair.record(found(99, 10_000), &own());
        pair.trim(&bounds);
        assert_eq!(pair.len(), 1);
        assert_eq!(pair.answer(5).entries[0].sha, found(99, 0).sha);
    }

    #[test]
    fn every_recorded_access_is_checked_and_too_many_make_it_admin_only() {
        let mut pair = PairHistory::default();
        pair.record(found(0, 1), &own());
        let orders = principal("read:orders/*");
        assert!(pair.answer(5).for_principal(&orders).is_ok());
        let mut foreign = own();
        foreign.foreign.push((
            crate::resolve::catalog::Owner {
                service: "payments".into(),
                env: Some("prod".into()),
            },
            "payments-prod.yml".into(),
        ));
        pair.record(found(1, 1), &foreign);
        // The entry that read the file is dropped: its access is not forgotten.
        pair.trim(&Bounds {
            entries: 1,
            ..Bounds::default()
        });
        pair.record(found(2, 1), &own());
        let denied = pair.answer(5).for_principal(&orders).unwrap_err();
        assert!(
            denied.message("t").contains("payments-prod.yml"),
            "{denied:?}"
        );
        assert!(pair.answer(5).for_principal(&principal("read:*/*")).is_ok());

        let mut pair = PairHistory::default();
        for i in 0..=MAX_ACCESSES {
            let mut access = own();
            access.foreign.push((
                crate::resolve::catalog::Owner {
                    service: format!("orders{i}"),
                    env: None,
                },
                format!("orders{i}.yml"),
            ));
            pair.record(found(i, 1), &access);
        }
        assert_eq!(pair.accesses.len(), MAX_ACCESSES);
        assert!(pair
            .answer(5)
            .for_principal(&principal("read:*/*"))
            .is_err());
        assert!(pair.answer(5).for_principal(&principal("admin")).is_ok());
    }

    #[test]
    fn changed_keys_compare_value_digests() {
        let ids = |pairs: &[(&str, Value)]| -> BTreeMap<String, ValueId> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), value_id(v)))
                .collect()
        };
        let old = ids(&[("a", Value::from(1)), ("b", Value::from("x"))]);
        let new = ids(&[("b", Value::from("y")), ("c", Value::from(1))]);
        assert_eq!(changed_keys(Some(&old), &new), ["a", "b", "c"]);
        assert!(changed_keys(Some(&old), &old).is_empty());
        assert_eq!(changed_keys(None, &old), ["a", "b"]);
        // A number and the string of it are different values.
        let s = ids(&[("a", Value::from("1"))]);
        assert_eq!(changed_keys(Some(&old), &s), ["a", "b"]);
    }

    #[test]
    fn diffs_flat_keys() {
        let old: BTreeMap<String, Value> =
            [("a".into(), Value::from(1)), ("b".into(), Value::from(2))].into();
        let new: BTreeMap<String, Value> =
            [("b".into(), Value::from(3)), ("c".into(), Value::from(4))].into();
        let (added, removed, changed) = diff_flat(&old, &new);
        assert_eq!(added.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(removed.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            changed["b"],
            ValueChange {
                old: Value::from(2),
                new: Value::from(3)
            }
        );
    }
}
