//! `GET /metrics`: gathers the render-time readings from the hub, live status, history
//! cache and store, and hands them to [`crate::metrics::Metrics::render`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{Readings, SnapshotReadings};

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.core.metrics.render(&readings(&state));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn readings(state: &AppState) -> Readings {
    let hub = state.core.hub.stats();
    let live = state.core.live_status.get();
    Readings {
        ws_connections: hub.connections,
        ws_subscriptions: state
            .core
            .hub
            .subscriber_counts()
            .iter()
            .map(|(_, n)| *n)
            .sum(),
        frames_pushed: hub.frames_sent,
        slow_consumers: hub.slow_dropped,
        webhooks_accepted: live.webhooks_accepted,
        webhooks_rejected: live.webhooks_rejected,
        history_scanned: state.history.commits_scanned(),
        history_pairs: state.history.pairs_len(),
        snapshot: state.core.store.get().map(|store| {
            let snap = store.snapshot();
            let (label_cache_entries, label_cache_bytes) = store.label_cache_usage();
            SnapshotReadings {
                version: snap.version.clone(),
                label: snap.label.clone(),
                pairs_in_error: snap.errors().len(),
                parsed_files: snap.parsed_files(),
                label_cache_entries,
                label_cache_bytes,
            }
        }),
        instances: release_counts(state),
        rejected: state.core.instances.rejected_counts(),
    }
}

/// Instances per pair and release: a pair's current config and its rollout's candidate
/// are named by digest (with the release before the current one, which the table keeps).
fn release_counts(state: &AppState) -> Vec<((String, String), String, u64)> {
    let Some(store) = state.core.store.get() else {
        return Vec::new();
    };
    let snap = store.snapshot();
    let rollouts = store.rollouts();
    state
        .core
        .instances
        .release_counts(|(service, env), digest| {
            let current = snap
                .pair(service, env)
                .and_then(|p| p.entry.as_ref())
                .is_some_and(|e| e.digest() == digest);
            current
                || rollouts
                    .on(service, env)
                    .is_some_and(|r| r.candidate_digest(env) == Some(digest))
        })
}
