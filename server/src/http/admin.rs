//! Spring's encryption endpoints (admin only): `POST /encrypt` and `POST /decrypt` (and
//! their `/{name}/{profiles}` forms), `GET /encrypt/status`, `GET /key`. `/encrypt`
//! answers the bare ciphertext, as Spring does, so `'{cipher}'` + the answer is the value
//! to commit.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{ApiPath, Caller};
use super::guard::require_admin;
use super::{ApiError, AppState};
use crate::crypto::{CryptoError, Keyring};
use crate::names::{check_name, parse_envs};

fn keyring(state: &AppState) -> Result<&Keyring, ApiError> {
    state.keyring.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_key",
            "this server has no encryption key (set CONFHUB_ENCRYPT_KEY, encrypt_key_file, encrypt_passphrase or encrypt_key_store)",
        )
    })
}

fn check_pair(name: &str, profiles: &str) -> Result<(), ApiError> {
    check_name("application name", name)?;
    parse_envs(profiles)?;
    Ok(())
}

/// Body: the plaintext (optionally `{key:name}` first). Answer: the ciphertext, without
/// `{cipher}`.
pub(super) async fn encrypt(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal)?;
    keyring(&state)?
        .encrypt_bare(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))
}

/// `POST /encrypt/{name}/{profiles}`: Spring's form naming the application; the keys
/// confhub holds do not depend on it, so this encrypts as `/encrypt` does.
pub(super) async fn encrypt_for(
    state: State<Arc<AppState>>,
    principal: Caller,
    ApiPath((name, profiles)): ApiPath<(String, String)>,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal.0)?;
    check_pair(&name, &profiles)?;
    encrypt(state, principal, body).await
}

/// Body: a ciphertext (`{cipher}` and `{key:…}` prefixes optional). Answer: the plaintext.
pub(super) async fn decrypt(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal)?;
    keyring(&state)?
        .decrypt(body.trim())
        .map_err(|e: CryptoError| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_cipher", e.to_string())
        })
}

/// `POST /decrypt/{name}/{profiles}`.
pub(super) async fn decrypt_for(
    state: State<Arc<AppState>>,
    principal: Caller,
    ApiPath((name, profiles)): ApiPath<(String, String)>,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal.0)?;
    check_pair(&name, &profiles)?;
    decrypt(state, principal, body).await
}

/// `{"status":"OK"}` when this server can encrypt.
pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&principal)?;
    keyring(&state)?;
    Ok(Json(serde_json::json!({"status": "OK"})))
}

/// The RSA public key (`ssh-rsa … application`), for clients that encrypt themselves.
pub(super) async fn key(
    State(state): State<Arc<AppState>>,
    Caller(principal): Caller,
) -> Result<String, ApiError> {
    require_admin(&principal)?;
    keyring(&state)?
        .spring()
        .and_then(|k| k.rsa())
        .map(|k| k.public_ssh())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_public_key",
                "no public key available: the default key is not an RSA key pair (encrypt_key_store)",
            )
        })
}

/// `GET /key/{name}/{profiles}`.
pub(super) async fn key_for(
    state: State<Arc<AppState>>,
    principal: Caller,
    ApiPath((name, profiles)): ApiPath<(String, String)>,
) -> Result<String, ApiError> {
    require_admin(&principal.0)?;
    check_pair(&name, &profiles)?;
    key(state, principal).await
}
