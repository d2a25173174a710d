//! The state every handler shares: built once by [`AppState::new`], read by every
//! request.

use std::sync::Arc;
use std::time::Duration;

use super::{guard, webhook};
use crate::app::Core;
use crate::auth::Auth;
use crate::errors::ServerError;
use crate::settings::{Secret, Settings};
use crate::tools::history::HistoryCache;

/// State shared by every handler: the [`Core`] the background tasks share too, and what
/// only the HTTP surface needs.
#[derive(Debug)]
pub(crate) struct AppState {
    /// The store, hub, refresh trigger, live status and metrics.
    pub(crate) core: Arc<Core>,
    /// Secret that webhook calls must prove they know.
    pub(crate) webhook_secret: Option<Secret>,
    /// Limits on webhook payloads, and on those still unauthenticated together.
    pub(crate) webhook_bodies: webhook::BodyBudget,
    /// Access tokens (open when none).
    pub(crate) auth: Auth,
    /// Per-token rate limits.
    pub(crate) limiter: Option<guard::Limiter>,
    /// Keys for `/encrypt` and `/decrypt`.
    pub(crate) keyring: Option<crate::crypto::Keyring>,
    /// Pair histories kept between requests, and the permits of history and diff work.
    pub(crate) history: Arc<HistoryCache>,
    /// The server speaks TLS itself: the console's cookie is marked Secure.
    pub(crate) tls: bool,
}

impl AppState {
    /// Fails on settings only this surface checks: tokens and the webhook budget.
    pub(crate) fn new(core: Arc<Core>, settings: &Settings) -> Result<Arc<AppState>, ServerError> {
        let auth = Auth::new(&settings.tokens)?;
        if auth.is_open() {
            tracing::warn!("no access tokens configured: every client can read every config (add [[tokens]] to the settings file)");
        }
        let webhook_bodies = webhook::BodyBudget::new(
            settings.limits.webhook_max_body_bytes,
            settings.limits.webhook_body_budget_bytes,
        )?;
        if settings.webhook_secret.is_none() {
            tracing::debug!("no webhook secret configured: POST /v1/webhook is disabled");
        }
        let state = Arc::new(AppState {
            core,
            webhook_secret: settings.webhook_secret.clone(),
            webhook_bodies,
            auth,
            limiter: guard::Limiter::new(&settings.limits),
            keyring: settings.keyring.clone(),
            history: Arc::new(HistoryCache::new(settings.limits.request_timeout)),
            tls: settings.tls.is_some(),
        });
        spawn_pruning(&state);
        Ok(state)
    }
}

/// Idle callers' rate-limit buckets are dropped once a minute so the key store stays
/// small, until the server shuts down.
fn spawn_pruning(state: &Arc<AppState>) {
    if state.limiter.is_none() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = state.core.hub.shutdown_signal() => break,
                _ = tick.tick() => if let Some(l) = &state.limiter { l.prune() },
            }
        }
    });
}
