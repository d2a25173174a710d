//! `POST /v1/webhook`: a git host says "something was pushed"; we fetch at once.
//!
//! Accepted proofs, all checked against the configured secret in constant time:
//! - GitHub (and Gitea, Forgejo): `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - Gitea, Gogs: `X-Gitea-Signature` / `X-Gogs-Signature: <hex HMAC-SHA256>`;
//! - Bitbucket (Cloud and Data Center): `X-Hub-Signature: sha256=<hex HMAC-SHA256>`;
//! - GitLab: `X-Gitlab-Token: <secret>`.
//!
//! A bad or missing proof is a 401 and triggers nothing; a valid one answers 202 and
//! pokes the refresh loop to fetch (pings answer 200 and trigger nothing). The payload
//! itself is only read for the log line: whatever was pushed, a fetch brings it.
//!
//! Anyone can call this endpoint, so nothing is buffered that the headers alone can
//! refuse: a disabled endpoint, a missing or malformed proof and a wrong GitLab token are
//! answered before a byte of the body is read. A body is read only under its own limit
//! (`limits.webhook_max_body_bytes`) and, while its HMAC is still unchecked, under a
//! budget shared by every such body (`limits.webhook_body_budget_bytes`): when the budget
//! is spent the answer is a 503 at once, so unauthenticated bodies can never hold more
//! memory than the budget.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState};

/// The git host a webhook call claims to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `X-Hub-Signature-256`.
    GitHub,
    /// `X-Gitea-Signature` / `X-Gogs-Signature`.
    Gitea,
    /// `X-Hub-Signature: sha256=…`.
    Bitbucket,
    /// `X-Gitlab-Token`.
    GitLab,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
            Provider::GitLab => "gitlab",
        }
    }
}

/// Why a webhook call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature or token header at all.
    #[error("no signature: send X-Hub-Signature-256, X-Gitea-Signature, X-Hub-Signature (sha256=) or X-Gitlab-Token")]
    Missing,
    /// A signature that is not `sha256=<hex>` / hex.
    #[error("malformed {0} signature")]
    Malformed(&'static str),
    /// The signature or token does not match the secret.
    #[error("{0} signature does not match")]
    Mismatch(&'static str),
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// What the headers alone establish about a webhook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The proof was in the headers (GitLab's token) and matched.
    Verified(Provider),
    /// A well-formed HMAC of the body, to be checked once the body is read.
    Signed {
        /// Who claims to have signed.
        provider: Provider,
        /// The HMAC-SHA256 it sent.
        mac: Vec<u8>,
    },
}

impl Claim {
    /// Check the claim against the body; a [`Claim::Verified`] needs none.
    pub fn verify(&self, body: &[u8], secret: &str) -> Result<Provider, Refusal> {
        match self {
            Claim::Verified(provider) => Ok(*provider),
            Claim::Signed { provider, mac } => {
                let mut hmac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
                    .map_err(|_| Refusal::Mismatch(provider.name()))?;
                hmac.update(body);
                // `verify_slice` compares in constant time.
                hmac.verify_slice(mac)
                    .map(|()| *provider)
                    .map_err(|_| Refusal::Mismatch(provider.name()))
            }
        }
    }
}

fn signed(provider: Provider, hex_sig: &str) -> Result<Claim, Refusal> {
    let mac = hex::decode(hex_sig.trim()).map_err(|_| Refusal::Malformed(provider.name()))?;
    // An HMAC-SHA256 is 32 bytes: anything else cannot match, whatever the body.
    if mac.len() != 32 {
        return Err(Refusal::Malformed(provider.name()));
    }
    Ok(Claim::Signed { provider, mac })
}

/// Check everything the headers can prove or disprove, before any body is read.
pub fn precheck(headers: &HeaderMap, secret: &str) -> Result<Claim, Refusal> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(sig) = header("x-hub-signature-256") {
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(Refusal::Malformed("github"))?;
        return signed(Provider::GitHub, hex_sig);
    }
    if let Some(sig) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        return signed(Provider::Gitea, sig);
    }
    if let Some(sig) = header("x-hub-signature") {
        // GitHub's legacy SHA-1 signature is not accepted.
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(Refusal::Malformed("bitbucket"))?;
        return signed(Provider::Bitbucket, hex_sig);
    }
    if let Some(token) = header("x-gitlab-token") {
        // Hash both sides so the comparison takes the same time whatever the lengths.
        let given = Sha256::digest(token.as_bytes());
        let wanted = Sha256::digest(secret.as_bytes());
        return if bool::from(given.ct_eq(&wanted)) {
            Ok(Claim::Verified(Provider::GitLab))
        } else {
            Err(Refusal::Mismatch("gitlab"))
        };
    }
    Err(Refusal::Missing)
}

