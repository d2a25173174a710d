//! Prometheus metrics, served as text by `GET /metrics` (ARCHITECTURE.md §4).
//!
//! Each server ([`crate::run`]) owns one [`Metrics`]: its own
//! `metrics-exporter-prometheus` recorder, never installed as the process-wide `metrics`
//! recorder. Handles are registered on it directly, so several servers in one process
//! (the end-to-end tests, an application embedding the server) each report only their
//! own traffic, and an application's own global recorder is left alone. The price: the
//! `metrics::counter!` family of macros does not reach these metrics; code records
//! through the methods below.
//!
//! Two kinds of values:
//! - recorded as things happen: HTTP requests (`http::observe`), refreshes,
//!   fetches and push latency (`live::refresh`);
//! - read at scrape time from the state that already keeps them (the Prometheus
//!   "collector" pattern): WebSocket connections, subscriptions and frames pushed
//!   (`live::hub`), webhook calls and fetch freshness (`live::status`), pairs in error
//!   and the current commit (the snapshot), history scans (`tools::history`), handed
//!   over as [`Readings`] by `http::metrics`. Nothing on the push path pays for them.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `confhub_http_requests_total` | counter | `method`, `route` (the route template, `unmatched` for none), `status` |
//! | `confhub_http_request_duration_seconds` | histogram | `method`, `route` |
//! | `confhub_websocket_connections` | gauge | |
//! | `confhub_websocket_subscriptions` | gauge | |
//! | `confhub_config_frames_pushed_total` | counter | |
//! | `confhub_websocket_slow_consumers_total` | counter | |
//! | `confhub_push_latency_seconds` | histogram | |
//! | `confhub_refresh_duration_seconds` | histogram | |
//! | `confhub_refresh_failures_total` | counter | |
//! | `confhub_fetch_duration_seconds` | histogram | |
//! | `confhub_fetch_failures_total` | counter | |
//! | `confhub_fetch_last_success_age_seconds` | gauge | (remote repositories only) |
//! | `confhub_fetch_last_success_timestamp_seconds` | gauge | (remote repositories only) |
//! | `confhub_webhooks_total` | counter | `result` (`accepted`, `rejected`) |
//! | `confhub_pairs_in_error` | gauge | |
//! | `confhub_parsed_files` | gauge | |
//! | `confhub_label_cache_entries` | gauge | |
//! | `confhub_label_cache_bytes` | gauge | |
//! | `confhub_history_commits_scanned_total` | counter | |
//! | `confhub_history_pairs_cached` | gauge | |
//! | `confhub_commit_info` | gauge (always 1) | `commit`, `branch` |
//!
//! `confhub_commit_info` is written by hand at render time, so exactly one label set
//! (the commit served now) exists: an old commit's series disappears with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::Method;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram buckets (seconds), shared by every histogram: from a cached GET (well under
/// a millisecond) to a slow fetch of a remote.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes
/// (otherwise they would pile up between scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

const HTTP_REQUESTS: &str = "confhub_http_requests_total";
const HTTP_DURATION: &str = "confhub_http_request_duration_seconds";
const COMMIT_INFO: &str = "confhub_commit_info";
const FETCH_AGE: &str = "confhub_fetch_last_success_age_seconds";
const FETCH_TIMESTAMP: &str = "confhub_fetch_last_success_timestamp_seconds";

