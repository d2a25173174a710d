//! HTTP: the router, shared state and error responses. Each request for config goes
//! `router` → [`native`] or [`spring`] handler → [`crate::store::Store::lookup`] →
//! a pre-rendered body of [`crate::store::entry::PairEntry`]. Live updates: `/v1/watch`
//! ([`crate::live::hub`]), `/v1/status` ([`status`]) and `/v1/webhook` ([`webhook`]).

mod admin;
mod console;
mod error;
mod extract;
pub mod guard;
mod instances;
mod manage;
mod metrics;
mod native;
pub mod observe;
mod resource;
mod rollouts;
mod spring;
mod state;
mod status;
mod watch;
pub mod webhook;

pub(crate) use error::rejection;
pub(crate) use error::ApiError;
pub(crate) use state::AppState;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use confhub_client::wire::ReadyResponse;

use crate::settings::Settings;
use crate::store::Store;

/// The application router, with the layers every request passes through.
pub(crate) fn router(state: &Arc<AppState>, settings: &Settings) -> Router {
    routes(state.clone()).layer((
        // Outermost: request id, trace context, span and metrics see every answer.
        axum::middleware::from_fn_with_state(state.core.metrics.clone(), observe::observe),
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.limits.request_timeout,
        ),
        axum::extract::DefaultBodyLimit::max(settings.limits.max_body_bytes),
    ))
}

fn routes(state: Arc<AppState>) -> Router {
    // Everything that shows config (or manages it) needs a token once tokens exist.
    let protected = Router::new()
        .route("/v1/services", get(native::services))
        .route("/v1/config/{service}/{env}", get(native::config))
        .route("/v1/history/{service}/{env}", get(manage::history))
        .route("/v1/diff/{service}/{env}", get(manage::diff))
        .route("/v1/status", get(status::status))
        .route("/v1/instances", get(instances::instances))
        .route("/v1/rollouts", get(rollouts::rollouts))
        .route("/v1/watch", get(watch::upgrade))
        .route("/encrypt", post(admin::encrypt))
        .route("/decrypt", post(admin::decrypt))
        .route("/encrypt/status", get(admin::status))
        .route("/encrypt/{name}/{profiles}", post(admin::encrypt_for))
        .route("/decrypt/{name}/{profiles}", post(admin::decrypt_for))
        .route("/key", get(admin::key))
        .route("/key/{name}/{profiles}", get(admin::key_for))
        .route("/{file}", get(spring::file))
        .route("/{a}/{b}", get(spring::two_segments))
        .route(
            "/{name}/{profiles}/{label}",
            get(spring::environment_at_label),
        )
        .route(
            "/{name}/{profiles}/{label}/{*path}",
            get(resource::resource),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::authenticate,
        ));
    // Probes and webhooks (which carry their own HMAC) stay reachable without a token.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        // Reads its body itself, under `limits.webhook_max_body_bytes` and only once the
        // headers have been checked (see [`webhook`]).
        .route("/v1/webhook", post(webhook::webhook))
        // spring-cloud-config-monitor's endpoint, under the same proofs as `/v1/webhook`.
        .route("/monitor", post(webhook::monitor))
        // What Spring Boot's probes and dashboards ask; it knows no more than `/healthz`.
        .route("/actuator/health", get(actuator_health))
        // The console signs in with its own cookie, checked by the same `guard::admit`.
        .merge(console::routes())
        .merge(protected)
        .fallback(no_such_endpoint)
        .with_state(state)
}

/// First path segments that are confhub's own, never a Spring application name: a path
/// that would read one as the name (`/v1/instances`, `/actuator/info`) is a 404, not the
/// Environment of an app called `v1` or `actuator`. A label may still be called `v1`
/// (`/v1/orders-prod.yml` is the file form at tag `v1`, as in Spring).
pub const RESERVED: [&str; 10] = [
    "v1", "ui", "actuator", "metrics", "healthz", "readyz", "monitor", "encrypt", "decrypt", "key",
];

async fn no_such_endpoint() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Spring Boot's health endpoint. A Spring config server's health includes its
/// repository (`ConfigServerHealthIndicator`: DOWN, and so a 503, when it cannot load an
/// environment), so this answers as `/readyz` decides: UP once a commit is served, DOWN
/// while none is. No details: probes carry no token.
async fn actuator_health(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Response {
    const MEDIA: &str = "application/vnd.spring-boot.actuator.v3+json";
    if state.core.store.get().is_some() {
        bytes_response(MEDIA, Bytes::from_static(br#"{"status":"UP"}"#))
    } else {
        let mut response = bytes_response(MEDIA, Bytes::from_static(br#"{"status":"DOWN"}"#));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    match state.core.store.get() {
        Some(store) => {
            let snap = store.snapshot();
            // Probes need no token; error details (file names, messages) only go to a
            // caller that could read the pair anyway.
            let principal = state.auth.authenticate(&headers).ok();
            let errors = snap
                .errors()
                .into_iter()
                .chain(store.source_errors())
                .chain(store.rollout_errors())
                .filter(|e| {
                    principal
                        .as_ref()
                        .is_some_and(|p| snap.may_read(p, &e.service, &e.env).is_ok())
                })
                .collect();
            let body = ReadyResponse {
                status: "ready".into(),
                version: Some(snap.version.clone()),
                errors,
                reason: None,
            };
            axum::Json(body).into_response()
        }
        None => {
            // The failure names the repository and what the remote answered: an admin
            // (or anyone, on an open server) sees it; a probe without a token sees that
            // there is one, and `/v1/status` shows it to any token.
            let admin = state
                .auth
                .authenticate(&headers)
                .is_ok_and(|p| p.is_admin());
            let reason = state.core.live_status.start_error().map(|e| {
                if admin {
                    e
                } else {
                    "the repository cannot be opened yet; retrying (details in /v1/status)"
                        .to_string()
                }
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(ReadyResponse {
                    status: "starting".into(),
                    version: None,
                    errors: Vec::new(),
                    reason,
                }),
            )
                .into_response()
        }
    }
}

/// A pre-rendered body with its content type.
pub(crate) fn bytes_response(content_type: &'static str, body: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// `If-None-Match` matches `etag` (a quoted digest)?
pub(crate) fn not_modified(headers: &HeaderMap, digest: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == digest || t == "*")
}

pub(crate) fn store(state: &AppState) -> Result<&Arc<Store>, ApiError> {
    state
        .core
        .store
        .get()
        .ok_or_else(|| ApiError::not_ready_because(state.core.live_status.start_error()))
}
