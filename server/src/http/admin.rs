//! Spring's `POST /encrypt` and `POST /decrypt` (admin only): turn a plaintext into the
//! `{cipher}…` value to commit, and back.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;

use super::guard::require_admin;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::crypto::Keyring;

fn keyring(state: &AppState) -> Result<&Keyring, ApiError> {
    state.keyring.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_key",
            "this server has no encryption key (set CONFHUB_ENCRYPT_KEY or encrypt_key_file)",
        )
    })
}

/// Body: the plaintext. Answer: `{cipher}BASE64`, to paste (quoted) into a YAML file.
pub(super) async fn encrypt(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal)?;
    Ok(keyring(&state)?.encrypt(&body))
}

/// Body: a `{cipher}` value (prefix optional). Answer: the plaintext.
pub(super) async fn decrypt(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<String, ApiError> {
    require_admin(&principal)?;
    keyring(&state)?
        .decrypt(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_cipher", e.to_string()))
}
