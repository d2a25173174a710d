//! The store: the source, the current snapshot of the tracked branch, and a bounded
//! cache of pairs resolved at other labels. Every request for config goes through
//! [`Store::lookup`]; every new version goes through [`Store::refresh`].

pub mod entry;
pub(crate) mod render;
pub(crate) mod rollouts;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use confhub_client::wire::{ErrorBody, PairError};
use lru::LruCache;

use crate::auth::Principal;
use crate::errors::{ConfigError, ErrorKind, LookupError, SourceError};
use crate::resolve::catalog::{pair_files, Access, Catalog};
use crate::settings::{RecoverySettings, Settings};
use crate::source::dir::DirSource;
use crate::source::git::{GitSource, Integrity};
use crate::source::{Ciphers, View};
use crate::store::entry::{Body, PairEntry};
use crate::store::rollouts::Rollouts;
use crate::store::snapshot::{PairState, Snapshot};

pub(crate) mod resource;

/// Label reported for `--dev` directories.
pub(crate) const DEV_LABEL: &str = "dev";

/// Where config comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A git repository.
    Git(GitSource),
    /// A plain directory (`--dev`).
    Dir(DirSource),
}

type CacheKey = (String, String, String, String);

/// A pair resolved at some label, success or failure, with whose files it read.
#[derive(Debug)]
struct Resolution {
    access: Access,
    result: Result<Arc<PairEntry>, ConfigError>,
}

/// Pairs resolved at labels other than the tracked version, bounded by count and by
/// an estimate of the bytes each holds (its resolved values, kept as values, merged and
/// rendered bodies, plus the file texts it keeps): many large configs at many labels or
/// env spellings cannot fill memory.
#[derive(Debug)]
struct LabelCache {
    lru: LruCache<CacheKey, Arc<Resolution>>,
    bytes: usize,
    max_bytes: usize,
}

impl LabelCache {
    fn new(capacity: NonZeroUsize, max_bytes: usize) -> LabelCache {
        LabelCache {
            lru: LruCache::new(capacity),
            bytes: 0,
            max_bytes,
        }
    }

    fn weight(r: &Resolution) -> usize {
        let fixed = 512;
        match &r.result {
            Ok(entry) => {
                let texts: usize = entry.resolved.layers.iter().map(|l| l.text.len()).sum();
                fixed + entry.resolved.size.saturating_mul(4) + texts
            }
            Err(e) => fixed + e.message.len(),
        }
    }

    fn get(&mut self, key: &CacheKey) -> Option<Arc<Resolution>> {
        self.lru.get(key).cloned()
    }

    fn put(&mut self, key: CacheKey, value: Arc<Resolution>) {
        let weight = Self::weight(&value);
        if weight > self.max_bytes {
            return; // served once, never kept
        }
        // `push` hands back the entry it replaced or evicted for the count bound.
        if let Some((_, evicted)) = self.lru.push(key, value) {
            self.bytes = self.bytes.saturating_sub(Self::weight(&evicted));
        }
        self.bytes += weight;
        while self.bytes > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, evicted)) => {
                    self.bytes = self.bytes.saturating_sub(Self::weight(&evicted))
                }
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.lru.clear();
        self.bytes = 0;
    }
}

/// Resolutions that may run at once: the cores, so lookups that miss the cache queue
/// (within the request timeout) instead of taking every blocking thread.
fn resolve_permits() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// The store's one scope check: nothing it resolved leaves it (config, or an error
/// that could quote a file) unless `principal` may read every file it touched.
fn allow(principal: &Principal, access: &Access) -> Result<(), LookupError> {
    principal
        .may_read(access)
        .map_err(|d| LookupError::Forbidden(d.message(principal.who())))
}

/// Source + snapshot + cache.
#[derive(Debug)]
pub struct Store {
    source: Source,
    uri: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    cache: Mutex<LabelCache>,
    /// Resources read (`/{name}/{profile}/{label}/{path}`), by commit and path.
    resources: Mutex<resource::ResourceCache>,
    /// Resolutions that miss the cache, at once: each takes a blocking thread and CPU.
    resolving: tokio::sync::Semaphore,
    recovery: RecoverySettings,
    opening_fetch: Option<OpeningFetch>,
    /// The rollouts of the served snapshot, with their candidates resolved.
    rollouts: ArcSwap<Rollouts>,
}

/// How the fetch made while opening a remote went: a failed one does not stop the
/// server from starting on the commit already in the clone.
#[derive(Debug, Clone)]
pub struct OpeningFetch {
    /// When it ended.
    pub(crate) at: SystemTime,
    /// How long it took.
    pub(crate) took: Duration,
    /// Why it failed, if it did.
    pub(crate) error: Option<String>,
}

