//! The refresh loop: where a new version becomes a push (ARCHITECTURE.md §3.1).
//!
//! One task owns the work. On a poke of the [`Trigger`] (or the poll timer) it runs
//! [`Store::refresh`] on a blocking thread, fetching remotes first when asked, then
//! hands the pairs whose digest changed to the [`Hub`]. Pokes arriving while a refresh
//! runs collapse into one more refresh, so a burst of commits costs one or two
//! refreshes and always ends on the newest commit. Failed fetches are retried with
//! exponential backoff and jitter (capped at the poll interval) while the last fetched
//! commit keeps being served; every outcome is recorded in [`LiveStatus`] and
//! [`Metrics`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinError;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::detect::Trigger;
use super::hub::{Hub, Update};
use super::instances::Instances;
use super::status::LiveStatus;
use crate::errors::SourceError;
use crate::metrics::Metrics;
use crate::names::parse_envs;
use crate::settings::{LiveSettings, Settings};
use crate::store::entry::PairEntry;
use crate::store::rollouts::Rollouts;
use crate::store::snapshot::Snapshot;
use crate::store::{Changes, Source, Store};

/// What one run on the blocking thread produced.
struct RunResult {
    fetch: Option<(Result<(), SourceError>, Duration)>,
    refresh: Option<(Result<Changes, SourceError>, Duration)>,
}

/// The refresh loop's state between rounds.
pub struct RefreshLoop {
    store: Arc<Store>,
    hub: Arc<Hub>,
    trigger: Arc<Trigger>,
    status: Arc<LiveStatus>,
    metrics: Arc<Metrics>,
    /// Told of each new release, so the metrics can name the one before.
    instances: Arc<Instances>,
    live: LiveSettings,
    poll: Duration,
    /// The source is a remote that gets fetched.
    remote: bool,
    /// Failed fetches in a row.
    failures: u32,
    next_poll: Instant,
    /// Wakes [`follow_extra_pairs`] after each new version.
    extra_pairs: Arc<Notify>,
}

impl std::fmt::Debug for RefreshLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshLoop")
            .field("remote", &self.remote)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Why a round ended early.
enum Stop {
    /// The server is stopping.
    Shutdown,
}

impl RefreshLoop {
    /// A loop over `store`, pushing to `hub`, woken by `trigger`.
    pub fn new(
        store: Arc<Store>,
        hub: Arc<Hub>,
        trigger: Arc<Trigger>,
        status: Arc<LiveStatus>,
        settings: &Settings,
        metrics: Arc<Metrics>,
        instances: Arc<Instances>,
    ) -> RefreshLoop {
        let poll = settings.poll.max(Duration::from_millis(100));
        let remote = matches!(store.source(), Source::Git(g) if g.is_remote());
        RefreshLoop {
            store,
            hub,
            trigger,
            status,
            metrics,
            instances,
            live: settings.live.clone(),
            poll,
            remote,
            failures: 0,
            next_poll: Instant::now() + poll,
            extra_pairs: Arc::new(Notify::new()),
        }
    }

    /// Run until `hub.shutdown()`: refresh on every trigger and on the poll timer,
    /// fetching remotes, and push the changed pairs to the hub.
    ///
    /// Each round runs in a `refresh{fetch, old, new}` span (`new` once known), and
    /// records fetch and refresh durations and failures, and the push latency (from the
    /// oldest poke that started the round, or the poll timer, until the fan-out is done).
    pub async fn run(mut self) {
        self.status.init(self.poll, self.remote);
        tokio::spawn(
            follow_extra_pairs(
                self.store.clone(),
                self.hub.clone(),
                self.extra_pairs.clone(),
            )
            .instrument(tracing::info_span!("extra_pairs")),
        );
        self.record_opening_fetch();
        while let Ok(polled) = self.wait().await {
            if self.round(polled).await.is_err() {
                break;
            }
        }
        tracing::debug!("refresh loop stopped");
    }

    /// The fetch made while opening the store counts as this loop's first: a failed one
    /// is retried as after any failed fetch.
    fn record_opening_fetch(&mut self) {
        let opening = self.store.opening_fetch();
        let mut retry = Duration::ZERO;
        match opening {
            Some(f) if f.error.is_some() => {
                self.failures = 1;
                self.metrics.fetch(f.took, false);
                retry = backoff(self.live.fetch_retry, self.poll, self.failures);
                self.next_poll = Instant::now() + retry;
            }
            Some(_) => self.metrics.fetch_succeeded(),
            None => {}
        }
        self.status.record_opened(opening, self.failures, retry);
    }

