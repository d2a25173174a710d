//! Request ids and W3C trace context on the client's requests.
//!
//! Every HTTP request and every WebSocket handshake carries a fresh `x-request-id` (a
//! random UUID v4). The client logs it at DEBUG with the server it asks; the server
//! echoes it and puts it on its request span, so one request can be found on both
//! sides.
//!
//! `traceparent` is sent only when the application opts in with
//! [`ClientBuilder::traceparent_from`](crate::ClientBuilder::traceparent_from): a
//! function called once per request that returns the header for the caller's current
//! trace (typically formatted from the OpenTelemetry context), or `None`. A value that
//! is not a valid W3C `traceparent` is not sent.
//!
//! Why the client does not derive a trace id from `tracing::Span::current()`: a
//! `tracing` span id is a process-local slot number that is reused once the span
//! closes, not a 128-bit trace id, and the fields recorded on a span (a `trace_id` an
//! application put there) cannot be read back through `tracing`'s API. A trace id
//! made up from it would join nothing; trace ids belong to the layer that owns them.

use std::sync::Arc;

/// Produces the `traceparent` for the request about to be sent.
pub(crate) type TraceparentFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// `x-request-id`.
pub(crate) const REQUEST_ID: &str = "x-request-id";
/// `traceparent`.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The tracing headers of one request.
#[derive(Debug, Clone)]
pub(crate) struct TraceHeaders {
    /// Fresh for every request.
    pub(crate) request_id: String,
    /// From the application's function, when it gave a valid one.
    pub(crate) traceparent: Option<String>,
}

impl TraceHeaders {
    /// A new request id, and the application's `traceparent` if it has one.
    pub(crate) fn new(traceparent: Option<&TraceparentFn>) -> TraceHeaders {
        let traceparent = traceparent.and_then(|f| f()).and_then(|v| {
            let v = v.trim().to_string();
            if valid_traceparent(&v) {
                Some(v)
            } else {
                tracing::debug!(
                    value = %truncated(&v),
                    "traceparent_from returned an invalid traceparent; not sent"
                );
                None
            }
        });
        TraceHeaders {
            request_id: new_request_id(),
            traceparent,
        }
    }
}

pub(crate) use crate::wire::new_request_id;

/// Valid per W3C Trace Context level 1 ([`crate::wire::TraceParent::parse`]).
pub(crate) fn valid_traceparent(v: &str) -> bool {
    crate::wire::TraceParent::parse(v).is_some()
}

fn truncated(v: &str) -> String {
    crate::util::truncate(v, 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
        ));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn headers_use_the_function_only_when_valid() {
        let good: TraceparentFn =
            Arc::new(|| Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()));
        let bad: TraceparentFn = Arc::new(|| Some("nope".into()));
        let none: TraceparentFn = Arc::new(|| None);
        assert!(TraceHeaders::new(Some(&good)).traceparent.is_some());
        assert!(TraceHeaders::new(Some(&bad)).traceparent.is_none());
        assert!(TraceHeaders::new(Some(&none)).traceparent.is_none());
        let a = TraceHeaders::new(None);
        let b = TraceHeaders::new(None);
        assert!(a.traceparent.is_none());
        assert_ne!(a.request_id, b.request_id);
        assert_eq!(a.request_id.len(), 36);
    }
}
