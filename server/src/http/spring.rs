//! The Spring Cloud Config compatible API (ARCHITECTURE.md §5), so Spring Boot, Node and Python
//! clients work unchanged.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use confhub_client::wire::SPRING_V2_MEDIA_TYPE;

use super::extract::{not_reserved, resolve_flag, ApiPath, ApiQuery, Caller, Instance, Params};
use super::guard::require_read;
use super::{bytes_response, store, ApiError, AppState};
use crate::auth::Principal;
use crate::errors::{ErrorKind, LookupError};
use crate::names::{parse_envs, parse_label, parse_labels, parse_names};
use crate::resolve::parse::Format;
use crate::store::entry::{Body, Placeholders};

/// `/{name}-{profiles}.{ext}`
pub(super) async fn file(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiPath(file): ApiPath<String>,
    ApiQuery(query): ApiQuery,
) -> Result<Response, ApiError> {
    serve_file(&state, &principal, None, &file, &query).await
}

/// `/{name}/{profiles}` or `/{label}/{name}-{profiles}.{ext}`: told apart by the extension,
/// as Spring does.
pub(super) async fn two_segments(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiPath((a, b)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery,
    headers: HeaderMap,
    instance: Instance,
) -> Result<Response, ApiError> {
    if split_file(&b).is_some() {
        return serve_file(&state, &principal, Some(&a), &b, &query).await;
    }
    environment(&state, &principal, &a, &b, None, &headers, Some(&instance)).await
}

/// `/{name}/{profiles}/{label}`, or `/{name}/{profile}/{path}?useDefaultLabel`: a
/// resource at the default label (`ResourceController.retrieveDefault`).
pub(super) async fn environment_at_label(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiPath((name, profiles, label)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if query.contains_key("useDefaultLabel") {
        return super::resource::serve_resource(
            &state, &principal, &name, &profiles, None, &label, &query, &headers,
        )
        .await;
    }
    environment(
        &state,
        &principal,
        &name,
        &profiles,
        Some(&label),
        &headers,
        None,
    )
    .await
}

/// Check each of Spring's comma-separated application names (`orders,common`) and that
/// `principal` may read every one: Spring loads all of them into one answer.
fn require_each(principal: &Principal, names: &str, envs: &[String]) -> Result<(), ApiError> {
    let names = parse_names(names)?;
    // confhub's own paths are a 404 whoever asks, before any scope is looked at.
    for name in &names {
        not_reserved(name)?;
    }
    for name in names {
        require_read(principal, &name, envs)?;
    }
    Ok(())
}

async fn environment(
    state: &AppState,
    principal: &Principal,
    name: &str,
    profiles: &str,
    label: Option<&str>,
    headers: &HeaderMap,
    instance: Option<&Instance>,
) -> Result<Response, ApiError> {
    let envs = parse_envs(profiles)?;
    require_each(principal, name, &envs)?;
    let v2 = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(SPRING_V2_MEDIA_TYPE));
    let labels = label.map(parse_labels).transpose()?;
    if let Some(labels) = labels.as_ref().filter(|l| l.len() > 1) {
        return several_labels(state, principal, name, &envs, labels, v2).await;
    }
    let label = labels.and_then(|mut l| l.pop());
    // Placeholders are left as written in this form: clients may resolve them from
    // their own environment, so an unresolvable one is not an error here.
    let mut entry = store(state)?
        .lookup_as_written(principal, label.as_deref(), name, &envs)
        .await?;
    if let Some(instance) = instance {
        entry = instance.receives(state, principal, label.is_some(), entry)?;
    }
    Ok(if v2 {
        bytes_response(SPRING_V2_MEDIA_TYPE, entry.body(Body::SpringEnvV2))
    } else {
        bytes_response("application/json", entry.body(Body::SpringEnv))
    })
}

/// `/{name}/{profiles}/main,feature`: every label's property sources, the last label's
/// first, the versions joined in the order asked; a label that does not exist is a 404
/// (`AbstractScmEnvironmentRepository.findOne`, `JGitEnvironmentRepositoryTests.
/// multipleLabels` / `multipleLabelsWithFailure`, with `continue-on-multiple-label-failure`
/// off, its default). Assembled from each label's pre-rendered answer.
async fn several_labels(
    state: &AppState,
    principal: &Principal,
    name: &str,
    envs: &[String],
    labels: &[String],
    v2: bool,
) -> Result<Response, ApiError> {
    const KEY: &[u8] = b",\"propertySources\":[";
    let store = store(state)?;
    let mut versions = Vec::with_capacity(labels.len());
    let mut sources: Vec<Vec<u8>> = Vec::with_capacity(labels.len());
    for label in labels.iter().rev() {
        let entry = store
            .lookup_as_written(principal, Some(label), name, envs)
            .await?;
        let body = entry.body(if v2 {
            Body::SpringEnvV2
        } else {
            Body::SpringEnv
        });
        // The body ends with its property sources (`…,"propertySources":[…]}`); the
        // fields before it are names, which cannot hold that text.
        let items = body
            .windows(KEY.len())
            .position(|w| w == KEY)
            .map(|at| &body[at + KEY.len()..body.len().saturating_sub(2)])
            .unwrap_or_default();
        if !items.is_empty() {
            sources.push(items.to_vec());
        }
        versions.push(entry.version.clone());
    }
    versions.reverse();
    let head = serde_json::json!({
        "name": name,
        "profiles": envs,
        "label": labels.join(","),
        "version": versions.join(","),
        "state": "",
    })
    .to_string();
    let mut out = head.into_bytes();
    out.pop();
    out.extend_from_slice(KEY);
    out.extend_from_slice(&sources.join(&b',')[..]);
    out.extend_from_slice(b"]}");
    let media = if v2 {
        SPRING_V2_MEDIA_TYPE
    } else {
        "application/json"
    };
    Ok(bytes_response(media, out.into()))
}

/// `orders-api-prod.yml` → ("orders-api", "prod", Yaml): the name ends at the last `-`,
/// as Spring's `{name}-{profiles}` pattern matches. The extensions are those of config
/// files ([`Format`]).
fn split_file(file: &str) -> Option<(&str, &str, Format)> {
    let format = Format::of(file)?;
    let (stem, _) = file.rsplit_once('.')?;
    let (name, profiles) = stem.rsplit_once('-')?;
    Some((name, profiles, format))
}

async fn serve_file(
    state: &AppState,
    principal: &Principal,
    label: Option<&str>,
    file: &str,
    query: &Params,
) -> Result<Response, ApiError> {
    let Some((name, profiles, ext)) = split_file(file) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "`{}` is not `{{name}}-{{profiles}}.yml|.yaml|.properties|.json`",
                file.escape_default()
            ),
        ));
    };
    let envs = parse_envs(profiles)?;
    require_each(principal, name, &envs)?;
    let label = label.map(parse_label).transpose()?;
    let resolve = resolve_flag(query)?;
    let store = store(state)?;
    let entry = if resolve {
        match store
            .lookup_spring(principal, label.as_deref(), name, &envs)
            .await
        {
            Ok(entry) => entry,
            // Unresolvable placeholders are served as written; what is left is a cycle
            // (or a limit), which Spring's placeholder helper throws as an
            // `IllegalArgumentException`: `EnvironmentController.illegalArgument`, 400.
            Err(LookupError::Config(e)) if e.kind == ErrorKind::Placeholder => {
                return Err(
                    ApiError::from(LookupError::Config(e)).with_status(StatusCode::BAD_REQUEST)
                );
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        store
            .lookup_as_written(principal, label.as_deref(), name, &envs)
            .await?
    };
    let placeholders = Placeholders::resolved_if(resolve);
    Ok(match ext {
        // Spring serves its `.yml` form as `text/plain` (`EnvironmentController.getSuccess`).
        Format::Yaml => bytes_response(
            "text/plain; charset=utf-8",
            entry.body(Body::SpringYaml(placeholders)),
        ),
        Format::Properties => bytes_response(
            "text/plain; charset=utf-8",
            entry.body(Body::SpringProperties(placeholders)),
        ),
        Format::Json => bytes_response(
            "application/json",
            entry.body(Body::SpringJson(placeholders)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_at_the_last_dash() {
        assert!(matches!(
            split_file("orders-api-prod.yml"),
            Some(("orders-api", "prod", Format::Yaml))
        ));
        assert!(matches!(
            split_file("orders-prod,eu.properties"),
            Some(("orders", "prod,eu", Format::Properties))
        ));
        assert!(split_file("orders.yml").is_none());
        assert!(split_file("orders-prod.txt").is_none());
    }
}
