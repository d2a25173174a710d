//! Helpers shared by the end-to-end tests (`mod common;` in each test file).
//!
//! - [`git`](mod@git): [`git()`] and [`TestRepo`], a real git repository in a temp dir,
//!   driven by the real `git` binary (shared with the server's own tests).
//! - [`ws`]: [`ws::Watcher`], a `/v1/watch` WebSocket client (shared likewise).
//! - [`TestServer`]: a real confhub server on `127.0.0.1:0`, ready before `start` returns,
//!   shut down on drop.
//! - [`GitDaemon`]: `git daemon` on a loopback port, killed on drop.
//! - [`wait_until`] / [`wait_for`]: poll with a deadline instead of sleeping.
//!
//! Every test file compiles this module on its own and uses a different part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confhub_client::wire::ErrorBody;
use confhub_server::Settings;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a server gets to become ready, and a poll loop gets by default.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

pub mod git;
// Not every test file uses both.
#[allow(unused_imports)]
pub use git::{git, TestRepo};
pub mod ws;

// ---------------------------------------------------------------------------
// server

/// A `[[tokens]]` entry: `name`, the sha256 of the bearer `secret`, one `scope`.
pub fn token(name: &str, secret: &str, scope: &str) -> confhub_server::auth::TokenConfig {
    confhub_server::auth::TokenConfig {
        name: name.into(),
        sha256: confhub_server::auth::token_hash(secret),
        scopes: vec![scope.into()],
    }
}

/// Settings for serving `repo`, with a fresh temp `data_dir` filled in by [`TestServer::start`].
pub fn settings(repo: impl Into<String>) -> Settings {
    Settings::new(repo)
}

/// [`settings`] with a 50 ms live debounce, so that a push follows a commit quickly.
pub fn fast_settings(repo: impl Into<String>) -> Settings {
    let mut settings = Settings::new(repo);
    settings.live.debounce = Duration::from_millis(50);
    settings
}

/// The files most tests start from: a shared greeting, and `orders` with a `prod`
/// override (`db.pool` 10, and 20 in `prod`).
pub const BASELINE_FILES: [(&str, &str); 3] = [
    ("application.yml", "greeting: hello\n"),
    ("orders.yml", "db:\n  pool: 10\n"),
    ("orders-prod.yml", "db:\n  pool: 20\n"),
];

/// A repository with [`BASELINE_FILES`] and `extra` (written after them), in one commit
/// "baseline".
pub fn baseline_repo(extra: &[(&str, &str)]) -> TestRepo {
    let repo = TestRepo::new();
    for (path, contents) in BASELINE_FILES.iter().chain(extra) {
        repo.write(path, contents);
    }
    repo.commit("baseline");
    repo
}

/// A confhub server running on the test's runtime, on `127.0.0.1:<free port>`.
///
/// Dropping it triggers a graceful shutdown; [`TestServer::stop`] also waits for it.
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), confhub_server::ServerError>>>,
    client: reqwest::Client,
    /// Kept alive as long as the server: its clones and caches live here.
    _data_dir: Option<TempDir>,
}

