//! Change detection (ARCHITECTURE.md §3.1). Every way of noticing a change only pokes
//! the [`Trigger`], which wakes the refresh loop ([`super::refresh`]):
//! - local git repositories: `notify` (debounced) on `HEAD`, `packed-refs` and `refs/`;
//! - `--dev` directories: `notify` on the files;
//! - remote repositories: the poll timer (`--poll`), and `POST /v1/webhook`
//!   (`http::webhook`), which asks for a fetch;
//! - every source: the poll timer as a safety net for missed file events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::Notify;

use super::status::LiveStatus;
use crate::store::{Source, Store};

/// Asks the refresh loop for a refresh (and, for remotes, a fetch first).
#[derive(Debug, Default)]
pub struct Trigger {
    notify: Notify,
    fetch: AtomicBool,
    /// When the first poke not yet taken by the refresh loop came (push latency).
    since: Mutex<Option<std::time::Instant>>,
}

impl Trigger {
    /// Ask for a refresh: look at the source for a new version. Cheap and callable
    /// from any thread; requests made while a refresh runs collapse into one.
    pub fn request_refresh(&self) {
        crate::sync::lock(&self.since).get_or_insert_with(std::time::Instant::now);
        self.notify.notify_one();
    }

    /// Ask for a fetch of a remote, then a refresh (a webhook: the remote moved).
    pub fn request_fetch(&self) {
        self.fetch.store(true, Ordering::Release);
        self.request_refresh();
    }

    /// Resolves on the next request (or at once for one made since the last wait).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether a fetch was asked for since the last call.
    pub(crate) fn take_fetch(&self) -> bool {
        self.fetch.swap(false, Ordering::AcqRel)
    }

    /// When the oldest request since the last call came, if any.
    pub(crate) fn take_since(&self) -> Option<std::time::Instant> {
        crate::sync::lock(&self.since).take()
    }
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
            status.record_watching(paths);
            WatchGuard(debouncer)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot watch the repository; relying on the poll timer");
            status.record_watch_error(e);
            WatchGuard(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "watcher setup task failed");
            WatchGuard(None)
        }
    }
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
                trigger.request_refresh();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "file watcher error");
            }
            // Events may have been lost: look anyway.
            trigger.request_refresh();
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
