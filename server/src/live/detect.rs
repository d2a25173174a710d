//! Change detection and the refresh loop (ARCHITECTURE.md §3).
//!
//! Every way of noticing a change only pokes a [`Trigger`]:
//! - local git repositories: `notify` (debounced) on `HEAD`, `packed-refs` and `refs/`;
//! - `--dev` directories: `notify` on the files;
//! - remote repositories: the poll timer (`--poll`), and `POST /v1/webhook`
//!   ([`crate::http`]), which asks for a fetch;
//! - every source: the poll timer as a safety net for missed file events.
//!
//! One task ([`refresh_loop`]) owns the work: on a poke it runs
//! [`Store::refresh`] on a blocking thread (fetching first when asked), then hands the
//! pairs whose digest changed to the [`Hub`]. Pokes arriving while a refresh runs
//! collapse into one more refresh, so a burst of commits costs one or two refreshes and
//! always ends on the newest commit. Failed fetches are retried with exponential backoff
//! and jitter (capped at the poll interval) while the last fetched commit keeps being
//! served; outcomes are recorded in [`LiveStatus`] for `GET /v1/status`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::errors::SourceError;
use crate::live::hub::Hub;
use crate::metrics::Metrics;
use crate::names::parse_envs;
use crate::settings::Settings;
use crate::store::{Changes, Source, Store};

/// Asks the refresh loop for a refresh (and, for remotes, a fetch first).
#[derive(Debug, Default)]
pub struct Trigger {
    notify: Notify,
    fetch: AtomicBool,
    /// When the first poke not yet taken by the refresh loop came (push latency).
    since: Mutex<Option<std::time::Instant>>,
}

impl Trigger {
    /// Request a refresh; `fetch` asks remotes to be fetched first. Cheap and
    /// callable from any thread; requests made while a refresh runs collapse into one.
    pub fn poke(&self, fetch: bool) {
        if fetch {
            self.fetch.store(true, Ordering::Release);
        }
        crate::sync::lock(&self.since).get_or_insert_with(std::time::Instant::now);
        self.notify.notify_one();
    }

    /// When the oldest poke since the last call came, if any.
    fn take_since(&self) -> Option<std::time::Instant> {
        crate::sync::lock(&self.since).take()
    }
}

/// What happened in the last refresh or fetch, for `GET /v1/status`.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it finished.
    pub at: SystemTime,
    /// The error, if it failed.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// Bookkeeping of the refresh loop, read by `GET /v1/status`.
#[derive(Debug, Default)]
pub struct LiveStatus {
    inner: Mutex<StatusInner>,
    refreshes: AtomicU64,
    fetches: AtomicU64,
    webhooks_accepted: AtomicU64,
    webhooks_rejected: AtomicU64,
}

/// A copy of [`LiveStatus`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct StatusInner {
    /// Poll interval in force.
    pub poll: Duration,
    /// Whether the source is a remote that gets fetched.
    pub remote: bool,
    /// Paths watched with `notify`.
    pub watching: Vec<PathBuf>,
    /// Why watching failed (the poll timer still runs).
    pub watch_error: Option<String>,
    /// Last refresh.
    pub last_refresh: Option<Outcome>,
    /// Pairs whose digest changed in the last refresh that moved the version.
    pub last_changed: usize,
    /// Last fetch of a remote.
    pub last_fetch: Option<Outcome>,
    /// Last fetch that succeeded.
    pub last_fetch_ok: Option<SystemTime>,
    /// Failed fetches in a row.
    pub fetch_failures: u32,
    /// When the next fetch is due.
    pub next_fetch: Option<SystemTime>,
    /// Refreshes run since start.
    pub refreshes: u64,
    /// Fetches run since start.
    pub fetches: u64,
    /// Webhook calls that triggered a fetch.
    pub webhooks_accepted: u64,
    /// Webhook calls refused (bad or missing signature).
    pub webhooks_rejected: u64,
    /// Why the source could not be opened yet (the server keeps retrying).
    pub start_error: Option<String>,
}

