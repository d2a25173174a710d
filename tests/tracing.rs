//! Request ids, W3C trace context and the request/refresh spans, seen in the logs: this
//! test binary installs one global `tracing` subscriber (JSON lines into a shared
//! buffer) that every in-process server writes to. Tests run in parallel and share it,
//! so each one looks only for its own unique ids.
//!
//! Also: the client sends a fresh `x-request-id` on every request and handshake, and a
//! `traceparent` only when the application provides one; no secret reaches a log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{baseline_repo, wait_for, wait_until, TestServer};
use confhub_client::{Client, RetryPolicy};
use confhub_server::Settings;
use serde_json::{json, Value};

const LIVE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// the captured log

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The buffer every log line of this process goes to (installed on first use).
fn log() -> &'static Buffer {
    static LOG: OnceLock<Buffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,confhub_server=debug,confhub_client=debug",
            ))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned()
}

/// Every JSON event logged so far.
fn events() -> Vec<Value> {
    log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait for an event matching `pred`; return it.
async fn logged(what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    wait_for(LIVE, what, || async move {
        events().into_iter().find(|e| pred(e))
    })
    .await
}

/// 32 lower-case hex digits, different on every call.
fn unique_trace_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{nanos:016x}{:016x}",
        N.fetch_add(1, Ordering::Relaxed) | (u64::from(std::process::id()) << 32)
    )
}

fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
        && parts[2].starts_with('4')
}

// ---------------------------------------------------------------------------
// server side

/// `x-request-id` is echoed when valid and generated otherwise; a valid `traceparent`
/// puts its trace id on the request span, so the request's log lines carry it; an
/// invalid one is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_trace_ids_reach_the_logs() {
    log();
    let repo = baseline_repo(&[]);
    let server = TestServer::start(Settings::new(repo.path_str())).await;

    let trace_id = unique_trace_id();
    let request_id = format!("req-{}", &trace_id[16..]);
    let resp = server
        .client()
        .get(server.url("/v1/config/orders/prod"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(common::header(&resp, "x-request-id"), request_id);
    let event = logged("the request's log line with its trace id", |e| {
        e["span"]["trace_id"] == trace_id.as_str()
    })
    .await;
    assert_eq!(event["span"]["name"], "request", "{event}");
    assert_eq!(event["span"]["request_id"], request_id.as_str(), "{event}");
    assert_eq!(event["span"]["parent_id"], "00f067aa0ba902b7", "{event}");
    assert_eq!(
        event["span"]["route"], "/v1/config/{service}/{env}",
        "{event}"
    );
    assert_eq!(event["fields"]["message"], "request finished", "{event}");
    assert_eq!(event["fields"]["status"], 200, "{event}");

    // No id: one is generated, answered and logged.
    let resp = server.get("/v1/config/orders/prod").await;
    let generated = common::header(&resp, "x-request-id");
    assert!(is_uuid_v4(&generated), "{generated:?}");
    let event = logged("the generated request id in the log", |e| {
        e["span"]["request_id"] == generated.as_str()
    })
    .await;
    assert!(event["span"].get("trace_id").is_none(), "{event}");

    // An unusable id is replaced, not echoed.
    let resp = server
        .get_with("/healthz", "x-request-id", "has spaces and \"quotes\"")
        .await;
    let replaced = common::header(&resp, "x-request-id");
    assert!(is_uuid_v4(&replaced), "{replaced:?}");

    // An invalid traceparent (upper-case hex) is ignored; the request still works.
    let bad_trace = unique_trace_id().to_uppercase();
    let marker = format!("bad-trace-{}", &bad_trace[16..]);
    let resp = server
        .client()
        .get(server.url("/v1/config/orders/prod"))
        .header("traceparent", format!("00-{bad_trace}-00f067aa0ba902b7-01"))
        .header("x-request-id", &marker)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let event = logged("the request with a bad traceparent", |e| {
        e["span"]["request_id"] == marker.as_str()
    })
    .await;
    assert!(event["span"].get("trace_id").is_none(), "{event}");

    // Every answer carries an id, errors and unmatched paths too.
    let resp = server.get("/no/such/path/here").await;
    assert_eq!(resp.status(), 404);
    assert!(is_uuid_v4(&common::header(&resp, "x-request-id")));
    server.stop().await.expect("clean stop");
}

/// A refresh that finds a new commit logs inside a `refresh` span naming the old and
/// the new commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_span_carries_old_and_new_commit() {
    log();
    let repo = baseline_repo(&[]);
    let old = repo.head();
    let mut settings = Settings::new(repo.path_str());
    settings.live.debounce = Duration::from_millis(50);
    let server = TestServer::start(settings).await;

    repo.write("orders-prod.yml", "db:\n  pool: 21\n");
    let new = repo.commit("pool 21");
    let event = logged("the new version logged in its refresh span", |e| {
        e["fields"]["message"] == "new version" && e["span"]["new"] == new.as_str()
    })
    .await;
    assert_eq!(event["span"]["name"], "refresh", "{event}");
    assert_eq!(event["span"]["old"], old.as_str(), "{event}");
    server.stop().await.expect("clean stop");
}

