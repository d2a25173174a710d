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
use crate::errors::BudgetError;

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

/// Webhook bodies: the largest one read, and the bytes that bodies whose HMAC is still
/// unchecked may hold between them.
#[derive(Debug)]
pub struct BodyBudget {
    max_body: usize,
    total: usize,
    unverified: Arc<Semaphore>,
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
    state.core.live_status.record_webhook(false);
    tracing::warn!(%status, reason = %message, "webhook call refused");
    ApiError::new(status, code, message).into_response()
}

/// A call whose proof matched the secret: who sent it and its body. Anything else has
/// been answered already (the `Err` is that answer).
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Provider, Bytes), Response> {
    let Some(secret) = &state.webhook_secret else {
        return Err(refused(
            state,
            StatusCode::FORBIDDEN,
            "webhook_disabled",
            "no webhook secret is configured on this server (CONFHUB_WEBHOOK_SECRET)".into(),
        ));
    };
    // Everything the headers can refuse is refused before the body is read.
    let claim = precheck(headers, secret.expose()).map_err(|refusal| {
        let code = match refusal {
            Refusal::Missing => "missing_signature",
            Refusal::Malformed(_) | Refusal::Mismatch(_) => "bad_signature",
        };
        refused(state, StatusCode::UNAUTHORIZED, code, refusal.to_string())
    })?;
    let announced = announced_length(headers);
    if announced.is_some_and(|n| n > state.webhook_bodies.max_body) {
        return Err(too_large(state));
    }
    // Held until the HMAC has been checked; a GitLab call has proved itself already.
    let reserved = match &claim {
        Claim::Verified(_) => None,
        Claim::Signed { .. } => match state.webhook_bodies.reserve(announced) {
            Some(permit) => Some(permit),
            None => return Err(busy(state)),
        },
    };
    let body = read_payload(state, body).await?;
    let verified = claim.verify(&body, secret.expose());
    drop(reserved);
    match verified {
        Ok(provider) => Ok((provider, body)),
        Err(refusal) => Err(refused(
            state,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            refusal.to_string(),
        )),
    }
}

/// 413: over `limits.webhook_max_body_bytes`.
fn too_large(state: &AppState) -> Response {
    let message = format!(
        "webhook payload over {} bytes (limits.webhook_max_body_bytes); the next poll fetches anyway",
        state.webhook_bodies.max_body
    );
    refused(
        state,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        message,
    )
}

/// 503: the budget of bodies read before their HMAC is checked is spent; retry soon.
fn busy(state: &AppState) -> Response {
    let mut response = refused(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!(
            "too many webhook payloads are being checked at once (limits.webhook_body_budget_bytes = {}); retry shortly",
            state.webhook_bodies.total
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The whole body, within `limits.webhook_max_body_bytes`.
async fn read_payload(state: &AppState, body: Body) -> Result<Bytes, Response> {
    match read_body(body, state.webhook_bodies.max_body).await {
        Ok(body) => Ok(body),
        Err(ReadError::TooLarge) => Err(too_large(state)),
        Err(ReadError::Broken(e)) => Err(refused(
            state,
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("reading the webhook payload: {e}"),
        )),
    }
}

pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (provider, body) = match receive(&state, &headers, body).await {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    if is_ping(&headers) {
        tracing::info!(provider = provider.name(), "webhook ping");
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "pong"})),
        )
            .into_response();
    }
    state.core.live_status.record_webhook(true);
    let pushed = pushed_ref(&body);
    tracing::info!(
        provider = provider.name(),
        r#ref = pushed.as_deref().unwrap_or("-"),
        "webhook: fetching"
    );
    state.core.trigger.request_fetch();
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "accepted", "provider": provider.name()})),
    )
        .into_response()
}

/// `POST /monitor`, as spring-cloud-config-monitor's `PropertyPathEndpoint` answers it:
/// the changed paths are read from the payload of whichever host sent it (or from the
/// form `path=…`), and the answer is the list of applications they concern (`*` for
/// `application*` files). Proved as `/v1/webhook` calls are: Spring's endpoint trusts
/// anyone, confhub does not. Any change fetches at once.
pub(super) async fn monitor(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (provider, body) = match receive(&state, &headers, body).await {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let paths = if form {
        form_paths(&body)
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(payload) => monitor_paths(&headers, &payload),
            Err(e) => {
                return refused(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the /monitor payload is neither JSON nor a `path=` form: {e}"),
                )
            }
        }
    };
    let services = services_of(&paths);
    if !services.is_empty() {
        state.core.live_status.record_webhook(true);
        tracing::info!(
            provider = provider.name(),
            services = %services.join(","),
            "monitor: fetching"
        );
        state.core.trigger.request_fetch();
    }
    axum::Json(services).into_response()
}

/// `path` values of a form body (`path=a.yml&path=b.yml`).
fn form_paths(body: &[u8]) -> Vec<String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| decode(k) == "path")
        .map(|(_, v)| decode(v))
        .collect()
}