/// Every metric recorded through the recorder, with its help text.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status.",
    ),
    (
        HTTP_DURATION,
        "Time from receiving an HTTP request to its response head, by method and route template.",
    ),
    (
        "confhub_websocket_connections",
        "Open /v1/watch WebSocket connections.",
    ),
    (
        "confhub_websocket_subscriptions",
        "(service, env) subscriptions held by open WebSocket connections.",
    ),
    (
        "confhub_config_frames_pushed_total",
        "Config frames queued to WebSocket subscribers after a change.",
    ),
    (
        "confhub_websocket_slow_consumers_total",
        "WebSocket connections closed because they could not keep up.",
    ),
    (
        "confhub_push_latency_seconds",
        "Time from the trigger that found a new version (file event, webhook, poll) until its frames were handed to every subscriber's queue.",
    ),
    (
        "confhub_refresh_duration_seconds",
        "Time to look for a new version and build its snapshot.",
    ),
    (
        "confhub_refresh_failures_total",
        "Refreshes that failed (the previous snapshot kept being served).",
    ),
    (
        "confhub_fetch_duration_seconds",
        "Time to fetch the remote repository.",
    ),
    (
        "confhub_fetch_failures_total",
        "Fetches of the remote repository that failed.",
    ),
    (
        FETCH_AGE,
        "Seconds since the last successful fetch of the remote repository (at scrape time).",
    ),
    (
        FETCH_TIMESTAMP,
        "Unix time of the last successful fetch of the remote repository.",
    ),
    (
        "confhub_webhooks_total",
        "POST /v1/webhook calls, by result (accepted: triggered a fetch; rejected: bad or missing signature).",
    ),
    (
        "confhub_pairs_in_error",
        "(service, env) pairs that fail to resolve at the current version (they keep serving their last good config).",
    ),
    (
        "confhub_parsed_files",
        "Config files of the current version kept parsed, so the next version reads only the files that changed.",
    ),
    (
        "confhub_label_cache_entries",
        "Pairs resolved at other labels or env lists, kept (at most cache_capacity).",
    ),
    (
        "confhub_label_cache_bytes",
        "Estimated bytes of those pairs (at most cache_max_bytes).",
    ),
    (
        "confhub_history_commits_scanned_total",
        "Commits taken in by /v1/history scans, every pair counted (a repeated request scans only the commits pushed since).",
    ),
    (
        "confhub_history_pairs_cached",
        "(service, env) pairs whose history is kept between requests.",
    ),
];

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One server's metrics: its recorder, the handles recorded to, and what render-time
/// collection needs.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    push_latency: Histogram,
    refresh_duration: Histogram,
    refresh_failures: Counter,
    fetch_duration: Histogram,
    fetch_failures: Counter,
    // Filled at render time.
    ws_connections: Gauge,
    ws_subscriptions: Gauge,
    frames_pushed: Counter,
    slow_consumers: Counter,
    webhooks_accepted: Counter,
    webhooks_rejected: Counter,
    pairs_in_error: Gauge,
    parsed_files: Gauge,
    label_cache_entries: Gauge,
    label_cache_bytes: Gauge,
    history_scanned: Counter,
    history_pairs: Gauge,
    /// Last successful fetch of a remote (the clone or fetch at start counts), on the
    /// monotonic clock for the age and the wall clock for the timestamp.
    last_fetch_ok: Mutex<Option<(Instant, SystemTime)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        // `set_buckets` only refuses an empty list.
        let builder = match builder.set_buckets(BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, help) in DESCRIPTIONS {
            // The kind only picks the trait method; the recorder keeps one table.
            recorder.describe_counter(KeyName::from(*name), None, (*help).into());
        }
        let counter = |name: &'static str| recorder.register_counter(&Key::from_name(name), &META);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &META);
        let histogram =
            |name: &'static str| recorder.register_histogram(&Key::from_name(name), &META);
        let webhooks = |result: &'static str| {
            recorder.register_counter(
                &Key::from_parts("confhub_webhooks_total", vec![Label::new("result", result)]),
                &META,
            )
        };
        Metrics {
            push_latency: histogram("confhub_push_latency_seconds"),
            refresh_duration: histogram("confhub_refresh_duration_seconds"),
            refresh_failures: counter("confhub_refresh_failures_total"),
            fetch_duration: histogram("confhub_fetch_duration_seconds"),
            fetch_failures: counter("confhub_fetch_failures_total"),
            ws_connections: gauge("confhub_websocket_connections"),
            ws_subscriptions: gauge("confhub_websocket_subscriptions"),
            frames_pushed: counter("confhub_config_frames_pushed_total"),
            slow_consumers: counter("confhub_websocket_slow_consumers_total"),
            webhooks_accepted: webhooks("accepted"),
            webhooks_rejected: webhooks("rejected"),
            pairs_in_error: gauge("confhub_pairs_in_error"),
            parsed_files: gauge("confhub_parsed_files"),
            label_cache_entries: gauge("confhub_label_cache_entries"),
            label_cache_bytes: gauge("confhub_label_cache_bytes"),
            history_scanned: counter("confhub_history_commits_scanned_total"),
            history_pairs: gauge("confhub_history_pairs_cached"),
            last_fetch_ok: Mutex::new(None),
            handle,
            recorder,
        }
    }

    /// One HTTP request answered. `route` is the matched route template (never the raw
    /// path: every distinct value is a new time series).
    pub fn http_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let route = Label::new("route", route.to_string());
        let key = Key::from_parts(
            HTTP_REQUESTS,
            vec![
                Label::new("method", method),
                route.clone(),
                Label::new("status", status_label(status)),
            ],
        );
        self.recorder.register_counter(&key, &META).increment(1);
        let key = Key::from_parts(HTTP_DURATION, vec![Label::new("method", method), route]);
        self.recorder
            .register_histogram(&key, &META)
            .record(elapsed);
    }

    /// A refresh ran (successfully or not) for `took`.
    pub fn refresh(&self, took: Duration, ok: bool) {
        self.refresh_duration.record(took);
        if !ok {
            self.refresh_failures.increment(1);
        }
    }

    /// A fetch of the remote ended after `took`.
    pub fn fetch(&self, took: Duration, ok: bool) {
        self.fetch_duration.record(took);
        if ok {
            self.fetch_succeeded();
        } else {
            self.fetch_failures.increment(1);
        }
    }

    /// The remote is up to date as of now (a fetch, or the clone at start, succeeded).
    pub fn fetch_succeeded(&self) {
        *crate::sync::lock(&self.last_fetch_ok) = Some((Instant::now(), SystemTime::now()));
    }

    /// A new version's frames were handed to every subscriber, `latency` after the
    /// trigger that found it.
    pub fn pushed(&self, latency: Duration) {
        self.push_latency.record(latency);
    }

    /// Fold pending histogram samples into their buckets (done by every render too).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Run [`Metrics::upkeep`] every [`UPKEEP_INTERVAL`] until `stop` completes.
    pub async fn run_upkeep(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => self.upkeep(),
            }
        }
    }

    /// The Prometheus text exposition of everything, after setting the render-time
    /// values from `readings`.
    pub fn render(&self, readings: &Readings) -> String {
        self.ws_connections.set(readings.ws_connections as f64);
        self.ws_subscriptions.set(readings.ws_subscriptions as f64);
        self.frames_pushed.absolute(readings.frames_pushed);
        self.slow_consumers.absolute(readings.slow_consumers);
        self.webhooks_accepted.absolute(readings.webhooks_accepted);
        self.webhooks_rejected.absolute(readings.webhooks_rejected);
        self.history_scanned.absolute(readings.history_scanned);
        self.history_pairs.set(readings.history_pairs as f64);
        self.set_fetch_age();
        if let Some(snap) = &readings.snapshot {
            self.pairs_in_error.set(snap.pairs_in_error as f64);
            self.parsed_files.set(snap.parsed_files as f64);
            self.label_cache_entries
                .set(snap.label_cache_entries as f64);
            self.label_cache_bytes.set(snap.label_cache_bytes as f64);
        }
        let mut text = self.handle.render();
        if let Some(snap) = &readings.snapshot {
            text.push_str(&format!(
                "# HELP {COMMIT_INFO} The commit served on the tracked branch (value always 1).\n\
                 # TYPE {COMMIT_INFO} gauge\n\
                 {COMMIT_INFO}{{commit=\"{}\",branch=\"{}\"}} 1\n",
                escape_label(&snap.version),
                escape_label(&snap.label),
            ));
        }
        render_instances(&mut text, readings);
        text
    }

    fn set_fetch_age(&self) {
        let last_ok = *crate::sync::lock(&self.last_fetch_ok);
        if let Some((at, wall)) = last_ok {
            // Registered on first use: a repository that is never fetched has no such series.
            let gauge =
                |name: &'static str| self.recorder.register_gauge(&Key::from_name(name), &META);
            gauge(FETCH_AGE).set(at.elapsed());
            let unix = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            gauge(FETCH_TIMESTAMP).set(unix);
        }
    }
}

