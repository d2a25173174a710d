//! The one error type of the crate.

use std::path::PathBuf;
use std::time::Duration;

use crate::wire::ErrorBody;

/// A boxed source error from the transport (HTTP or WebSocket library), kept opaque so
/// that this crate's public API does not pin those libraries' versions.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to confhub or reading a config.
///
/// Match on the variant to decide what to do; every variant's `Display` says what
/// happened and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`ClientBuilder`](crate::ClientBuilder) was given something unusable (no server,
    /// a malformed URL, a bad service name, …).
    #[error("invalid client configuration: {0}")]
    Builder(String),

    /// A server answered with an HTTP status that retrying will not fix (a 4xx other than
    /// 408 and 429), or the last retryable status seen before giving up.
    #[error("{server} answered HTTP {status}: {}", describe_body(body.as_deref(), message))]
    Status {
        /// Base URL of the server that answered.
        server: String,
        /// The HTTP status code.
        status: u16,
        /// The server's JSON error body, when it sent one.
        body: Option<Box<ErrorBody>>,
        /// The raw body (truncated) when it was not the JSON error body.
        message: String,
    },

    /// The request never got an HTTP answer: connection refused, DNS, TLS, timeout, a
    /// WebSocket handshake or stream failure.
    #[error("request to {server} failed: {source}")]
    Transport {
        /// Base URL of the server.
        server: String,
        /// What the transport reported.
        #[source]
        source: BoxError,
    },

    /// A server sent something that is not what the protocol promises (garbage JSON, a
    /// malformed WebSocket frame, an oversized body).
    #[error("{server} sent an invalid response: {message}")]
    Protocol {
        /// Base URL of the server.
        server: String,
        /// What was wrong with it.
        message: String,
    },

    /// A WebSocket `error` frame (ARCHITECTURE.md §6): the server refused or cannot serve the
    /// subscription (forbidden, unknown or broken pair).
    #[error("server reported `{code}` for the subscription: {message}")]
    Server {
        /// The stable machine-readable code.
        code: String,
        /// The server's message.
        message: String,
    },

    /// No server gave a usable answer within the retry deadline, and no cache could be
    /// used instead.
    #[error(
        "no confhub server answered within {elapsed:?} ({attempts} attempt(s)){}{}",
        last.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default(),
        cache.as_ref().map(|e| format!("; cache not used: {e}")).unwrap_or_default()
    )]
    Unavailable {
        /// How many rounds over the server list were made.
        attempts: u32,
        /// How long was spent trying.
        elapsed: Duration,
        /// The last failure seen.
        last: Option<Box<Error>>,
        /// Why the last-known-good cache was not used instead (missing, corrupt, or
        /// fail-fast), when a cache directory is configured.
        cache: Option<Box<Error>>,
    },

    /// The last-known-good cache file could not be read, is corrupt, or could not be
    /// written. A corrupt file is never trusted.
    #[error("cache file {}: {message}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },

    /// [`Config::get`](crate::Config::get) was asked for a path the config does not have.
    #[error("key `{path}` not found in the config")]
    MissingKey {
        /// The path asked for.
        path: String,
    },

    /// The config (or the value at `path`) does not deserialize into the requested type.
    #[error("cannot deserialize {}: {source}", path.as_ref().map(|p| format!("`{p}`")).unwrap_or_else(|| "the config".into()))]
    Deserialize {
        /// The path, when a sub-value was asked for.
        path: Option<String>,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// The user validator set with
    /// [`ClientBuilder::validator`](crate::ClientBuilder::validator) rejected the config.
    #[error("config version {version} rejected by the validator: {message}")]
    Rejected {
        /// Version (commit sha) of the rejected config.
        version: String,
        /// The validator's message.
        message: String,
    },
}

impl Error {
    /// True when the error came from a server being unreachable or unhealthy (network
    /// failure, timeout, 5xx, 408, 429, garbage response) rather than from a definite
    /// answer; such errors are retried and fail over to the next server.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Protocol { .. } => true,
            Error::Status { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }

    /// True for [`Error::Unavailable`]: every server failed within the deadline.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// 408, 429 and every 5xx are worth retrying; other statuses are definite answers.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

fn describe_body(body: Option<&ErrorBody>, raw: &str) -> String {
    match body {
        Some(b) => format!("{}: {}", b.error, b.message),
        None if raw.is_empty() => "(no body)".into(),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 304, 200] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn messages_name_the_server_and_cause() {
        let e = Error::Status {
            server: "http://a".into(),
            status: 404,
            body: Some(Box::new(ErrorBody {
                error: "unknown_service".into(),
                message: "no orders.yml".into(),
                file: None,
                line: None,
                key: None,
            })),
            message: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "http://a answered HTTP 404: unknown_service: no orders.yml"
        );
        assert!(!e.is_retryable());
        let u = Error::Unavailable {
            attempts: 2,
            elapsed: Duration::from_secs(1),
            last: Some(Box::new(e)),
            cache: None,
        };
        assert!(u
            .to_string()
            .contains("last error: http://a answered HTTP 404"));
        assert!(u.is_unavailable());
    }
}
