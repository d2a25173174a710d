//! End-to-end tests of `confhub-client` (ARCHITECTURE.md §7).
//!
//! Two kinds of servers:
//! - the real confhub server ([`common::TestServer`], or [`LocalServer`] when a test
//!   must stop and restart it on the same port) serving a real git repository with real
//!   commits — for fetching, failover, the cache and hot reload over `/v1/watch`;
//! - [`Fake`], a scripted axum server, for what a real server never does on purpose:
//!   5xx/429/408 bursts, garbage JSON, hanging requests, malformed or abruptly closed
//!   WebSockets.
//!
//! Every wait has a deadline; nothing sleeps a fixed time to let something happen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{is_sha256_hex, settings, wait_until, TestRepo, TestServer};
use confhub_client::wire::{ClientFrame, ServerFrame, StatusResponse};
use confhub_client::{
    BreakerPolicy, BreakerState, Client, ClientBuilder, Error, Origin, RetryPolicy, Watched,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// How long a pushed change may take to arrive.
const WATCH_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Fixture

const APPLICATION: &str = "\
greeting: hello
db:
  host: localhost
  pool: 10
";

const ORDERS: &str = "\
db:
  pool: 20
features: [a, b]
";

const ORDERS_PROD: &str = "\
db:
  host: db.prod.internal
  pool: 60
";

const APPLICATION_EU: &str = "\
greeting: hallo
db:
  host: db.eu.internal
";

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct App {
    greeting: String,
    db: Db,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Db {
    host: String,
    pool: u32,
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", APPLICATION)
        .write("orders.yml", ORDERS)
        .write("orders-prod.yml", ORDERS_PROD)
        .write("application-eu.yml", APPLICATION_EU);
    repo.commit("initial config");
    repo
}

/// orders-prod.yml with another pool size (a YAML scalar, so also `"lots"`).
fn set_pool(repo: &TestRepo, pool: &str) -> String {
    repo.write(
        "orders-prod.yml",
        &format!("db:\n  host: db.prod.internal\n  pool: {pool}\n"),
    );
    repo.commit(&format!("pool {pool}"))
}

/// Short retries so failing tests fail fast.
fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .deadline(Duration::from_secs(2))
}

fn builder(servers: &[&str]) -> ClientBuilder {
    Client::builder()
        .servers(servers.iter().copied())
        .service("orders")
        .env("prod")
        .instance("client-test")
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .retry(fast_retry())
}

/// A URL nobody listens on.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", common::free_port())
}

async fn changed<T>(w: &mut Watched<T>, what: &str) -> Arc<T> {
    tokio::time::timeout(WATCH_DEADLINE, w.changed())
        .await
        .unwrap_or_else(|_| panic!("no change within {WATCH_DEADLINE:?}: {what}"))
}