    /// Wait for a poke or the poll timer; `Ok(true)` when it was the timer.
    async fn wait(&self) -> Result<bool, Stop> {
        tokio::select! {
            biased;
            () = self.hub.shutdown_signal() => Err(Stop::Shutdown),
            () = self.trigger.notified() => Ok(false),
            () = tokio::time::sleep_until(self.next_poll) => Ok(true),
        }
    }

    /// One round: fetch when due, refresh, push what changed.
    async fn round(&mut self, polled: bool) -> Result<(), Stop> {
        // Taken every round: a request made before a poll is answered by that poll.
        let asked = self.trigger.take_fetch();
        let fetch = self.remote && (polled || asked);
        let triggered_at = self
            .trigger
            .take_since()
            .unwrap_or_else(std::time::Instant::now);
        let span = tracing::info_span!(
            "refresh",
            fetch,
            old = %self.store.snapshot().version,
            new = tracing::field::Empty,
        );
        let result = match self.run_blocking(fetch, &span).await? {
            Ok(r) => r,
            Err(e) => {
                span.in_scope(|| tracing::error!(error = %e, "refresh task failed"));
                self.status
                    .record_refresh_task_failed(format!("refresh task failed: {e}"));
                self.next_poll = Instant::now() + self.poll;
                return Ok(());
            }
        };
        if let Some((fetched, took)) = result.fetch {
            span.in_scope(|| self.after_fetch(fetched, took));
        }
        if fetch || polled {
            self.schedule_next_poll();
        }
        if let Some((refreshed, took)) = result.refresh {
            self.after_refresh(refreshed, took, &span, triggered_at);
        }
        Ok(())
    }

    /// Fetch (when asked) and refresh on a blocking thread. A fetch still running after
    /// the fetch timeout is recorded as failed, and then waited for: libgit2 cannot be
    /// interrupted safely, and no second fetch may run beside it.
    async fn run_blocking(
        &self,
        fetch: bool,
        span: &Span,
    ) -> Result<Result<RunResult, JoinError>, Stop> {
        let run = {
            let store = self.store.clone();
            let span = span.clone();
            tokio::task::spawn_blocking(move || span.in_scope(|| run_once(&store, fetch)))
        };
        tokio::pin!(run);
        let timeout = self.live.fetch_timeout;
        tokio::select! {
            biased;
            () = self.hub.shutdown_signal() => return Err(Stop::Shutdown),
            r = &mut run => return Ok(r),
            () = tokio::time::sleep(timeout), if fetch => {}
        }
        let msg = format!("fetch timed out after {timeout:?} (still waiting for it to end)");
        span.in_scope(|| tracing::warn!(error = %msg, "fetch failed"));
        self.status.record_fetch_timed_out(msg, timeout);
        tokio::select! {
            biased;
            () = self.hub.shutdown_signal() => Err(Stop::Shutdown),
            r = &mut run => Ok(r),
        }
    }

    fn after_fetch(&mut self, fetched: Result<(), SourceError>, took: Duration) {
        self.metrics.fetch(took, fetched.is_ok());
        match fetched {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "fetch succeeded again");
                }
                self.failures = 0;
                self.status.record_fetch_ok(took);
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let retry = self.retry_delay();
                tracing::warn!(error = %e, failures = self.failures, retry_in = ?retry, "fetch failed; serving the last fetched commit");
                self.status
                    .record_fetch_failed(e.to_string(), took, self.failures);
            }
        }
    }

    fn retry_delay(&self) -> Duration {
        backoff(self.live.fetch_retry, self.poll, self.failures)
    }

    /// After a fetch or a poll: the next one is due a poll interval later, or sooner
    /// with backoff while fetches fail.
    fn schedule_next_poll(&mut self) {
        let wait = if self.failures > 0 {
            self.retry_delay()
        } else {
            self.poll
        };
        self.next_poll = Instant::now() + wait;
        if self.remote {
            self.status.record_next_fetch(wait);
        }
    }

    fn after_refresh(
        &self,
        refreshed: Result<Changes, SourceError>,
        took: Duration,
        span: &Span,
        triggered_at: std::time::Instant,
    ) {
        self.metrics.refresh(took, refreshed.is_ok());
        match refreshed {
            Ok(changes) => {
                span.record("new", tracing::field::display(&changes.new_version));
                let moved = changes.old_version != changes.new_version;
                self.status
                    .record_refresh_ok(took, moved.then_some(changes.changed.len()));
                if moved {
                    span.in_scope(|| {
                        publish(&self.store, &self.hub, &self.instances, changes, took)
                    });
                    self.metrics.pushed(triggered_at.elapsed());
                    self.extra_pairs.notify_one();
                } else if !changes.rollouts_changed.is_empty() {
                    span.in_scope(|| {
                        tracing::info!(pairs = changes.rollouts_changed.len(), "rollouts changed");
                        publish_changes(&self.store, &self.hub, &self.instances, &changes);
                    });
                }
            }
            Err(e) => {
                span.in_scope(
                    || tracing::warn!(error = %e, "refresh failed; serving the previous snapshot"),
                );
                self.status.record_refresh_failed(e.to_string(), took);
            }
        }
    }
}

