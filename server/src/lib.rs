//! confhub server: serves layered configuration read straight from git objects, over
//! its own JSON API and a Spring Cloud Config compatible API (see DESIGN.md).
//!
//! Where things live:
//! - a request: [`http`] (router and handlers) → [`store::Store::lookup`] → a
//!   pre-rendered body of an [`entry::PairEntry`];
//! - a version becoming a snapshot: [`store::Store::refresh`] → [`snapshot::Snapshot::build`];
//! - reading files: [`source`] (git objects or a `--dev` directory) → [`parse`] →
//!   [`catalog`] (which files make a pair) → [`resolve`] (merge and placeholders);
//! - `confhub check`: [`check`].

pub mod catalog;
pub mod check;
pub mod entry;
pub mod errors;
pub mod http;
pub mod names;
pub mod parse;
pub mod render;
pub mod resolve;
pub mod settings;
pub mod snapshot;
pub mod source;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use errors::{ConfigError, ServerError, SourceError};
pub use settings::Settings;

use http::AppState;
use store::Store;

/// Serve on `listener` until `shutdown` completes. The first snapshot loads in the
/// background: `/healthz` answers at once, `/readyz` once it is loaded. Returns an
/// error if the repository cannot be opened.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = Arc::new(AppState::default());
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
    tokio::spawn(async move {
        let opened = tokio::task::spawn_blocking(move || Store::open(&settings)).await;
        match opened {
            Ok(Ok(store)) => {
                let _ = loader_state.store.set(Arc::new(store));
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
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(e) = fatal_rx => {
                *fatal_slot.lock().await = Some(e);
            }
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    let fatal = fatal.lock().await.take();
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
