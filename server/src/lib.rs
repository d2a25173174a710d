//! confhub server: serves layered configuration read straight from git objects, over
//! its own JSON API and a Spring Cloud Config compatible API (see ARCHITECTURE.md).
//!
//! Where things live (the whole map, with the data flows, is ARCHITECTURE.md §1):
//! - a request: [`net`] (accept loop, TLS) → [`http`] (router, extractors, one file per
//!   surface) → [`store::Store::lookup`] → a pre-rendered body of a
//!   [`store::entry::PairEntry`];
//! - a commit becoming a push: [`live::detect`] (file events, poll, webhook) →
//!   [`live::refresh`] → [`store::Store::refresh`] → [`store::snapshot::Snapshot::build`]
//!   → [`live::hub::Hub::publish`] → each connection's [`live::session`];
//! - reading files: [`source`] (git objects or a `--dev` directory) → [`resolve`]
//!   (`parse`, `catalog`: which files make a pair, merge and placeholders);
//! - the running server's state, background tasks and shutdown: `app.rs`;
//! - `confhub check`, history and diff: [`tools`];
//! - observability: [`http::observe`] (request ids, W3C trace context, the request
//!   span, HTTP metrics) and [`metrics`] (this server's Prometheus metrics).

mod app;
pub mod auth;
pub mod crypto;
pub mod errors;
mod http;
mod live;
mod metrics;
pub mod names;
mod net;
pub mod resolve;
pub mod settings;
pub mod source;
pub mod store;
mod sync;
mod timefmt;
pub mod tools;

use std::future::Future;

pub use errors::{ConfigError, ServerError, SourceError};
/// Sign a webhook payload as GitHub does (`X-Hub-Signature-256`), for scripts and tests
/// that call `/v1/webhook`.
pub use http::webhook::github_signature;
pub use settings::Settings;

/// Serve on `listener` until `shutdown` completes. The first snapshot loads in the
/// background: `/healthz` answers at once, `/readyz` once it is loaded; then the refresh
/// loop ([`live::refresh`]) watches for new versions and pushes them to WebSocket
/// subscribers. On shutdown the loop stops, WebSockets close with 1001 "going away",
/// and in-flight requests finish. Returns an error if the settings are invalid or the
/// repository cannot be opened.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    settings.refuse_empty()?;
    let tls = settings.tls.as_ref().map(net::tls_acceptor).transpose()?;
    let core = app::Core::new(&settings);
    let router = http::router(&http::AppState::new(core.clone(), &settings)?, &settings);
    app::spawn_upkeep(&core);
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel();
    let background = app::spawn_load_and_follow(core.clone(), settings.clone(), fatal_tx);
    let (stop, fatal) = app::stop_signal(shutdown, fatal_rx, core.hub.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let served = net::serve_connections(listener, router, &settings.limits, tls, stop).await;
    app::wind_down(&core.hub, background).await;
    served?;
    let fatal = fatal.lock().await.take();
    fatal.map_or(Ok(()), Err)
}