/// Pairs whose served config changed in a refresh.
#[derive(Debug, Default)]
pub struct Changes {
    /// Version before the refresh.
    pub(crate) old_version: String,
    /// Version after.
    pub(crate) new_version: String,
    /// (service, env) pairs whose digest changed, with their new entry.
    pub changed: Vec<Arc<PairEntry>>,
    /// Pairs whose rollout was added, removed or rebuilt (a new declaration or candidate
    /// commit): some of their instances may need another config.
    pub(crate) rollouts_changed: Vec<rollouts::PairKey>,
}

/// Which API a lookup serves, and so which failed configs it may still be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// confhub's own API: every failure is an error.
    Native,
    /// Spring's forms with placeholders resolved: undecryptable values are served as
    /// `invalid.<key>: <n/a>`.
    Spring,
    /// Spring's forms with placeholders as written: placeholder failures too are served.
    AsWritten,
}

/// The tracked snapshot's answer for a single-env pair it holds, if it holds it: the
/// entry `form` may serve, or why none is served. `None` sends the lookup on.
fn from_snapshot(
    snap: &Snapshot,
    principal: &Principal,
    service: &str,
    envs: &[String],
    form: Form,
) -> Option<Result<Arc<PairEntry>, LookupError>> {
    let [env] = envs else { return None };
    let slot = snap.pair(service, env)?;
    Some(served_from_slot(snap, slot, principal, form))
}

/// The entry of `slot` that `form` serves, once `principal` may read the pair and it.
fn served_from_slot(
    snap: &Snapshot,
    slot: &PairState,
    principal: &Principal,
    form: Form,
) -> Result<Arc<PairEntry>, LookupError> {
    allow(principal, &slot.access)?;
    let served = match (form, &slot.as_written, &slot.entry) {
        (Form::AsWritten, Some(entry), _) => entry,
        // Spring's file forms serve the head with what cannot be
        // resolved left as written; only a cycle there falls back.
        (Form::Spring, Some(entry), _)
            if entry.placeholder_error.is_none() || entry.resolved.spring_error.is_none() =>
        {
            entry
        }
        (_, _, Some(entry)) => entry,
        (_, _, None) => {
            return Err(match &slot.failure {
                Some(f) => LookupError::Config(f.error.clone()),
                None => LookupError::UnknownLabel(snap.label.clone()),
            })
        }
    };
    allow(principal, &served.access)?;
    Ok(served.clone())
}

/// What the tracked version refuses before anything is resolved: a broken
/// `confhub.yml`, or an env it does not declare.
fn refuse_at_tracked(snap: &Snapshot, envs: &[String]) -> Result<(), LookupError> {
    if let Some(e) = &snap.global_error {
        return Err(LookupError::Config(e.clone()));
    }
    if let Some(env) = envs.iter().find(|e| !snap.catalog.env_known(e)) {
        return Err(LookupError::UnknownEnv(env.clone()));
    }
    Ok(())
}

/// `entry` if `form` may serve it despite the placeholders or `{cipher}` values it
/// could not resolve, else the error that stops it.
fn in_form(entry: Arc<PairEntry>, form: Form) -> Result<Arc<PairEntry>, LookupError> {
    match (&entry.placeholder_error, &entry.cipher_error) {
        (Some(e), _) if form == Form::Native => Err(LookupError::Config(e.clone())),
        // Spring's file forms leave what they cannot resolve as written; only what
        // fails even so (a cycle) is refused.
        (Some(_), _) if form == Form::Spring => match &entry.resolved.spring_error {
            Some(e) => Err(LookupError::Config(e.clone())),
            None => Ok(entry),
        },
        (_, Some(e)) if form == Form::Native => Err(LookupError::Config(e.clone())),
        _ => Ok(entry),
    }
}

