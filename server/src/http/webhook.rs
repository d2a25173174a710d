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

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

fn verify_hmac(
    provider: Provider,
    secret: &str,
    body: &[u8],
    hex_sig: &str,
) -> Result<Provider, Refusal> {
    let given = hex::decode(hex_sig.trim()).map_err(|_| Refusal::Malformed(provider.name()))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|_| Refusal::Mismatch(provider.name()))?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map(|()| provider)
        .map_err(|_| Refusal::Mismatch(provider.name()))
}

/// Check a webhook call's proof against `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Provider, Refusal> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(sig) = header("x-hub-signature-256") {
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(Refusal::Malformed("github"))?;
        return verify_hmac(Provider::GitHub, secret, body, hex_sig);
    }
    if let Some(sig) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        return verify_hmac(Provider::Gitea, secret, body, sig);
    }
    if let Some(sig) = header("x-hub-signature") {
        // GitHub's legacy SHA-1 signature is not accepted.
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(Refusal::Malformed("bitbucket"))?;
        return verify_hmac(Provider::Bitbucket, secret, body, hex_sig);
    }
    if let Some(token) = header("x-gitlab-token") {
        // Hash both sides so the comparison takes the same time whatever the lengths.
        let given = Sha256::digest(token.as_bytes());
        let wanted = Sha256::digest(secret.as_bytes());
        return if bool::from(given.ct_eq(&wanted)) {
            Ok(Provider::GitLab)
        } else {
            Err(Refusal::Mismatch("gitlab"))
        };
    }
    Err(Refusal::Missing)
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

pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.webhook_secret else {
        state.live_status.webhook(false);
        tracing::warn!(
            "webhook call refused: no webhook secret configured (CONFHUB_WEBHOOK_SECRET)"
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "webhook_disabled",
            "no webhook secret is configured on this server (CONFHUB_WEBHOOK_SECRET)",
        )
        .into_response();
    };
    let provider = match verify(&headers, &body, secret.expose()) {
        Ok(p) => p,
        Err(refusal) => {
            state.live_status.webhook(false);
            tracing::warn!(reason = %refusal, "webhook call refused");
            let code = match refusal {
                Refusal::Missing => "missing_signature",
                Refusal::Malformed(_) | Refusal::Mismatch(_) => "bad_signature",
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, code, refusal.to_string())
                .into_response();
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