impl LiveStatus {
    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        f(&mut crate::sync::lock(&self.inner))
    }

    /// The current state.
    pub fn get(&self) -> StatusInner {
        let mut s = self.with(|s| s.clone());
        s.refreshes = self.refreshes.load(Ordering::Relaxed);
        s.fetches = self.fetches.load(Ordering::Relaxed);
        s.webhooks_accepted = self.webhooks_accepted.load(Ordering::Relaxed);
        s.webhooks_rejected = self.webhooks_rejected.load(Ordering::Relaxed);
        s
    }

    /// Record a failed attempt to open the source (a remote that cannot be fetched and no
    /// clone to start from): `/readyz` and `/v1/status` show it until an attempt succeeds.
    pub fn start_failed(&self, error: &str, attempt: u32, retry_in: Duration) {
        self.with(|s| {
            s.start_error = Some(format!(
                "{error} (attempt {attempt}, retrying in {} ms)",
                retry_in.as_millis()
            ));
            if s.remote {
                s.last_fetch = Some(Outcome {
                    at: SystemTime::now(),
                    error: Some(error.to_string()),
                    took: Duration::ZERO,
                });
                s.fetch_failures = attempt;
                s.next_fetch = Some(SystemTime::now() + retry_in);
            }
        });
    }

    /// Why the source is not open yet, if an attempt failed.
    pub fn start_error(&self) -> Option<String> {
        self.with(|s| s.start_error.clone())
    }

    /// Count a webhook call.
    pub fn webhook(&self, accepted: bool) {
        let counter = if accepted {
            &self.webhooks_accepted
        } else {
            &self.webhooks_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one run on the blocking thread produced.
struct RunResult {
    fetch: Option<(Result<(), SourceError>, Duration)>,
    refresh: Option<(Result<Changes, SourceError>, Duration)>,
}

/// Watches the source for the life of the server; stops the debouncer (and its thread)
/// when dropped.
pub struct WatchGuard(Option<Debouncer<RecommendedWatcher, RecommendedCache>>);

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WatchGuard")
            .field(&self.0.is_some())
            .finish()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.stop_nonblocking();
        }
    }
}

impl LiveStatus {
    /// Record what the loop will do, before it starts (so `/v1/status` is complete from
    /// the first request).
    pub fn init(&self, poll: Duration, remote: bool) {
        self.with(|s| {
            s.poll = poll;
            s.remote = remote;
            s.next_fetch = remote.then(|| SystemTime::now() + poll);
        });
    }
}

/// Start watching the source with `notify` (refs of a local repository, files of a
/// directory; nothing for remotes). Events poke `trigger`. Failure is logged and
/// recorded; the poll timer still runs.
pub async fn start_watching(
    store: &Arc<Store>,
    trigger: &Arc<Trigger>,
    status: &LiveStatus,
    debounce: Duration,
) -> WatchGuard {
    let store = store.clone();
    let trigger = trigger.clone();
    match tokio::task::spawn_blocking(move || start_watcher(&store, trigger, debounce)).await {
        Ok(Ok((debouncer, paths))) => {
            if !paths.is_empty() {
                tracing::info!(paths = ?paths, "watching for changes");
            }
            status.with(|s| s.watching = paths);
            WatchGuard(debouncer)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot watch the repository; relying on the poll timer");
            status.with(|s| s.watch_error = Some(e));
            WatchGuard(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "watcher setup task failed");
            WatchGuard(None)
        }
    }
}

