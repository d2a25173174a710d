//! Config management from git (ARCHITECTURE.md §4): `/v1/history/{service}/{env}` and
//! `/v1/diff/{service}/{env}`. Not hot paths: they may walk history on a blocking thread.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confhub_client::wire::{DiffResponse, HistoryResponse};

use super::extract::{PairRequest, Params};
use super::{store, ApiError, AppState};
use crate::errors::{LookupError, SourceError};
use crate::store::{Source, Store};
use crate::tools::history;

pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    pair: PairRequest,
) -> Result<Json<HistoryResponse>, ApiError> {
    let limit = history_limit(&pair.query)?;
    let PairRequest {
        service,
        envs,
        principal,
        ..
    } = pair;
    let store = store(&state)?.clone();
    // The pair must exist at the tracked branch: a typo is a 404, not an empty history.
    let entry = store.lookup(&principal, None, &service, &envs).await?;
    if !entry.service_known {
        return Err(unknown_service(&service));
    }
    let Source::Git(_) = store.source() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_history",
            "history needs a git repository; this server serves a --dev directory",
        ));
    };
    let answer = match scan(&state, store, &service, &envs, limit).await? {
        Ok(answer) => answer,
        Err(left) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "history_unfinished",
                format!(
                    "the history of `{service}/{}` is not scanned to the head yet ({left} commits left); what was scanned is kept: ask again to continue",
                    envs.join(",")
                ),
            )
            .retry_after(1))
        }
    };
    let label = answer.branch.clone();
    let entries = answer
        .for_principal(&principal)
        .map_err(|d| ApiError::from(LookupError::Forbidden(d.message(principal.who()))))?;
    Ok(Json(HistoryResponse {
        service,
        env: envs.join(","),
        label,
        entries,
    }))
}

/// `?limit=`: how many entries, 20 unless asked.
fn history_limit(query: &Params) -> Result<usize, ApiError> {
    let Some(l) = query.get("limit") else {
        return Ok(20);
    };
    l.parse::<usize>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "limit must be a number from 1 to 1000",
            )
        })
}

/// Bring the pair's history up to the head, within the request budget: `Ok(Err(left))`
/// when the budget ran out with `left` commits still to scan.
async fn scan(
    state: &AppState,
    store: Arc<Store>,
    service: &str,
    envs: &[String],
    limit: usize,
) -> Result<Result<history::Answer, usize>, ApiError> {
    let cache = state.history.clone();
    let deadline = tokio::time::Instant::now() + cache.budget();
    let pair = cache.pair(service, envs);
    // One scan per pair at a time (the second caller then finds it done), and at most
    // [`history::PERMITS`] scans at all, each for at most the budget.
    let (held, permit) = tokio::time::timeout_at(deadline, async {
        let held = pair.lock_owned().await;
        let permit = cache.permits().clone().acquire_owned().await;
        (held, permit)
    })
    .await
    .map_err(|_| busy(&cache))?;
    let permit = permit.map_err(|e| task_error(e.to_string()))?;
    let (svc, envs2) = (service.to_string(), envs.to_vec());
    let blocking_cache = cache.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut held = held;
        let Source::Git(git) = store.source() else {
            return Ok(Err(0));
        };
        let bounds = *blocking_cache.bounds();
        let scan = held.scan(
            git,
            store.uri(),
            &svc,
            &envs2,
            &bounds,
            deadline.into_std(),
            blocking_cache.scanned_counter(),
        )?;
        Ok(match scan {
            history::Scan::Done => Ok(held.answer(limit)),
            history::Scan::Unfinished { left } => Err(left),
        })
    })
    .await
    .map_err(|e| task_error(e.to_string()))?
    .map_err(|e: SourceError| ApiError::from(LookupError::Source(e)))?;
    Ok(scanned)
}

pub(super) async fn diff(
    State(state): State<Arc<AppState>>,
    pair: PairRequest,
) -> Result<Json<DiffResponse>, ApiError> {
    let from = pair.label("from")?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`from` is required: a branch, tag or sha",
        )
    })?;
    let to = pair.label("to")?;
    let PairRequest {
        service,
        envs,
        principal,
        ..
    } = pair;
    let cache = state.history.clone();
    // A diff resolves up to two versions from git: it shares the history's permits.
    let _permit = tokio::time::timeout(cache.budget(), cache.permits().clone().acquire_owned())
        .await
        .map_err(|_| busy(&cache))?
        .map_err(|e| task_error(e.to_string()))?;
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

/// 503: every permit stayed taken for the whole budget.
fn busy(cache: &history::HistoryCache) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!(
            "{} history or diff requests are already working and none finished within {:?}; ask again",
            history::PERMITS,
            cache.budget()
        ),
    )
    .retry_after(1)
}

fn task_error(e: String) -> ApiError {
    ApiError::from(LookupError::Source(SourceError::Task(e)))
}

fn unknown_service(service: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_service",
        format!("unknown service `{service}`: no {service}.yml or {service}-{{env}}.yml"),
    )
}