/// Webhook secrets, webhook tokens, bearer tokens and git tokens never reach the log,
/// at DEBUG either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged() {
    log();
    let unique = unique_trace_id();
    let webhook_secret = format!("whsec-{unique}");
    let bearer = format!("bearer-{unique}");
    let wrong_gitlab = format!("gitlab-{unique}");
    let git_token = format!("gittok-{unique}");

    let work = baseline_repo(&[]);
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = bare_dir.path().join("origin.git");
    work.clone_bare(&bare);
    let mut settings = Settings::new(format!("file://{}", bare.display()));
    settings.poll = Duration::from_secs(3600);
    settings.webhook_secret = Some(webhook_secret.as_str().into());
    settings.git_token = Some(git_token.clone().into());
    let server = TestServer::start(settings).await;

    let marker = format!("secrets-{}", &unique[16..]);
    let resp = server
        .client()
        .get(server.url("/v1/config/orders/prod"))
        .bearer_auth(&bearer)
        .header("x-config-token", &bearer)
        .header("x-request-id", &marker)
        .send()
        .await
        .unwrap();
    let _ = resp.status();
    let body = r#"{"ref":"refs/heads/main"}"#;
    for (name, value) in [
        ("x-gitlab-token", wrong_gitlab.clone()),
        ("x-gitlab-token", webhook_secret.clone()),
        (
            "x-hub-signature-256",
            confhub_server::github_signature(&webhook_secret, body.as_bytes()),
        ),
    ] {
        let resp = server
            .client()
            .post(server.url("/v1/webhook"))
            .header(name, value)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!([202, 401].contains(&resp.status().as_u16()));
    }
    // The two accepted webhooks fetched: wait for the fetch to be done and logged about.
    wait_until(LIVE, "the webhook fetches", || async {
        server
            .get_json::<confhub_client::wire::StatusResponse>("/v1/status")
            .await
            .last_fetch
            .is_some_and(|f| f.count >= 1)
    })
    .await;
    logged("the marked request", |e| {
        e["span"]["request_id"] == marker.as_str()
    })
    .await;
    server.stop().await.expect("clean stop");

    let text = log_text();
    for secret in [&webhook_secret, &bearer, &wrong_gitlab, &git_token] {
        assert!(!text.contains(secret.as_str()), "{secret} is in the log");
    }
}

// ---------------------------------------------------------------------------
// client side

/// Headers of every request a fake server saw, with the path.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap)>>>);

