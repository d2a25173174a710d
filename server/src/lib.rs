//! confhub server: serves layered configuration read straight from git objects, over
//! its own JSON API and a Spring Cloud Config compatible API (see DESIGN.md).
//!
//! Where things live:
//! - a request: [`http`] (router and handlers) → [`store::Store::lookup`] → a
//!   pre-rendered body of an [`entry::PairEntry`];
//! - a version becoming a snapshot: [`store::Store::refresh`] → [`snapshot::Snapshot::build`];
//! - reading files: [`source`] (git objects or a `--dev` directory) → [`parse`] →
//!   [`catalog`] (which files make a pair) → [`resolve`] (merge and placeholders);
//! - `confhub check`: [`check`];
//! - live updates: [`watch`] (change detection, the refresh loop) → [`hub`]
//!   (subscriptions, fan-out, the `/v1/watch` WebSocket).

pub mod auth;
pub mod catalog;
pub mod check;
pub mod crypto;
pub mod entry;
pub mod errors;
pub mod history;
pub mod http;
pub mod hub;
pub mod names;
pub mod parse;
pub mod render;
pub mod resolve;
pub mod schema;
pub mod settings;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use errors::{ConfigError, ServerError, SourceError};
pub use settings::Settings;

use http::AppState;
use store::Store;

/// Serve on `listener` until `shutdown` completes. The first snapshot loads in the
/// background: `/healthz` answers at once, `/readyz` once it is loaded; then the refresh
/// loop ([`watch::refresh_loop`]) watches for new versions and pushes them to
/// WebSocket subscribers. On shutdown the loop stops, WebSockets close with 1001
/// "going away", and in-flight requests finish. Returns an error if the repository
/// cannot be opened.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let hub = Arc::new(hub::Hub::new(settings.live.clone()));
    let state = Arc::new(AppState {
        hub: hub.clone(),
        webhook_secret: settings.webhook_secret.clone(),
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
        tower_http::trace::TraceLayer::new_for_http(),
        tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ),
        axum::extract::DefaultBodyLimit::max(64 * 1024),
    ));

    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<ServerError>();
    let loader_state = state.clone();
    let stopping = hub.shutdown_signal();
    let background = tokio::spawn(async move {
        let open_settings = settings.clone();
        let opened = tokio::select! {
            opened = tokio::task::spawn_blocking(move || Store::open(&open_settings)) => opened,
            () = stopping => return,
        };
        match opened {
            Ok(Ok(store)) => {
                let store = Arc::new(store);
                // Watch before declaring readiness, so no change made after `/readyz`
                // answers can be missed; then look once for one made while opening.
                let _watching = watch::start_watching(
                    &store,
                    &loader_state.trigger,
                    &loader_state.live_status,
                    settings.live.debounce,
                )
                .await;
                loader_state.trigger.poke(false);
                let _ = loader_state.store.set(store.clone());
                watch::refresh_loop(
                    store,
                    loader_state.hub.clone(),
                    loader_state.trigger.clone(),
                    loader_state.live_status.clone(),
                    settings,
                )
                .await;
            }
            Ok(Err(e)) => {
                let _ = fatal_tx.send(e.into());
            }
            Err(e) => {
                let _ = fatal_tx.send(SourceError::Task(e.to_string()).into());
            }
        }
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
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
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