/// Delay before retry number `failures` (1-based): `base · 2^(failures-1)`, capped at
/// `cap`, with jitter taking it down by up to half.
pub(crate) fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    confhub_client::retry::backoff(base, cap, failures, confhub_client::retry::Jitter::Equal)
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
fn publish(store: &Store, hub: &Hub, instances: &Instances, changes: Changes, took: Duration) {
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
    publish_changes(store, hub, instances, &changes);
}

/// Queue an update for every pair whose tracked config changed, and for every pair whose
/// rollout changed (its instances in and out of the rollout may need another config; the
/// sessions send nothing to those whose digest stays the same).
pub(crate) fn publish_changes(store: &Store, hub: &Hub, instances: &Instances, changes: &Changes) {
    let rollouts = store.rollouts();
    // Open console pages show errors too: every pair of the version is news to them
    // when it moved, not only those whose config changed.
    hub.console().changed(|| {
        let snapshot = store.snapshot();
        snapshot
            .pairs
            .iter()
            .flat_map(|(service, envs)| envs.keys().map(move |env| (service.clone(), env.clone())))
            .collect()
    });
    for entry in &changes.changed {
        let pair = (entry.service.clone(), entry.env_string());
        // What instances held before this becomes the pair's previous release.
        instances.note_release(&pair, &entry.resolved.digest);
        publish_entry(hub, &rollouts, entry, &pair.1);
    }
    let snapshot = store.snapshot();
    for (service, env) in &changes.rollouts_changed {
        let already = changes
            .changed
            .iter()
            .any(|e| e.service == *service && e.envs.len() == 1 && e.envs[0] == *env);
        if !already {
            republish(&snapshot, &rollouts, hub, service, env);
        }
    }
}

/// Queue the pair's current state again (its rollout changed, or was halted).
pub(crate) fn republish(
    snapshot: &Snapshot,
    rollouts: &Rollouts,
    hub: &Hub,
    service: &str,
    env: &str,
) {
    hub.console()
        .changed(|| vec![(service.to_string(), env.to_string())]);
    if let Some(entry) = snapshot.pair(service, env).and_then(|p| p.entry.as_ref()) {
        publish_entry(hub, rollouts, entry, env);
    }
}

/// Queue `entry` (the tracked config of its pair, in `env`) with the pair's rollout.
fn publish_entry(hub: &Hub, rollouts: &Rollouts, entry: &PairEntry, env: &str) {
    if let Some(update) = Update::of(entry, rollouts.on(&entry.service, env)) {
        hub.publish(update);
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
    loop {
        tokio::select! {
            biased;
            () = hub.shutdown_signal() => break,
            () = wake.notified() => {}
        }
        let snapshot = store.snapshot();
        let keys = hub.extra_pairs(|service, env| snapshot.pair(service, env).is_some());
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
            () = hub.shutdown_signal() => break,
            r = resolving => r,
        };
        match resolved {
            Ok(Ok(results)) => {
                for ((service, env), result) in keys.iter().zip(results) {
                    match result {
                        Ok(entry) if entry.service_known => {
                            if let Some(update) = Update::of(&entry, None) {
                                hub.publish_if_new(update);
                            }
                        }
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
}