impl Seen {
    fn all(&self) -> Vec<(String, HeaderMap)> {
        self.0.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

async fn fake_config(
    State(seen): State<Seen>,
    Path((service, env)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    seen.0
        .lock()
        .unwrap()
        .push((format!("/v1/config/{service}/{env}"), headers));
    axum::Json(json!({
        "service": service, "env": env, "label": "main", "version": "v1",
        "digest": "d1", "values": {"db": {"pool": 5}}, "sources": ["orders.yml"]
    }))
    .into_response()
}

async fn fake_watch(
    State(seen): State<Seen>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    seen.0.lock().unwrap().push(("/v1/watch".into(), headers));
    ws.on_upgrade(|mut socket| async move {
        // Hold the connection, answer nothing.
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

/// A fake confhub that records the headers of what it is asked.
async fn fake_server() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1/config/{service}/{env}", get(fake_config))
        .route("/v1/watch", get(fake_watch))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, task)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// Every request carries a fresh `x-request-id`; no `traceparent` unless the
/// application gives one, and then exactly that one (an invalid one is not sent); the
/// WebSocket handshake carries both too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sends_request_id_and_traceparent() {
    let (url, seen, server) = fake_server().await;
    let builder = || {
        Client::builder()
            .server(url.clone())
            .service("orders")
            .env("prod")
            .retry(RetryPolicy::default().deadline(Duration::from_secs(10)))
    };

    // Plain client: request ids only.
    let client = builder().build().unwrap();
    client.fetch().await.unwrap();
    client.fetch().await.unwrap();
    let got = seen.all();
    assert_eq!(got.len(), 2, "{got:?}");
    let ids: Vec<&str> = got
        .iter()
        .map(|(_, h)| header(h, "x-request-id").expect("x-request-id sent"))
        .collect();
    assert!(ids.iter().all(|id| is_uuid_v4(id)), "{ids:?}");
    assert_ne!(ids[0], ids[1], "a fresh id per request");
    assert!(got.iter().all(|(_, h)| h.get("traceparent").is_none()));

    // Opted in: the application's traceparent, on HTTP and on the WebSocket handshake.
    seen.clear();
    let tp = format!("00-{}-b7ad6b7169203331-01", unique_trace_id());
    let expected = tp.clone();
    let client = builder()
        .traceparent_from(move || Some(tp.clone()))
        .build()
        .unwrap();
    let watched = client.watch::<Value>().await.unwrap();
    assert_eq!(watched.get()["db"]["pool"], 5);
    let handshake = wait_for(LIVE, "the watch handshake", || async {
        seen.all().into_iter().find(|(path, _)| path == "/v1/watch")
    })
    .await;
    let got = seen.all();
    let (_, http) = got
        .iter()
        .find(|(path, _)| path.starts_with("/v1/config/"))
        .expect("the initial fetch");
    assert_eq!(header(http, "traceparent"), Some(expected.as_str()));
    assert!(is_uuid_v4(header(http, "x-request-id").unwrap()));
    assert_eq!(header(&handshake.1, "traceparent"), Some(expected.as_str()));
    let ws_id = header(&handshake.1, "x-request-id").expect("handshake id");
    assert!(is_uuid_v4(ws_id));
    assert_ne!(Some(ws_id), header(http, "x-request-id"));
    drop(watched);

    // A function returning garbage (or nothing) sends no traceparent at all.
    seen.clear();
    let client = builder()
        .traceparent_from(|| Some("not a traceparent".into()))
        .build()
        .unwrap();
    client.fetch().await.unwrap();
    let client = builder().traceparent_from(|| None).build().unwrap();
    client.fetch().await.unwrap();
    let got = seen.all();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(_, h)| h.get("traceparent").is_none() && h.get("x-request-id").is_some()));
    server.abort();
}

/// Against the real server: the id the client sent is the one the server logs and
/// echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_ids_are_logged_by_the_server() {
    log();
    let repo = baseline_repo(&[]);
    let server = TestServer::start(Settings::new(repo.path_str())).await;
    let trace_id = unique_trace_id();
    let tp = format!("00-{trace_id}-b7ad6b7169203331-01");
    let client = Client::builder()
        .server(server.base_url())
        .service("orders")
        .env("prod")
        .traceparent_from(move || Some(tp.clone()))
        .build()
        .unwrap();
    let config = client.fetch().await.unwrap();
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 20);
    // The client logs the id it sends (DEBUG); the server's request span has the same
    // id and the trace id.
    let server_event = logged("the server's line for the client's request", |e| {
        e["span"]["trace_id"] == trace_id.as_str()
    })
    .await;
    let id = server_event["span"]["request_id"]
        .as_str()
        .expect("request id")
        .to_string();
    assert!(is_uuid_v4(&id), "{server_event}");
    logged("the client's line with the same id", |e| {
        e["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("confhub_client"))
            && e["fields"]["request_id"] == id.as_str()
    })
    .await;
    server.stop().await.expect("clean stop");
}
