//! confhub server: serves layered configuration read straight from git objects, over
//! its own JSON API and a Spring Cloud Config compatible API (see ARCHITECTURE.md).
//!
//! Where things live:
//! - a request: [`http`] (router and handlers) → [`store::Store::lookup`] → a
//!   pre-rendered body of an [`entry::PairEntry`];
//! - a version becoming a snapshot: [`store::Store::refresh`] → [`snapshot::Snapshot::build`];
//! - reading files: [`source`] (git objects or a `--dev` directory) → [`parse`] →
//!   [`catalog`] (which files make a pair) → [`resolve`] (merge and placeholders);
//! - `confhub check`: [`check`];
//! - live updates: [`watch`] (change detection, the refresh loop) → [`hub`]
//!   (subscriptions, fan-out, the `/v1/watch` WebSocket);
//! - observability: [`http::observe`] (request ids, W3C trace context, the request
//!   span, HTTP metrics) and [`metrics`] (this server's Prometheus metrics, `GET /metrics`).

pub mod auth;
pub mod crypto;
pub mod errors;
pub mod http;
pub mod live;
pub mod metrics;
pub mod names;
pub mod net;
pub mod resolve;
pub mod settings;
pub mod source;
pub mod store;
mod sync;
pub mod timefmt;
pub mod tools;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use errors::{ConfigError, ServerError, SourceError};
pub use settings::Settings;

use http::AppState;
use store::Store;

/// Serve on `listener` until `shutdown` completes. The first snapshot loads in the
/// background: `/healthz` answers at once, `/readyz` once it is loaded; then the refresh
/// loop ([`live::detect::refresh_loop`]) watches for new versions and pushes them to
/// WebSocket subscribers. On shutdown the loop stops, WebSockets close with 1001
/// "going away", and in-flight requests finish. Returns an error if the repository
/// cannot be opened.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    settings
        .refuse_empty()
        .map_err(|e| ServerError::Settings(e.to_string()))?;
    let hub = Arc::new(live::hub::Hub::new(settings.live.clone()));
    let auth =
        auth::Auth::new(&settings.tokens).map_err(|e| ServerError::Settings(e.to_string()))?;
    if auth.is_open() {
        tracing::warn!("no access tokens configured: every client can read every config (add [[tokens]] to the settings file)");
    }
    let tls = settings
        .tls
        .as_ref()
        .map(net::tls_acceptor)
        .transpose()
        .map_err(|e| ServerError::Settings(e.to_string()))?;
    let webhook_bodies = http::webhook::BodyBudget::new(
        settings.limits.webhook_max_body_bytes,
        settings.limits.webhook_body_budget_bytes,
    )
    .map_err(|e| ServerError::Settings(e.to_string()))?;
    let state = Arc::new(AppState {
        hub: hub.clone(),
        webhook_secret: settings.webhook_secret.clone(),
        webhook_bodies,
        auth,
        limiter: http::guard::Limiter::new(&settings.limits),
        keyring: settings.keyring.clone(),
        history: Arc::new(tools::history::HistoryCache::new(
            settings.limits.request_timeout,
        )),
        ..AppState::default()
    });
    state.live_status.init(
        settings.poll,
        !settings.dev && source::git::is_remote(&settings.repo),
    );
    if state.webhook_secret.is_none() {
        tracing::debug!("no webhook secret configured: POST /v1/webhook is disabled");
    }
    let app = http::router(state.clone()).layer((
        // Outermost: request id, trace context, span and metrics see every answer.
        axum::middleware::from_fn_with_state(state.metrics.clone(), http::observe::observe),
        tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            settings.limits.request_timeout,
        ),
        axum::extract::DefaultBodyLimit::max(settings.limits.max_body_bytes),
    ));
    tokio::spawn(state.metrics.clone().run_upkeep(hub.shutdown_signal()));

    let settings_limits = settings.limits.clone();
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<ServerError>();
    let loader_state = state.clone();
    let loader_hub = hub.clone();
    // A remote that cannot be reached is not fatal: without a clone to start from, the
    // server stays up (not ready, saying why) and tries again with backoff. A local
    // repository or directory that cannot be opened is a mistake in the settings.
    let retry_open = !settings.dev && source::git::is_remote(&settings.repo);
    let background = tokio::spawn(async move {
        let mut attempts: u32 = 0;
        let store = loop {
            let open_settings = settings.clone();
            let opened = tokio::select! {
                opened = tokio::task::spawn_blocking(move || Store::open(&open_settings)) => opened,
                () = loader_hub.shutdown_signal() => return,
            };
            match opened {
                Ok(Ok(store)) => break Arc::new(store),
                Ok(Err(e)) if retry_open => {
                    attempts = attempts.saturating_add(1);
                    let wait =
                        live::detect::backoff(settings.live.fetch_retry, settings.poll, attempts);
                    tracing::warn!(error = %e, attempts, retry_in = ?wait, "cannot open the repository yet; not ready, retrying");
                    loader_state
                        .live_status
                        .start_failed(&e.to_string(), attempts, wait);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = loader_hub.shutdown_signal() => return,
                    }
                }
                Ok(Err(e)) => {
                    let _ = fatal_tx.send(e.into());
                    return;
                }
                Err(e) => {
                    let _ = fatal_tx.send(SourceError::Task(e.to_string()).into());
                    return;
                }
            }
        };
        if let store::Source::Git(git) = store.source() {
            let trigger = loader_state.trigger.clone();
            git.on_damage(move || trigger.poke(false));
        }
        // Watch before declaring readiness, so no change made after `/readyz`
        // answers can be missed; then look once for one made while opening.
        let _watching = live::detect::start_watching(
            &store,
            &loader_state.trigger,
            &loader_state.live_status,
            settings.live.debounce,
        )
        .await;
        loader_state.trigger.poke(false);
        let _ = loader_state.store.set(store.clone());
        live::detect::refresh_loop(
            store,
            loader_state.hub.clone(),
            loader_state.trigger.clone(),
            loader_state.live_status.clone(),
            settings,
            loader_state.metrics.clone(),
        )
        .await;
    });

    let fatal = Arc::new(tokio::sync::Mutex::new(None));
    let fatal_slot = fatal.clone();
    let stop_hub = hub.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(e) = fatal_rx => {
                *fatal_slot.lock().await = Some(e);
            }
        }
        // Upgraded WebSocket connections are not tracked by graceful shutdown: close them
        // (and stop the refresh loop) ourselves.
        stop_hub.shutdown();
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let limits = settings_limits;
    if let Some(limiter_state) = state.limiter.as_ref().map(|_| state.clone()) {
        // Idle callers' buckets are dropped once a minute so the key store stays small.
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let stopping = hub.shutdown_signal();
        tokio::spawn(async move {
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    () = &mut stopping => break,
                    _ = tick.tick() => if let Some(l) = &limiter_state.limiter { l.prune() },
                }
            }
        });
    }
    let served = net::serve(listener, app, &limits, tls, stop).await;
    hub.shutdown();
    hub.wait_closed(Duration::from_secs(3)).await;
    // The loop leaves at once on shutdown; only a clone still in progress can hold it.
    let _ = tokio::time::timeout(Duration::from_secs(3), background).await;
    served?;
    let fatal = fatal.lock().await.take();
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
