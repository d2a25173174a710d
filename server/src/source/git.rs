//! Git source: open a local repository or keep a clone of a remote one in the data
//! dir, and read config files straight from git objects (commit → tree → blob).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use git2::{
    AutotagOption, Cred, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid, RemoteCallbacks,
    Repository,
};
use sha2::{Digest, Sha256};

use super::{is_config_name, Blob, Ciphers, Root, SearchPath, View};
use crate::errors::{is_object_error, SourceError};
use crate::settings::{RecoverySettings, Settings};

/// Where the commit last served for a branch is remembered in a clone, so a restart
/// after the branch was deleted on the remote (and pruned by the fetch) still has it.
const REMEMBERED: &str = "refs/confhub/last-served/";

/// Where a remote repository is fetched from, with its credentials.
#[derive(Clone)]
struct Remote {
    url: String,
    token: Option<String>,
    ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    // Hand-written so a token can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// A git repository, local or a clone of a remote.
pub struct GitSource {
    path: PathBuf,
    remote: Option<Remote>,
    branch: Option<String>,
    search_path: Option<String>,
    search: Arc<SearchPath>,
    /// Open handles for reuse: `Repository` is `Send` but not `Sync`, so each blocking
    /// task takes one out and puts it back, instead of all sharing one behind a lock.
    pool: Mutex<Vec<Repository>>,
    /// Verification, repair and branch bookkeeping (boxed: rarely touched, and large).
    care: Box<Care>,
    suspicion: Arc<Suspicion>,
    uri: String,
    ciphers: Ciphers,
}

/// What a [`GitSource`] keeps to verify and repair its clone.
struct Care {
    /// Held (shared) by every use of a handle, and exclusively while a repaired clone is
    /// swapped in, so no handle ever sees half of a swap or outlives the clone it opened.
    swap: RwLock<()>,
    /// One repair at a time.
    repairing: Mutex<()>,
    repair_attempts: AtomicU64,
    health: Mutex<CloneHealth>,
    recovery: RecoverySettings,
    /// Delays between failed repairs: first, and cap.
    repair_retry: (Duration, Duration),
    /// Whether failing to remember the served commit was already logged.
    remember_warned: AtomicBool,
}

/// Raised when a read hits an object that cannot be read (missing, truncated, corrupt):
/// the refresh loop then verifies the clone and repairs it.
#[derive(Default)]
pub(crate) struct Suspicion {
    raised: AtomicBool,
    /// Set while the damage is known and a retry is scheduled: reads that fail meanwhile
    /// neither log nor wake the loop.
    quiet: AtomicBool,
    hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Suspicion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspicion")
            .field("raised", &self.raised.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Suspicion {
    /// Raise it if `e` says an object could not be read.
    pub(crate) fn note(&self, e: &git2::Error) {
        if is_object_error(e) {
            self.raise(&e.to_string());
        }
    }

    fn raise(&self, why: &str) {
        // Only the first error until the next check logs and wakes the loop: a damaged
        // clone fails every read, and must not flood the log.
        if !self.raised.swap(true, Ordering::AcqRel) && !self.quiet.load(Ordering::Acquire) {
            tracing::warn!(error = %why, "an object of the repository could not be read; verifying the clone");
            if let Some(hook) = self.hook.get() {
                hook();
            }
        }
    }

    fn take(&self) -> bool {
        self.raised.swap(false, Ordering::AcqRel)
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

/// What the server knows about its clone's health, for `GET /v1/status`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloneHealth {
    /// Verifications of the object store run (at start, and after object errors).
    pub verifications: u64,
    /// When the object store was last found intact.
    pub last_verified: Option<SystemTime>,
    /// Set while the clone is known to be damaged and not repaired.
    pub damaged: Option<String>,
    /// Fresh clones swapped in since start.
    pub repairs: u64,
    /// The last repair attempt.
    pub last_repair: Option<RepairOutcome>,
    /// Set while the tracked branch is gone and its last commit is served instead.
    pub branch_missing: Option<String>,
    repair_failures: u32,
    repair_not_before: Option<Instant>,
    /// After a read error that a verification did not confirm (the object lies outside
    /// what is verified), the next such error waits this long, so requests for many old
    /// labels cannot keep the server verifying.
    suspicion_not_before: Option<Instant>,
}

/// Pause between verifications triggered by read errors when the last one found the
/// clone intact.
const FALSE_ALARM_PAUSE: Duration = Duration::from_secs(10);

/// One repair attempt.
#[derive(Debug, Clone)]
pub(crate) struct RepairOutcome {
    /// When it ended.
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
    /// What was found damaged.
    pub reason: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The result of [`GitSource::ensure_intact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Integrity {
    /// Every object checked could be read.
    Intact,
    /// The clone was damaged; a fresh one replaced it.
    Repaired,
    /// The clone is damaged and was not repaired (a local repository, or the repair failed).
    Damaged(String),
}

/// What a verification read.
#[derive(Debug, Clone, Copy, Default)]
struct Verified {
    objects: usize,
    complete: bool,
}

/// Is `repo` a URL to clone rather than a local path?
pub(crate) fn is_remote(repo: &str) -> bool {
    ["file://", "git://", "http://", "https://", "ssh://"]
        .iter()
        .any(|p| repo.starts_with(p))
        || (repo.contains('@') && repo.contains(':') && !Path::new(repo).exists())
}

/// `https://user:secret@host/x` → `https://host/x`, for logs and Spring source names.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("path", &self.path)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// The config files of `root` and of its folders one level down (not hidden ones).
fn list_config_files(
    repo: &Repository,
    root: &git2::Tree<'_>,
    files: &mut BTreeMap<String, Blob>,
) -> Result<(), git2::Error> {
    for entry in root.iter() {
        let Ok(name) = entry.name() else { continue };
        match entry.kind() {
            Some(ObjectType::Blob) if is_config_name(name) => {
                files.insert(name.to_string(), Blob::Git(entry.id()));
            }
            Some(ObjectType::Tree) if !name.starts_with('.') => {
                for child in repo.find_tree(entry.id())?.iter() {
                    let Ok(child_name) = child.name() else {
                        continue;
                    };
                    if child.kind() == Some(ObjectType::Blob) && is_config_name(child_name) {
                        files.insert(format!("{name}/{child_name}"), Blob::Git(child.id()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where the repository is read from: a remote's clone under the data dir (named by a
/// digest of the URL without credentials), or the local repository itself; with the
/// remote and the URI entries carry.
fn location(settings: &Settings) -> Result<(PathBuf, Option<Remote>, String), SourceError> {
    if is_remote(&settings.repo) {
        let digest = hex::encode(&Sha256::digest(redact_url(&settings.repo).as_bytes())[..8]);
        let path = settings.data_dir.join(format!("repo-{digest}.git"));
        let remote = Remote {
            url: settings.repo.clone(),
            token: settings.git_token.as_ref().map(|t| t.expose().to_string()),
            ssh_key: settings.ssh_key.clone(),
        };
        return Ok((path, Some(remote), redact_url(&settings.repo)));
    }
    let path = PathBuf::from(&settings.repo);
    let abs = std::fs::canonicalize(&path).map_err(|source| SourceError::Io {
        path: settings.repo.clone(),
        source,
    })?;
    let uri = format!("file://{}", abs.display());
    Ok((abs, None, uri))
}

impl Care {
    fn new(settings: &Settings) -> Care {
        Care {
            swap: RwLock::new(()),
            repairing: Mutex::new(()),
            repair_attempts: AtomicU64::new(0),
            health: Mutex::new(CloneHealth::default()),
            recovery: settings.recovery.clone(),
            repair_retry: (
                settings.live.fetch_retry.max(Duration::from_millis(10)),
                settings.poll.max(Duration::from_secs(1)),
            ),
            remember_warned: AtomicBool::new(false),
        }
    }
}

impl GitSource {
    /// Open the repository (cloning or fetching a remote first). Blocking.
    pub fn open(settings: &Settings) -> Result<GitSource, SourceError> {
        let source = GitSource::prepare(settings)?;
        source.fetch()?;
        Ok(source)
    }

    /// Open the repository without fetching: a remote's clone is created (empty) when
    /// there is none, and left as it is otherwise, so a server can start from the
    /// clone it has while the remote is down. Blocking.
    pub fn prepare(settings: &Settings) -> Result<GitSource, SourceError> {
        disable_object_cache();
        let (path, remote, uri) = location(settings)?;
        let search = SearchPath::parse(settings.search_path.as_deref())?;
        let source = GitSource {
            path,
            remote,
            branch: settings.branch.clone(),
            search_path: search.folder().map(str::to_string),
            search: Arc::new(search),
            pool: Mutex::new(Vec::new()),
            care: Box::new(Care::new(settings)),
            suspicion: Arc::new(Suspicion::default()),
            uri,
            ciphers: Ciphers::of(settings),
        };
        if let Some(remote) = &source.remote {
            source.sweep_leftovers();
            if !source.path.exists() {
                source.create_clone(settings, remote)?;
            }
        } else {
            // Fail at start, not at the first request, if this is not a repository.
            source.with_repo(|_| Ok(()))?;
        }
        Ok(source)
    }

    /// An empty bare clone for the first fetch to fill.
    fn create_clone(&self, settings: &Settings, remote: &Remote) -> Result<(), SourceError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| SourceError::Io {
            path: settings.data_dir.display().to_string(),
            source: e,
        })?;
        Repository::init_bare(&self.path).map_err(SourceError::git("creating the clone"))?;
        tracing::info!(url = %redact_url(&remote.url), path = %self.path.display(), "cloning remote repository");
        Ok(())
    }

    /// `{repo uri}` as used in Spring property source names.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Override what views do with `{cipher}` values (`confhub check` without a key ignores them).
    pub(crate) fn set_ciphers(&mut self, ciphers: Ciphers) {
        self.ciphers = ciphers;
    }

    /// The search path as a tree path prefix (`""` or `config/`).
    pub(crate) fn search_prefix(&self) -> String {
        self.search_path
            .as_ref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default()
    }

    /// How folders are searched for config files.
    pub fn search(&self) -> &SearchPath {
        &self.search
    }

    /// Whether this is a clone of a remote (and so needs fetching to see changes).
    pub(crate) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Run `f` with an open repository handle. Blocking.
    pub fn with_repo<T>(
        &self,
        f: impl FnOnce(&Repository) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let _swap = crate::sync::read(&self.care.swap);
        let taken = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let repo = match taken {
            Some(r) => r,
            // Inside a git hook the new objects may sit in a quarantine directory that
            // only the environment (GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES) names.
            None if self.remote.is_none() && std::env::var_os("GIT_QUARANTINE_PATH").is_some() => {
                Repository::open_from_env()
                    .map_err(SourceError::git(format!("opening {}", self.path.display())))?
            }
            None => match Repository::open(&self.path) {
                Ok(repo) => repo,
                Err(e) => {
                    // Our own clone that no longer opens is damaged; a local repository
                    // that does not open is the operator's to fix.
                    if self.remote.is_some() && self.path.exists() {
                        self.suspicion.raise(&e.to_string());
                    }
                    return Err(SourceError::git(format!("opening {}", self.path.display()))(e));
                }
            },
        };
        let out = f(&repo);
        if let Err(e) = &out {
            if e.is_object_error() {
                self.suspicion.raise(&e.to_string());
            }
        }
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < 8 {
                pool.push(repo);
            }
        }
        out
    }

    /// Fetch branches and tags from the remote. Blocking; a no-op for local repositories.
    pub fn fetch(&self) -> Result<(), SourceError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        self.with_repo(|repo| fetch_into(repo, remote))
    }

    /// The commit a branch points at; `None` when there is no such branch. A branch
    /// whose commit cannot be read is an error (a damaged clone), not a missing branch.
    fn branch_ref(&self, repo: &Repository, name: &str) -> Result<Option<Oid>, SourceError> {
        let candidates = if self.remote.is_some() {
            vec![format!("refs/remotes/origin/{name}")]
        } else {
            vec![
                format!("refs/heads/{name}"),
                format!("refs/remotes/origin/{name}"),
            ]
        };
        for r in &candidates {
            match repo.find_reference(r) {
                Ok(reference) => {
                    return reference
                        .peel_to_commit()
                        .map(|c| Some(c.id()))
                        .map_err(|e| {
                            // libgit2 says `Invalid` here, not `Odb`, for a missing commit.
                            if e.code() == ErrorCode::NotFound {
                                self.suspicion.raise(&e.to_string());
                            }
                            SourceError::git(format!("reading {r}"))(e)
                        });
                }
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(SourceError::git(format!("reading {r}"))(e)),
            }
        }
        Ok(None)
    }

    /// The branch names tracked, in order of preference.
    fn branch_names(&self) -> Vec<String> {
        match &self.branch {
            Some(b) => vec![b.clone()],
            None => vec!["main".into(), "master".into()],
        }
    }

    /// The tracked branch's name and commit (`main`, falling back to `master`).
    pub fn tracked(&self, repo: &Repository) -> Result<(String, Oid), SourceError> {
        let names = self.branch_names();
        for name in &names {
            if let Some(oid) = self.branch_ref(repo, name)? {
                return Ok((name.clone(), oid));
            }
        }
        Err(SourceError::NoBranch(names.join("` or `")))
    }

    /// The branch and commit to serve: the tracked branch's head or, when the branch is
    /// gone (deleted on the remote and pruned by the fetch, or deleted locally), the last
    /// commit served for it — remembered in the clone across restarts, or `previous`
    /// (label, version) while running. Records the missing branch for `/v1/status`.
    pub(crate) fn serving_commit(
        &self,
        repo: &Repository,
        previous: Option<(&str, &str)>,
    ) -> Result<(String, Oid), SourceError> {
        match self.tracked(repo) {
            Ok(found) => {
                self.health().branch_missing = None;
                Ok(found)
            }
            Err(SourceError::NoBranch(names)) => {
                let remembered = self
                    .branch_names()
                    .into_iter()
                    .find_map(|name| {
                        let oid = repo.refname_to_id(&format!("{REMEMBERED}{name}")).ok()?;
                        Some((name, oid))
                    })
                    .or_else(|| {
                        let (label, version) = previous?;
                        Some((label.to_string(), Oid::from_str(version).ok()?))
                    });
                let Some((label, oid)) = remembered else {
                    return Err(SourceError::NoBranch(names));
                };
                let place = if self.remote.is_some() {
                    "on the remote"
                } else {
                    "in the repository"
                };
                let message = format!(
                    "branch `{label}` no longer exists {place}; serving its last fetched commit {oid} until it is back"
                );
                let mut health = self.health();
                if health.branch_missing.as_deref() != Some(message.as_str()) {
                    tracing::warn!(branch = %label, version = %oid, "the tracked branch is gone; serving its last fetched commit");
                    health.branch_missing = Some(message);
                }
                Ok((label, oid))
            }
            Err(e) => Err(e),
        }
    }

    /// Remember `oid` as the commit served for `label`, so a restart after the branch is
    /// deleted can still serve it. Only in our own clones: a local repository is never
    /// written to. A failure (a read-only data dir) is logged once and otherwise ignored.
    pub fn remember(&self, repo: &Repository, label: &str, oid: Oid) {
        if self.remote.is_none() {
            return;
        }
        let name = format!("{REMEMBERED}{label}");
        if repo.refname_to_id(&name).ok() == Some(oid) {
            return;
        }
        if let Err(e) = repo.reference(&name, oid, true, "confhub: served") {
            if !self.care.remember_warned.swap(true, Ordering::AcqRel) {
                tracing::warn!(error = %e, "cannot record the served commit in the clone (a read-only data dir?); a restart after the branch is deleted will not find it");
            }
        }
    }

    /// Up to `max` first-parent ancestors of `from`, newest first. Stops early at the
    /// root, or at a commit that cannot be read.
    pub(crate) fn first_parents(&self, repo: &Repository, from: Oid, max: usize) -> Vec<Oid> {
        let mut out = Vec::new();
        let Ok(mut commit) = repo.find_commit(from) else {
            return out;
        };
        while out.len() < max {
            match commit.parent(0) {
                Ok(parent) => {
                    out.push(parent.id());
                    commit = parent;
                }
                Err(_) => break,
            }
        }
        out
    }

    /// Resolve a label (branch, tag, full or short sha) to a commit; `Ok(None)` if
    /// unknown. The label must already be validated (`names::parse_label`). A label that
    /// exists but whose objects cannot be read (an annotated tag in a damaged pack) is an
    /// error, and raises the suspicion that gets the clone verified: answering "unknown
    /// label" would hide the damage for good.
    pub(crate) fn resolve_label(
        &self,
        repo: &Repository,
        label: &str,
    ) -> Result<Option<Oid>, SourceError> {
        if let Ok(Some(oid)) = self.branch_ref(repo, label) {
            return Ok(Some(oid));
        }
        if label == "main" && self.branch.is_none() {
            if let Ok(Some(oid)) = self.branch_ref(repo, "master") {
                return Ok(Some(oid));
            }
        }
        if let Ok(r) = repo.find_reference(&format!("refs/tags/{label}")) {
            // Through the object, not `Reference::peel_to_commit`: that one reports an
            // unreadable target as a generic error, which would not say "damaged".
            let Some(target) = r.resolve().ok().and_then(|r| r.target()) else {
                return Ok(None);
            };
            let commit = repo
                .find_object(target, None)
                .and_then(|o| o.peel_to_commit());
            return self.peeled(commit, label);
        }
        if (4..=40).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_hexdigit()) {
            let Ok(obj) = repo.revparse_single(label) else {
                return Ok(None);
            };
            return self.peeled(obj.peel_to_commit(), label);
        }
        Ok(None)
    }

    /// The commit a label peeled to; not a commit is unknown, an unreadable object an error.
    fn peeled(
        &self,
        peeled: Result<git2::Commit<'_>, git2::Error>,
        label: &str,
    ) -> Result<Option<Oid>, SourceError> {
        match peeled {
            Ok(c) => Ok(Some(c.id())),
            Err(e) if is_object_error(&e) => {
                self.suspicion.note(&e);
                Err(SourceError::git(format!("reading label `{label}`"))(e))
            }
            Err(_) => Ok(None),
        }
    }

    /// The config files at `commit`.
    pub fn view<'r>(&self, repo: &'r Repository, commit: Oid) -> Result<View<'r>, SourceError> {
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| {
                self.suspicion.note(&e);
                SourceError::git(format!("reading commit {commit}"))(e)
            })?;
        self.view_tree(repo, tree, commit.to_string())
    }

    /// The config files of a tree (a commit's, or the index's from `git write-tree`,
    /// which is how a pre-commit hook checks what is staged).
    pub(crate) fn view_tree<'r>(
        &self,
        repo: &'r Repository,
        tree: git2::Tree<'r>,
        version: String,
    ) -> Result<View<'r>, SourceError> {
        let tree_id = tree.id();
        let context = || format!("reading tree {tree_id}");
        let mut files = BTreeMap::new();
        if let SearchPath::Spring(patterns) = &*self.search {
            list_spring(repo, &tree, patterns, &mut files).map_err(SourceError::git(context()))?;
            let mut view = View::new(
                version,
                String::new(),
                files,
                Some(repo),
                Root::Git(Some(tree_id)),
            );
            view.ciphers = self.ciphers.clone();
            view.suspicion = Some(self.suspicion.clone());
            view.search = self.search.clone();
            return Ok(view);
        }
        let (root, prefix) = self
            .search_root(repo, tree)
            .map_err(SourceError::git(context()))?;
        let root_id = root.as_ref().map(|t| t.id());
        if let Some(root) = root {
            list_config_files(repo, &root, &mut files).map_err(SourceError::git(context()))?;
        }
        let mut view = View::new(version, prefix, files, Some(repo), Root::Git(root_id));
        view.ciphers = self.ciphers.clone();
        view.suspicion = Some(self.suspicion.clone());
        Ok(view)
    }

    /// The tree of the search path in `tree` (none when the commit lacks the folder),
    /// and the prefix its files have in the repository.
    fn search_root<'r>(
        &self,
        repo: &'r Repository,
        tree: git2::Tree<'r>,
    ) -> Result<(Option<git2::Tree<'r>>, String), git2::Error> {
        let Some(sp) = &self.search_path else {
            return Ok((Some(tree), String::new()));
        };
        let sub = match tree.get_path(Path::new(sp)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
                Some(repo.find_tree(entry.id())?)
            }
            _ => None,
        };
        Ok((sub, format!("{sp}/")))
    }

    /// Call `hook` (once per suspicion) when a read hits an unreadable object; the
    /// server pokes its refresh loop with it, which then runs [`GitSource::ensure_intact`].
    pub(crate) fn on_damage(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.suspicion.hook.set(Box::new(hook));
    }

    /// Whether the clone should be checked now: a read failed on an object since the last
    /// check or, when it is known damaged, the next attempt (with backoff) is due.
    pub(crate) fn check_due(&self) -> bool {
        let health = self.health();
        if health.damaged.is_some() {
            return health.repair_not_before.is_none_or(|t| Instant::now() >= t);
        }
        self.suspicion.is_raised()
            && health
                .suspicion_not_before
                .is_none_or(|t| Instant::now() >= t)
    }

    /// The clone's health, for `GET /v1/status`.
    pub(crate) fn clone_health(&self) -> CloneHealth {
        self.health().clone()
    }

    fn health(&self) -> MutexGuard<'_, CloneHealth> {
        crate::sync::lock(&self.care.health)
    }

