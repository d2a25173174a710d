//! The native API (ARCHITECTURE.md §4): `/v1/config/{service}/{env}` and `/v1/services`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{Caller, Instance, PairRequest};
use super::{bytes_response, not_modified, store, ApiError, AppState};
use crate::store::entry::Body;

pub(super) async fn services(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    let snap = store(&state)?.snapshot();
    if principal.is_admin() {
        return Ok(bytes_response(
            "application/json",
            snap.services_body.clone(),
        ));
    }
    // A scoped token sees only the services and envs it may read.
    let mut listing = snap.services.clone();
    for s in &mut listing.services {
        let name = s.name.clone();
        s.envs
            .retain(|e| snap.may_read(&principal, &name, e).is_ok());
    }
    listing.services.retain(|s| !s.envs.is_empty());
    Ok(axum::Json(listing).into_response())
}

pub(super) async fn config(
    State(state): State<Arc<AppState>>,
    pair: PairRequest,
    instance: Instance,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let label = pair.label("label")?;
    let PairRequest {
        service,
        envs,
        query,
        principal,
    } = pair;
    let (body, content_type) = match query.get("format").map(String::as_str) {
        None | Some("json") => (Body::Json, "application/json"),
        Some("yaml") | Some("yml") => (Body::Yaml, "application/yaml"),
        Some("properties") => (Body::Properties, "text/plain; charset=utf-8"),
        Some("env") => (Body::Env, "text/plain; charset=utf-8"),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_format",
                format!(
                    "unknown format `{}`: use json, yaml, properties or env",
                    other.escape_default()
                ),
            ))
        }
    };
    let entry = store(&state)?
        .lookup(&principal, label.as_deref(), &service, &envs)
        .await?;
    if !entry.service_known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("unknown service `{service}`: no {service}.yml or {service}-{{env}}.yml at label `{}`", entry.label),
        ));
    }
    let entry = instance.receives(&state, &principal, label.is_some(), entry)?;
    if not_modified(&headers, entry.digest()) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().insert(header::ETAG, entry.etag.clone());
        return Ok(resp);
    }
    let mut resp = bytes_response(content_type, entry.body(body));
    resp.headers_mut().insert(header::ETAG, entry.etag.clone());
    Ok(resp)
}