/// Check a webhook call's proof against `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Provider, Refusal> {
    precheck(headers, secret)?.verify(body, secret)
}

/// Webhook bodies: the largest one read, and the bytes that bodies whose HMAC is still
/// unchecked may hold between them.
#[derive(Debug)]
pub struct BodyBudget {
    max_body: usize,
    total: usize,
    unverified: Arc<Semaphore>,
}

/// Why a [`BodyBudget`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A single body could never fit.
    #[error("setting `limits.webhook_body_budget_bytes` ({budget}) is smaller than `limits.webhook_max_body_bytes` ({max_body}): no signed webhook could ever be read")]
    SmallerThanOneBody {
        /// The budget.
        budget: usize,
        /// The per-body limit.
        max_body: usize,
    },
    /// More than the budget can count.
    #[error(
        "setting `limits.webhook_body_budget_bytes` ({0}) is over the maximum of 4294967295 bytes"
    )]
    TooLarge(usize),
}

impl BodyBudget {
    /// Bodies of at most `max_body` bytes; at most `budget` bytes of unchecked bodies at once.
    pub fn new(max_body: usize, budget: usize) -> Result<BodyBudget, BudgetError> {
        if budget < max_body {
            return Err(BudgetError::SmallerThanOneBody { budget, max_body });
        }
        // Permits are taken by the u32 in `try_acquire_many_owned`.
        if u32::try_from(budget).is_err() || budget > Semaphore::MAX_PERMITS {
            return Err(BudgetError::TooLarge(budget));
        }
        Ok(BodyBudget {
            max_body,
            total: budget,
            unverified: Arc::new(Semaphore::new(budget)),
        })
    }

