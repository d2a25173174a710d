//! `GET /metrics` end to end: the text parses as the Prometheus exposition format, and
//! the counters move with real requests, a real commit pushed to a real WebSocket
//! subscriber, and a real failing fetch.
//!
//! Every server has its own recorder (see `confhub_server::metrics`), so values are
//! this server's alone; the tests still compare before/after scrapes, which keeps them
//! independent of whatever a server did while starting (readiness polls, the first
//! refresh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{fast_settings, wait_for, TestRepo, TestServer};
use confhub_server::Settings;

/// Generous: the tests must pass on a loaded 2-core machine.
const LIVE: Duration = Duration::from_secs(30);
const CONFIG_ROUTE: &str = "/v1/config/{service}/{env}";

// ---------------------------------------------------------------------------
// A small parser and checker of the Prometheus text format (version 0.0.4).

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Clone)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn valid_label_name(name: &str) -> bool {
    valid_metric_name(name) && !name.contains(':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    assert_eq!(chars.next(), Some('{'));
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        assert!(
            valid_label_name(key.trim()),
            "bad label name {key:?} in {line}"
        );
        assert_eq!(chars.next(), Some('='), "{line}");
        assert_eq!(chars.next(), Some('"'), "label value not quoted in {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                Some('"') => break,
                Some('\n') | None => panic!("unterminated label value in {line}"),
                Some(c) => value.push(c),
            }
        }
        assert!(
            labels.insert(key.trim().to_string(), value).is_none(),
            "label repeated in {line}"
        );
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("expected , or }} after a label, got {other:?} in {line}"),
        }
    }
    (labels, chars.collect())
}