/// Rendered here rather than through the recorder: a series whose digest is no longer
/// current or previous must disappear, which registered gauges never do.
fn render_instances(text: &mut String, readings: &Readings) {
    use std::fmt::Write;
    text.push_str(&format!(
        "# HELP {INSTANCES} Instances holding each release of a pair: its current and previous digest, or any other.\n# TYPE {INSTANCES} gauge\n"
    ));
    for ((service, env), digest, n) in &readings.instances {
        let _ = writeln!(
            text,
            "{INSTANCES}{{service=\"{}\",env=\"{}\",digest=\"{}\"}} {n}",
            escape_label(service),
            escape_label(env),
            escape_label(digest)
        );
    }
    text.push_str(&format!(
        "# HELP {REJECTED} Configs instances refused (deserialization or their validator), by pair.\n# TYPE {REJECTED} counter\n"
    ));
    for ((service, env), n) in &readings.rejected {
        let _ = writeln!(
            text,
            "{REJECTED}{{service=\"{}\",env=\"{}\"}} {n}",
            escape_label(service),
            escape_label(env)
        );
    }
}

const INSTANCES: &str = "confhub_instances";
const REJECTED: &str = "confhub_config_rejected_total";

/// The values read from the rest of the server when `/metrics` is scraped
/// (`http::metrics` gathers them), so this module depends on nothing else.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Open WebSocket connections.
    pub ws_connections: u64,
    /// Subscriptions they hold.
    pub ws_subscriptions: usize,
    /// Config frames queued since start.
    pub frames_pushed: u64,
    /// Connections closed as slow consumers since start.
    pub slow_consumers: u64,
    /// Webhook calls that triggered a fetch.
    pub webhooks_accepted: u64,
    /// Webhook calls refused.
    pub webhooks_rejected: u64,
    /// Commits taken in by history scans.
    pub history_scanned: u64,
    /// Pairs whose history is kept.
    pub history_pairs: usize,
    /// The served snapshot's figures, once there is one.
    pub snapshot: Option<SnapshotReadings>,
    /// Listed instances per (pair, digest): the pair's current and previous release by
    /// digest, every other one as `other`.
    pub instances: Vec<((String, String), String, u64)>,
    /// `rejected` answers per pair since start.
    pub rejected: Vec<((String, String), u64)>,
}