    /// Verify that the tracked commit, `also` (the commit being served) and the tips of
    /// the other branches and tags can be read in full (commit, trees and blobs under the
    /// search path; at most `verify_max_objects` objects in all), with a fresh handle:
    /// a pooled one may still read packs deleted since it opened them, as a restarted
    /// server could not. A damaged clone of a remote is repaired with a fresh clone; a
    /// failed repair is retried with backoff, at the next check. Blocking.
    pub(crate) fn ensure_intact(&self, also: Option<Oid>) -> Integrity {
        let suspected = self.suspicion.take();
        let verified = self.verify(also);
        let mut health = self.health();
        health.verifications += 1;
        let damage = match verified {
            Ok(v) => {
                tracing::debug!(objects = v.objects, complete = v.complete, "clone verified");
                if suspected {
                    health.suspicion_not_before = Some(Instant::now() + FALSE_ALARM_PAUSE);
                }
                if health.damaged.take().is_some() {
                    tracing::info!(path = %self.path.display(), "the repository reads in full again");
                }
                self.mark_intact(&mut health);
                return Integrity::Intact;
            }
            Err(damage) => damage,
        };
        tracing::error!(path = %self.path.display(), error = %damage, "the repository's object store is damaged");
        let (mut health, outcome) = self.try_repair(health, &damage);
        match outcome {
            Ok(()) => {
                health.repairs += 1;
                health.damaged = None;
                self.mark_intact(&mut health);
                Integrity::Repaired
            }
            Err(message) => self.stays_damaged(&mut health, message),
        }
    }

