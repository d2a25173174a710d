//! The running server: the state every handler shares, built once from the settings;
//! the background tasks (opening the store and loading the first snapshot, then the
//! refresh loop; metrics upkeep; pruning idle rate-limit buckets); and the order in
//! which they stop. [`crate::run`] strings these together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::errors::{ServerError, SourceError};
use crate::http::{self, AppState};
use crate::live::detect::backoff;
use crate::live::detect::start_watching;
use crate::live::hub::Hub;
use crate::live::refresh::RefreshLoop;
use crate::settings::Settings;
use crate::store::{Source, Store};
use crate::tools::history::HistoryCache;

/// The shared state: nothing is loaded yet (`store` is set by [`load_and_follow`]).
pub(crate) fn build_state(settings: &Settings) -> Result<Arc<AppState>, ServerError> {
    let auth = crate::auth::Auth::new(&settings.tokens)?;
    if auth.is_open() {
        tracing::warn!("no access tokens configured: every client can read every config (add [[tokens]] to the settings file)");
    }
    let webhook_bodies = http::webhook::BodyBudget::new(
        settings.limits.webhook_max_body_bytes,
        settings.limits.webhook_body_budget_bytes,
    )?;
    if settings.webhook_secret.is_none() {
        tracing::debug!("no webhook secret configured: POST /v1/webhook is disabled");
    }
    let state = Arc::new(AppState {
        hub: Arc::new(Hub::new(settings.live.clone())),
        webhook_secret: settings.webhook_secret.clone(),
        webhook_bodies,
        auth,
        limiter: http::guard::Limiter::new(&settings.limits),
        keyring: settings.keyring.clone(),
        history: Arc::new(HistoryCache::new(settings.limits.request_timeout)),
        ..AppState::default()
    });
    state
        .live_status
        .init(settings.poll, opens_a_remote(settings));
    Ok(state)
}

/// A remote that cannot be reached is not fatal: without a clone to start from, the
/// server stays up (not ready, saying why) and tries again with backoff. A local
/// repository or directory that cannot be opened is a mistake in the settings.
fn opens_a_remote(settings: &Settings) -> bool {
    !settings.dev && crate::source::git::is_remote(&settings.repo)
}

/// The router with the layers every request passes through.
pub(crate) fn router(state: &Arc<AppState>, settings: &Settings) -> Router {
    http::router(state.clone()).layer((
        // Outermost: request id, trace context, span and metrics see every answer.
        axum::middleware::from_fn_with_state(state.metrics.clone(), http::observe::observe),
        tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            settings.limits.request_timeout,
        ),
        axum::extract::DefaultBodyLimit::max(settings.limits.max_body_bytes),
    ))
}

/// Tasks that only keep things tidy, for the life of the server.
pub(crate) fn spawn_upkeep(state: &Arc<AppState>) {
    tokio::spawn(
        state
            .metrics
            .clone()
            .run_upkeep(state.hub.shutdown_signal()),
    );
    if state.limiter.is_none() {
        return;
    }
    // Idle callers' buckets are dropped once a minute so the key store stays small.
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = state.hub.shutdown_signal() => break,
                _ = tick.tick() => if let Some(l) = &state.limiter { l.prune() },
            }
        }
    });
}

/// Open the store, then follow the source until shutdown. A fatal error (the source
/// cannot be opened and retrying would not help) goes to `fatal`, which stops the server.
pub(crate) fn spawn_load_and_follow(
    state: Arc<AppState>,
    settings: Settings,
    fatal: oneshot::Sender<ServerError>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match open_store(&state, &settings).await {
            Ok(Some(store)) => follow(state, store, settings).await,
            Ok(None) => {}
            Err(e) => {
                let _ = fatal.send(e);
            }
        }
    })
}

/// Open the store on a blocking thread, retrying a remote with backoff. `None`: the
/// server stopped first.
async fn open_store(
    state: &AppState,
    settings: &Settings,
) -> Result<Option<Arc<Store>>, ServerError> {
    let retry = opens_a_remote(settings);
    let mut attempts: u32 = 0;
    loop {
        let open_settings = settings.clone();
        let opened = tokio::select! {
            opened = tokio::task::spawn_blocking(move || Store::open(&open_settings)) => opened,
            () = state.hub.shutdown_signal() => return Ok(None),
        };
        let e = match opened {
            Ok(Ok(store)) => return Ok(Some(Arc::new(store))),
            Ok(Err(e)) if retry => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(SourceError::Task(e.to_string()).into()),
        };
        attempts = attempts.saturating_add(1);
        let wait = backoff(settings.live.fetch_retry, settings.poll, attempts);
        tracing::warn!(error = %e, attempts, retry_in = ?wait, "cannot open the repository yet; not ready, retrying");
        state
            .live_status
            .record_start_failed(&e.to_string(), attempts, wait);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.hub.shutdown_signal() => return Ok(None),
        }
    }
}

/// Serve `store` (the server is ready from here) and run the refresh loop on it.
async fn follow(state: Arc<AppState>, store: Arc<Store>, settings: Settings) {
    if let Source::Git(git) = store.source() {
        let trigger = state.trigger.clone();
        git.on_damage(move || trigger.request_refresh());
    }
    // Watch before declaring readiness, so no change made after `/readyz`
    // answers can be missed; then look once for one made while opening.
    let _watching = start_watching(
        &store,
        &state.trigger,
        &state.live_status,
        settings.live.debounce,
    )
    .await;
    state.trigger.request_refresh();
    let _ = state.store.set(store.clone());
    RefreshLoop::new(
        store,
        state.hub.clone(),
        state.trigger.clone(),
        state.live_status.clone(),
        &settings,
        state.metrics.clone(),
    )
    .run()
    .await;
}

/// What stops the accept loop: the caller's `shutdown`, or a fatal error of the
/// background task (kept in the returned slot for [`crate::run`] to return). Either
/// way the hub is shut down first: upgraded WebSocket connections are not tracked by
/// graceful shutdown, so they (and the refresh loop) are closed here.
pub(crate) fn stop_signal(
    shutdown: impl Future<Output = ()> + Send + 'static,
    fatal: oneshot::Receiver<ServerError>,
    hub: Arc<Hub>,
) -> (
    impl Future<Output = ()> + Send + 'static,
    Arc<Mutex<Option<ServerError>>>,
) {
    let slot = Arc::new(Mutex::new(None));
    let fatal_slot = slot.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(e) = fatal => {
                *fatal_slot.lock().await = Some(e);
            }
        }
        hub.shutdown();
    };
    (stop, slot)
}

/// After the accept loop ends: close the WebSockets, and give the background task a
/// moment (it leaves at once on shutdown; only a clone still in progress can hold it).
pub(crate) async fn wind_down(hub: &Hub, background: JoinHandle<()>) {
    hub.shutdown();
    hub.wait_closed(Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), background).await;
}
