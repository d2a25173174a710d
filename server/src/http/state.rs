//! The state every handler shares: set up once by `app`, read by every request.

use std::sync::{Arc, OnceLock};

use super::{guard, webhook};
use crate::auth::Auth;
use crate::live::detect::Trigger;
use crate::live::hub::Hub;
use crate::live::status::LiveStatus;
use crate::settings::Secret;
use crate::store::Store;

/// State shared by every handler.
#[derive(Debug, Default)]
pub struct AppState {
    /// Set once the first snapshot is loaded.
    pub store: OnceLock<Arc<Store>>,
    /// WebSocket subscriptions and fan-out.
    pub hub: Arc<Hub>,
    /// Pokes the refresh loop (webhooks).
    pub trigger: Arc<Trigger>,
    /// What the refresh loop last did, for `/v1/status`.
    pub live_status: Arc<LiveStatus>,
    /// Secret that webhook calls must prove they know.
    pub webhook_secret: Option<Secret>,
    /// Limits on webhook payloads, and on those still unauthenticated together.
    pub webhook_bodies: webhook::BodyBudget,
    /// Access tokens (open when none).
    pub auth: Auth,
    /// Per-token rate limits.
    pub limiter: Option<guard::Limiter>,
    /// Keys for `/encrypt` and `/decrypt`.
    pub keyring: Option<crate::crypto::Keyring>,
    /// This server's Prometheus metrics (`GET /metrics`, [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Pair histories kept between requests, and the permits of history and diff work.
    pub history: Arc<crate::tools::history::HistoryCache>,
}