impl Store {
    /// Run git and resolution work `f` on a blocking thread, under the permits that bound
    /// how many run at once (one per core), so requests never resolve on the async
    /// workers and never more at once than the machine can.
    pub(crate) async fn off_the_workers<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LookupError> {
        let task =
            |e: &dyn std::fmt::Display| LookupError::Source(SourceError::Task(e.to_string()));
        let _permit = self.resolving.acquire().await.map_err(|e| task(&e))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| task(&e))
    }

    /// Open the source and build the first snapshot. Blocking.
    ///
    /// A remote is fetched first; when that fails, the commit already in the clone is
    /// served (the failure is in [`Store::opening_fetch`]). A remote's clone is verified
    /// before anything is served from it, and repaired when damaged. Pairs that fail at
    /// the head get their last good config from older commits (see [`RecoverySettings`]).
    pub fn open(settings: &Settings) -> Result<Store, SourceError> {
        let mut opening_fetch = None;
        let mut fetch_error = None;
        let source = if settings.dev {
            Source::Dir(
                DirSource::open(&settings.repo, settings.search_path.as_deref())?
                    .with_ciphers(Ciphers::of(settings)),
            )
        } else {
            let git = GitSource::prepare(settings)?;
            if git.is_remote() {
                let started = Instant::now();
                let fetched = git.fetch();
                if let Err(e) = &fetched {
                    tracing::warn!(error = %e, "fetch failed; starting from the commit already in the clone, if there is one");
                }
                opening_fetch = Some(OpeningFetch {
                    at: SystemTime::now(),
                    took: started.elapsed(),
                    error: fetched.as_ref().err().map(ToString::to_string),
                });
                fetch_error = fetched.err();
                // A damaged clone serves `object not found` for good if nobody looks.
                if git.ensure_intact(None) == Integrity::Repaired {
                    // The repair was a complete fetch.
                    opening_fetch = opening_fetch.map(|f| OpeningFetch { error: None, ..f });
                    fetch_error = None;
                }
            }
            Source::Git(git)
        };
        let uri: Arc<str> = match &source {
            Source::Git(g) => g.uri().into(),
            Source::Dir(d) => d.uri().into(),
        };
        let snapshot = match build_tracked(&source, &uri, None, false, &settings.recovery) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Err(SourceError::Task("no snapshot built".into())),
            // Nothing was ever fetched: the fetch's failure is the cause worth reporting.
            Err(e @ SourceError::NoBranch(_)) => return Err(fetch_error.unwrap_or(e)),
            Err(e) => return Err(e),
        };
        tracing::info!(label = %snapshot.label, version = %snapshot.version, services = snapshot.catalog.services.len(), envs = snapshot.catalog.envs.len(), "snapshot loaded");
        for e in snapshot.errors() {
            tracing::warn!(service = %e.service, env = %e.env, error = %e.error.message, "pair fails to resolve");
        }
        let capacity =
            NonZeroUsize::new(settings.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let store = Store {
            source,
            uri,
            snapshot: ArcSwap::from_pointee(snapshot),
            cache: Mutex::new(LabelCache::new(capacity, settings.cache_max_bytes)),
            resources: Mutex::default(),
            resolving: tokio::sync::Semaphore::new(resolve_permits()),
            recovery: settings.recovery.clone(),
            opening_fetch,
            rollouts: ArcSwap::default(),
        };
        store.refresh_rollouts(&store.snapshot());
        Ok(store)
    }

    /// The rollouts of the served version.
    pub(crate) fn rollouts(&self) -> Arc<Rollouts> {
        self.rollouts.load_full()
    }

    /// Rebuild the rollouts for `snap` (reusing those that did not change) and swap them
    /// in; the pairs whose rollout changed. Blocking.
    fn refresh_rollouts(&self, snap: &Snapshot) -> Vec<rollouts::PairKey> {
        let old = self.rollouts.load_full();
        let new = self.build_rollouts(snap, &old);
        for r in new
            .list
            .iter()
            .filter(|r| !old.list.iter().any(|o| Arc::ptr_eq(o, r)))
        {
            match &r.candidate {
                Ok(c) => {
                    tracing::info!(rollout = %r.name, service = %r.spec.service, candidate = %c.version, "rollout active")
                }
                Err(errors) => {
                    tracing::warn!(rollout = %r.name, service = %r.spec.service, error = %errors.first().map(|e| e.message.as_str()).unwrap_or(""), "rollout broken: nobody gets its candidate")
                }
            }
        }
        let changed = new.changed_since(&old);
        self.rollouts.store(Arc::new(new));
        changed
    }

    /// The candidate the instance `id` (whose labels `label` gives) gets instead of the
    /// tracked config of (service, envs), if a served rollout picks it; `principal` must
    /// be able to read what the candidate reads. Requests that name a label never come
    /// here.
    pub(crate) fn candidate<'l>(
        &self,
        principal: &Principal,
        service: &str,
        envs: &[String],
        id: &str,
        label: impl Fn(&str) -> Option<&'l str>,
    ) -> Result<Option<Arc<PairEntry>>, LookupError> {
        let [env] = envs else { return Ok(None) };
        let rollouts = self.rollouts.load();
        let Some(entry) = rollouts
            .on(service, env)
            .and_then(|r| r.candidate_for(env, id, label))
        else {
            return Ok(None);
        };
        allow(principal, &entry.access)?;
        Ok(Some(entry.clone()))
    }

    /// How the fetch made while opening went (remotes only).
    pub(crate) fn opening_fetch(&self) -> Option<&OpeningFetch> {
        self.opening_fetch.as_ref()
    }

    /// Rollouts that cannot be served (a broken candidate, a refused declaration), one
    /// entry per pair they name, for `/v1/status` and `/readyz`: code `rollout_broken`.
    pub(crate) fn rollout_errors(&self) -> Vec<PairError> {
        let version = self.snapshot().version.clone();
        self.rollouts()
            .errors()
            .into_iter()
            .map(|((service, env), _, e)| PairError {
                service,
                env,
                version: version.clone(),
                error: ErrorBody {
                    error: "rollout_broken".into(),
                    ..e.to_body()
                },
            })
            .collect()
    }

    /// Problems of the source as a whole (the tracked branch is gone, the clone is
    /// damaged and not repaired), as `*`/`*` entries for `/v1/status` and `/readyz`.
    pub(crate) fn source_errors(&self) -> Vec<PairError> {
        let Source::Git(git) = &self.source else {
            return Vec::new();
        };
        let health = git.clone_health();
        let version = self.snapshot().version.clone();
        [
            ("branch_missing", health.branch_missing),
            ("damaged_clone", health.damaged),
        ]
        .into_iter()
        .filter_map(|(code, message)| {
            Some(PairError {
                service: "*".into(),
                env: "*".into(),
                version: version.clone(),
                error: ErrorBody {
                    error: code.into(),
                    message: message?,
                    file: None,
                    line: None,
                    key: None,
                },
            })
        })
        .collect()
    }

    /// Whether the clone should be verified now (a read hit an unreadable object, or a
    /// repair is due).
    pub(crate) fn clone_check_due(&self) -> bool {
        matches!(&self.source, Source::Git(g) if g.check_due())
    }

    /// Verify the clone if a check is due and repair it if damaged; after a repair,
    /// results cached from the damaged clone are forgotten. Returns whether it was
    /// repaired. Blocking.
    fn check_clone(&self, served: &Snapshot) -> bool {
        let Source::Git(git) = &self.source else {
            return false;
        };
        if !git.check_due() {
            return false;
        }
        let repaired =
            git.ensure_intact(git2::Oid::from_str(&served.version).ok()) == Integrity::Repaired;
        if repaired {
            if let Ok(mut cache) = self.cache.lock() {
                cache.clear();
            }
            if let Ok(mut resources) = self.resources.lock() {
                resources.clear();
            }
        }
        repaired
    }

    /// Entries of the cache of pairs resolved at other labels, and their estimated bytes.
    pub(crate) fn label_cache_usage(&self) -> (usize, usize) {
        self.cache
            .lock()
            .map(|c| (c.lru.len(), c.bytes))
            .unwrap_or_default()
    }

    /// The current snapshot of the tracked branch.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// `{repo uri}`, as used in Spring property source names.
    pub(crate) fn uri(&self) -> &Arc<str> {
        &self.uri
    }

    /// The source.
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }

    /// Rebuild the snapshot if the tracked branch moved (fetching remotes first when
    /// `fetch` is set), swap it in, and report the pairs whose digest changed. Blocking.
    pub fn refresh(&self, fetch: bool) -> Result<Changes, SourceError> {
        if fetch {
            if let Source::Git(g) = &self.source {
                // A fetch that failed on the clone's own objects is for the check below.
                if let Err(e) = g.fetch() {
                    if !g.check_due() {
                        return Err(e);
                    }
                }
            }
        }
        let old = self.snapshot.load_full();
        let mut changes = Changes {
            old_version: old.version.clone(),
            new_version: old.version.clone(),
            changed: Vec::new(),
            rollouts_changed: Vec::new(),
        };
        let repaired = self.check_clone(&old);
        let mut built = build_tracked(
            &self.source,
            &self.uri,
            Some(&old),
            repaired,
            &self.recovery,
        );
        // This build hit an unreadable object: verify, repair, and build once more.
        if !repaired && self.check_clone(&old) {
            built = build_tracked(&self.source, &self.uri, Some(&old), true, &self.recovery);
        }
        let Some(new) = built? else {
            changes.rollouts_changed = self.refresh_rollouts(&old);
            return Ok(changes);
        };
        changes.new_version = new.version.clone();
        for (service, envs) in &new.pairs {
            for (env, slot) in envs {
                let Some(entry) = &slot.entry else { continue };
                let before = old
                    .pair(service, env)
                    .and_then(|s| s.entry.as_ref())
                    .map(|e| e.digest());
                if before != Some(entry.digest()) {
                    changes.changed.push(entry.clone());
                }
            }
        }
        let new = Arc::new(new);
        self.snapshot.store(new.clone());
        changes.rollouts_changed = self.refresh_rollouts(&new);
        Ok(changes)
    }

    /// The config of `service` for `envs` at `label` (the tracked branch when `None`),
    /// if `principal` may read it.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        principal: &Principal,
        label: Option<&str>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        self.lookup_in(principal, label, service, envs, Form::Native)
            .await
    }

    /// Like [`Store::lookup`], for Spring's forms with placeholders resolved: a config
    /// with a `{cipher}` value that cannot be decrypted is still returned (with
    /// [`PairEntry::cipher_error`] set; the key reads `invalid.<key>: <n/a>`), as Spring
    /// serves it, and so is one with unresolvable placeholders (its Spring values leave
    /// them as written), unless they form a cycle.
    pub(crate) async fn lookup_spring(
        self: &Arc<Self>,
        principal: &Principal,
        label: Option<&str>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        self.lookup_in(principal, label, service, envs, Form::Spring)
            .await
    }

    /// Like [`Store::lookup`], but a config whose placeholders cannot be resolved is still
    /// returned (with [`PairEntry::placeholder_error`] set), for the forms that show
    /// placeholders as written.
    pub(crate) async fn lookup_as_written(
        self: &Arc<Self>,
        principal: &Principal,
        label: Option<&str>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        self.lookup_in(principal, label, service, envs, Form::AsWritten)
            .await
    }

    /// Every lookup: the tracked snapshot's pair when it has one (a map lookup and an
    /// `Arc` clone), else the label cache, else a resolution off the async workers;
    /// whatever is served passes the scope check first.
    async fn lookup_in(
        self: &Arc<Self>,
        principal: &Principal,
        label: Option<&str>,
        service: &str,
        envs: &[String],
        form: Form,
    ) -> Result<Arc<PairEntry>, LookupError> {
        let snap = self.snapshot();
        let tracked = label.is_none_or(|l| l == snap.label);
        if tracked {
            if let Some(served) = from_snapshot(&snap, principal, service, envs, form) {
                return served;
            }
            refuse_at_tracked(&snap, envs)?;
        }
        let label = label.unwrap_or(&snap.label).to_string();
        let key_version = if tracked {
            Some(snap.version.clone())
        } else {
            None
        };
        let resolution = self.resolution(label, key_version, service, envs).await?;
        allow(principal, &resolution.access)?;
        let entry = resolution.result.clone().map_err(LookupError::Config)?;
        in_form(entry, form)
    }

    /// The resolution of a pair outside the snapshot: from the label cache, or resolved
    /// on a blocking thread (`key_version` is the tracked version, `None` for another
    /// label).
    async fn resolution(
        self: &Arc<Self>,
        label: String,
        key_version: Option<String>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<Resolution>, LookupError> {
        let env_key = envs.join(",");
        // A pair resolved before at this version is served without touching git or
        // the filesystem, and without a blocking task.
        let hit = key_version.as_ref().and_then(|v| {
            self.cached(&(
                v.clone(),
                label.clone(),
                service.to_string(),
                env_key.clone(),
            ))
        });
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let store = self.clone();
        let service = service.to_string();
        let envs = envs.to_vec();
        self.off_the_workers(move || store.lookup_blocking(&label, key_version, &service, &envs))
            .await?
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<Resolution>> {
        self.cache.lock().ok()?.get(key)
    }

    /// Resolve a pair in `view` and remember the result under `key` (errors too: a
    /// version never changes).
    fn resolve_and_cache(
        &self,
        view: &mut View<'_>,
        catalog: &Catalog,
        key: CacheKey,
        service: &str,
        envs: &[String],
    ) -> Arc<Resolution> {
        let label = &key.1;
        let resolution = Arc::new(
            match PairEntry::build(view, catalog, &self.uri, label, service, envs) {
                Ok(entry) => Resolution {
                    access: entry.access.clone(),
                    result: Ok(Arc::new(entry)),
                },
                Err(e) => Resolution {
                    access: pair_files(view, catalog, service, envs).access,
                    result: Err(e),
                },
            },
        );
        // A version's content never changes, but a read that failed on the clone's
        // objects may succeed once it is repaired: only that is not remembered.
        let unreadable = matches!(&resolution.result, Err(e) if e.kind == ErrorKind::Git);
        if !unreadable {
            if let Ok(mut cache) = self.cache.lock() {
                cache.put(key, resolution.clone());
            }
        }
        resolution
    }

    fn lookup_blocking(
        &self,
        label: &str,
        tracked_version: Option<String>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<Resolution>, LookupError> {
        let key = |version: &str| -> CacheKey {
            (
                version.to_string(),
                label.to_string(),
                service.to_string(),
                envs.join(","),
            )
        };
        // Resolve in `view` and remember the result (errors too: a version never changes).
        let build = |view: &mut View<'_>| -> Result<Arc<Resolution>, LookupError> {
            let catalog = match Catalog::of(view) {
                Ok(catalog) => catalog,
                Err(e) => {
                    return Ok(Arc::new(Resolution {
                        access: Access::own(service, envs),
                        result: Err(e),
                    }))
                }
            };
            if let Some(env) = envs.iter().find(|e| !catalog.env_known(e)) {
                return Err(LookupError::UnknownEnv(env.clone()));
            }
            Ok(self.resolve_and_cache(view, &catalog, key(&view.version), service, envs))
        };
        match &self.source {
            Source::Git(git) => git.with_repo(|repo| {
                let oid = match &tracked_version {
                    Some(v) => git2::Oid::from_str(v).ok(),
                    None => git.resolve_label(repo, label)?,
                };
                let Some(oid) = oid else {
                    return Ok(Err(LookupError::UnknownLabel(label.to_string())));
                };
                // A label costs a ref lookup; listing the tree waits for a cache miss.
                if let Some(hit) = self.cached(&key(&oid.to_string())) {
                    return Ok(Ok(hit));
                }
                let mut view = git.view(repo, oid)?;
                Ok(build(&mut view))
            })?,
            Source::Dir(dir) => {
                if tracked_version.is_none() {
                    return Err(LookupError::UnknownLabel(label.to_string()));
                }
                let mut view = dir.view()?;
                build(&mut view)
            }
        }
    }
}

impl Store {
    /// Resolve several pairs of the tracked branch in one pass, in the order given: one
    /// listing of the files and one catalog for all of them, each file parsed at most
    /// once (and files unchanged since the snapshot not at all). For pairs outside the
    /// snapshot (several envs, undeclared envs, unknown services), whose lookups one by
    /// one would each list and parse everything again. Results are cached as
    /// [`Store::lookup`]'s are. Blocking.
    pub(crate) fn lookup_tracked_many(
        &self,
        pairs: &[(String, Vec<String>)],
    ) -> Result<Vec<Result<Arc<PairEntry>, LookupError>>, SourceError> {
        let snap = self.snapshot();
        if let Some(e) = &snap.global_error {
            return Ok(all_failed(pairs, e));
        }
        self.with_view_at(&snap.version, "reading the tracked version", |view| {
            Ok(self.resolve_tracked_in(view, &snap, pairs))
        })
    }

    /// [`Store::lookup_tracked_many`]'s pass over `view`, the tracked version's files.
    fn resolve_tracked_in(
        &self,
        view: &mut View<'_>,
        snap: &Snapshot,
        pairs: &[(String, Vec<String>)],
    ) -> Vec<Result<Arc<PairEntry>, LookupError>> {
        if view.version == snap.version {
            view.prior = snap.parsed_blobs.clone();
        }
        let catalog = match Catalog::of(view) {
            Ok(c) => c,
            Err(e) => return all_failed(pairs, &e),
        };
        pairs
            .iter()
            .map(|(service, envs)| {
                let key: CacheKey = (
                    view.version.clone(),
                    snap.label.clone(),
                    service.clone(),
                    envs.join(","),
                );
                if let Some(hit) = self.cached(&key) {
                    return served_unscoped(&hit);
                }
                if let Some(env) = envs.iter().find(|e| !catalog.env_known(e)) {
                    return Err(LookupError::UnknownEnv(env.clone()));
                }
                served_unscoped(&self.resolve_and_cache(view, &catalog, key, service, envs))
            })
            .collect()
    }

    /// Run `f` on the files at `version` (a commit sha; a `--dev` directory has only
    /// its current files). `what` names the read in a git error. Blocking.
    fn with_view_at<T>(
        &self,
        version: &str,
        what: &'static str,
        f: impl FnOnce(&mut View<'_>) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        match &self.source {
            Source::Git(git) => git.with_repo(|repo| {
                let oid = git2::Oid::from_str(version).map_err(SourceError::git(what))?;
                let mut view = git.view(repo, oid)?;
                f(&mut view)
            }),
            Source::Dir(dir) => {
                let mut view = dir.view()?;
                f(&mut view)
            }
        }
    }
}

/// The same failure for each of `pairs`.
fn all_failed<T>(pairs: &[T], e: &ConfigError) -> Vec<Result<Arc<PairEntry>, LookupError>> {
    pairs
        .iter()
        .map(|_| Err(LookupError::Config(e.clone())))
        .collect()
}

/// A resolution as the native API serves it, with no token checked: the hub checks
/// each subscriber's scopes against the entry's files as it sends.
fn served_unscoped(built: &Resolution) -> Result<Arc<PairEntry>, LookupError> {
    match &built.result {
        Ok(entry) => match entry
            .placeholder_error
            .as_ref()
            .or(entry.cipher_error.as_ref())
        {
            Some(e) => Err(LookupError::Config(e.clone())),
            None => Ok(entry.clone()),
        },
        Err(e) => Err(LookupError::Config(e.clone())),
    }
}

/// A snapshot of the tracked branch, or `None` when it is still at `previous`'s version
/// (and not `force`d: after a repair the same commit reads differently).
fn build_tracked(
    source: &Source,
    uri: &Arc<str>,
    previous: Option<&Snapshot>,
    force: bool,
    recovery: &RecoverySettings,
) -> Result<Option<Snapshot>, SourceError> {
    match source {
        Source::Git(git) => git.with_repo(|repo| {
            let served = previous.map(|p| (p.label.as_str(), p.version.as_str()));
            let (branch, oid) = git.serving_commit(repo, served)?;
            if let Some(prev) = previous {
                if !force && prev.version == oid.to_string() && prev.label == branch {
                    return Ok(None);
                }
            }
            let mut view = git.view(repo, oid)?;
            view.prior = previous.map(|p| p.parsed_blobs.clone()).unwrap_or_default();
            let mut snapshot = Snapshot::build(&mut view, &branch, uri, previous);
            if previous.is_none() {
                // Nothing served yet (a start): what broke at the head still has a last
                // good config, in the branch's history.
                if let Some(baseline) =
                    last_good_baseline(git, repo, &snapshot, oid, &branch, uri, recovery)
                {
                    let mut view = git.view(repo, oid)?;
                    view.prior = snapshot.parsed_blobs.clone();
                    snapshot = Snapshot::build(&mut view, &branch, uri, Some(&baseline));
                }
            }
            git.remember(repo, &branch, oid);
            Ok(Some(snapshot))
        }),
        Source::Dir(dir) => {
            let mut view = dir.view()?;
            if let Some(prev) = previous {
                if !force && prev.version == view.version {
                    return Ok(None);
                }
            }
            Ok(Some(Snapshot::build(&mut view, DEV_LABEL, uri, previous)))
        }
    }
}

/// The last good config of the pairs that fail at `head` with nothing to serve: walk the
/// branch's first-parent history back (at most `last_good_depth` commits, within
/// `last_good_timeout`) and resolve each such pair at older commits until it resolves.
/// When the head's `confhub.yml` is broken, every pair of the newest catalog that parses
/// is looked for. `None` when there is nothing to look for, or nothing was found.
fn last_good_baseline(
    git: &GitSource,
    repo: &git2::Repository,
    head: &Snapshot,
    head_oid: git2::Oid,
    branch: &str,
    uri: &Arc<str>,
    recovery: &RecoverySettings,
) -> Option<Snapshot> {
    let mut search = LastGoodSearch::start(head, branch, uri)?;
    let started = Instant::now();
    let mut prior = head.parsed_blobs.clone();
    for oid in git.first_parents(repo, head_oid, recovery.last_good_depth) {
        if started.elapsed() >= recovery.last_good_timeout {
            tracing::warn!(walked = search.walked, pending = search.pending.len(), timeout = ?recovery.last_good_timeout, "stopped looking for last good configs: time is up");
            break;
        }
        search.walked += 1;
        let Ok(mut view) = git.view(repo, oid) else {
            continue;
        };
        view.prior = std::mem::take(&mut prior);
        search.visit(&mut view, oid);
        // Files unchanged between commits are parsed once.
        prior = view.parsed_blobs();
        if search.done() {
            break;
        }
    }
    search.finish(head)
}

/// The walk of [`last_good_baseline`]: what is still looked for, and what was found.
struct LastGoodSearch<'a> {
    branch: &'a str,
    uri: &'a Arc<str>,
    /// Pairs with nothing to serve yet.
    pending: BTreeSet<(String, String)>,
    /// Set while the head's `confhub.yml` is broken and no older one has parsed.
    need_catalog: bool,
    /// The newest catalog that parsed, when the head's does not.
    catalog: Option<Catalog>,
    found: BTreeMap<(String, String), Arc<PairEntry>>,
    /// Commits looked at.
    walked: usize,
}