/// Run until `hub.shutdown()`: refresh on every trigger and on the poll timer, fetching
/// remotes, and push the changed pairs to the hub.
///
/// Each round runs in a `refresh{fetch, old, new}` span (`new` once known), and records
/// fetch and refresh durations and failures, and the push latency (from the oldest poke
/// that started the round, or the poll timer, until the fan-out is done) in `metrics`.
pub async fn refresh_loop(
    store: Arc<Store>,
    hub: Arc<Hub>,
    trigger: Arc<Trigger>,
    status: Arc<LiveStatus>,
    settings: Settings,
    metrics: Arc<Metrics>,
) {
    let shutdown = hub.shutdown_signal();
    tokio::pin!(shutdown);
    let poll = settings.poll.max(Duration::from_millis(100));
    let live = settings.live.clone();
    let remote = matches!(store.source(), Source::Git(g) if g.is_remote());
    status.init(poll, remote);
    let extra_pairs = Arc::new(Notify::new());
    tokio::spawn(
        follow_extra_pairs(store.clone(), hub.clone(), extra_pairs.clone())
            .instrument(tracing::info_span!("extra_pairs")),
    );

    let mut next_poll = Instant::now() + poll;
    let mut failures: u32 = 0;
    match store.opening_fetch() {
        // The store opened on the commit already in the clone: retry as after any failed fetch.
        Some(f) if f.error.is_some() => {
            failures = 1;
            metrics.fetch(f.took, false);
            let retry = backoff(live.fetch_retry, poll, failures);
            next_poll = Instant::now() + retry;
            status.with(|s| {
                s.start_error = None;
                s.last_fetch = Some(Outcome {
                    at: f.at,
                    error: f.error.clone(),
                    took: f.took,
                });
                s.fetch_failures = failures;
                s.next_fetch = Some(SystemTime::now() + retry);
            });
        }
        Some(f) => {
            metrics.fetch_succeeded();
            status.with(|s| {
                s.start_error = None;
                // Attempts that failed before this one were recorded: close them.
                if s.fetch_failures > 0 {
                    s.last_fetch = Some(Outcome {
                        at: f.at,
                        error: None,
                        took: f.took,
                    });
                    s.last_fetch_ok = Some(f.at);
                    s.fetch_failures = 0;
                }
            });
        }
        None => status.with(|s| s.start_error = None),
    }

    loop {
        let polled = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = trigger.notify.notified() => false,
            () = tokio::time::sleep_until(next_poll) => true,
        };
        let asked = trigger.fetch.swap(false, Ordering::AcqRel);
        let fetch = remote && (polled || asked);
        let triggered_at = trigger.take_since().unwrap_or_else(std::time::Instant::now);
        let span = tracing::info_span!(
            "refresh",
            fetch,
            old = %store.snapshot().version,
            new = tracing::field::Empty,
        );

        let run = {
            let store = store.clone();
            let span = span.clone();
            tokio::task::spawn_blocking(move || span.in_scope(|| run_once(&store, fetch)))
        };
        tokio::pin!(run);
        let result = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = &mut run => r,
            () = tokio::time::sleep(live.fetch_timeout), if fetch => {
                let msg = format!("fetch timed out after {:?} (still waiting for it to end)", live.fetch_timeout);
                span.in_scope(|| tracing::warn!(error = %msg, "fetch failed"));
                status.with(|s| {
                    s.last_fetch = Some(Outcome { at: SystemTime::now(), error: Some(msg), took: live.fetch_timeout });
                    s.fetch_failures += 1;
                });
                // libgit2 cannot be interrupted safely: wait for the stuck attempt to end
                // (no second fetch may run beside it), still answering shutdown.
                tokio::select! {
                    () = &mut shutdown => break,
                    r = &mut run => r,
                }
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                span.in_scope(|| tracing::error!(error = %e, "refresh task failed"));
                status.with(|s| {
                    s.last_refresh = Some(Outcome {
                        at: SystemTime::now(),
                        error: Some(format!("refresh task failed: {e}")),
                        took: Duration::ZERO,
                    })
                });
                next_poll = Instant::now() + poll;
                continue;
            }
        };

        if let Some((fetched, took)) = &result.fetch {
            let _in_span = span.enter(); // no await in this block
            metrics.fetch(*took, fetched.is_ok());
            status.fetches.fetch_add(1, Ordering::Relaxed);
            match fetched {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, "fetch succeeded again");
                    }
                    failures = 0;
                    let now = SystemTime::now();
                    status.with(|s| {
                        s.last_fetch = Some(Outcome {
                            at: now,
                            error: None,
                            took: *took,
                        });
                        s.last_fetch_ok = Some(now);
                        s.fetch_failures = 0;
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry = backoff(live.fetch_retry, poll, failures);
                    tracing::warn!(error = %e, failures, retry_in = ?retry, "fetch failed; serving the last fetched commit");
                    status.with(|s| {
                        s.last_fetch = Some(Outcome {
                            at: SystemTime::now(),
                            error: Some(e.to_string()),
                            took: *took,
                        });
                        s.fetch_failures = failures;
                    });
                }
            }
        }
        if fetch || polled {
            let wait = if failures > 0 {
                backoff(live.fetch_retry, poll, failures)
            } else {
                poll
            };
            next_poll = Instant::now() + wait;
            if remote {
                status.with(|s| s.next_fetch = Some(SystemTime::now() + wait));
            }
        }

        let Some((refreshed, took)) = result.refresh else {
            continue;
        };
        status.refreshes.fetch_add(1, Ordering::Relaxed);
        metrics.refresh(took, refreshed.is_ok());
        match refreshed {
            Ok(changes) => {
                span.record("new", tracing::field::display(&changes.new_version));
                let moved = changes.old_version != changes.new_version;
                status.with(|s| {
                    s.last_refresh = Some(Outcome {
                        at: SystemTime::now(),
                        error: None,
                        took,
                    });
                    if moved {
                        s.last_changed = changes.changed.len();
                    }
                });
                if moved {
                    span.in_scope(|| publish(&store, &hub, changes, took));
                    metrics.pushed(triggered_at.elapsed());
                    extra_pairs.notify_one();
                }
            }
            Err(e) => {
                span.in_scope(
                    || tracing::warn!(error = %e, "refresh failed; serving the previous snapshot"),
                );
                status.with(|s| {
                    s.last_refresh = Some(Outcome {
                        at: SystemTime::now(),
                        error: Some(e.to_string()),
                        took,
                    })
                });
            }
        }
    }
    tracing::debug!("refresh loop stopped");
}

