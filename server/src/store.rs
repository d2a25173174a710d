//! The store: the source, the current snapshot of the tracked branch, and a bounded
//! cache of pairs resolved at other labels. Every request for config goes through
//! [`Store::lookup`]; every new version goes through [`Store::refresh`].

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use lru::LruCache;

use crate::catalog::Catalog;
use crate::entry::PairEntry;
use crate::errors::{ConfigError, SourceError};
use crate::settings::Settings;
use crate::snapshot::Snapshot;
use crate::source::dir::DirSource;
use crate::source::git::GitSource;
use crate::source::{Ciphers, View};

/// Label reported for `--dev` directories.
pub const DEV_LABEL: &str = "dev";

/// Where config comes from.
#[derive(Debug)]
pub enum Source {
    /// A git repository.
    Git(GitSource),
    /// A plain directory (`--dev`).
    Dir(DirSource),
}

/// Why a lookup has no config to serve.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No branch, tag or commit by that name.
    #[error("unknown label `{0}`")]
    UnknownLabel(String),
    /// The manifest declares environments and this is not one of them.
    #[error("unknown environment `{0}`: not declared in confhub.yml")]
    UnknownEnv(String),
    /// The config cannot be resolved at that version.
    #[error(transparent)]
    Config(ConfigError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

type CacheKey = (String, String, String, String);

/// Source + snapshot + cache.
#[derive(Debug)]
pub struct Store {
    source: Source,
    uri: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    cache: Mutex<LruCache<CacheKey, Result<Arc<PairEntry>, ConfigError>>>,
}

/// Pairs whose served config changed in a refresh.
#[derive(Debug, Default)]
pub struct Changes {
    /// Version before the refresh.
    pub old_version: String,
    /// Version after.
    pub new_version: String,
    /// (service, env) pairs whose digest changed, with their new entry.
    pub changed: Vec<Arc<PairEntry>>,
}

impl Store {
    /// Open the source and build the first snapshot. Blocking.
    pub fn open(settings: &Settings) -> Result<Store, SourceError> {
        let source = if settings.dev {
            Source::Dir(
                DirSource::open(&settings.repo, settings.search_path.as_deref())?
                    .with_ciphers(Ciphers::from_keyring(settings.keyring.as_ref())),
            )
        } else {
            Source::Git(GitSource::open(settings)?)
        };
        let uri: Arc<str> = match &source {
            Source::Git(g) => g.uri().into(),
            Source::Dir(d) => d.uri().into(),
        };
        let snapshot = build_tracked(&source, &uri, None)?
            .ok_or_else(|| SourceError::Task("no snapshot built".into()))?;
        tracing::info!(label = %snapshot.label, version = %snapshot.version, services = snapshot.catalog.services.len(), envs = snapshot.catalog.envs.len(), "snapshot loaded");
        for e in snapshot.errors() {
            tracing::warn!(service = %e.service, env = %e.env, error = %e.error.message, "pair fails to resolve");
        }
        let capacity =
            NonZeroUsize::new(settings.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(Store {
            source,
            uri,
            snapshot: ArcSwap::from_pointee(snapshot),
            cache: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// The current snapshot of the tracked branch.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// `{repo uri}`, as used in Spring property source names.
    pub fn uri(&self) -> &Arc<str> {
        &self.uri
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Rebuild the snapshot if the tracked branch moved (fetching remotes first when
    /// `fetch` is set), swap it in, and report the pairs whose digest changed. Blocking.
    pub fn refresh(&self, fetch: bool) -> Result<Changes, SourceError> {
        if fetch {
            if let Source::Git(g) = &self.source {
                g.fetch()?;
            }
        }
        let old = self.snapshot.load_full();
        let mut changes = Changes {
            old_version: old.version.clone(),
            new_version: old.version.clone(),
            changed: Vec::new(),
        };
        let Some(new) = build_tracked(&self.source, &self.uri, Some(&old))? else {
            return Ok(changes);
        };
        changes.new_version = new.version.clone();
        for (service, envs) in &new.pairs {
            for (env, slot) in envs {
                let Some(entry) = &slot.entry else { continue };
                let before = old
                    .slot(service, env)
                    .and_then(|s| s.entry.as_ref())
                    .map(|e| e.digest());
                if before != Some(entry.digest()) {
                    changes.changed.push(entry.clone());
                }
            }
        }
        self.snapshot.store(Arc::new(new));
        Ok(changes)
    }

    /// The config of `service` for `envs` at `label` (the tracked branch when `None`).
    pub async fn lookup(
        self: &Arc<Self>,
        label: Option<&str>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        self.lookup_in(label, service, envs, false).await
    }

    /// Like [`Store::lookup`], but a config whose placeholders cannot be resolved is still
    /// returned (with [`PairEntry::placeholder_error`] set), for the forms that show
    /// placeholders as written.
    pub async fn lookup_as_written(
        self: &Arc<Self>,
        label: Option<&str>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        self.lookup_in(label, service, envs, true).await
    }

    async fn lookup_in(
        self: &Arc<Self>,
        label: Option<&str>,
        service: &str,
        envs: &[String],
        as_written: bool,
    ) -> Result<Arc<PairEntry>, LookupError> {
        let snap = self.snapshot();
        let tracked = label.is_none_or(|l| l == snap.label);
        if tracked {
            if let [env] = envs {
                if let Some(slot) = snap.slot(service, env) {
                    if let (true, Some(entry)) = (as_written, &slot.as_written) {
                        return Ok(entry.clone());
                    }
                    return match (&slot.entry, &slot.failure) {
                        (Some(entry), _) => Ok(entry.clone()),
                        (None, Some(f)) => Err(LookupError::Config(f.error.clone())),
                        (None, None) => Err(LookupError::UnknownLabel(snap.label.clone())),
                    };
                }
            }
            if let Some(e) = &snap.global_error {
                return Err(LookupError::Config(e.clone()));
            }
            if let Some(env) = envs.iter().find(|e| !snap.catalog.env_known(e)) {
                return Err(LookupError::UnknownEnv(env.clone()));
            }
        }
        let label = label.unwrap_or(&snap.label).to_string();
        let key_version = if tracked {
            Some(snap.version.clone())
        } else {
            None
        };
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
        let entry = match hit {
            Some(hit) => hit.map_err(LookupError::Config)?,
            None => {
                let store = self.clone();
                let service = service.to_string();
                let envs = envs.to_vec();
                tokio::task::spawn_blocking(move || {
                    store.lookup_blocking(&label, key_version, &service, &envs)
                })
                .await
                .map_err(|e| LookupError::Source(SourceError::Task(e.to_string())))??
            }
        };
        match &entry.placeholder_error {
            Some(e) if !as_written => Err(LookupError::Config(e.clone())),
            _ => Ok(entry),
        }
    }

    fn cached(&self, key: &CacheKey) -> Option<Result<Arc<PairEntry>, ConfigError>> {
        self.cache.lock().ok()?.get(key).cloned()
    }

    fn lookup_blocking(
        &self,
        label: &str,
        tracked_version: Option<String>,
        service: &str,
        envs: &[String],
    ) -> Result<Arc<PairEntry>, LookupError> {
        let key = |version: &str| -> CacheKey {
            (
                version.to_string(),
                label.to_string(),
                service.to_string(),
                envs.join(","),
            )
        };
        // Resolve in `view` and remember the result (errors too: a version never changes).
        let build = |view: &mut View<'_>| -> Result<Arc<PairEntry>, LookupError> {
            let result = Catalog::of(view).and_then(|catalog| {
                if let Some(env) = envs.iter().find(|e| !catalog.env_known(e)) {
                    return Ok(Err(env.clone()));
                }
                PairEntry::build(view, &catalog, &self.uri, label, service, envs)
                    .map(|e| Ok(Arc::new(e)))
            });
            let result = match result {
                Ok(Err(env)) => return Err(LookupError::UnknownEnv(env)),
                Ok(Ok(entry)) => Ok(entry),
                Err(e) => Err(e),
            };
            if let Ok(mut cache) = self.cache.lock() {
                cache.put(key(&view.version), result.clone());
            }
            result.map_err(LookupError::Config)
        };
        match &self.source {
            Source::Git(git) => git.with_repo(|repo| {
                let oid = match &tracked_version {
                    Some(v) => git2::Oid::from_str(v).ok(),
                    None => git.resolve_label(repo, label),
                };
                let Some(oid) = oid else {
                    return Ok(Err(LookupError::UnknownLabel(label.to_string())));
                };
                // A label costs a ref lookup; listing the tree waits for a cache miss.
                if let Some(hit) = self.cached(&key(&oid.to_string())) {
                    return Ok(hit.map_err(LookupError::Config));
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
    pub fn lookup_tracked_many(
        &self,
        pairs: &[(String, Vec<String>)],
    ) -> Result<Vec<Result<Arc<PairEntry>, LookupError>>, SourceError> {
        let snap = self.snapshot();
        if let Some(e) = &snap.global_error {
            return Ok(pairs
                .iter()
                .map(|_| Err(LookupError::Config(e.clone())))
                .collect());
        }
        let served = |built: Result<Arc<PairEntry>, ConfigError>| match built {
            Ok(entry) => match &entry.placeholder_error {
                Some(e) => Err(LookupError::Config(e.clone())),
                None => Ok(entry),
            },
            Err(e) => Err(LookupError::Config(e)),
        };
        let resolve_all = |view: &mut View<'_>| -> Vec<Result<Arc<PairEntry>, LookupError>> {
            if view.version == snap.version {
                view.prior = snap.parsed_blobs.clone();
            }
            let catalog = match Catalog::of(view) {
                Ok(c) => c,
                Err(e) => {
                    return pairs
                        .iter()
                        .map(|_| Err(LookupError::Config(e.clone())))
                        .collect()
                }
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
                        return served(hit);
                    }
                    if let Some(env) = envs.iter().find(|e| !catalog.env_known(e)) {
                        return Err(LookupError::UnknownEnv(env.clone()));
                    }
                    let built =
                        PairEntry::build(view, &catalog, &self.uri, &snap.label, service, envs)
                            .map(Arc::new);
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.put(key, built.clone());
                    }
                    served(built)
                })
                .collect()
        };
        match &self.source {
            Source::Git(git) => git.with_repo(|repo| {
                let oid = git2::Oid::from_str(&snap.version)
                    .map_err(SourceError::git("reading the tracked version"))?;
                let mut view = git.view(repo, oid)?;
                Ok(resolve_all(&mut view))
            }),
            Source::Dir(dir) => {
                let mut view = dir.view()?;
                Ok(resolve_all(&mut view))
            }
        }
    }
}

/// A snapshot of the tracked branch, or `None` when it is still at `previous`'s version.
fn build_tracked(
    source: &Source,
    uri: &Arc<str>,
    previous: Option<&Snapshot>,
) -> Result<Option<Snapshot>, SourceError> {
    match source {
        Source::Git(git) => git.with_repo(|repo| {
            let (branch, oid) = git.tracked(repo)?;
            if let Some(prev) = previous {
                if prev.version == oid.to_string() && prev.label == branch {
                    return Ok(None);
                }
            }
            let mut view = git.view(repo, oid)?;
            view.prior = previous.map(|p| p.parsed_blobs.clone()).unwrap_or_default();
            Ok(Some(Snapshot::build(&mut view, &branch, uri, previous)))
        }),
        Source::Dir(dir) => {
            let mut view = dir.view()?;
            if let Some(prev) = previous {
                if prev.version == view.version {
                    return Ok(None);
                }
            }
            Ok(Some(Snapshot::build(&mut view, DEV_LABEL, uri, previous)))
        }
    }
}