/// What `/metrics` reads of the served snapshot and the store.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReadings {
    /// The commit served.
    pub version: String,
    /// The tracked branch.
    pub label: String,
    /// Pairs that fail to resolve.
    pub pairs_in_error: usize,
    /// Files kept parsed.
    pub parsed_files: usize,
    /// Pairs in the label cache.
    pub label_cache_entries: usize,
    /// Their estimated bytes.
    pub label_cache_bytes: usize,
}

/// Standard methods by name; anything else (extension methods are unbounded) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_label(status: u16) -> metrics::SharedString {
    match status {
        200 => "200".into(),
        304 => "304".into(),
        404 => "404".into(),
        other => other.to_string().into(),
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("main"), "main");
    }

    #[test]
    fn http_requests_render_with_route_templates() {
        let m = Metrics::new();
        let route = "/v1/config/{service}/{env}";
        m.http_request(&Method::GET, route, 200, Duration::from_millis(3));
        m.http_request(&Method::GET, route, 200, Duration::from_millis(4));
        m.http_request(
            &Method::from_bytes(b"BREW").expect("method"),
            "unmatched",
            404,
            Duration::from_millis(1),
        );
        let text = m.handle.render();
        assert!(
            text.contains(&format!(
                "{HTTP_REQUESTS}{{method=\"GET\",route=\"{route}\",status=\"200\"}} 2"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{HTTP_REQUESTS}{{method=\"other\",route=\"unmatched\",status=\"404\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{HTTP_DURATION}_count{{method=\"GET\",route=\"{route}\"}} 2"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("# TYPE {HTTP_DURATION} histogram")));
    }

    #[test]
    fn two_instances_do_not_share_values() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.fetch(Duration::from_millis(5), false);
        assert!(a.handle.render().contains("confhub_fetch_failures_total 1"));
        assert!(b.handle.render().contains("confhub_fetch_failures_total 0"));
    }
}
