//! The API's error responses: a status and the JSON body of ARCHITECTURE.md §4, the
//! same `error` codes as the WebSocket's `error` frames (see [`LookupCode`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use confhub_client::wire::ErrorBody;

use crate::errors::{LookupCode, LookupError};
use crate::names::NameError;

/// An error response: status plus the JSON body of ARCHITECTURE.md §4.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// Seconds for `Retry-After` (small: it fits in the padding after `status`).
    retry_after: Option<std::num::NonZeroU16>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
                file: None,
                line: None,
                key: None,
            },
            retry_after: None,
        }
    }

    /// The same error, telling the caller to ask again after `seconds`.
    pub(crate) fn retry_after(mut self, seconds: u16) -> Self {
        self.retry_after = std::num::NonZeroU16::new(seconds);
        self
    }

    /// The same body under another status (where a surface's contract says so).
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// 500 `internal`: a fault of the server's own, not of the request.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn not_ready() -> Self {
        Self::not_ready_because(None)
    }

    /// 503 `not_ready`, saying why the source cannot be opened when an attempt failed.
    pub(crate) fn not_ready_because(why: Option<String>) -> Self {
        let message = match why {
            Some(why) => format!("the repository cannot be opened yet: {why}"),
            None => "the first snapshot is still loading".to_string(),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_name", e.to_string())
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        let status = match e.code() {
            LookupCode::UnknownLabel | LookupCode::UnknownEnv => StatusCode::NOT_FOUND,
            LookupCode::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LookupCode::Forbidden => StatusCode::FORBIDDEN,
            LookupCode::Source => {
                tracing::error!(error = %e, "reading the repository failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            status,
            body: e.to_body(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s.get()));
        }
        resp
    }
}

/// Map axum's extractor rejections (bad percent-encoding, bad query) to our JSON errors.
pub(crate) fn rejection(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}
