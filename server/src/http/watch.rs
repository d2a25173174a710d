//! `GET /v1/watch`: the WebSocket upgrade. The connection's session (subscriptions,
//! pushes, pings) is [`crate::live::session`]; the fan-out is [`crate::live::hub`].

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::extract::{Caller, PeerAddr};
use super::{ApiError, AppState};
use crate::live::session::run_session;

/// `GET /v1/watch`: upgrade to a WebSocket and serve subscriptions on it.
pub(super) async fn upgrade(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    PeerAddr(peer): PeerAddr,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::new(e.status(), "not_websocket", e.body_text()).into_response(),
    };
    let Some(store) = state.core.store.get().cloned() else {
        return ApiError::not_ready().into_response();
    };
    let hub = state.core.hub.clone();
    let Some(conn) = hub.connect() else {
        tracing::warn!(
            limit = hub.settings().ws_max_connections,
            "refusing a WebSocket: connection limit reached"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server holds as many WebSocket connections as it accepts; retry later",
        )
        .into_response();
    };
    let max = hub.settings().ws_max_message;
    let instances = state.core.instances.clone();
    ws.max_frame_size(max)
        .max_message_size(max)
        // Small buffers keep an idle connection cheap; they grow for large frames.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| run_session(socket, conn, store, principal, (peer, instances)))
}
