//! Spring's plain-text and binary resources over HTTP (`ResourceController`): the
//! handler of `/{name}/{profile}/{label}/{path}` and of `?useDefaultLabel`; the reading
//! itself is [`crate::store::resource`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::extract::{not_reserved, resolve_flag, ApiPath, ApiQuery, Caller, Params};
use super::guard::require_read;
use super::{bytes_response, store, ApiError, AppState};
use crate::auth::Principal;
use crate::errors::LookupError;
use crate::names::{check_name, parse_envs, parse_label};
use crate::store::resource::{ResourceError, ResourceForm};

/// `/{name}/{profile}/{label}/{path}`: any file of the repository
/// (`ResourceController.retrieve` and `.binary`).
pub(super) async fn resource(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiPath((name, profiles, label, file)): ApiPath<(String, String, String, String)>,
    ApiQuery(query): ApiQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_resource(
        &state,
        &principal,
        &name,
        &profiles,
        Some(&label),
        &file,
        &query,
        &headers,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_resource(
    state: &AppState,
    principal: &Principal,
    name: &str,
    profiles: &str,
    label: Option<&str>,
    file: &str,
    query: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // confhub's own paths are never a Spring application: without this, an unknown
    // `/v1/a/b/c` would be read as a resource of an app named `v1`.
    not_reserved(name)?;
    check_name("application name", name)?;
    let envs = parse_envs(profiles)?;
    require_read(principal, name, &envs)?;
    let label = label.map(parse_label).transpose()?;
    // Spring maps `produces = application/octet-stream` to `binary`: asked for by the
    // `Accept` header, the bytes as stored, placeholders untouched.
    let binary = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/octet-stream"));
    let form = if binary {
        ResourceForm::Binary
    } else {
        ResourceForm::Text {
            resolve: resolve_flag(query)?,
        }
    };
    let found = store(state)?
        .resource(principal, label.as_deref(), name, &envs, file, form)
        .await;
    match found {
        Ok(r) => Ok(bytes_response(r.content_type, r.body)),
        Err(ResourceError::Lookup(e)) => Err(e.into()),
        // `PathUtils.isInvalidPath` → `InvalidEnvironmentRequestException`: 400.
        Err(e @ ResourceError::InvalidPath(..)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            e.to_string(),
        )),
        // `NoSuchResourceException` → `ResourceControllerAdvice.notFound`: 404.
        Err(e @ ResourceError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
        )),
        Err(e @ ResourceError::TooLarge { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_large",
            e.to_string(),
        )),
        // A placeholder cycle: Spring's helper throws an `IllegalArgumentException`.
        Err(ResourceError::Placeholder(e)) => {
            Err(ApiError::from(LookupError::Config(e)).with_status(StatusCode::BAD_REQUEST))
        }
    }
}
