//! Fault injection: real servers (`confhub_server::run`), real git remotes (`git daemon`,
//! `file://`) and real faults — a remote that is down, a read-only data dir, pack files
//! deleted or truncated between runs and while running, a broken head at restart, a
//! tracked branch deleted on the remote.
//!
//! A restart is a second server on the first one's data dir. Status and readiness are
//! read as JSON values, so each assertion names exactly the fields it is about.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_for, wait_until, GitDaemon, TestRepo, TestServer};
use confhub_server::Settings;
use serde_json::Value;
use tempfile::TempDir;

/// Generous: the tests must pass on a loaded 2-core machine.
const LIVE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// helpers

/// A work repository and its bare `origin.git` (under `base`, for `git daemon`).
struct Origin {
    work: TestRepo,
    base: TempDir,
}

impl Origin {
    /// Envs `prod` and `dev` declared; services `orders` and `billing`.
    fn new() -> Origin {
        let work = TestRepo::new();
        work.write("confhub.yml", "environments: [prod, dev]\n")
            .write("application.yml", "greeting: hello\n")
            .write("orders.yml", "db:\n  pool: 10\n")
            .write("orders-prod.yml", "db:\n  pool: 20\n")
            .write("billing.yml", "currency: EUR\n");
        work.commit("baseline");
        let base = tempfile::Builder::new()
            .prefix("confhub-origin-")
            .tempdir()
            .unwrap();
        work.clone_bare(&base.path().join("origin.git"));
        let bare = base.path().join("origin.git");
        work.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
        Origin { work, base }
    }

    fn bare(&self) -> PathBuf {
        self.base.path().join("origin.git")
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Commit `rel` = `text` and push the branch; returns the sha.
    fn push(&self, branch: &str, rel: &str, text: &str, msg: &str) -> String {
        self.work.write(rel, text);
        let sha = self.work.commit(msg);
        self.work.git(&["push", "-q", "origin", branch]);
        sha
    }
}

/// Settings with a data dir of the test's (shared by the runs of a restart), a fast
/// retry and a short poll.
fn settings(repo: impl Into<String>, data: &Path) -> Settings {
    let mut s = Settings::new(repo);
    s.data_dir = data.to_path_buf();
    s.poll = Duration::from_secs(2);
    s.live.fetch_retry = Duration::from_millis(100);
    s.live.debounce = Duration::from_millis(50);
    s
}

async fn json(server: &TestServer, path: &str) -> Value {
    server.get_json(path).await
}

/// `GET /v1/status` (200 expected).
async fn status(server: &TestServer) -> Value {
    json(server, "/v1/status").await
}

/// `(pool, version)` of orders/prod.
async fn orders_prod(server: &TestServer) -> (i64, String) {
    let v = json(server, "/v1/config/orders/prod").await;
    (
        v["values"]["db"]["pool"].as_i64().unwrap_or(-1),
        v["version"].as_str().unwrap_or_default().to_string(),
    )
}

/// The errors of `/v1/status` or `/readyz` with this code.
fn errors_with<'a>(body: &'a Value, code: &str) -> Vec<&'a Value> {
    body["errors"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["error"] == code).collect())
        .unwrap_or_default()
}

/// The clone's directory inside the data dir.
fn clone_dir(data: &Path) -> PathBuf {
    std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "git"))
        .unwrap_or_else(|| panic!("no clone in {}", data.display()))
}

fn packs(clone: &Path) -> Vec<PathBuf> {
    let dir = clone.join("objects").join("pack");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no pack files in {}", dir.display());
    out
}

/// Cut every pack file of the clone to its 12-byte header, so every object in it is
/// unreadable. (Cutting at half the size left it to chance whether the commit and trees a
/// read needs lay before the cut: their offsets move with each commit's timestamp, and a
/// read that needed only those then succeeded without seeing any damage.)
fn truncate_packs(clone: &Path) {
    for pack in packs(clone) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap_or_else(|e| panic!("open {} for writing: {e}", pack.display()));
        file.set_len(12).unwrap();
    }
}