    /// The clone reads in full: no repair pending, reads that fail may raise suspicion.
    fn mark_intact(&self, health: &mut CloneHealth) {
        health.repair_failures = 0;
        health.repair_not_before = None;
        health.last_verified = Some(SystemTime::now());
        self.suspicion.quiet.store(false, Ordering::Release);
    }

    /// Replace a remote's damaged clone by a fresh one, recording the attempt; a local
    /// repository is never repaired. The health lock is released while the clone runs.
    fn try_repair<'a>(
        &'a self,
        health: MutexGuard<'a, CloneHealth>,
        damage: &str,
    ) -> (MutexGuard<'a, CloneHealth>, Result<(), String>) {
        if self.remote.is_none() {
            return (health, Err(format!(
                "{damage} (confhub does not repair a local repository: restore it, e.g. from a `git clone` of a good copy)"
            )));
        }
        drop(health);
        let started = Instant::now();
        let repaired = self.repair();
        let mut health = self.health();
        health.last_repair = Some(RepairOutcome {
            at: SystemTime::now(),
            took: started.elapsed(),
            reason: damage.to_string(),
            error: repaired.as_ref().err().map(ToString::to_string),
        });
        let outcome = match repaired {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), took_ms = started.elapsed().as_millis() as u64, "the damaged clone was replaced by a fresh clone");
                Ok(())
            }
            Err(e) => Err(format!("{damage}; repairing it failed: {e}")),
        };
        (health, outcome)
    }

    /// Checked again with backoff, not at every read that fails meanwhile.
    fn stays_damaged(&self, health: &mut CloneHealth, message: String) -> Integrity {
        health.repair_failures = health.repair_failures.saturating_add(1);
        let (base, cap) = self.care.repair_retry;
        let wait = base
            .saturating_mul(1u32 << health.repair_failures.saturating_sub(1).min(20))
            .min(cap);
        health.repair_not_before = Some(Instant::now() + wait);
        tracing::error!(error = %message, retry_in = ?wait, "the clone stays damaged; serving what can still be read");
        health.damaged = Some(message.clone());
        self.suspicion.quiet.store(true, Ordering::Release);
        Integrity::Damaged(message)
    }

    /// See [`GitSource::ensure_intact`]; the error names the first unreadable object.
    fn verify(&self, also: Option<Oid>) -> Result<Verified, String> {
        let _swap = crate::sync::read(&self.care.swap);
        let repo = Repository::open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        let mut commits = Vec::new();
        match self.tracked(&repo) {
            Ok((_, oid)) => commits.push(oid),
            Err(SourceError::NoBranch(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        commits.extend(also);
        let refs = repo
            .references()
            .map_err(|e| format!("listing references: {e}"))?;
        for reference in refs {
            let reference = reference.map_err(|e| format!("reading references: {e}"))?;
            let name = reference.name().unwrap_or("?").to_string();
            let Some(target) = reference.resolve().ok().and_then(|r| r.target()) else {
                continue;
            };
            // A tag may name a tree or a blob; only a missing object is damage.
            let object = repo
                .find_object(target, None)
                .map_err(|e| format!("{name} ({target}): {e}"))?;
            if let Ok(commit) = object.peel_to_commit() {
                commits.push(commit.id());
            }
        }
        let mut budget = Budget {
            seen: HashSet::new(),
            left: self.care.recovery.verify_max_objects,
            objects: 0,
        };
        // The served commits come first, so the budget goes to them before other labels.
        for commit in &commits {
            if budget.left == 0 {
                break;
            }
            verify_commit(&repo, *commit, self.search_path.as_deref(), &mut budget)?;
        }
        Ok(Verified {
            objects: budget.objects,
            complete: budget.left > 0,
        })
    }

    /// Clone the remote afresh beside the damaged clone (`<clone>.repair-<n>`), verify the
    /// new one, and swap it in by renaming; every handle of the old one is dropped. Blocking.
    fn repair(&self) -> Result<(), SourceError> {
        let Some(remote) = &self.remote else {
            return Err(SourceError::Task(
                "a local repository is not repaired".into(),
            ));
        };
        let _one = crate::sync::lock(&self.care.repairing);
        let n = self.care.repair_attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let fresh = sibling(&self.path, &format!("repair-{n}"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SourceError::Io { path, source }
        };
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        }
        tracing::info!(url = %redact_url(&remote.url), path = %fresh.display(), "cloning the remote afresh to repair the clone");
        let result = (|| {
            let repo = Repository::init_bare(&fresh)
                .map_err(SourceError::git(format!("creating {}", fresh.display())))?;
            fetch_into(&repo, remote)?;
            let (_, head) = self.tracked(&repo)?;
            let mut budget = Budget {
                seen: HashSet::new(),
                left: self.care.recovery.verify_max_objects,
                objects: 0,
            };
            verify_commit(&repo, head, self.search_path.as_deref(), &mut budget).map_err(
                |detail| SourceError::Damaged {
                    path: fresh.display().to_string(),
                    detail,
                },
            )?;
            drop(repo);
            self.swap_in(&fresh, n)
        })();
        if result.is_err() && fresh.exists() {
            let _ = std::fs::remove_dir_all(&fresh);
        }
        result
    }

    fn swap_in(&self, fresh: &Path, n: u64) -> Result<(), SourceError> {
        let aside = sibling(&self.path, &format!("damaged-{n}"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SourceError::Io { path, source }
        };
        {
            let _exclusive = crate::sync::write(&self.care.swap);
            if self.path.exists() {
                std::fs::rename(&self.path, &aside).map_err(io(&self.path))?;
            }
            if let Err(e) = std::fs::rename(fresh, &self.path) {
                let _ = std::fs::rename(&aside, &self.path);
                return Err(io(fresh)(e));
            }
            if let Ok(mut pool) = self.pool.lock() {
                pool.clear();
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!(path = %aside.display(), error = %e, "cannot remove the damaged clone");
        }
        Ok(())
    }

    /// Remove what an interrupted repair left beside the clone.
    fn sweep_leftovers(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = file.strip_prefix(&prefix) else {
                continue;
            };
            if rest.starts_with("repair-") || rest.starts_with("damaged-") {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed what an interrupted repair left")
                    }
                    Err(e) => {
                        tracing::debug!(path = %entry.path().display(), error = %e, "cannot remove a leftover of a repair")
                    }
                }
            }
        }
    }
}

/// Turn off libgit2's object cache, for the whole process.
///
/// Each repository handle keeps every commit and tree it reads (up to libgit2's
/// process-wide 256 MiB), and the handles pooled in [`GitSource`] live as long as the
/// server: every version it ever built, and every label it was asked for, stayed in
/// memory (about 1.7 KiB a commit on a small repository, far more with larger trees).
/// The cache buys little here: a refresh reads each object of the new version once,
/// files unchanged since the last version are not read at all, and resolved pairs are
/// cached above libgit2, bounded. Only the cache's on/off switch has a safe binding
/// (its size cap does not), and it is process-wide: an application embedding the
/// server reads its own repositories uncached too.
fn disable_object_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::enable_caching(false));
}

