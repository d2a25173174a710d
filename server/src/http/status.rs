//! `GET /v1/status`: the tracked branch and commit, freshness (last refresh, last
//! fetch and its failures), pairs that fail to resolve, and subscribers per pair.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use crate::timefmt::rfc3339_of;
use axum::Json;
use confhub_client::wire::{
    CloneStatus, FetchStatus, RefreshStatus, RepairStatus, StatusResponse, SubscriberCount,
    WebhookCounts,
};

use super::extract::Caller;
use super::{store, ApiError, AppState};
use crate::live::status::LiveReport;
use crate::source::git::CloneHealth;
use crate::store::{Source, Store};

pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<StatusResponse>, ApiError> {
    // Pairs outside the caller's scope are left out, as if they did not exist.
    let store = store(&state)?;
    let snap = store.snapshot();
    let visible = |service: &str, env: &str| snap.may_read(&principal, service, env).is_ok();
    let live = state.core.live_status.get();
    let (source, uri) = source_of(store);
    let subscribers = state
        .core
        .hub
        .subscriber_counts()
        .into_iter()
        .filter(|((service, env), _)| visible(service, env))
        .map(|((service, env), n)| SubscriberCount {
            service,
            env,
            subscribers: n as u64,
        })
        .collect();
    Ok(Json(StatusResponse {
        label: snap.label.clone(),
        version: snap.version.clone(),
        source: source.into(),
        uri,
        poll_seconds: live.poll.as_secs(),
        watching: live
            .watching
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        watch_error: live.watch_error.clone(),
        last_refresh: refresh_status(&live),
        last_fetch: fetch_status(&live),
        errors: snap
            .errors()
            .into_iter()
            .chain(store.source_errors())
            .chain(store.rollout_errors())
            .filter(|e| principal.is_admin() || visible(&e.service, &e.env))
            .collect(),
        subscribers,
        connections: state.core.hub.stats().connections,
        webhooks: WebhookCounts {
            accepted: live.webhooks_accepted,
            rejected: live.webhooks_rejected,
        },
        clone: match store.source() {
            Source::Git(g) if g.is_remote() => Some(clone_status(g.clone_health())),
            _ => None,
        },
    }))
}

/// What kind of source this is, and where.
fn source_of(store: &Store) -> (&'static str, String) {
    match store.source() {
        Source::Git(g) if g.is_remote() => ("git-remote", g.uri().to_string()),
        Source::Git(g) => ("git", g.uri().to_string()),
        Source::Dir(d) => ("dir", d.uri()),
    }
}

fn refresh_status(live: &LiveReport) -> Option<RefreshStatus> {
    live.last_refresh.as_ref().map(|o| RefreshStatus {
        at: rfc3339_of(o.at),
        ok: o.error.is_none(),
        error: o.error.clone(),
        took_ms: millis(o.took),
        changed: live.last_changed as u64,
        count: live.refreshes,
    })
}

/// Fetches of a remote; `None` for sources that are not fetched.
fn fetch_status(live: &LiveReport) -> Option<FetchStatus> {
    let last = live.last_fetch.as_ref();
    live.remote.then(|| FetchStatus {
        at: last.map(|o| rfc3339_of(o.at)),
        ok: last.is_none_or(|o| o.error.is_none()),
        error: last.and_then(|o| o.error.clone()),
        took_ms: last.map_or(0, |o| millis(o.took)),
        last_success: live.last_fetch_ok.map(rfc3339_of),
        consecutive_failures: live.fetch_failures,
        next_at: live.next_fetch.map(rfc3339_of),
        count: live.fetches,
    })
}

fn clone_status(h: CloneHealth) -> CloneStatus {
    CloneStatus {
        verifications: h.verifications,
        last_verified: h.last_verified.map(rfc3339_of),
        damaged: h.damaged,
        repairs: h.repairs,
        last_repair: h.last_repair.map(|r| RepairStatus {
            at: rfc3339_of(r.at),
            ok: r.error.is_none(),
            reason: r.reason,
            error: r.error,
            took_ms: millis(r.took),
        }),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