    /// Reserve room for a body of `announced` bytes (the whole limit when the length is
    /// not announced); `None` when the budget is spent.
    fn reserve(&self, announced: Option<usize>) -> Option<OwnedSemaphorePermit> {
        let bytes = announced.unwrap_or(self.max_body).min(self.max_body);
        let bytes = u32::try_from(bytes).ok()?;
        self.unverified.clone().try_acquire_many_owned(bytes).ok()
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        let limits = crate::settings::HttpLimits::default();
        BodyBudget {
            max_body: limits.webhook_max_body_bytes,
            total: limits.webhook_body_budget_bytes,
            unverified: Arc::new(Semaphore::new(limits.webhook_body_budget_bytes)),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug)]
enum ReadError {
    TooLarge,
    Broken(axum::Error),
}

/// The whole body, or [`ReadError::TooLarge`] as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The `Content-Length` a request announces, if any.
fn announced_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Is this a "ping" (hook just configured) rather than a push?
fn is_ping(headers: &HeaderMap) -> bool {
    let event = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    event("x-github-event") == Some("ping") || event("x-event-key") == Some("diagnostics:ping")
}

/// The pushed ref, for the log line.
fn pushed_ref(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(r) = v.get("ref").and_then(|r| r.as_str()) {
        return Some(r.to_string());
    }
    // Bitbucket Cloud: push.changes[].new.name; Data Center: changes[].refId.
    let change = v
        .pointer("/push/changes/0/new/name")
        .or_else(|| v.pointer("/changes/0/refId"))?;
    change.as_str().map(str::to_string)
}

fn refused(state: &super::AppState, status: StatusCode, code: &str, message: String) -> Response {
    state.live_status.webhook(false);
    tracing::warn!(%status, reason = %message, "webhook call refused");
    ApiError::new(status, code, message).into_response()
}

pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(secret) = &state.webhook_secret else {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "webhook_disabled",
            "no webhook secret is configured on this server (CONFHUB_WEBHOOK_SECRET)".into(),
        );
    };
    // Everything the headers can refuse is refused before the body is read.
    let claim = match precheck(&headers, secret.expose()) {
        Ok(claim) => claim,
        Err(refusal) => {
            let code = match refusal {
                Refusal::Missing => "missing_signature",
                Refusal::Malformed(_) | Refusal::Mismatch(_) => "bad_signature",
            };
            return refused(&state, StatusCode::UNAUTHORIZED, code, refusal.to_string());
        }
    };
    let budget = &state.webhook_bodies;
    let too_large = || {
        format!(
            "webhook payload over {} bytes (limits.webhook_max_body_bytes); the next poll fetches anyway",
            budget.max_body
        )
    };
    let announced = announced_length(&headers);
    if announced.is_some_and(|n| n > budget.max_body) {
        return refused(
            &state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            too_large(),
        );
    }
    // Held until the HMAC has been checked; a GitLab call has proved itself already.
    let reserved = match &claim {
        Claim::Verified(_) => None,
        Claim::Signed { .. } => match budget.reserve(announced) {
            Some(permit) => Some(permit),
            None => {
                let mut response = refused(
                    &state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "too many webhook payloads are being checked at once (limits.webhook_body_budget_bytes = {}); retry shortly",
                        budget.total
                    ),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
        },
    };
    let body = match read_body(body, budget.max_body).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            return refused(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                too_large(),
            )
        }
        Err(ReadError::Broken(e)) => {
            return refused(
                &state,
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the webhook payload: {e}"),
            )
        }
    };
    let verified = claim.verify(&body, secret.expose());
    drop(reserved);
    let provider = match verified {
        Ok(p) => p,
        Err(refusal) => {
            return refused(
                &state,
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                refusal.to_string(),
            )
        }
    };
    if is_ping(&headers) {
        tracing::info!(provider = provider.name(), "webhook ping");
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "pong"})),
        )
            .into_response();
    }
    state.live_status.webhook(true);
    let pushed = pushed_ref(&body);
    tracing::info!(
        provider = provider.name(),
        r#ref = pushed.as_deref().unwrap_or("-"),
        "webhook: fetching"
    );
    state.trigger.poke(true);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "accepted", "provider": provider.name()})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn github_documented_example() {
        // From GitHub's "Validating webhook deliveries".
        let sig = github_signature("It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let h = headers(&[("x-hub-signature-256", &sig)]);
        assert_eq!(
            verify(&h, b"Hello, World!", "It's a Secret to Everybody"),
            Ok(Provider::GitHub)
        );
        assert_eq!(
            verify(&h, b"Hello, World?", "It's a Secret to Everybody"),
            Err(Refusal::Mismatch("github"))
        );
    }

    #[test]
    fn each_provider() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hexsig = hex::encode(hmac_sha256("s3cret", body));
        let ok = |h: HeaderMap| verify(&h, body, "s3cret");
        assert_eq!(
            ok(headers(&[("x-gitea-signature", &hexsig)])),
            Ok(Provider::Gitea)
        );
        assert_eq!(
            ok(headers(&[("x-hub-signature", &format!("sha256={hexsig}"))])),
            Ok(Provider::Bitbucket)
        );
        assert_eq!(
            ok(headers(&[("x-gitlab-token", "s3cret")])),
            Ok(Provider::GitLab)
        );
        assert_eq!(
            ok(headers(&[("x-gitlab-token", "s3cret!")])),
            Err(Refusal::Mismatch("gitlab"))
        );
        assert_eq!(ok(HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(
            ok(headers(&[("x-hub-signature-256", "sha1=00")])),
            Err(Refusal::Malformed("github"))
        );
        assert_eq!(
            ok(headers(&[("x-hub-signature", "sha1=00")])),
            Err(Refusal::Malformed("bitbucket"))
        );
        assert_eq!(
            ok(headers(&[("x-gitea-signature", "zz")])),
            Err(Refusal::Malformed("gitea"))
        );
    }

    #[test]
    fn headers_alone_decide_what_they_can() {
        let secret = "s3cret";
        // GitLab's token needs no body.
        assert_eq!(
            precheck(&headers(&[("x-gitlab-token", secret)]), secret),
            Ok(Claim::Verified(Provider::GitLab))
        );
        // An HMAC of the wrong size can never match: refused before the body.
        for sig in [
            "sha256=",
            "sha256=00",
            &format!("sha256={}", "0".repeat(66)),
        ] {
            assert_eq!(
                precheck(&headers(&[("x-hub-signature-256", sig)]), secret),
                Err(Refusal::Malformed("github")),
                "{sig}"
            );
        }
        let sig = github_signature(secret, b"body");
        let claim = precheck(&headers(&[("x-hub-signature-256", &sig)]), secret).unwrap();
        assert_eq!(claim.verify(b"body", secret), Ok(Provider::GitHub));
        assert_eq!(
            claim.verify(b"other", secret),
            Err(Refusal::Mismatch("github"))
        );
    }

    #[test]
    fn the_budget_counts_bytes() {
        assert!(matches!(
            BodyBudget::new(1024, 512),
            Err(BudgetError::SmallerThanOneBody { .. })
        ));
        let budget = BodyBudget::new(1024, 2048).unwrap();
        let a = budget.reserve(Some(1024)).expect("room for one");
        let b = budget
            .reserve(None)
            .expect("an unannounced body takes the limit");
        assert!(budget.reserve(Some(1)).is_none(), "spent");
        drop(a);
        assert!(budget.reserve(Some(100)).is_some());
        drop(b);
    }

    #[test]
    fn pushed_refs() {
        assert_eq!(
            pushed_ref(br#"{"ref":"refs/heads/main"}"#).as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(
            pushed_ref(br#"{"push":{"changes":[{"new":{"name":"main"}}]}}"#).as_deref(),
            Some("main")
        );
        assert_eq!(pushed_ref(b"not json"), None);
    }
}
