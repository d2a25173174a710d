//! Who may call what: authenticates every protected request (401 without or with an
//! unknown token), rate-limits per token (429 with `Retry-After`), and hands handlers a
//! [`Principal`] to check scopes against (403 outside them).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::auth::{AuthError, Principal};
use crate::settings::HttpLimits;

/// Per-token buckets, keyed by token name.
#[derive(Debug)]
pub struct Limiter {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
}

impl Limiter {
    /// A limiter for `limits`, or `None` when rate limiting is off.
    pub fn new(limits: &HttpLimits) -> Option<Limiter> {
        let rate = NonZeroU32::new(limits.rate_per_second)?;
        let burst = NonZeroU32::new(limits.rate_burst.max(limits.rate_per_second)).unwrap_or(rate);
        Some(Limiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// `Err(seconds to wait)` when `key` is over its rate.
    fn check(&self, key: &str) -> Result<(), u64> {
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }

    /// Forget idle callers, so the key store stays bounded.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

fn unauthorized(e: AuthError) -> Response {
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()).into_response();
    // Basic too, so Spring clients configured with a password send it.
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"confhub\", Basic realm=\"confhub\""),
    );
    resp
}

/// Why a caller is not let in.
#[derive(Debug)]
pub(super) enum Refusal {
    /// No token, or one no configured token matches.
    Unauthenticated(AuthError),
    /// Over its rate: retry in this many seconds.
    Limited(u64),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated(e) => unauthorized(e),
            Refusal::Limited(wait) => {
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests; retry in {wait} s"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&wait.max(1).to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
        }
    }
}

/// Who presents `token`, within its rate: the one check every surface makes (the API
/// with the token in a header, the console with it in its session cookie).
pub(super) fn admit(state: &AppState, token: Option<&str>) -> Result<Principal, Refusal> {
    let principal = state
        .auth
        .principal_for(token)
        .map_err(Refusal::Unauthenticated)?;
    // Limits are per token: an open server (no tokens) has no identity to limit by, and
    // many services behind one address must not share a bucket.
    if let (Some(limiter), Some(name)) = (&state.limiter, &principal.name) {
        limiter.check(name).map_err(Refusal::Limited)?;
    }
    Ok(principal)
}

/// Middleware on every protected route.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = crate::auth::presented_token(req.headers());
    let principal = match admit(&state, token.as_deref()) {
        Ok(p) => p,
        Err(refusal) => {
            if let Refusal::Unauthenticated(e) = &refusal {
                tracing::debug!(path = %req.uri().path(), reason = %e, "unauthenticated request");
            }
            return refusal.into_response();
        }
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// 403 unless `principal` may read `service` in every env of `envs`.
pub fn require_read(principal: &Principal, service: &str, envs: &[String]) -> Result<(), ApiError> {
    if principal.can_read(service, envs) {
        Ok(())
    } else {
        Err(forbidden(
            principal,
            &format!("`{service}/{}`", envs.join(",")),
        ))
    }
}

/// 403 unless `principal` is an admin.
pub fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(forbidden(principal, "this endpoint (admin only)"))
    }
}

fn forbidden(principal: &Principal, what: &str) -> ApiError {
    let who = principal.name.as_deref().unwrap_or("anonymous");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("token `{who}` has no scope for {what}"),
    )
}