impl TestServer {
    /// Bind `127.0.0.1:0`, spawn `confhub_server::run`, and wait (at most [`DEADLINE`]) until
    /// `GET /readyz` answers 200.
    ///
    /// Unless the caller chose a `data_dir` of its own, the server gets a fresh temp one,
    /// deleted with the `TestServer`: no two servers ever share one.
    pub async fn start(mut settings: Settings) -> TestServer {
        let data_dir = if settings.data_dir == Settings::new("").data_dir {
            let dir = tempfile::Builder::new()
                .prefix("confhub-data-")
                .tempdir()
                .expect("temp data dir");
            settings.data_dir = dir.path().to_path_buf();
            Some(dir)
        } else {
            None
        };

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(confhub_server::run(listener, settings, async move {
            let _ = rx.await;
        }));
        // The server closes a keep-alive connection idle for `limits.header_read_timeout`
        // (10 s); a pooled one reused at that moment fails its request. The client lets
        // go of idle connections first, as a client of any HTTP server should.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(DEADLINE)
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let mut server = TestServer {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
            client,
            _data_dir: data_dir,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let mut last;
        loop {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let result = self.handle.take().expect("handle").await;
                panic!("server stopped before it was ready: {result:?}");
            }
            match self.client.get(self.url("/readyz")).send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return,
                Ok(resp) => {
                    let status = resp.status();
                    last = format!("{status}: {}", resp.text().await.unwrap_or_default());
                }
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "server at {} not ready within {DEADLINE:?}; last /readyz: {last}",
                self.addr
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Shut down and wait (at most [`DEADLINE`]) for `run` to return; returns its result.
    pub async fn stop(mut self) -> Result<(), confhub_server::ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("server handle");
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("server did not stop within the deadline")
            .expect("server task panicked")
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A [`ws::Watcher`] on `/v1/watch`, with no credentials.
    pub async fn watch(&self) -> ws::Watcher {
        ws::Watcher::connect(&self.ws_url("/v1/watch")).await
    }

    /// A [`ws::Watcher`] on `/v1/watch` with an `Authorization` header (the whole value).
    pub async fn watch_as(&self, authorization: &str) -> ws::Watcher {
        ws::Watcher::connect_as(&self.ws_url("/v1/watch"), authorization).await
    }

    /// An HTTP client (no proxy, [`DEADLINE`] timeout).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with one extra header.
    pub async fn get_with(&self, path: &str, header: &str, value: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(header, value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path`, assert 200, return the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let resp = self.get(path).await;
        let status = resp.status();
        let body = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET path`, assert 200, deserialize the JSON body.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> T {
        let body = self.get_text(path).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `GET path`, assert `status` and a JSON [`ErrorBody`], return it.
    pub async fn get_error(&self, path: &str, status: u16) -> ErrorBody {
        let resp = self.get(path).await;
        expect_error(path, resp, status).await
    }
}

/// Assert `resp` has `status` and a JSON [`ErrorBody`]; return the body.
pub async fn expect_error(what: &str, resp: reqwest::Response, status: u16) -> ErrorBody {
    let got = resp.status();
    let content_type = header(&resp, "content-type");
    let body = resp.text().await.expect("body");
    assert_eq!(got.as_u16(), status, "{what}: body {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: error content-type {content_type:?}, body {body}"
    );
    let err: ErrorBody = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: not an ErrorBody ({e}): {body}"));
    assert!(!err.message.is_empty(), "{what}: empty error message");
    err
}

/// A response header as a string ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_string())
        .unwrap_or_default()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// git daemon

/// `git daemon` serving every repository under `base` at `git://127.0.0.1:<port>/`.
/// Killed on drop.
pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    /// Start the daemon on a free port and wait (at most [`DEADLINE`]) until the port
    /// accepts connections.
    pub fn start(base: &Path) -> GitDaemon {
        let mut failures = Vec::new();
        // A free port can be taken by someone else between our probe and the daemon's
        // bind: try a few.
        for _ in 0..5 {
            match Self::spawn(base, free_port()) {
                Ok(daemon) => return daemon,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("git daemon did not start: {failures:?}");
    }

    /// Start the daemon on `port`, chosen by the caller: a remote that goes away and comes
    /// back must come back at the same URL.
    pub fn on(base: &Path, port: u16) -> GitDaemon {
        Self::spawn(base, port).unwrap_or_else(|failure| panic!("git daemon: {failure}"))
    }

    /// The daemon on `port`, accepting connections; an error when it exits first (the
    /// port is taken).
    fn spawn(base: &Path, port: u16) -> Result<GitDaemon, String> {
        let base = base.to_str().expect("utf-8 path");
        // Run `git-daemon` itself, not `git daemon`: the `git` wrapper would leave its
        // `git-daemon` child running when killed.
        let exec_path = PathBuf::from(git(Path::new("/"), &["--exec-path"]));
        let daemon = exec_path.join("git-daemon");
        assert!(daemon.exists(), "no git-daemon at {}", daemon.display());
        let mut child = Command::new(&daemon)
            .args([
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={base}"),
                base,
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn git daemon");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("git daemon status") {
                return Err(format!("port {port}: exited with {status}"));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(GitDaemon { child, port });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("git daemon on port {port} did not accept connections within {DEADLINE:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The daemon's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `git://127.0.0.1:<port>/<path>` (path relative to the base path).
    pub fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

// ---------------------------------------------------------------------------
// polling

/// Poll `check` every [`POLL_INTERVAL`] until it returns true; panic naming `what` if
/// `timeout` passes first.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Poll `check` every [`POLL_INTERVAL`] until it returns `Some(value)`; return the value.
/// Panic naming `what` if `timeout` passes first.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---------------------------------------------------------------------------
// values

/// Flatten nested JSON the Spring way: `a.b.c` for maps, `a.b[0]` for lists.
/// Empty maps and lists produce no key.
pub fn flatten(value: &Value) -> Map<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = Map::new();
    walk("", value, &mut out);
    out
}

/// A scalar as it appears in a text format: strings bare, numbers and booleans as JSON.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// True when `s` is 64 lowercase hex digits (a sha256).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `s` is 40 lowercase hex digits (a git sha-1).
pub fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The workspace root (where `tests/` and `examples/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// HTTP/2 (the h2 crate's client, over TCP or TLS)

/// An HTTP/2 client connection whose frame driver runs on its own task.
pub struct H2Conn {
    /// Opens streams; kept alive here, since an h2 client closes its connection once the
    /// last `SendRequest` is gone (that would look like the server closing it).
    pub send: h2::client::SendRequest<bytes::Bytes>,
    /// Sends PINGs and waits for their acknowledgements.
    pub ping: h2::PingPong,
    /// Ends when the connection does.
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

/// Speak HTTP/2 on `io` (prior knowledge, or after ALPN `h2`).
pub async fn h2_connect<T>(io: T) -> H2Conn
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut conn) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    let ping = conn.ping_pong().expect("the connection's PingPong");
    H2Conn {
        send,
        ping,
        driver: tokio::spawn(conn),
    }
}

impl H2Conn {
    /// One request whose body goes out as `chunks`, `pause` apart (no body when empty);
    /// returns the status and the whole response body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        chunks: &[&[u8]],
        pause: Duration,
    ) -> (u16, Vec<u8>) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://confhub{path}"))
            .body(())
            .unwrap();
        let mut send = tokio::time::timeout(DEADLINE, self.send.clone().ready())
            .await
            .expect("a stream slot in time")
            .expect("a stream slot");
        let (response, mut body) = send.send_request(req, chunks.is_empty()).unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            body.send_data(bytes::Bytes::copy_from_slice(chunk), i + 1 == chunks.len())
                .expect("request body sent");
        }
        let response = tokio::time::timeout(DEADLINE, response)
            .await
            .expect("a response in time")
            .expect("a response");
        let status = response.status().as_u16();
        let mut recv = response.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = tokio::time::timeout(DEADLINE, recv.data())
            .await
            .expect("the response body in time")
        {
            let chunk = chunk.expect("response body");
            let _ = recv.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        (status, out)
    }

    /// Send a PING every `every` (a well-behaved idle client) until the server closes the
    /// connection; panics if it is still open after `within`. Returns the PINGs answered
    /// and how long the connection lived.
    pub async fn ping_until_closed(self, every: Duration, within: Duration) -> (u32, Duration) {
        let H2Conn {
            send: _kept_open,
            mut ping,
            mut driver,
        } = self;
        let started = Instant::now();
        let mut pongs = 0;
        loop {
            tokio::select! {
                _ = &mut driver => return (pongs, started.elapsed()),
                () = tokio::time::sleep(every) => {
                    if let Ok(Ok(_)) = tokio::time::timeout(DEADLINE, ping.ping(h2::Ping::opaque())).await {
                        pongs += 1;
                    }
                }
            }
            assert!(
                started.elapsed() < within,
                "HTTP/2 connection still open after {within:?} of PINGs only ({pongs} answered)"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The npm Spring client (`tests/node`)

/// Install `tests/node`'s locked dependencies when they are missing (fresh machine).
pub fn ensure_node_modules() {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let node_dir = workspace_root().join("tests/node");
    if node_dir
        .join("node_modules/cloud-config-client/package.json")
        .exists()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&node_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run npm (is Node.js installed?)");
    assert!(
        out.status.success(),
        "npm ci --prefix {} failed:\n{}{}",
        node_dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `tests/node/read-config.js` (the npm client `cloud-config-client`) against the
/// server, reading `keys` with `config.get`; return its JSON output.
pub async fn node_load(
    server: &TestServer,
    name: &str,
    profiles: &str,
    label: Option<&str>,
    keys: &[&str],
) -> Value {
    node_load_with(server, name, profiles, label, keys, &[]).await
}

/// [`node_load`], with extra request `headers` given to the client's `headers` option.
pub async fn node_load_with(
    server: &TestServer,
    name: &str,
    profiles: &str,
    label: Option<&str>,
    keys: &[&str],
    headers: &[(&str, &str)],
) -> Value {
    tokio::task::spawn_blocking(ensure_node_modules)
        .await
        .unwrap();
    let script = workspace_root().join("tests/node/read-config.js");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .args(["--endpoint", &server.base_url()])
        .args(["--name", name])
        .args(["--profiles", profiles])
        .args(["--keys", &keys.join(",")])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(label) = label {
        cmd.args(["--label", label]);
    }
    if !headers.is_empty() {
        let map: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        cmd.args(["--headers", &Value::Object(map).to_string()]);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("node finished within 60 s")
        .expect("run node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node read-config.js {name} {profiles} {label:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