/// Delete every pack file (and its index) of the clone.
fn delete_packs(clone: &Path) {
    for pack in packs(clone) {
        std::fs::remove_file(&pack).unwrap();
        std::fs::remove_file(pack.with_extension("idx")).unwrap();
    }
}

/// Entries of the data dir that a repair leaves behind when it does not clean up.
fn leftovers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".repair-") || n.contains(".damaged-"))
        .collect()
}

/// A server that is not expected to become ready soon: `confhub_server::run` on a port
/// of its own, without the readiness wait of [`TestServer::start`].
struct Unready {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), confhub_server::ServerError>>,
}

impl Unready {
    async fn spawn(settings: Settings) -> Unready {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(confhub_server::run(listener, settings, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(common::DEADLINE)
            .build()
            .unwrap();
        Unready {
            base,
            client,
            stop: Some(tx),
            handle,
        }
    }

    /// Status code and JSON body of `GET path`; panics if the server has exited.
    async fn get(&self, path: &str) -> (u16, Value) {
        assert!(!self.handle.is_finished(), "the server exited");
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(LIVE, self.handle)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server result");
    }
}

/// Makes a directory tree truly read-only for this process, and undoes it on drop.
///
/// The tests run as root, and root ignores permission bits (`CAP_DAC_OVERRIDE`): a
/// `chmod -R a-w` would not stop a single write. The immutable attribute (`chattr +i`)
/// stops root too (only changing the attribute needs `CAP_LINUX_IMMUTABLE`), so that is
/// what is used as root; as another user the permission bits suffice. Either way the
/// guard proves the fault is real by failing to create a file.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn make(dir: &Path) -> ReadOnly {
        let root = Command::new("id").arg("-u").output().unwrap();
        let root = String::from_utf8_lossy(&root.stdout).trim() == "0";
        let (cmd, args): (&str, [&str; 2]) = if root {
            ("chattr", ["-R", "+i"])
        } else {
            ("chmod", ["-R", "a-w"])
        };
        let out = Command::new(cmd).args(args).arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd} {args:?} {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let guard = ReadOnly(dir.to_path_buf(), root);
        let probe = clone_dir(dir).join("probe");
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable",
            dir.display()
        );
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let (cmd, args): (&str, [&str; 2]) = if self.1 {
            ("chattr", ["-R", "-i"])
        } else {
            ("chmod", ["-R", "u+w"])
        };
        let _ = Command::new(cmd).args(args).arg(&self.0).status();
    }
}

// ---------------------------------------------------------------------------
// item 8: the remote is down, or the data dir is read-only

/// A restart while the remote (`git daemon`) is down starts from the clone: the last
/// fetched commit is served, the failed fetch is in `/v1/status` and retried with
/// backoff, and the remote coming back is picked up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_remote_down_serves_the_clone() {
    let origin = Origin::new();
    let port = common::free_port();
    let daemon = GitDaemon::on(origin.base.path(), port);
    let url = format!("git://127.0.0.1:{port}/origin.git");
    let data = tempfile::tempdir().unwrap();
    let first = origin.work.head();

    let server = TestServer::start(settings(&url, data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, first.clone()));
    server.stop().await.unwrap();

    drop(daemon);
    let server = TestServer::start(settings(&url, data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, first.clone()));
    let failing = wait_for(LIVE, "two failed fetches in /v1/status", || async {
        let st = status(&server).await;
        let fetch = st["last_fetch"].clone();
        (fetch["consecutive_failures"].as_u64() >= Some(2)).then_some(st)
    })
    .await;
    let fetch = &failing["last_fetch"];
    assert_eq!(fetch["ok"], false, "{failing}");
    assert!(
        fetch["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{failing}"
    );
    assert!(fetch["next_at"].is_string(), "{failing}");
    assert_eq!(failing["version"], first.as_str());
    assert_eq!(json(&server, "/readyz").await["status"], "ready");

    // Back, with a new commit: the retry finds it.
    let second = origin.push("main", "orders-prod.yml", "db:\n  pool: 21\n", "pool 21");
    let _daemon = GitDaemon::on(origin.base.path(), port);
    wait_until(
        LIVE,
        "the new commit after the remote came back",
        || async { orders_prod(&server).await == (21, second.clone()) },
    )
    .await;
    // The fetch's outcome is recorded once the refresh that swaps the snapshot in has
    // returned, so the new commit can be served a moment before /v1/status says so.
    wait_until(LIVE, "the recovered fetch in /v1/status", || async {
        let st = status(&server).await;
        st["last_fetch"]["ok"] == true && st["last_fetch"]["consecutive_failures"] == 0
    })
    .await;
    server.stop().await.unwrap();
}

