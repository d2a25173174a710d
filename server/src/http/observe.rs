//! Per-request observability: the request id, W3C trace context, the request span and
//! the HTTP metrics. One middleware ([`observe`]), outermost in [`crate::run`], so it
//! sees every answer, timeouts and refusals included.
//!
//! - **Request id.** A caller's `x-request-id` is kept when it is 1–128 characters of
//!   `A-Z a-z 0-9 - _ . : / + = @`; otherwise (absent, too long, anything else) a fresh
//!   random UUID v4 replaces it. Handlers see the kept or new value in the request
//!   headers and as a [`RequestId`] extension; the response always carries it back in
//!   `x-request-id`.
//! - **Trace context.** A valid `traceparent` header
//!   (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower-case hex, ids not
//!   all zero; see [`TraceParent::parse`]) puts its `trace_id` and `parent_id` on the
//!   span. An invalid one is ignored, as the W3C spec asks.
//! - **Span.** `request{method, route, path, request_id, trace_id, parent_id}` at INFO,
//!   so every log line a handler writes names the request. `route` is the matched route
//!   template (`/v1/config/{service}/{env}`, `unmatched` when none), `path` the path
//!   without the query string. No header value other than the two above is recorded:
//!   tokens and signatures never reach the logs.
//! - **Metrics.** `confhub_http_requests_total{method,route,status}` and
//!   `confhub_http_request_duration_seconds{method,route}` (see [`crate::metrics`]).
//!   The end of every request is logged at DEBUG (WARN for 5xx other than 503).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

/// `x-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest caller-chosen request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The request id of the request being served (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

// Defined once for both ends of the wire: the client sends what the server parses.
pub use confhub_client::wire::{new_request_id, TraceParent};

/// Is `value` a request id we keep as given?
fn acceptable_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// The caller's request id when acceptable, else a new one; put on the request (header
/// and extension) and returned with the header value the response echoes.
fn assign_request_id(req: &mut Request) -> (Arc<str>, Option<HeaderValue>) {
    let given = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v));
    let id: Arc<str> = match given {
        Some(v) => v.into(),
        None => new_request_id().into(),
    };
    // Valid by construction: checked characters, or hex and dashes.
    let id_header = HeaderValue::from_str(&id).ok();
    if let Some(v) = &id_header {
        req.headers_mut().insert(REQUEST_ID, v.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    (id, id_header)
}

/// Server faults are warnings (503 is the server saying "not yet", by design); the rest
/// is debug.
fn log_finished(status: u16, elapsed: std::time::Duration) {
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    if status >= 500 && status != 503 {
        tracing::warn!(status, latency_ms, "request failed");
    } else {
        tracing::debug!(status, latency_ms, "request finished");
    }
}

/// The middleware: see the module docs. Install with
/// `axum::middleware::from_fn_with_state(metrics, observe)`.
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route: Arc<str> = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().into(),
        None => "unmatched".into(),
    };
    let method = req.method().clone();

    let (id, id_header) = assign_request_id(&mut req);
    let trace = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        path = %req.uri().path(),
        request_id = %id,
        trace_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
    );
    if let Some(t) = &trace {
        span.record("trace_id", tracing::field::display(&t.trace_id));
        span.record("parent_id", tracing::field::display(&t.parent_id));
    }

    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    metrics.http_request(&method, &route, status, elapsed);
    span.in_scope(|| log_finished(status, elapsed));
    if let Some(v) = id_header {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let t = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(t.version, "00");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
    }

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // upper case
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with extra fields
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong lengths, separators, non-hex
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_may_append_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(
            TraceParent::parse(v).map(|t| t.trace_id),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued), None);
    }

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id("abc-123"));
        assert!(acceptable_request_id("req:1/2+3=4@host_x.y"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id("has space"));
        assert!(!acceptable_request_id("quote\""));
        assert!(!acceptable_request_id(&"x".repeat(129)));
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(acceptable_request_id(&id));
        assert_ne!(id, new_request_id());
    }
}