/// The changed paths a host's push payload names, as Spring's
/// `PropertyPathNotificationExtractor`s read them; the first that recognises the call wins,
/// then a plain `{"path": …}`.
fn monitor_paths(headers: &HeaderMap, payload: &serde_json::Value) -> Vec<String> {
    let event = |name: &str, value: &str| header_str(headers, name) == Some(value);
    // Gitea's extractor: its payloads list no files, so every app is told.
    let gitea = || everything().filter(|_| payload.get("commits").is_some_and(|c| c.is_array()));
    // The order of Spring's `CompositePropertyPathNotificationExtractor` (by `@Order`):
    // GitHub, then the plain `path`, then GitLab, Bitbucket, Gitea, Gogs. Gitea also
    // sends `X-GitHub-Event`, so its calls with file lists are read as GitHub's.
    let found = (event("x-github-event", "push"))
        .then(|| commit_files(payload))
        .flatten()
        .or_else(|| plain_paths(payload))
        .or_else(|| {
            event("x-gitlab-event", "Push Hook")
                .then(|| commit_files(payload))
                .flatten()
        })
        .or_else(|| bitbucket_paths(headers, payload))
        .or_else(|| event("x-gitea-event", "push").then(gitea).flatten())
        .or_else(|| {
            event("x-gogs-event", "push")
                .then(|| commit_files(payload))
                .flatten()
        });
    found.unwrap_or_default()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The path that tells every application (Spring's extractors' answer for hosts whose
/// payloads name no files).
fn everything() -> Option<Vec<String>> {
    Some(vec!["application.yml".to_string()])
}

/// `Base…Extractor`: every added, removed and modified file of every commit, once each.
fn commit_files(payload: &serde_json::Value) -> Option<Vec<String>> {
    let commits = payload.get("commits")?.as_array()?;
    let mut out: Vec<String> = Vec::new();
    let files = commits.iter().flat_map(|commit| {
        ["added", "removed", "modified"]
            .into_iter()
            .filter_map(|kind| commit.get(kind).and_then(serde_json::Value::as_array))
            .flatten()
    });
    for p in files.filter_map(serde_json::Value::as_str) {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Bitbucket Cloud and Data Center: no files named, so every application is told.
fn bitbucket_paths(headers: &HeaderMap, payload: &serde_json::Value) -> Option<Vec<String>> {
    let has = |name: &str| header_str(headers, name).is_some_and(|v| !v.trim().is_empty());
    let is_array = |v: &serde_json::Value| v.is_array();
    match header_str(headers, "x-event-key") {
        Some("repo:push" | "pullrequest:fulfilled") if has("x-hook-uuid") => payload
            .pointer("/push/changes")
            .is_some_and(is_array)
            .then(everything)
            .flatten(),
        Some("repo:refs_changed") if has("x-request-id") => payload
            .get("changes")
            .is_some_and(is_array)
            .then(everything)
            .flatten(),
        Some("pr:merged") if has("x-request-id") => everything(),
        _ => None,
    }
}

/// A plain `{"path": "a.yml"}` or `{"path": ["a.yml", …]}`.
fn plain_paths(payload: &serde_json::Value) -> Option<Vec<String>> {
    match payload.get("path") {
        Some(serde_json::Value::String(p)) => Some(vec![p.clone()]),
        Some(serde_json::Value::Array(a)) => Some(
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// Spring's `guessServiceName`: the file stem and each of its `-` prefixes
/// (`foo-local-dev.yml` → `foo-local-dev`, `foo-local`, `foo`), `application` read as `*`.
fn services_of(paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in paths {
        let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let stem = match file.rsplit_once('.') {
            Some((stem, _)) => stem,
            None => file,
        };
        let mut name = format!("{stem}-");
        while let Some(index) = name.rfind('-') {
            name.truncate(index);
            let service = if name == "application" {
                "*".to_string()
            } else {
                name.clone()
            };
            if !out.contains(&service) {
                out.push(service);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both halves of the check, as a handler runs them around reading the body.
    fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Provider, Refusal> {
        precheck(headers, secret)?.verify(body, secret)
    }

    #[test]
    fn services_are_guessed_as_springs_property_path_endpoint_does() {
        // PropertyPathEndpointTests: `foo-local-dev.yml` names foo-local-dev, foo-local,
        // foo; `application.yml` and `application-dev.yml` name every app.
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            services_of(&paths(&["config/foo-local-dev.yml"])),
            ["foo-local-dev", "foo-local", "foo"]
        );
        assert_eq!(
            services_of(&paths(&["application-dev.yml", "application.yml"])),
            ["application-dev", "*"]
        );
        assert_eq!(services_of(&paths(&["orders"])), ["orders"]);
        assert!(services_of(&[]).is_empty());
    }

    #[test]
    fn form_paths_are_percent_decoded() {
        assert_eq!(
            form_paths(b"path=orders&x=1&path=config%2Fpay+ments.yml"),
            ["orders", "config/pay ments.yml"]
        );
    }
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