/// No clone and the remote down: the server stays up — `/healthz` answers, `/readyz` is
/// a 503 saying why, every API says why — and keeps trying until the remote is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_clone_and_the_remote_down_stays_up_and_retries() {
    let origin = Origin::new();
    let data = tempfile::tempdir().unwrap();
    // Not there yet: the remote is "down" until it is moved into place.
    let hidden = origin.base.path().join("hidden.git");
    std::fs::rename(origin.bare(), &hidden).unwrap();

    let server = Unready::spawn(settings(origin.url(), data.path())).await;
    let (code, body) = wait_for(LIVE, "/readyz to answer with a reason", || async {
        let (code, body) = server.get("/readyz").await;
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("attempt 2"))
            .then_some((code, body))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "starting", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("fetching") && reason.contains("origin.git"),
        "{reason}"
    );
    let (code, body) = server.get("/healthz").await;
    assert_eq!((code, body), (200, Value::String("ok".into())));
    let (code, body) = server.get("/v1/status").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "not_ready", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("origin.git")),
        "{body}"
    );
    let (code, body) = server.get("/v1/config/orders/prod").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );

    std::fs::rename(&hidden, origin.bare()).unwrap();
    let body = wait_for(LIVE, "ready once the remote is there", || async {
        let (code, body) = server.get("/v1/config/orders/prod").await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(body["values"]["db"]["pool"], 20);
    assert_eq!(body["version"], origin.work.head().as_str());
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.get("reason").is_none(), "{body}");
    server.stop().await;
}

/// With tokens configured, why the server is not ready names the repository only to an
/// admin: `/readyz` needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_for_not_being_ready_is_for_admins() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("nowhere.git");
    let mut s = settings(format!("file://{}", missing.display()), data.path());
    s.tokens = vec![
        common::token("ops", "tok-admin", "admin"),
        common::token("orders", "tok-orders", "read:orders/*"),
    ];
    let server = Unready::spawn(s).await;
    let reason = |token: Option<&'static str>| {
        let server = &server;
        async move {
            let mut req = server.client.get(format!("{}/readyz", server.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 503);
            let body: Value = resp.json().await.unwrap();
            body["reason"].as_str().map(str::to_string)
        }
    };
    let admin = wait_for(LIVE, "a reason for the admin", || async {
        reason(Some("tok-admin")).await
    })
    .await;
    assert!(admin.contains("nowhere.git"), "{admin}");
    for token in [None, Some("tok-orders")] {
        let shown = reason(token).await.unwrap_or_default();
        assert!(
            !shown.contains("nowhere.git") && shown.contains("/v1/status"),
            "{token:?}: {shown}"
        );
    }
    server.stop().await;
}