/// `<clone>.<suffix>`, in the same directory (so a rename swaps it in).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

/// Objects a verification may still read, and those already read.
struct Budget {
    seen: HashSet<Oid>,
    left: usize,
    objects: usize,
}

/// The config files of a Spring search path: the root's, then those of every folder
/// on one of `patterns` (a placeholder part stands for any folder name there).
fn list_spring(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    patterns: &[super::search::Pattern],
    files: &mut BTreeMap<String, Blob>,
) -> Result<(), git2::Error> {
    // (tree, its path, its depth): walked only along the patterns.
    let mut stack = vec![(tree.id(), String::new(), 0usize)];
    while let Some((id, dir, depth)) = stack.pop() {
        let here = repo.find_tree(id)?;
        let on_pattern = depth == 0
            || patterns
                .iter()
                .any(|p| p.depth() == depth && dir_matches(p, &dir));
        for entry in here.iter() {
            let Ok(name) = entry.name() else { continue };
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            match entry.kind() {
                Some(ObjectType::Blob) if on_pattern && is_config_name(name) => {
                    files.insert(path, Blob::Git(entry.id()));
                }
                Some(ObjectType::Tree) if !name.starts_with('.') => {
                    let deeper = patterns
                        .iter()
                        .any(|p| p.depth() > depth && dir_matches(p, &path));
                    if deeper {
                        stack.push((entry.id(), path, depth + 1));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether every part of `dir` fits `pattern` so far.
pub(crate) fn dir_matches(pattern: &super::search::Pattern, dir: &str) -> bool {
    dir.split('/')
        .enumerate()
        .all(|(i, part)| pattern.admits(i, part))
}

/// Read `commit`, its tree and every tree and blob under `search_path` (in full: a
/// truncated or corrupt pack only shows when the object is inflated and hashed).
fn verify_commit(
    repo: &Repository,
    commit: Oid,
    search_path: Option<&str>,
    budget: &mut Budget,
) -> Result<(), String> {
    let odb = repo.odb().map_err(|e| format!("object database: {e}"))?;
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| format!("commit {commit}: {e}"))?;
    let mut stack: Vec<(Oid, String)> = match search_path {
        None => vec![(tree.id(), String::new())],
        Some(sp) => match tree.get_path(Path::new(sp)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
                vec![(entry.id(), format!("{sp}/"))]
            }
            _ => Vec::new(),
        },
    };
    while let Some((id, prefix)) = stack.pop() {
        if budget.left == 0 {
            return Ok(());
        }
        if !budget.seen.insert(id) {
            continue;
        }
        let tree = repo
            .find_tree(id)
            .map_err(|e| format!("tree {id} ({}) at {commit}: {e}", display_dir(&prefix)))?;
        budget.left -= 1;
        budget.objects += 1;
        for entry in tree.iter() {
            let name = entry.name().unwrap_or("?");
            match entry.kind() {
                Some(ObjectType::Tree) => stack.push((entry.id(), format!("{prefix}{name}/"))),
                Some(ObjectType::Blob) => {
                    if budget.left == 0 {
                        return Ok(());
                    }
                    if !budget.seen.insert(entry.id()) {
                        continue;
                    }
                    odb.read(entry.id()).map_err(|e| {
                        format!("{prefix}{name} (blob {}) at {commit}: {e}", entry.id())
                    })?;
                    budget.left -= 1;
                    budget.objects += 1;
                }
                // Submodules (commits in a tree) live in other repositories.
                _ => {}
            }
        }
    }
    Ok(())
}

fn display_dir(prefix: &str) -> &str {
    if prefix.is_empty() {
        "/"
    } else {
        prefix
    }
}

/// Fetch branches and tags from `remote` into `repo`. Blocking.
fn fetch_into(repo: &Repository, remote: &Remote) -> Result<(), SourceError> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(|_url, user_from_url, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str("authentication failed"));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(key) = &remote.ssh_key {
                return Cred::ssh_key(user_from_url.unwrap_or("git"), None, key, None);
            }
            return Cred::ssh_key_from_agent(user_from_url.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = &remote.token {
                return Cred::userpass_plaintext(user_from_url.unwrap_or("x-access-token"), token);
            }
        }
        Cred::default()
    });
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::All);
    let mut anon = repo
        .remote_anonymous(&remote.url)
        .map_err(SourceError::git(format!(
            "remote {}",
            redact_url(&remote.url)
        )))?;
    anon.fetch(
        &[
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ],
        Some(&mut options),
        None,
    )
    .map_err(SourceError::git(format!(
        "fetching {}",
        redact_url(&remote.url)
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:tok@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(redact_url("ssh://git@host/x.git"), "ssh://host/x.git");
        assert_eq!(redact_url("file:///tmp/x@y/repo"), "file:///tmp/x@y/repo");
    }

    #[test]
    fn remote_detection() {
        assert!(is_remote("file:///tmp/x.git"));
        assert!(is_remote("git://127.0.0.1:9418/x.git"));
        assert!(is_remote("https://example.com/x.git"));
        assert!(!is_remote("/tmp/some/path"));
        assert!(!is_remote("examples/config-repo"));
    }
}