/// The family a sample belongs to: itself, or a histogram/summary it is part of.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parse and check: names and labels well formed, one TYPE per family given before its
/// samples, values numbers, no duplicate series, histograms cumulative with
/// `+Inf` == `_count`.
fn parse(text: &str) -> Exposition {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut seen_families = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(t) = rest.strip_prefix("TYPE ") {
                let (name, ty) = t.split_once(' ').expect("TYPE name type");
                assert!(valid_metric_name(name), "bad name in {line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                    "bad type in {line}"
                );
                assert!(
                    !seen_families.contains(name),
                    "TYPE after samples of {name}"
                );
                assert!(
                    types.insert(name.to_string(), ty.to_string()).is_none(),
                    "TYPE twice for {name}"
                );
            } else if let Some(h) = rest.strip_prefix("HELP ") {
                let name = h.split(' ').next().unwrap_or_default();
                assert!(valid_metric_name(name), "bad name in {line}");
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        assert!(valid_metric_name(name), "bad metric name in {line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), line[name_end..].to_string())
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .unwrap_or_else(|| panic!("no value in {line}"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp in {line}"));
        }
        assert!(fields.next().is_none(), "trailing text in {line}");
        let fam = family(name, &types);
        assert!(
            types.contains_key(fam),
            "sample before/without TYPE: {line}"
        );
        seen_families.insert(fam.to_string());
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    let exp = Exposition { types, samples };
    exp.check_unique_series();
    exp.check_histograms();
    exp
}

impl Exposition {
    fn check_unique_series(&self) {
        let mut seen = std::collections::HashSet::new();
        for s in &self.samples {
            assert!(
                seen.insert((s.name.clone(), s.labels.clone())),
                "duplicate series {s:?}"
            );
        }
    }

    fn check_histograms(&self) {
        for (name, ty) in &self.types {
            if ty != "histogram" {
                continue;
            }
            // Group bucket samples by their labels without `le`.
            let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{name}_bucket"))
            {
                let mut labels = s.labels.clone();
                let le = labels.remove("le").expect("bucket has le");
                groups
                    .entry(labels)
                    .or_default()
                    .push((parse_value(&le).expect("le is a number"), s.value));
            }
            for (labels, mut buckets) in groups {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{name}{labels:?}: buckets not cumulative"
                );
                let inf = buckets.last().expect("a bucket");
                assert!(inf.0.is_infinite(), "{name}{labels:?}: no +Inf bucket");
                let count = self
                    .get(&format!("{name}_count"), &labels)
                    .unwrap_or_else(|| panic!("{name}{labels:?}: no _count"));
                assert_eq!(inf.1, count, "{name}{labels:?}: +Inf bucket != _count");
                assert!(self.get(&format!("{name}_sum"), &labels).is_some());
            }
        }
    }

    /// The value of the series with exactly these labels.
    fn get(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// The value of the series with exactly these labels (`&[]`: none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.get(name, &labels)
    }

    /// Like [`Exposition::value`], 0 when the series does not exist (yet).
    fn or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

#[test]
fn the_checker_rejects_what_it_should() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"q\"} 3\n\n\
              # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let exp = parse(ok);
    assert_eq!(exp.value("a_total", &[("x", "1\"q")]), Some(3.0));
    assert_eq!(exp.value("h_count", &[]), Some(2.0));
    for bad in [
        "a 1\n",                                                             // no TYPE
        "# TYPE a gauge\na{x=1} 1\n",                                        // unquoted
        "# TYPE a gauge\na one\n",                                           // not a number
        "# TYPE a gauge\na 1\na 2\n",                                        // duplicate
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", // +Inf != count
    ] {
        let result = std::panic::catch_unwind(|| parse(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// helpers

/// The baseline with a `prod` env of its own.
fn base_repo() -> TestRepo {
    common::baseline_repo(&[("application-prod.yml", "tier: prod\n")])
}

async fn scrape(server: &TestServer) -> Exposition {
    let resp = server.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let content_type = common::header(&resp, "content-type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&resp.text().await.expect("body"))
}

/// Scrape until `check` gives a value.
async fn scrape_until<T>(
    server: &TestServer,
    what: &str,
    check: impl Fn(&Exposition) -> Option<T>,
) -> T {
    let check = &check;
    wait_for(LIVE, what, || async move { check(&scrape(server).await) }).await
}

// ---------------------------------------------------------------------------
// tests

/// Requests are counted by method, route template and status; the raw path (service and
/// env names) never becomes a label value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_by_route_template_and_status() {
    let repo = base_repo();
    let server = TestServer::start(Settings::new(repo.path_str())).await;
    let before = scrape(&server).await;
    let count = |m: &Exposition, method: &str, route: &str, status: &str| {
        m.or_zero(
            "confhub_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };

    let first = server.get("/v1/config/orders/prod").await;
    assert_eq!(first.status(), 200);
    let etag = common::header(&first, "etag");
    assert_eq!(server.get("/v1/config/orders/prod").await.status(), 200);
    assert_eq!(
        server
            .get_with("/v1/config/orders/prod", "if-none-match", &etag)
            .await
            .status(),
        304
    );
    assert_eq!(
        server.get("/v1/config/nosuchservice/prod").await.status(),
        404
    );
    // Every path of one segment or more is some Spring route (the resources route takes
    // any depth), and the root is the console's; a path ending in an empty segment is none.
    assert_eq!(server.get("/orders/").await.status(), 404);
    let post = server
        .client()
        .post(server.url("/v1/config/orders/prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    let after = scrape(&server).await;
    let delta = |method: &str, route: &str, status: &str| {
        count(&after, method, route, status) - count(&before, method, route, status)
    };
    assert_eq!(delta("GET", CONFIG_ROUTE, "200"), 2.0);
    assert_eq!(delta("GET", CONFIG_ROUTE, "304"), 1.0);
    assert_eq!(delta("GET", CONFIG_ROUTE, "404"), 1.0);
    assert_eq!(delta("POST", CONFIG_ROUTE, "405"), 1.0);
    assert_eq!(delta("GET", "unmatched", "404"), 1.0);
    // The first scrape is counted by the second.
    assert_eq!(delta("GET", "/metrics", "200"), 1.0);
    let latency = |m: &Exposition| {
        m.or_zero(
            "confhub_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", CONFIG_ROUTE)],
        )
    };
    assert_eq!(latency(&after) - latency(&before), 4.0);
    assert_eq!(
        after
            .types
            .get("confhub_http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    for s in after.series("confhub_http_requests_total") {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["method", "route", "status"], "{s:?}");
    }
    // Only the per-pair series name a pair: by design, and bounded by the pairs served.
    let per_pair = ["confhub_instances", "confhub_config_rejected_total"];
    for s in after
        .samples
        .iter()
        .filter(|s| !per_pair.contains(&s.name.as_str()))
    {
        for v in s.labels.values() {
            assert!(
                !v.contains("orders") && !v.contains("nosuchservice") && !v.contains("deep"),
                "a raw path became a label value: {s:?}"
            );
        }
    }
    server.stop().await.expect("clean stop");
}

/// A commit pushed to a WebSocket subscriber moves frames pushed, push latency and
/// refresh duration; the commit info follows the commit (one series, old one gone);
/// a broken commit shows in pairs in error; the connection and subscription gauges
/// follow the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_metrics_follow_a_commit() {
    let repo = base_repo();
    let first_sha = repo.head();
    let server = TestServer::start(fast_settings(repo.path_str())).await;

    let m = scrape(&server).await;
    let info = m.series("confhub_commit_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].labels["commit"], first_sha);
    assert_eq!(info[0].labels["branch"], "main");
    assert_eq!(info[0].value, 1.0);
    assert_eq!(m.value("confhub_pairs_in_error", &[]), Some(0.0));
    assert_eq!(m.value("confhub_websocket_connections", &[]), Some(0.0));
    // A local repository is never fetched: no freshness series.
    assert!(m
        .series("confhub_fetch_last_success_age_seconds")
        .is_empty());

    let mut ws = server.watch().await;
    ws.subscribe("orders", "prod", None).await;
    let initial = ws.next_config("the initial config").await;
    assert_eq!(initial.values["db"]["pool"], 20);

    let before = scrape_until(&server, "the subscription in the gauges", |m| {
        (m.value("confhub_websocket_connections", &[]) == Some(1.0)
            && m.value("confhub_websocket_subscriptions", &[]) == Some(1.0))
        .then(|| {
            (
                m.or_zero("confhub_config_frames_pushed_total", &[]),
                m.or_zero("confhub_push_latency_seconds_count", &[]),
                m.or_zero("confhub_refresh_duration_seconds_count", &[]),
            )
        })
    })
    .await;

    repo.write("orders-prod.yml", "db:\n  pool: 21\n");
    let sha = repo.commit("pool 21");
    let pushed = ws.next_config("the push").await;
    assert_eq!(pushed.values["db"]["pool"], 21);
    assert_eq!(pushed.version, sha);

    // The latency is recorded right after the fan-out, which may be a moment after the
    // frame reached us.
    let m = scrape_until(&server, "the push in the metrics", |m| {
        (m.or_zero("confhub_push_latency_seconds_count", &[]) >= before.1 + 1.0).then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.or_zero("confhub_config_frames_pushed_total", &[]),
        before.0 + 1.0
    );
    assert!(m.or_zero("confhub_refresh_duration_seconds_count", &[]) >= before.2 + 1.0);
    assert!(m.or_zero("confhub_push_latency_seconds_sum", &[]) > 0.0);
    let info = m.series("confhub_commit_info");
    assert_eq!(info.len(), 1, "the old commit's series is gone: {info:?}");
    assert_eq!(info[0].labels["commit"], sha);

    // A broken commit: the pair keeps its last good config and is counted in error.
    repo.write("orders-prod.yml", "db: [unclosed\n");
    repo.commit("broken");
    scrape_until(&server, "a pair in error", |m| {
        (m.value("confhub_pairs_in_error", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let m = scrape(&server).await;
    assert_eq!(
        m.or_zero("confhub_config_frames_pushed_total", &[]),
        before.0 + 1.0
    );

    ws.close().await;
    scrape_until(&server, "the gauges back to zero", |m| {
        (m.value("confhub_websocket_connections", &[]) == Some(0.0)
            && m.value("confhub_websocket_subscriptions", &[]) == Some(0.0))
        .then_some(())
    })
    .await;
    server.stop().await.expect("clean stop");
}

/// A remote that disappears: the signed webhook's fetch fails and is counted, the
/// freshness gauges stop moving forward, and a later success moves them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fetch_is_counted() {
    let work = base_repo();
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = bare_dir.path().join("origin.git");
    work.clone_bare(&bare);

    let mut settings = fast_settings(format!("file://{}", bare.display()));
    settings.poll = Duration::from_secs(3600);
    settings.webhook_secret = Some("s3cret-for-tests".into());
    settings.live.fetch_retry = Duration::from_millis(200);
    let server = TestServer::start(settings).await;

    let m = scrape(&server).await;
    assert_eq!(m.value("confhub_fetch_failures_total", &[]), Some(0.0));
    // The clone at start counts as a successful fetch.
    let age = m
        .value("confhub_fetch_last_success_age_seconds", &[])
        .expect("a remote has a fetch age");
    assert!(age >= 0.0, "{age}");
    let fetched_at = m
        .value("confhub_fetch_last_success_timestamp_seconds", &[])
        .expect("a remote has a fetch timestamp");
    assert!(fetched_at > 1.6e9, "{fetched_at}");

    let body = r#"{"ref":"refs/heads/main"}"#;
    let post = |sig: String| {
        server
            .client()
            .post(server.url("/v1/webhook"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
    };
    let forged = confhub_server::github_signature("wrong", body.as_bytes());
    assert_eq!(post(forged).await.unwrap().status(), 401);

    let moved = bare_dir.path().join("moved.git");
    std::fs::rename(&bare, &moved).unwrap();
    let signed = confhub_server::github_signature("s3cret-for-tests", body.as_bytes());
    assert_eq!(post(signed).await.unwrap().status(), 202);

    let m = scrape_until(&server, "a failed fetch in the metrics", |m| {
        (m.or_zero("confhub_fetch_failures_total", &[]) >= 1.0).then(|| m.clone())
    })
    .await;
    assert!(m.or_zero("confhub_fetch_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        m.value("confhub_webhooks_total", &[("result", "accepted")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("confhub_webhooks_total", &[("result", "rejected")]),
        Some(1.0)
    );
    // No success since: the timestamp has not moved.
    assert_eq!(
        m.value("confhub_fetch_last_success_timestamp_seconds", &[]),
        Some(fetched_at)
    );
    assert!(m.or_zero("confhub_fetch_last_success_age_seconds", &[]) >= age);

    // Back again: the retry succeeds and the freshness moves forward.
    std::fs::rename(&moved, &bare).unwrap();
    scrape_until(&server, "a successful fetch after the failure", |m| {
        m.value("confhub_fetch_last_success_timestamp_seconds", &[])
            .filter(|t| *t > fetched_at)
    })
    .await;
    server.stop().await.expect("clean stop");
}