/// A data dir that cannot be written: the existing clone is served, the fetch that
/// cannot write is reported and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_data_dir_serves_the_clone() {
    let origin = Origin::new();
    let data = tempfile::tempdir().unwrap();
    let first = origin.work.head();
    let server = TestServer::start(settings(origin.url(), data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, first.clone()));
    server.stop().await.unwrap();

    origin.push("main", "orders-prod.yml", "db:\n  pool: 22\n", "pool 22");
    let _read_only = ReadOnly::make(data.path());
    let server = TestServer::start(settings(origin.url(), data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, first.clone()));
    let st = wait_for(LIVE, "a failed fetch in /v1/status", || async {
        let st = status(&server).await;
        (st["last_fetch"]["consecutive_failures"].as_u64() >= Some(1)).then_some(st)
    })
    .await;
    assert_eq!(st["last_fetch"]["ok"], false, "{st}");
    assert!(st["last_fetch"]["error"].is_string(), "{st}");
    assert_eq!(st["version"], first.as_str(), "{st}");
    assert_eq!(json(&server, "/readyz").await["status"], "ready");
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// item 9: a damaged clone

/// Pack files deleted, then truncated, between runs: the restarted server notices before
/// it is ready, clones afresh beside the damaged clone, swaps the fresh one in, serves
/// correct config and reports the repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_clone_at_restart_is_repaired() {
    let origin = Origin::new();
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(origin.url(), data.path())).await;
    let base = origin.work.head();
    let second = origin.push("main", "billing.yml", "currency: USD\n", "usd");
    wait_until(LIVE, "the second commit", || async {
        status(&server).await["version"] == second.as_str()
    })
    .await;
    server.stop().await.unwrap();

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 2] = [("deleted", delete_packs), ("truncated", truncate_packs)];
    for (what, damage) in damages {
        damage(&clone_dir(data.path()));
        let server = TestServer::start(settings(origin.url(), data.path())).await;
        assert_eq!(orders_prod(&server).await, (20, second.clone()), "{what}");
        let billing = json(&server, "/v1/config/billing/dev").await;
        assert_eq!(billing["values"]["currency"], "USD", "{what}: {billing}");
        let first = json(&server, &format!("/v1/config/billing/dev?label={base}")).await;
        assert_eq!(first["values"]["currency"], "EUR", "{what}: {first}");
        let st = status(&server).await;
        assert_eq!(st["clone"]["repairs"], 1, "{what}: {st}");
        assert_eq!(st["clone"]["last_repair"]["ok"], true, "{what}: {st}");
        assert!(
            st["clone"]["last_repair"]["reason"].is_string(),
            "{what}: {st}"
        );
        assert_eq!(st["errors"], Value::Array(Vec::new()), "{what}: {st}");
        let ready = json(&server, "/readyz").await;
        assert_eq!(ready["errors"], Value::Array(Vec::new()), "{what}: {ready}");
        assert_eq!(leftovers(data.path()), Vec::<String>::new(), "{what}");
        server.stop().await.unwrap();
    }
}