impl<'a> LastGoodSearch<'a> {
    /// The search for what fails at `head`, or `None` when nothing does.
    fn start(head: &Snapshot, branch: &'a str, uri: &'a Arc<str>) -> Option<Self> {
        let pending: BTreeSet<(String, String)> = head.unserved().into_iter().collect();
        let need_catalog = head.global_error.is_some();
        if pending.is_empty() && !need_catalog {
            return None;
        }
        Some(LastGoodSearch {
            branch,
            uri,
            pending,
            need_catalog,
            catalog: None,
            found: BTreeMap::new(),
            walked: 0,
        })
    }

    /// Whether nothing is left to look for.
    fn done(&self) -> bool {
        self.pending.is_empty() && !self.need_catalog
    }

    /// Look for the pending pairs in the older commit `oid`, whose files `view` reads.
    fn visit(&mut self, view: &mut View<'_>, oid: git2::Oid) {
        let Ok(older) = Catalog::of(view) else {
            return;
        };
        if self.need_catalog {
            self.adopt_catalog(&older);
        }
        let (branch, uri, found) = (self.branch, self.uri, &mut self.found);
        self.pending.retain(|(service, env)| {
            let Some(entry) = good_at(view, &older, uri, branch, service, env) else {
                return true;
            };
            tracing::info!(%service, %env, version = %oid, "pair fails at the head; serving its last good config, from an older commit");
            entry.body(Body::Json);
            entry.body(Body::Frame);
            found.insert((service.clone(), env.clone()), Arc::new(entry));
            false
        });
    }

