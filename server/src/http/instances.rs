//! `GET /v1/instances[?service=&env=]`: which instance holds which config
//! ([`crate::live::instances`]), scoped like config: a token sees the instances of the
//! pairs it may read, and of those pairs only.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use confhub_client::wire::InstancesResponse;

use super::extract::{ApiQuery, Caller};
use super::{store, ApiError, AppState};
use crate::names::{check_name, parse_envs};

pub(super) async fn instances(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    ApiQuery(query): ApiQuery,
) -> Result<Json<InstancesResponse>, ApiError> {
    let service = query.get("service");
    let env = query.get("env");
    if let Some(service) = service {
        check_name("service", service)?;
    }
    if let Some(env) = env {
        parse_envs(env)?;
    }
    let snap = store(&state)?.snapshot();
    let visible = |pair: &(String, String)| {
        service.is_none_or(|s| *s == pair.0)
            && env.is_none_or(|e| *e == pair.1)
            && snap.may_read(&principal, &pair.0, &pair.1).is_ok()
    };
    // An instance that subscribed to nothing yet reads no pair a scope could allow.
    let show_bare = principal.is_admin() && service.is_none() && env.is_none();
    Ok(Json(InstancesResponse {
        instances: state.core.instances.list(visible, show_bare),
    }))
}