/// Fetch (when asked) and refresh. Blocking.
fn run_once(store: &Store, fetch: bool) -> RunResult {
    let mut out = RunResult {
        fetch: None,
        refresh: None,
    };
    if fetch {
        if let Source::Git(git) = store.source() {
            let started = std::time::Instant::now();
            let fetched = git.fetch();
            let failed = fetched.is_err();
            out.fetch = Some((fetched, started.elapsed()));
            // A fetch that failed on the clone's own objects still goes on to the refresh,
            // which verifies and repairs the clone.
            if failed && !store.clone_check_due() {
                return out;
            }
        }
    }
    let started = std::time::Instant::now();
    let refreshed = store.refresh(false);
    out.refresh = Some((refreshed, started.elapsed()));
    out
}

/// Push what changed, log what broke.
fn publish(store: &Store, hub: &Hub, changes: Changes, took: Duration) {
    let snapshot = store.snapshot();
    let errors = snapshot.errors();
    tracing::info!(
        from = %changes.old_version,
        to = %changes.new_version,
        changed = changes.changed.len(),
        failing = errors.len(),
        took_ms = took.as_millis() as u64,
        "new version"
    );
    for e in &errors {
        tracing::warn!(
            service = %e.service,
            env = %e.env,
            version = %e.version,
            file = e.error.file.as_deref().unwrap_or("-"),
            line = e.error.line.unwrap_or(0),
            error = %e.error.message,
            "pair fails to resolve; it keeps serving its last good config"
        );
    }
    for entry in &changes.changed {
        hub.publish(entry);
    }
}

/// Keep watched pairs outside the snapshot (several envs, undeclared envs, unknown
/// services) up to date: after each new version (`wake`), resolve each of them once,
/// all in one pass, and push those whose digest changed. Runs beside the refresh
/// loop, so snapshot pairs are pushed without waiting for these, and the next
/// version's refresh does not wait either; versions arriving during a pass collapse
/// into one more pass, at the newest. The hub bounds how many such pairs there are
/// (`ws_max_extra_pairs`).
async fn follow_extra_pairs(store: Arc<Store>, hub: Arc<Hub>, wake: Arc<Notify>) {
    let shutdown = hub.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = wake.notified() => {}
        }
        let snapshot = store.snapshot();
        let keys = hub.extra_pairs(|service, env| snapshot.slot(service, env).is_some());
        drop(snapshot);
        // Subscriptions are checked when made; a pair that fails to parse here has no
        // config to push.
        let (keys, pairs): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .filter_map(|key| {
                let envs = parse_envs(&key.1).ok()?;
                let pair = (key.0.clone(), envs);
                Some((key, pair))
            })
            .unzip();
        if pairs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let resolving = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.lookup_tracked_many(&pairs))
        };
        let resolved = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = resolving => r,
        };
        match resolved {
            Ok(Ok(results)) => {
                for ((service, env), result) in keys.iter().zip(results) {
                    match result {
                        Ok(entry) if entry.service_known => hub.publish_if_new(&entry),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(%service, %env, error = %e, "watched pair does not resolve at the new version")
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, pairs = keys.len(), "cannot resolve the watched pairs outside the snapshot")
            }
            Err(e) => tracing::error!(error = %e, "resolving task failed"),
        }
        tracing::debug!(
            pairs = keys.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "watched pairs outside the snapshot resolved"
        );
    }
}

/// Delay before retry number `failures` (1-based): `base · 2^(failures-1)`, capped at
/// `cap`, with jitter taking it down by up to half.
pub(crate) fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    confhub_client::retry::backoff(base, cap, failures, confhub_client::retry::Jitter::Equal)
}

type Watcher = Option<Debouncer<RecommendedWatcher, RecommendedCache>>;