    /// The head's catalog is broken: every pair of `older`, the newest that parses, is
    /// looked for.
    fn adopt_catalog(&mut self, older: &Catalog) {
        self.need_catalog = false;
        self.pending = older
            .services
            .iter()
            .flat_map(|s| older.envs.iter().map(move |e| (s.clone(), e.clone())))
            .collect();
        self.catalog = Some(older.clone());
    }

    /// The baseline of what was found, after warning of what was not.
    fn finish(self, head: &Snapshot) -> Option<Snapshot> {
        for (service, env) in &self.pending {
            tracing::warn!(%service, %env, walked = self.walked, "pair fails at the head and has no good config in the commits looked at");
        }
        if self.found.is_empty() && self.catalog.is_none() {
            return None;
        }
        Some(Snapshot::baseline(
            self.branch,
            self.catalog.unwrap_or_else(|| head.catalog.clone()),
            self.found,
        ))
    }
}

/// `service` in `env` at an older commit, when it resolves there fully (a known
/// service, no placeholder or `{cipher}` failure): a config worth serving instead.
fn good_at(
    view: &mut View<'_>,
    catalog: &Catalog,
    uri: &Arc<str>,
    branch: &str,
    service: &str,
    env: &String,
) -> Option<PairEntry> {
    if !catalog.services.contains(service) || !catalog.envs.contains(env) {
        return None;
    }
    let envs = std::slice::from_ref(env);
    match PairEntry::build(view, catalog, uri, branch, service, envs) {
        Ok(entry)
            if entry.service_known
                && entry.placeholder_error.is_none()
                && entry.cipher_error.is_none() =>
        {
            Some(entry)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorKind;

    fn failed(bytes: usize) -> Arc<Resolution> {
        Arc::new(Resolution {
            access: Access::default(),
            result: Err(ConfigError::new(ErrorKind::Parse, "x".repeat(bytes))),
        })
    }

    fn key(i: usize) -> CacheKey {
        (i.to_string(), "l".into(), "s".into(), "e".into())
    }

    #[test]
    fn label_cache_is_bounded_by_bytes_as_well_as_count() {
        let capacity = NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN);
        let mut cache = LabelCache::new(capacity, 20_000);
        for i in 0..100 {
            cache.put(key(i), failed(1_000));
        }
        assert!(cache.bytes <= 20_000, "{} bytes", cache.bytes);
        assert!(cache.lru.len() < 20, "{} entries", cache.lru.len());
        // The newest stay; replacing a key does not count it twice.
        assert!(cache.get(&key(99)).is_some());
        let before = cache.bytes;
        cache.put(key(99), failed(1_000));
        assert_eq!(cache.bytes, before);
        // One larger than the whole bound is never kept.
        cache.put(key(1000), failed(30_000));
        assert!(cache.get(&key(1000)).is_none());
        cache.clear();
        assert_eq!((cache.bytes, cache.lru.len()), (0, 0));
    }
}
