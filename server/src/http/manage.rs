//! Config management from git (DESIGN §4): `/v1/history/{service}/{env}` and
//! `/v1/diff/{service}/{env}`. Not hot paths: they may walk history on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use confhub_client::wire::{DiffResponse, HistoryResponse};

use super::guard::require_read;
use super::{rejection, store, ApiError, AppState};
use crate::auth::Principal;
use crate::errors::SourceError;
use crate::history;
use crate::names::{check_name, parse_envs, parse_label};
use crate::store::{LookupError, Source};
use axum::Extension;

type Params = HashMap<String, String>;

pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Path((service, env)) = path.map_err(rejection)?;
    let Query(query) = query.map_err(rejection)?;
    check_name("service", &service)?;
    let envs = parse_envs(&env)?;
    require_read(&principal, &service, &envs)?;
    let limit = match query.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "limit must be a number from 1 to 1000",
                )
            })?,
    };
    let store = store(&state)?.clone();
    // The pair must exist at the tracked branch: a typo is a 404, not an empty history.
    let entry = store.lookup(&principal, None, &service, &envs).await?;
    if !entry.service_known {
        return Err(unknown_service(&service));
    }
    let blocking_store = store.clone();
    let (svc, envs2) = (service.clone(), envs.clone());
    let (label, entries) = tokio::task::spawn_blocking(move || match blocking_store.source() {
        Source::Git(git) => {
            history::history(git, blocking_store.uri(), &principal, &svc, &envs2, limit).map(Some)
        }
        Source::Dir(_) => Ok(None),
    })
    .await
    .map_err(|e| ApiError::from(LookupError::Source(SourceError::Task(e.to_string()))))?
    .map_err(|e| ApiError::from(LookupError::Source(e)))?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_history",
            "history needs a git repository; this server serves a --dev directory",
        )
    })?;
    Ok(Json(HistoryResponse {
        service,
        env: envs.join(","),
        label,
        entries,
    }))
}

pub(super) async fn diff(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<DiffResponse>, ApiError> {
    let Path((service, env)) = path.map_err(rejection)?;
    let Query(query) = query.map_err(rejection)?;
    check_name("service", &service)?;
    let envs = parse_envs(&env)?;
    require_read(&principal, &service, &envs)?;
    let from = query.get("from").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`from` is required: a branch, tag or sha",
        )
    })?;
    let from = parse_label(from)?;
    let to = query.get("to").map(|t| parse_label(t)).transpose()?;
    let store = store(&state)?;
    let old = store
        .lookup(&principal, Some(&from), &service, &envs)
        .await?;
    let new = store
        .lookup(&principal, to.as_deref(), &service, &envs)
        .await?;
    if !old.service_known && !new.service_known {
        return Err(unknown_service(&service));
    }
    let to_label = to.unwrap_or_else(|| new.label.clone());
    Ok(Json(history::diff(&from, &to_label, &old, &new)))
}

fn unknown_service(service: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_service",
        format!("unknown service `{service}`: no {service}.yml or {service}-{{env}}.yml"),
    )
}
