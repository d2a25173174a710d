//! Extractors that answer a bad request with the API's own JSON error ([`ApiError`])
//! instead of axum's plain-text rejections, and the preamble every per-pair handler
//! shares: which pair, checked names, and a token that may read it; and the checks of
//! a Spring request's path and query that several Spring routes share.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Extension;
use serde::de::DeserializeOwned;

use super::guard::require_read;
use super::{rejection, store, ApiError, AppState};
use crate::auth::Principal;
use crate::live::instances::{Identity, InstanceKey, InstanceLabels, Sent};
use crate::names::{check_name, parse_envs, parse_label};
use crate::store::entry::PairEntry;
use confhub_client::wire::instance::{
    check_instance_id, parse_labels, Labels, INSTANCE_HEADER, LABELS_HEADER,
};
use std::sync::Arc;

/// A request's query parameters by name.
pub(super) type Params = HashMap<String, String>;

/// Path parameters; a bad one (say, broken percent-encoding) is a 400 `bad_request`.
pub(super) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(rejection)?;
        Ok(ApiPath(value))
    }
}

/// Query parameters by name; a malformed query is a 400 `bad_request`.
pub(super) struct ApiQuery(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<Params>::from_request_parts(parts, state)
            .await
            .map_err(rejection)?;
        Ok(ApiQuery(params))
    }
}

/// The caller, as `guard::authenticate` found it.
pub(super) struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Every protected route runs behind `guard::authenticate`, which inserts it.
        let Extension(principal) = Extension::<Principal>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::internal(format!("no caller on a protected route: {e}")))?;
        Ok(Caller(principal))
    }
}

/// The address the request came from (set by the accept loop, [`crate::net`]).
pub(super) struct PeerAddr(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| PeerAddr(c.0))
            .ok_or_else(|| ApiError::internal("no peer address on the request"))
    }
}

/// Who the caller says it is: `X-Confhub-Instance` and `X-Confhub-Labels`, checked by
/// the client crate's rules (a 400 `bad_instance` otherwise), or an anonymous instance
/// known by its IP (ARCHITECTURE.md §6.2).
pub(super) struct Instance {
    pub who: Identity,
    /// The IP it asks from.
    pub address: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Instance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_instance", e);
        let header = |name: &str| -> Result<Option<String>, ApiError> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_string)
                        .map_err(|_| bad(format!("the {name} header is not visible ASCII")))
                })
                .transpose()
        };
        let labels = match header(LABELS_HEADER)? {
            Some(text) => parse_labels(&text).map_err(|e| bad(format!("{LABELS_HEADER}: {e}")))?,
            None => Labels::new(),
        };
        let named = header(INSTANCE_HEADER)?
            .map(|id| {
                check_instance_id(&id)
                    .map(|()| id.clone())
                    .map_err(|e| bad(format!("{INSTANCE_HEADER}: {e}")))
            })
            .transpose()?;
        let PeerAddr(peer) = PeerAddr::from_request_parts(parts, state).await?;
        let address = peer.ip().to_string();
        let key = match named {
            Some(id) => InstanceKey::Named(id.into()),
            None => InstanceKey::Anonymous(address.as_str().into()),
        };
        Ok(Instance {
            who: Identity {
                key,
                labels: InstanceLabels::new(&labels),
            },
            address,
        })
    }
}

impl Instance {
    /// What this instance is served instead of `entry` (the tracked, or pinned, config
    /// of a pair): a rollout's candidate when a served rollout picks it, unless the
    /// request is `pinned` to a label (never in a rollout). The fetch is recorded in the
    /// instance table either way. One rule for every HTTP surface that serves config.
    pub(super) fn receives(
        &self,
        state: &AppState,
        principal: &Principal,
        pinned: bool,
        entry: Arc<PairEntry>,
    ) -> Result<Arc<PairEntry>, ApiError> {
        let who = &self.who;
        let candidate = if pinned {
            None
        } else {
            store(state)?.candidate(principal, &entry.service, &entry.envs, who.key.id(), |k| {
                who.labels.get(k)
            })?
        };
        let entry = candidate.unwrap_or(entry);
        let pair = (entry.service.clone(), entry.env_string());
        state
            .core
            .instances
            .fetched(who, &self.address, &pair, Sent::of(&entry));
        Ok(entry)
    }
}

/// A native request for one pair, `/v1/…/{service}/{env}`: the names are valid and the
/// caller may read the pair.
pub(super) struct PairRequest {
    /// The service asked for.
    pub service: String,
    /// Its environments, in request order (`prod,eu`).
    pub envs: Vec<String>,
    /// Every query parameter.
    pub query: Params,
    /// Who asks.
    pub principal: Principal,
}

impl PairRequest {
    /// The query parameter `name` as a label (branch, tag or sha), checked.
    pub fn label(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.query.get(name).map(|l| parse_label(l)).transpose()?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PairRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath((service, env)) =
            ApiPath::<(String, String)>::from_request_parts(parts, state).await?;
        let ApiQuery(query) = ApiQuery::from_request_parts(parts, state).await?;
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        check_name("service", &service)?;
        let envs = parse_envs(&env)?;
        require_read(&principal, &service, &envs)?;
        Ok(PairRequest {
            service,
            envs,
            query,
            principal,
        })
    }
}

/// `resolvePlaceholders`, `true` unless told otherwise.
pub(super) fn resolve_flag(query: &Params) -> Result<bool, ApiError> {
    match query.get("resolvePlaceholders").map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "resolvePlaceholders must be true or false, not `{}`",
                other.escape_default()
            ),
        )),
    }
}

/// A path whose application name would be one of confhub's own first segments is no
/// Spring path at all: the 404 any unknown path gets.
pub(super) fn not_reserved(name: &str) -> Result<(), ApiError> {
    if super::RESERVED.contains(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        ));
    }
    Ok(())
}
