//! What the refresh loop and change detection have done, for `GET /v1/status`,
//! `/readyz` and `/metrics`. Writers call one `record_*` method per event, so each
//! event updates every field it touches in one place, under one lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::store::OpeningFetch;

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

impl Outcome {
    fn now(error: Option<String>, took: Duration) -> Outcome {
        Outcome {
            at: SystemTime::now(),
            error,
            took,
        }
    }
}

/// Bookkeeping of the refresh loop, read by `GET /v1/status`.
#[derive(Debug, Default)]
pub struct LiveStatus {
    report: Mutex<LiveReport>,
    // Counters are bumped without the lock and copied into each report.
    refreshes: AtomicU64,
    fetches: AtomicU64,
    webhooks_accepted: AtomicU64,
    webhooks_rejected: AtomicU64,
}

/// A copy of [`LiveStatus`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct LiveReport {
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
    fn with<T>(&self, f: impl FnOnce(&mut LiveReport) -> T) -> T {
        f(&mut crate::sync::lock(&self.report))
    }

    /// The current state.
    pub fn get(&self) -> LiveReport {
        let mut s = self.with(|s| s.clone());
        s.refreshes = self.refreshes.load(Ordering::Relaxed);
        s.fetches = self.fetches.load(Ordering::Relaxed);
        s.webhooks_accepted = self.webhooks_accepted.load(Ordering::Relaxed);
        s.webhooks_rejected = self.webhooks_rejected.load(Ordering::Relaxed);
        s
    }

    /// Record what the loop will do, before it starts (so `/v1/status` is complete from
    /// the first request).
    pub fn init(&self, poll: Duration, remote: bool) {
        self.with(|s| {
            s.poll = poll;
            s.remote = remote;
            s.next_fetch = remote.then(|| SystemTime::now() + poll);
        });
    }

    /// Record a failed attempt to open the source (a remote that cannot be fetched and no
    /// clone to start from): `/readyz` and `/v1/status` show it until an attempt succeeds.
    pub fn record_start_failed(&self, error: &str, attempt: u32, retry_in: Duration) {
        self.with(|s| {
            s.start_error = Some(format!(
                "{error} (attempt {attempt}, retrying in {} ms)",
                retry_in.as_millis()
            ));
            if s.remote {
                s.last_fetch = Some(Outcome::now(Some(error.to_string()), Duration::ZERO));
                s.fetch_failures = attempt;
                s.next_fetch = Some(SystemTime::now() + retry_in);
            }
        });
    }

    /// Record that the source is open, with how its opening fetch went (`None`: it had
    /// none). `failures`/`retry_in`: the retry the loop schedules after a failed one.
    pub fn record_opened(&self, fetch: Option<&OpeningFetch>, failures: u32, retry_in: Duration) {
        self.with(|s| {
            s.start_error = None;
            let Some(f) = fetch else { return };
            let outcome = Outcome {
                at: f.at,
                error: f.error.clone(),
                took: f.took,
            };
            if f.error.is_some() {
                s.last_fetch = Some(outcome);
                s.fetch_failures = failures;
                s.next_fetch = Some(SystemTime::now() + retry_in);
            } else if s.fetch_failures > 0 {
                // Attempts that failed before this one were recorded: close them.
                s.last_fetch = Some(outcome);
                s.last_fetch_ok = Some(f.at);
                s.fetch_failures = 0;
            }
        });
    }

    /// Why the source is not open yet, if an attempt failed.
    pub fn start_error(&self) -> Option<String> {
        self.with(|s| s.start_error.clone())
    }

    /// Record the paths `notify` watches.
    pub fn record_watching(&self, paths: Vec<PathBuf>) {
        self.with(|s| s.watching = paths);
    }

    /// Record why watching with `notify` failed.
    pub fn record_watch_error(&self, error: String) {
        self.with(|s| s.watch_error = Some(error));
    }

    /// Record a fetch that is still running after the fetch timeout (its result is
    /// recorded as well when it finally ends).
    pub fn record_fetch_timed_out(&self, message: String, took: Duration) {
        self.with(|s| {
            s.last_fetch = Some(Outcome::now(Some(message), took));
            s.fetch_failures += 1;
        });
    }

    /// Record a fetch that succeeded.
    pub fn record_fetch_ok(&self, took: Duration) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            let outcome = Outcome::now(None, took);
            s.last_fetch_ok = Some(outcome.at);
            s.last_fetch = Some(outcome);
            s.fetch_failures = 0;
        });
    }

    /// Record a fetch that failed, the `failures`-th in a row.
    pub fn record_fetch_failed(&self, error: String, took: Duration, failures: u32) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            s.last_fetch = Some(Outcome::now(Some(error), took));
            s.fetch_failures = failures;
        });
    }

    /// Record when the next fetch of a remote is due.
    pub fn record_next_fetch(&self, wait: Duration) {
        self.with(|s| s.next_fetch = Some(SystemTime::now() + wait));
    }

    /// Record a refresh whose task died before it could report (it is not counted).
    pub fn record_refresh_task_failed(&self, error: String) {
        self.with(|s| s.last_refresh = Some(Outcome::now(Some(error), Duration::ZERO)));
    }

    /// Record a refresh that succeeded; `moved`: how many pairs changed, when it moved
    /// the version.
    pub fn record_refresh_ok(&self, took: Duration, moved: Option<usize>) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            s.last_refresh = Some(Outcome::now(None, took));
            if let Some(changed) = moved {
                s.last_changed = changed;
            }
        });
    }

    /// Record a refresh that failed (the previous snapshot keeps being served).
    pub fn record_refresh_failed(&self, error: String, took: Duration) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.with(|s| s.last_refresh = Some(Outcome::now(Some(error), took)));
    }

    /// Count a webhook call.
    pub fn record_webhook(&self, accepted: bool) {
        let counter = if accepted {
            &self.webhooks_accepted
        } else {
            &self.webhooks_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