/// A real server on a given listener, stoppable and restartable on the same port.
struct LocalServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl LocalServer {
    async fn start(repo: &Path, addr: SocketAddr) -> LocalServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut s = settings(repo.to_str().unwrap());
        s.data_dir = data.path().to_path_buf();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = confhub_server::run(listener, s, async move {
                let _ = rx.await;
            })
            .await;
        });
        let url = format!("http://{addr}/readyz");
        wait_until(common::DEADLINE, "server ready", || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200) }
        })
        .await;
        LocalServer {
            addr,
            stop: Some(tx),
            task,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(common::DEADLINE, &mut self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// Fetch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_the_resolved_typed_config() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()]).build().unwrap();

    let config = client.fetch().await.unwrap();
    assert_eq!(config.version(), repo.head());
    assert!(is_sha256_hex(config.digest()), "{}", config.digest());
    assert_eq!(config.service(), "orders");
    assert_eq!(config.env(), "prod");
    assert_eq!(config.label(), "main");
    assert_eq!(
        config.sources().first().map(String::as_str),
        Some("orders-prod.yml")
    );
    assert_eq!(
        config.origin(),
        &Origin::Server {
            url: server.base_url()
        }
    );
    assert!(!config.is_from_cache());

    assert_eq!(config.get::<u32>("db.pool").unwrap(), 60);
    assert_eq!(config.get::<String>("db.host").unwrap(), "db.prod.internal");
    assert_eq!(config.get::<String>("features[1]").unwrap(), "b");
    assert_eq!(config.get::<u32>("/db/pool").unwrap(), 60);
    assert!(matches!(
        config.get::<u32>("db.nope"),
        Err(Error::MissingKey { .. })
    ));
    assert!(matches!(
        config.get::<u32>("db.host"),
        Err(Error::Deserialize { path: Some(_), .. })
    ));

    let app: App = config.deserialize().unwrap();
    assert_eq!(
        app,
        App {
            greeting: "hello".into(),
            db: Db {
                host: "db.prod.internal".into(),
                pool: 60
            },
            features: vec!["a".into(), "b".into()],
        }
    );
    assert_eq!(client.fetch_as::<App>().await.unwrap(), app);
    assert!(matches!(
        config.deserialize::<Vec<u32>>(),
        Err(Error::Deserialize { path: None, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_several_envs_at_a_label() {
    let repo = repo();
    repo.tag("v1");
    set_pool(&repo, "99");
    let server = TestServer::start(settings(repo.path_str())).await;

    let client = builder(&[&server.base_url()])
        .envs(["prod", "eu"])
        .label("v1")
        .build()
        .unwrap();
    let config = client.fetch().await.unwrap();
    assert_eq!(config.env(), "prod,eu");
    assert_eq!(config.label(), "v1");
    assert_eq!(config.version(), repo.rev_parse("v1"));
    // eu is the later env: its pair (application-eu.yml) sits above prod's pair.
    assert_eq!(config.get::<String>("greeting").unwrap(), "hallo");
    assert_eq!(config.get::<String>("db.host").unwrap(), "db.eu.internal");
    assert_eq!(
        config.get::<u32>("db.pool").unwrap(),
        60,
        "the tag, not main"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_4xx_is_returned_at_once() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()])
        .service("no-such-service")
        .retry(RetryPolicy::default().deadline(Duration::from_secs(30)))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");
    match &err {
        Error::Status { status, body, .. } => {
            assert_eq!(*status, 404);
            assert_eq!(body.as_ref().unwrap().error, "unknown_service");
        }
        other => panic!("expected a 404, got {other}"),
    }
    assert!(!err.is_retryable());
    // the server answered: its breaker stays closed
    assert_eq!(client.status().servers[0].breaker, BreakerState::Closed);
}

// ---------------------------------------------------------------------------
// Failover and circuit breakers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_a_dead_server_to_a_live_one() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let dead = dead_url();
    let client = builder(&[&dead, &server.base_url()]).build().unwrap();

    let config = client.fetch().await.unwrap();
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 60);
    assert_eq!(
        config.origin(),
        &Origin::Server {
            url: server.base_url()
        }
    );
    let status = client.status();
    assert_eq!(status.servers[0].url, dead);
    assert_eq!(status.servers[0].consecutive_failures, 1);
    assert_eq!(status.servers[1].consecutive_failures, 0);

    // The client now goes to the server that worked first.
    client.fetch().await.unwrap();
    assert_eq!(client.status().servers[0].consecutive_failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_makes_a_hanging_server_cost_nothing() {
    // A server that accepts connections and never answers: every request costs the
    // full request timeout until its breaker opens.
    let fake = Fake::start(Behaviour::http(|_| Reply::Hang)).await;
    let client = builder(&[&fake.base])
        .request_timeout(Duration::from_millis(300))
        .retry(RetryPolicy::none())
        .circuit_breaker(
            BreakerPolicy::default()
                .failure_threshold(2)
                .cool_down(Duration::from_millis(1500)),
        )
        .build()
        .unwrap();

    for _ in 0..2 {
        let started = Instant::now();
        let err = client.fetch().await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
    let status = client.status();
    assert_eq!(status.servers[0].breaker, BreakerState::Open);
    assert_eq!(status.servers[0].consecutive_failures, 2);
    assert_eq!(fake.hits(), 2);

    // Open: no request at all, no waiting.
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("circuit breaker open"), "{err}");
    assert_eq!(fake.hits(), 2);

    // After the cool-down one probe goes through; it fails, so the breaker reopens.
    wait_until(Duration::from_secs(5), "half-open", || async {
        client.status().servers[0].breaker == BreakerState::HalfOpen
    })
    .await;
    client.fetch().await.unwrap_err();
    assert_eq!(fake.hits(), 3);
    assert_eq!(client.status().servers[0].breaker, BreakerState::Open);
}

#[tokio::test]
async fn retries_stop_early_when_every_breaker_stays_open_past_the_deadline() {
    let client = builder(&[&dead_url(), &dead_url()])
        .retry(RetryPolicy::default().deadline(Duration::from_secs(5)))
        .circuit_breaker(
            BreakerPolicy::default()
                .failure_threshold(1)
                .cool_down(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up without waiting out the deadline: {:?}",
        started.elapsed()
    );
    for server in client.status().servers {
        assert_eq!(server.breaker, BreakerState::Open);
        assert_eq!(server.consecutive_failures, 1, "tried once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_breaker_closes_when_the_server_is_back() {
    let fake = Fake::start(Behaviour::http(|hit| {
        if hit < 2 {
            Reply::Status(503, "down".into())
        } else {
            Reply::Ok(config_body("v2", "d2", json!({"db": {"pool": 1}})))
        }
    }))
    .await;
    let client = builder(&[&fake.base])
        .retry(RetryPolicy::none())
        .circuit_breaker(
            BreakerPolicy::default()
                .failure_threshold(2)
                .cool_down(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    client.fetch().await.unwrap_err();
    client.fetch().await.unwrap_err();
    assert_eq!(client.status().servers[0].breaker, BreakerState::Open);
    wait_until(Duration::from_secs(5), "half-open", || async {
        client.status().servers[0].breaker == BreakerState::HalfOpen
    })
    .await;
    let config = client.fetch().await.unwrap();
    assert_eq!(config.version(), "v2");
    let status = client.status();
    assert_eq!(status.servers[0].breaker, BreakerState::Closed);
    assert_eq!(status.servers[0].consecutive_failures, 0);
}

// ---------------------------------------------------------------------------
// Last-known-good cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_the_cache_when_every_server_is_down() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str())).await;
    let url = server.base_url();
    let fetched = builder(&[&url])
        .cache_dir(cache.path())
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one cache file, no temporary left: {files:?}"
    );
    server.stop().await.unwrap();

    let client = builder(&[&url, &dead_url()])
        .cache_dir(cache.path())
        .retry(fast_retry().deadline(Duration::from_millis(500)))
        .build()
        .unwrap();
    let config = client.fetch().await.unwrap();
    assert!(config.is_from_cache());
    assert_eq!(
        config.origin(),
        &Origin::Cache {
            path: files[0].clone()
        }
    );
    assert_eq!(config.values(), fetched.values());
    assert_eq!(config.version(), fetched.version());
    assert_eq!(config.digest(), fetched.digest());
    let status = client.status();
    assert!(status.is_from_cache(), "{status:?}");
    assert_eq!(status.cache_error, None);

    // A watch starts from the cache too.
    let watched = client.watch::<App>().await.unwrap();
    assert!(watched.is_from_cache());
    assert_eq!(watched.get().db.pool, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_errors_instead_of_using_the_cache() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str())).await;
    let url = server.base_url();
    builder(&[&url])
        .cache_dir(cache.path())
        .fail_fast(true)
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    server.stop().await.unwrap();

    let client = builder(&[&url])
        .cache_dir(cache.path())
        .fail_fast(true)
        .retry(fast_retry().deadline(Duration::from_millis(300)))
        .build()
        .unwrap();
    let err = client.fetch().await.unwrap_err();
    match &err {
        Error::Unavailable {
            cache: Some(reason),
            ..
        } => assert!(reason.to_string().contains("fail-fast"), "{reason}"),
        other => panic!("expected Unavailable, got {other}"),
    }
    assert!(!client.status().is_from_cache());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_file_is_reported_and_ignored() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str())).await;
    let url = server.base_url();
    builder(&[&url])
        .cache_dir(cache.path())
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    server.stop().await.unwrap();

    let file = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Same length, one value changed: still valid JSON, wrong checksum.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"pool\":60"), "{text}");
    std::fs::write(&file, text.replace("\"pool\":60", "\"pool\":99")).unwrap();

    let client = builder(&[&url])
        .cache_dir(cache.path())
        .retry(fast_retry().deadline(Duration::from_millis(300)))
        .build()
        .unwrap();
    let err = client.fetch().await.unwrap_err();
    match &err {
        Error::Unavailable {
            cache: Some(reason),
            ..
        } => assert!(reason.to_string().contains("corrupt"), "{reason}"),
        other => panic!("expected Unavailable, got {other}"),
    }
    let status = client.status();
    assert!(status.cache_error.unwrap().contains("checksum"));
    assert_eq!(status.origin, None);
    assert!(client.watch::<App>().await.is_err());

    // Garbage is no better.
    std::fs::write(&file, "{\"confhub_cache\":1").unwrap();
    let err = client.fetch().await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_guards_fetch_and_cache() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str())).await;
    let strict = builder(&[&server.base_url()])
        .cache_dir(cache.path())
        .validator(|c| match c.get::<u32>("db.pool") {
            Ok(n) if n <= 50 => Ok(()),
            _ => Err("db.pool must be at most 50"),
        })
        .build()
        .unwrap();
    let err = strict.fetch().await.unwrap_err();
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("at most 50"), "{err}");
    assert_eq!(
        std::fs::read_dir(cache.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "a rejected config is not cached"
    );
}

// ---------------------------------------------------------------------------
// Hot reload against the real server (needs /v1/watch)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_commits() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()]).build().unwrap();

    let mut app = client.watch::<App>().await.unwrap();
    assert_eq!(app.get().db.pool, 60);
    assert_eq!(app.version(), repo.head());
    let mut rx = app.subscribe();
    let (cb_tx, mut cb_rx) = mpsc::unbounded_channel();
    app.on_change(move |old: &App, new: &App| {
        let _ = cb_tx.send((old.db.pool, new.db.pool));
    });

    let sha = set_pool(&repo, "80");
    let new = changed(&mut app, "pool 80").await;
    assert_eq!(new.db.pool, 80);
    assert_eq!(app.get().db.pool, 80);
    assert_eq!(app.version(), sha);
    assert!(app.last_error().is_none());

    tokio::time::timeout(WATCH_DEADLINE, rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rx.borrow_and_update().db.pool, 80);
    let (old, new) = tokio::time::timeout(WATCH_DEADLINE, cb_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((old, new), (60, 80));

    // A dynamic (untyped) watch sees the same.
    let raw = client.watch::<Value>().await.unwrap();
    assert_eq!(raw.get()["db"]["pool"], json!(80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_does_not_deserialize_is_rejected_and_the_next_good_one_accepted() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()]).build().unwrap();
    let mut app = client.watch::<App>().await.unwrap();
    let good = app.version();

    set_pool(&repo, "lots");
    wait_until(WATCH_DEADLINE, "the bad commit to be rejected", || async {
        app.last_error().is_some()
    })
    .await;
    let err = app.last_error().unwrap();
    assert!(matches!(*err, Error::Deserialize { .. }), "{err}");
    assert_eq!(app.get().db.pool, 60, "the old value stays");
    assert_eq!(app.version(), good);

    let sha = set_pool(&repo, "70");
    let new = changed(&mut app, "the good commit").await;
    assert_eq!(new.db.pool, 70);
    assert_eq!(app.version(), sha);
    assert!(app.last_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_rejects_pushed_updates() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()])
        .validator(|c| match c.get::<u32>("db.pool") {
            Ok(n) if n <= 100 => Ok(()),
            _ => Err("db.pool must be at most 100"),
        })
        .build()
        .unwrap();
    let mut app = client.watch::<App>().await.unwrap();
    set_pool(&repo, "500");
    wait_until(WATCH_DEADLINE, "the update to be rejected", || async {
        app.last_error().is_some()
    })
    .await;
    assert!(matches!(*app.last_error().unwrap(), Error::Rejected { .. }));
    assert_eq!(app.get().db.pool, 60);
    set_pool(&repo, "90");
    assert_eq!(changed(&mut app, "pool 90").await.db.pool, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_path_fires_only_when_its_part_changes() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()]).build().unwrap();
    let mut db = client.watch_path::<Db>("db").await.unwrap();
    assert_eq!(db.get().pool, 60);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    db.on_change(move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    let rx = db.subscribe();

    // A change elsewhere: the watched version moves, nobody is told.
    repo.write("orders.yml", "db:\n  pool: 20\nfeatures: [a, b, c]\n");
    let other = repo.commit("features");
    wait_until(WATCH_DEADLINE, "the unrelated commit", || async {
        db.version() == other
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(!rx.has_changed().unwrap());

    set_pool(&repo, "61");
    assert_eq!(changed(&mut db, "db.pool 61").await.pool, 61);
    wait_until(WATCH_DEADLINE, "the callback", || async {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_watch_polls_with_conditional_requests() {
    let repo = repo();
    repo.branch("release");
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()])
        .label("release")
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut app = client.watch::<App>().await.unwrap();
    assert_eq!(app.get().db.pool, 60);

    // A commit on main does not touch the release label.
    set_pool(&repo, "61");
    repo.checkout("release");
    let sha = set_pool(&repo, "62");
    let new = changed(&mut app, "the release branch to move").await;
    assert_eq!(new.db.pool, 62);
    assert_eq!(app.version(), sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_closes_the_websocket() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let client = builder(&[&server.base_url()]).build().unwrap();
    let connections = || async {
        server
            .get_json::<StatusResponse>("/v1/status")
            .await
            .connections
    };
    let app = client.watch::<App>().await.unwrap();
    let copy = app.clone();
    wait_until(WATCH_DEADLINE, "the watch to connect", || async {
        connections().await == 1
    })
    .await;
    drop(app);
    assert_eq!(copy.get().db.pool, 60, "a clone keeps it alive");
    drop(copy);
    wait_until(WATCH_DEADLINE, "the watch to disconnect", || async {
        connections().await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_started_from_cache_catches_up_when_the_server_returns() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let server = LocalServer::start(repo.path(), addr).await;
    let url = server.url();
    // The failed start trips the breaker; a short cool-down lets the watch retry soon.
    let client = builder(&[&url])
        .cache_dir(cache.path())
        .retry(fast_retry().deadline(Duration::from_millis(500)))
        .circuit_breaker(BreakerPolicy::default().cool_down(Duration::from_millis(300)))
        .build()
        .unwrap();
    client.fetch().await.unwrap();
    server.stop().await;

    let mut app = client.watch::<App>().await.unwrap();
    assert!(app.is_from_cache());
    assert!(client.status().is_from_cache());
    assert_eq!(app.get().db.pool, 60);

    // While it is down, the config moves on; the server comes back on the same port.
    let sha = set_pool(&repo, "75");
    let server = LocalServer::start(repo.path(), addr).await;
    let new = changed(&mut app, "the config after the restart").await;
    assert_eq!(new.db.pool, 75);
    assert_eq!(app.version(), sha);
    assert!(!app.is_from_cache());
    assert_eq!(app.origin(), Origin::Server { url: url.clone() });
    assert!(!client.status().is_from_cache());

    // And the cache now holds the new config.
    server.stop().await;
    let config = client.fetch().await.unwrap();
    assert!(config.is_from_cache());
    assert_eq!(config.version(), sha);
}

// ---------------------------------------------------------------------------
// Bad servers (scripted)

#[tokio::test]
async fn retries_5xx_408_and_429_then_succeeds() {
    let fake = Fake::start(Behaviour::http(|hit| match hit {
        0 => Reply::Status(
            503,
            "{\"error\":\"not_ready\",\"message\":\"loading\"}".into(),
        ),
        1 => Reply::Status(429, "slow down".into()),
        2 => Reply::Status(408, String::new()),
        3 => Reply::Status(500, "<html>oops</html>".into()),
        _ => Reply::Ok(config_body("v1", "d1", json!({"db": {"pool": 5}}))),
    }))
    .await;
    let client = builder(&[&fake.base]).build().unwrap();
    let config = client.fetch().await.unwrap();
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 5);
    assert_eq!(fake.hits(), 5);
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    for status in [400u16, 401, 403, 404, 422] {
        let fake = Fake::start(Behaviour::http(move |_| {
            Reply::Status(status, "{\"error\":\"nope\",\"message\":\"no\"}".into())
        }))
        .await;
        let err = builder(&[&fake.base])
            .build()
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Status { status: s, body: Some(b), .. } if *s == status && b.error == "nope"),
            "{status}: {err}"
        );
        assert_eq!(fake.hits(), 1, "{status}");
    }
}

#[tokio::test]
async fn garbage_answers_are_retried_then_reported() {
    for body in [
        "{not json".to_string(),
        "[1, 2, 3]".to_string(),
        json!({"service": "orders"}).to_string(),
        String::new(),
    ] {
        let b = body.clone();
        let fake = Fake::start(Behaviour::http(move |_| Reply::Ok(b.clone()))).await;
        let client = builder(&[&fake.base])
            .retry(fast_retry().max_attempts(3))
            .build()
            .unwrap();
        let err = client.fetch().await.unwrap_err();
        match &err {
            Error::Unavailable {
                attempts,
                last: Some(last),
                ..
            } => {
                assert_eq!(*attempts, 3);
                assert!(matches!(**last, Error::Protocol { .. }), "{body:?}: {last}");
            }
            other => panic!("{body:?}: {other}"),
        }
        assert_eq!(fake.hits(), 3, "{body:?}");
    }
}

#[tokio::test]
async fn the_retry_deadline_bounds_a_fetch() {
    let fake = Fake::start(Behaviour::http(|_| Reply::Status(503, String::new()))).await;
    let client = builder(&[&fake.base])
        .retry(
            RetryPolicy::default()
                .initial_delay(Duration::from_millis(100))
                .deadline(Duration::from_millis(800)),
        )
        .circuit_breaker(BreakerPolicy::default().failure_threshold(100))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unavailable(), "{err}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(fake.hits() >= 2, "retried: {}", fake.hits());
}

#[tokio::test]
async fn the_request_timeout_cuts_a_hanging_server() {
    let fake = Fake::start(Behaviour::http(|_| Reply::Hang)).await;
    let client = builder(&[&fake.base])
        .request_timeout(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &err {
        Error::Unavailable {
            last: Some(last), ..
        } => {
            assert!(matches!(**last, Error::Transport { .. }), "{last}")
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_token_is_sent_as_a_bearer_token() {
    let fake = Fake::start(Behaviour::http(|_| {
        Reply::Ok(config_body("v1", "d1", json!({})))
    }))
    .await;
    builder(&[&fake.base])
        .token("s3cret")
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    assert_eq!(fake.last_auth(), Some("Bearer s3cret".to_string()));
}

/// Malformed frames, frames for other pairs, configs that do not deserialize, an
/// error frame, then an abrupt close: the watch keeps its last good value, records
/// each problem, reconnects and resumes by digest.
#[tokio::test]
async fn watch_survives_a_misbehaving_websocket() {
    let first = vec![
        Step::Expect,
        Step::Text("this is not json".into()),
        Step::Binary(vec![0xff, 0x00, 0x13]),
        Step::Text(json!({"op": "config", "service": "orders"}).to_string()),
        Step::Text(frame("other", "prod", "vX", "dX", json!({"pool": 1}))),
        Step::Text(frame("orders", "prod", "v2", "d2", json!({"pool": "many"}))),
        Step::Text(
            json!({"op": "error", "service": "orders", "env": "prod", "error": "forbidden", "message": "no"})
                .to_string(),
        ),
        Step::Text(frame("orders", "prod", "v3", "d3", json!({"pool": 3}))),
        // then the socket is dropped without a close frame
    ];
    let second = vec![
        Step::Expect,
        Step::Text(frame("orders", "prod", "v4", "d4", json!({"pool": 4}))),
        Step::Hold,
    ];
    let fake = Fake::start(Behaviour {
        http: Arc::new(|_| Reply::Ok(config_body("v1", "d1", json!({"pool": 1})))),
        ws: vec![first, second],
    })
    .await;
    let client = builder(&[&fake.base]).build().unwrap();

    #[derive(Debug, Deserialize)]
    struct Pool {
        pool: u32,
    }
    let mut w = client.watch::<Pool>().await.unwrap();
    assert_eq!(w.get().pool, 1);
    let mut events = fake.events.lock().await;

    let sub = next_event(&mut events).await;
    assert_eq!(
        sub,
        Event::Subscribed(ClientFrame::Subscribe {
            service: "orders".into(),
            env: "prod".into(),
            digest: Some("d1".into()),
            instance: Some("client-test".into()),
            labels: Some(Default::default()),
        })
    );
    let v = changed(&mut w, "v3").await;
    assert_eq!(v.pool, 3);
    assert_eq!(w.version(), "v3");

    // Reconnected after the abrupt close, resuming from the digest it holds.
    let sub = next_event(&mut events).await;
    assert_eq!(
        sub,
        Event::Subscribed(ClientFrame::Subscribe {
            service: "orders".into(),
            env: "prod".into(),
            digest: Some("d3".into()),
            instance: Some("client-test".into()),
            labels: Some(Default::default()),
        })
    );
    assert_eq!(changed(&mut w, "v4").await.pool, 4);
    assert!(w.last_error().is_none());
}

#[tokio::test]
async fn a_bad_frame_sets_last_error_and_keeps_the_value() {
    let fake = Fake::start(Behaviour {
        http: Arc::new(|_| Reply::Ok(config_body("v1", "d1", json!({"pool": 1})))),
        ws: vec![vec![
            Step::Expect,
            Step::Text(frame("orders", "prod", "v2", "d2", json!({"pool": "many"}))),
            Step::Hold,
        ]],
    })
    .await;
    let client = builder(&[&fake.base]).build().unwrap();
    #[derive(Debug, Deserialize)]
    struct Pool {
        #[allow(dead_code)]
        pool: u32,
    }
    let w = client.watch::<Pool>().await.unwrap();
    wait_until(WATCH_DEADLINE, "the rejection", || async {
        w.last_error().is_some()
    })
    .await;
    assert!(matches!(
        *w.last_error().unwrap(),
        Error::Deserialize { .. }
    ));
    assert_eq!(w.version(), "v1");
    assert_eq!(w.digest(), "d1");

    // An error frame is recorded as the server's error.
    let fake = Fake::start(Behaviour {
        http: Arc::new(|_| Reply::Ok(config_body("v1", "d1", json!({"pool": 1})))),
        ws: vec![vec![
            Step::Expect,
            Step::Text(
                json!({"op": "error", "service": "orders", "env": "prod", "error": "forbidden", "message": "not yours"})
                    .to_string(),
            ),
            Step::Hold,
        ]],
    })
    .await;
    let client = builder(&[&fake.base]).build().unwrap();
    let w = client.watch::<Pool>().await.unwrap();
    wait_until(WATCH_DEADLINE, "the error frame", || async {
        w.last_error().is_some()
    })
    .await;
    assert!(matches!(&*w.last_error().unwrap(), Error::Server { code, .. } if code == "forbidden"));
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_task() {
    let fake = Fake::start(Behaviour {
        http: Arc::new(|_| Reply::Ok(config_body("v1", "d1", json!({"pool": 1})))),
        ws: vec![vec![Step::Expect, Step::Hold]],
    })
    .await;
    let client = builder(&[&fake.base]).build().unwrap();
    let w = client.watch::<Value>().await.unwrap();
    let rx = w.subscribe();
    let mut events = fake.events.lock().await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed(_)
    ));
    drop(w);
    assert_eq!(next_event(&mut events).await, Event::Closed);
    // subscribers see the channel close
    tokio::time::timeout(WATCH_DEADLINE, async {
        let mut rx = rx;
        while rx.changed().await.is_ok() {}
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// The scripted fake server

#[derive(Clone)]
enum Reply {
    Ok(String),
    Status(u16, String),
    Hang,
}

#[derive(Clone, Debug)]
enum Step {
    /// Read one client frame and report it.
    Expect,
    Text(String),
    Binary(Vec<u8>),
    /// Keep the socket until the client closes it, then report [`Event::Closed`].
    Hold,
}

#[derive(Debug, PartialEq)]
enum Event {
    Subscribed(ClientFrame),
    Closed,
}

type HttpFn = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Behaviour {
    http: HttpFn,
    /// Script of the n-th WebSocket connection (the last one repeats).
    ws: Vec<Vec<Step>>,
}

impl Behaviour {
    fn http(f: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Behaviour {
            http: Arc::new(f),
            ws: Vec::new(),
        }
    }
}

struct FakeState {
    http: HttpFn,
    ws: Vec<Vec<Step>>,
    hits: AtomicUsize,
    connections: AtomicUsize,
    auth: std::sync::Mutex<Option<String>>,
    events: mpsc::UnboundedSender<Event>,
}

struct Fake {
    base: String,
    state: Arc<FakeState>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    _stop: oneshot::Sender<()>,
}

impl Fake {
    async fn start(behaviour: Behaviour) -> Fake {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            http: behaviour.http,
            ws: behaviour.ws,
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            auth: std::sync::Mutex::new(None),
            events: tx,
        });
        let app = axum::Router::new()
            .route("/v1/config/{service}/{env}", get(fake_config))
            .route("/v1/watch", get(fake_watch))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Fake {
            base: format!("http://{addr}"),
            state,
            events: tokio::sync::Mutex::new(rx),
            _stop: stop,
        }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn last_auth(&self) -> Option<String> {
        self.state.auth.lock().unwrap().clone()
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WATCH_DEADLINE, rx.recv())
        .await
        .expect("an event from the fake server")
        .expect("fake server alive")
}

async fn fake_config(
    State(state): State<Arc<FakeState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let hit = state.hits.fetch_add(1, Ordering::SeqCst);
    *state.auth.lock().unwrap() = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    match (state.http)(hit) {
        Reply::Ok(body) => (StatusCode::OK, body).into_response(),
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

async fn fake_watch(
    State(state): State<Arc<FakeState>>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    let n = state.connections.fetch_add(1, Ordering::SeqCst);
    let script = match state.ws.get(n).or(state.ws.last()) {
        Some(s) => s.clone(),
        None => return StatusCode::NOT_FOUND.into_response(),
    };
    upgrade.on_upgrade(move |socket| run_script(socket, script, state))
}

async fn run_script(mut socket: WebSocket, script: Vec<Step>, state: Arc<FakeState>) {
    for step in script {
        match step {
            Step::Expect => {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let Message::Text(t) = msg {
                        let frame: ClientFrame = serde_json::from_str(t.as_str()).unwrap();
                        // Answers to configs pushed before are not what a step expects.
                        if matches!(
                            frame,
                            ClientFrame::Applied { .. } | ClientFrame::Rejected { .. }
                        ) {
                            continue;
                        }
                        let _ = state.events.send(Event::Subscribed(frame));
                        break;
                    }
                }
            }
            Step::Text(t) => {
                if socket.send(Message::text(t)).await.is_err() {
                    return;
                }
            }
            Step::Binary(b) => {
                if socket.send(Message::binary(b)).await.is_err() {
                    return;
                }
            }
            Step::Hold => {
                while let Some(Ok(msg)) = socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
                let _ = state.events.send(Event::Closed);
                return;
            }
        }
    }
    // Dropped without a close frame.
}

fn config_body(version: &str, digest: &str, values: Value) -> String {
    json!({
        "service": "orders", "env": "prod", "label": "main",
        "version": version, "digest": digest, "values": values, "sources": ["orders-prod.yml"]
    })
    .to_string()
}

fn frame(service: &str, env: &str, version: &str, digest: &str, values: Value) -> String {
    serde_json::to_string(&ServerFrame::Config {
        service: service.into(),
        env: env.into(),
        version: version.into(),
        digest: digest.into(),
        values,
        rollout: None,
    })
    .unwrap()
}

// ---------------------------------------------------------------------------
// A stalled server

/// A TCP proxy to a real server that can freeze: frozen, it stops forwarding in both
/// directions and takes new connections without answering, closing nothing. Seen
/// from the client, a server (or network path) that stalled.
struct StallingProxy {
    addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(target: SocketAddr) -> StallingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count, freeze) = (accepted.clone(), frozen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let frozen = freeze.subscribe();
                tokio::spawn(async move {
                    if *frozen.borrow() {
                        // Held open, never answered.
                        let _held = &client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        Self::pump(cr, sw, frozen.clone()),
                        Self::pump(sr, cw, frozen)
                    );
                });
            }
        });
        StallingProxy {
            addr,
            frozen,
            accepted,
            task,
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = tokio::select! {
                read = from.read(&mut buf) => read,
                _ = frozen.wait_for(|f| *f) => break,
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            if *frozen.borrow() || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if *frozen.borrow() {
            // Stalled: keep both ends open, forward nothing.
            let _ends = (from, to);
            std::future::pending::<()>().await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watch stream that stalls (the server behind it freezes, the TCP connection
/// stays) is noticed within the silence timeout, counted against that server's
/// breaker, and the client moves on to the next server — without trying the stalled
/// one first — where it gets the newest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watch_fails_over_to_the_next_server() {
    let repo = repo();
    let a = TestServer::start(settings(repo.path_str())).await;
    let b = TestServer::start(settings(repo.path_str())).await;
    let proxy = StallingProxy::start(a.addr()).await;
    let silence = Duration::from_secs(1);
    let client = builder(&[&proxy.url(), &b.base_url()])
        .watch_ping_interval(Duration::from_millis(200))
        .watch_silence_timeout(silence)
        .build()
        .unwrap();
    let mut app = client.watch::<App>().await.unwrap();
    // Through the proxy: a commit arrives from it.
    set_pool(&repo, "70");
    assert_eq!(changed(&mut app, "pool 70").await.db.pool, 70);
    assert_eq!(
        app.origin(),
        Origin::Server { url: proxy.url() },
        "{:?}",
        client.status()
    );
    let st: StatusResponse = a.get_json("/v1/status").await;
    assert_eq!(st.connections, 1, "{st:?}");
    // A quiet but healthy stream is not taken for a stalled one: its pings get pongs.
    // (A measurement window three silence timeouts long, not a wait for something.)
    let before = proxy.accepted();
    tokio::time::sleep(silence * 3).await;
    set_pool(&repo, "75");
    assert_eq!(changed(&mut app, "pool 75").await.db.pool, 75);
    assert_eq!(app.origin(), Origin::Server { url: proxy.url() });
    assert_eq!(proxy.accepted(), before, "a healthy stream was dropped");

    proxy.freeze();
    let frozen_at = Instant::now();
    let accepted = proxy.accepted();
    let sha = set_pool(&repo, "80");
    let new = changed(&mut app, "pool 80 after the stall").await;
    let took = frozen_at.elapsed();
    eprintln!("stall → newest value from the next server: {took:?}");
    assert_eq!(new.db.pool, 80);
    assert_eq!(app.version(), sha);
    assert_eq!(app.origin(), Origin::Server { url: b.base_url() });
    assert!(
        took < silence + Duration::from_secs(5),
        "the stall took {took:?} to notice and fail over"
    );
    assert_eq!(
        proxy.accepted(),
        accepted,
        "the stalled server was tried again before the next one"
    );
    let status = client.status();
    assert!(
        status.servers[0].consecutive_failures >= 1,
        "the stall did not count against the stalled server: {status:?}"
    );
}