/// Pack files truncated while the server runs: the first read that hits them (a label
/// other than the tracked branch) fails, the clone is verified, repaired and swapped in,
/// and the same read then answers correctly; new commits keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_clone_while_running_is_repaired() {
    let origin = Origin::new();
    origin.work.tag("v1");
    origin.work.git(&["push", "-q", "origin", "v1"]);
    let daemon = GitDaemon::start(origin.base.path());
    let data = tempfile::tempdir().unwrap();
    let url = daemon.url("origin.git");
    let server = TestServer::start(settings(&url, data.path())).await;
    let head = origin.work.head();

    truncate_packs(&clone_dir(data.path()));
    // Tracked pairs are served from memory all along.
    assert_eq!(orders_prod(&server).await, (20, head.clone()));
    wait_until(LIVE, "orders/prod at v1 after the repair", || async {
        let resp = server.get("/v1/config/orders/prod?label=v1").await;
        if resp.status() != 200 {
            return false;
        }
        let v: Value = resp.json().await.unwrap();
        v["values"]["db"]["pool"] == 20 && v["values"]["greeting"] == "hello"
    })
    .await;
    let st = status(&server).await;
    assert!(st["clone"]["repairs"].as_u64() >= Some(1), "{st}");
    assert_eq!(errors_with(&st, "damaged_clone").len(), 0, "{st}");

    let next = origin.push("main", "orders-prod.yml", "db:\n  pool: 23\n", "pool 23");
    wait_until(LIVE, "a commit after the repair", || async {
        orders_prod(&server).await == (23, next.clone())
    })
    .await;
    server.stop().await.unwrap();
    assert_eq!(leftovers(data.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// item 10: the last good config survives a restart

/// A server started while the newest commit breaks a pair serves that pair's config
/// from the newest commit at which it resolved, and reports the break at the head;
/// other pairs serve the head. A walk of depth 1 does not reach back far enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_head_at_restart_serves_the_last_good_config() {
    let repo = TestRepo::new();
    repo.write("confhub.yml", "environments: [prod, dev]\n")
        .write("application.yml", "greeting: hello\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n")
        .write("billing.yml", "currency: EUR\n");
    let good = repo.commit("good");
    repo.write("orders-prod.yml", "db:\n  pool: [unclosed\n");
    repo.commit("break orders/prod");
    repo.write("billing.yml", "currency: USD\n");
    let head = repo.commit("billing in dollars");

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str(), data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, good.clone()));
    let dev = json(&server, "/v1/config/orders/dev").await;
    assert_eq!(
        (
            dev["values"]["db"]["pool"].as_i64(),
            dev["version"].as_str()
        ),
        (Some(10), Some(head.as_str()))
    );
    let billing = json(&server, "/v1/config/billing/prod").await;
    assert_eq!(billing["values"]["currency"], "USD");
    assert_eq!(billing["version"], head.as_str());
    for body in [status(&server).await, json(&server, "/readyz").await] {
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{body}");
        let e = &errors[0];
        assert_eq!(
            (e["service"].as_str(), e["env"].as_str()),
            (Some("orders"), Some("prod")),
            "{body}"
        );
        assert_eq!(e["version"], head.as_str(), "{body}");
        assert_eq!(e["file"], "orders-prod.yml", "{body}");
    }
    server.stop().await.unwrap();

    // The walk is bounded: one commit back is the broken one.
    let mut shallow = settings(repo.path_str(), data.path());
    shallow.recovery.last_good_depth = 1;
    let server = TestServer::start(shallow).await;
    let err = server.get_error("/v1/config/orders/prod", 422).await;
    assert_eq!(err.file.as_deref(), Some("orders-prod.yml"));
    server.stop().await.unwrap();

    // Fixed at the head: served from the head again.
    repo.write("orders-prod.yml", "db:\n  pool: 24\n");
    let fixed = repo.commit("fix");
    let server = TestServer::start(settings(repo.path_str(), data.path())).await;
    assert_eq!(orders_prod(&server).await, (24, fixed));
    assert_eq!(status(&server).await["errors"], Value::Array(Vec::new()));
    server.stop().await.unwrap();
}

/// A broken `confhub.yml` at the head at restart: every pair serves its config from the
/// newest commit whose manifest parses; the break is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifest_at_restart_serves_the_last_good_configs() {
    let repo = TestRepo::new();
    repo.write("confhub.yml", "environments: [prod, dev]\n")
        .write("application.yml", "greeting: hello\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n")
        .write("billing.yml", "currency: EUR\n");
    let good = repo.commit("good");
    repo.write("confhub.yml", "environments: [prod, dev\n");
    let head = repo.commit("break the manifest");

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(repo.path_str(), data.path())).await;
    assert_eq!(orders_prod(&server).await, (20, good.clone()));
    let billing = json(&server, "/v1/config/billing/dev").await;
    assert_eq!(
        (
            billing["values"]["currency"].as_str(),
            billing["version"].as_str()
        ),
        (Some("EUR"), Some(good.as_str()))
    );
    let services = json(&server, "/v1/services").await;
    assert_eq!(
        services["environments"],
        serde_json::json!(["dev", "prod"]),
        "{services}"
    );
    let st = status(&server).await;
    let errors = st["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{st}");
    assert_eq!(
        (errors[0]["service"].as_str(), errors[0]["version"].as_str()),
        (Some("*"), Some(head.as_str())),
        "{st}"
    );
    assert_eq!(errors[0]["file"], "confhub.yml", "{st}");
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// item 13: a deleted tracked branch