/// Start watching the source: refs of a local repository, files of a directory;
/// nothing for remotes. Blocking.
fn start_watcher(
    store: &Store,
    trigger: Arc<Trigger>,
    debounce: Duration,
) -> Result<(Watcher, Vec<PathBuf>), String> {
    // (path, recursive)
    let (targets, filter): (Vec<(PathBuf, bool)>, Filter) = match store.source() {
        Source::Git(git) if git.is_remote() => return Ok((None, Vec::new())),
        Source::Git(git) => {
            let (git_dir, common) = git
                .with_repo(|r| Ok((r.path().to_path_buf(), r.commondir().to_path_buf())))
                .map_err(|e| e.to_string())?;
            let mut targets = vec![(git_dir.clone(), false), (common.join("refs"), true)];
            if common != git_dir {
                targets.push((common.clone(), false));
            }
            (
                targets,
                Filter::GitRefs {
                    dirs: vec![git_dir, common],
                },
            )
        }
        Source::Dir(dir) => (vec![(dir.root().to_path_buf(), true)], Filter::Files),
    };
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events
                .iter()
                .any(|e| changes_content(&e.kind) && e.paths.iter().any(|p| filter.relevant(p)))
            {
                tracing::debug!(events = events.len(), "change detected");
                trigger.poke(false);
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "file watcher error");
            }
            // Events may have been lost: look anyway.
            trigger.poke(false);
        }
    };
    let mut debouncer =
        new_debouncer(debounce, None, handler).map_err(|e| format!("starting notify: {e}"))?;
    let mut watching = Vec::new();
    for (path, recursive) in targets {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        debouncer
            .watch(&path, mode)
            .map_err(|e| format!("watching {}: {e}", path.display()))?;
        watching.push(path);
    }
    Ok((Some(debouncer), watching))
}

/// Whether an event of this kind can mean new content. Reading a file raises
/// open and close-without-write events too, and the refresh itself reads `HEAD`, the
/// refs and (for `--dev`) every file: counting those would make each refresh trigger
/// the next one, forever. Metadata-only changes (`chmod`, `touch`) change no content
/// either. Kinds the backend cannot name are kept: a missed change costs more than a
/// spare refresh.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

/// Which file events may mean a new version.
enum Filter {
    /// `HEAD`, `packed-refs` and anything under `refs/` of these git dirs.
    GitRefs { dirs: Vec<PathBuf> },
    /// Any file outside `.git`.
    Files,
}

impl Filter {
    fn relevant(&self, path: &Path) -> bool {
        match self {
            Filter::GitRefs { dirs } => dirs.iter().any(|dir| {
                path.strip_prefix(dir).is_ok_and(|rel| {
                    let mut parts = rel.components();
                    match parts.next().and_then(|c| c.as_os_str().to_str()) {
                        Some("refs") => true,
                        Some("HEAD" | "packed-refs") => parts.next().is_none(),
                        _ => false,
                    }
                })
            }),
            Filter::Files => !path.components().any(|c| c.as_os_str() == ".git"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        for failures in 1..40 {
            let d = backoff(base, cap, failures);
            let exp = base.saturating_mul(1 << (failures - 1).min(20)).min(cap);
            assert!(d >= exp / 2 && d <= exp, "{failures}: {d:?} vs {exp:?}");
        }
        assert!(backoff(base, cap, 40) <= cap);
    }

    #[test]
    fn git_filter_keeps_refs_only() {
        let f = Filter::GitRefs {
            dirs: vec![PathBuf::from("/r/.git")],
        };
        assert!(f.relevant(Path::new("/r/.git/HEAD")));
        assert!(f.relevant(Path::new("/r/.git/packed-refs")));
        assert!(f.relevant(Path::new("/r/.git/refs/heads/main")));
        assert!(f.relevant(Path::new("/r/.git/refs/heads/feature/x")));
        assert!(!f.relevant(Path::new("/r/.git/index")));
        assert!(!f.relevant(Path::new("/r/.git/objects/ab/cdef")));
        assert!(!f.relevant(Path::new("/r/orders.yml")));
    }

    #[test]
    fn reads_and_metadata_changes_are_not_changes() {
        use notify_debouncer_full::notify::event::{
            CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode,
        };
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Other,
        ] {
            assert!(changes_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn dir_filter_skips_git() {
        assert!(Filter::Files.relevant(Path::new("/d/orders.yml")));
        assert!(!Filter::Files.relevant(Path::new("/d/.git/HEAD")));
    }
}