/// The tracked branch is deleted on the remote: the last fetched commit keeps being
/// served and the loss is reported in `/v1/status` and `/readyz`; a restart starts
/// from that commit; a branch pushed again is followed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_branch_keeps_serving_and_survives_a_restart() {
    let origin = Origin::new();
    origin.work.checkout_new("release");
    let release = origin.push("release", "orders-prod.yml", "db:\n  pool: 30\n", "release");
    origin.work.checkout("main");
    let data = tempfile::tempdir().unwrap();
    let tracked = || {
        let mut s = settings(origin.url(), data.path());
        s.branch = Some("release".into());
        s
    };
    let server = TestServer::start(tracked()).await;
    assert_eq!(orders_prod(&server).await, (30, release.clone()));

    origin
        .work
        .git(&["push", "-q", "origin", "--delete", "release"]);
    let st = wait_for(LIVE, "the missing branch in /v1/status errors", || async {
        let st = status(&server).await;
        (!errors_with(&st, "branch_missing").is_empty()).then_some(st)
    })
    .await;
    let missing = errors_with(&st, "branch_missing")[0].clone();
    assert!(
        missing["message"].as_str().unwrap().contains("release"),
        "{st}"
    );
    assert_eq!(missing["version"], release.as_str(), "{st}");
    assert_eq!(st["version"], release.as_str(), "{st}");
    let ready = json(&server, "/readyz").await;
    assert_eq!(errors_with(&ready, "branch_missing").len(), 1, "{ready}");
    assert_eq!(orders_prod(&server).await, (30, release.clone()));
    server.stop().await.unwrap();

    let server = TestServer::start(tracked()).await;
    assert_eq!(orders_prod(&server).await, (30, release.clone()));
    let st = status(&server).await;
    assert_eq!(errors_with(&st, "branch_missing").len(), 1, "{st}");
    assert_eq!(st["label"], "release", "{st}");

    origin.work.checkout("release");
    let back = origin.push("release", "orders-prod.yml", "db:\n  pool: 31\n", "back");
    wait_until(LIVE, "the branch pushed again", || async {
        orders_prod(&server).await == (31, back.clone())
    })
    .await;
    wait_until(LIVE, "the error to clear", || async {
        errors_with(&status(&server).await, "branch_missing").is_empty()
    })
    .await;
    server.stop().await.unwrap();
}

/// The same for a local repository while running: the last commit of the deleted branch
/// stays served and the loss is reported (a local repository is never written to, so
/// there is nothing to remember across a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_local_branch_keeps_serving() {
    let origin = Origin::new();
    let repo = &origin.work;
    repo.checkout_new("release");
    repo.write("orders-prod.yml", "db:\n  pool: 40\n");
    let release = repo.commit("release");
    repo.checkout("main");
    let data = tempfile::tempdir().unwrap();
    let mut s = settings(repo.path_str(), data.path());
    s.branch = Some("release".into());
    let server = TestServer::start(s).await;
    assert_eq!(orders_prod(&server).await, (40, release.clone()));

    repo.git(&["branch", "-q", "-D", "release"]);
    let st = wait_for(LIVE, "the missing branch in /v1/status errors", || async {
        let st = status(&server).await;
        (!errors_with(&st, "branch_missing").is_empty()).then_some(st)
    })
    .await;
    assert_eq!(st["version"], release.as_str(), "{st}");
    assert_eq!(orders_prod(&server).await, (40, release.clone()));
    let ready = json(&server, "/readyz").await;
    assert_eq!(errors_with(&ready, "branch_missing").len(), 1, "{ready}");
    server.stop().await.unwrap();
}
