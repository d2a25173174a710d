//! Live updates end to end (ARCHITECTURE.md §3, §6): real commits made with `git`, a real server,
//! real WebSocket subscribers.
//!
//! Negative evidence ("this subscriber got nothing") is never a sleep: a later frame
//! that must come first if nothing else did (a second commit, or a marker subscription)
//! proves it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::ws::{self, Message, Watcher};
use common::{fast_settings, wait_until, TestRepo, TestServer};
use confhub_client::wire::{ReadyResponse, ServerFrame, StatusResponse};
use confhub_server::Settings;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the tests must pass on a loaded 2-core machine.
const LIVE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// helpers

/// The baseline repository: one env (`prod`), services `orders` and `billing`.
fn base_repo() -> TestRepo {
    common::baseline_repo(&[
        ("application-prod.yml", "tier: prod\n"),
        ("billing.yml", "currency: EUR\n"),
    ])
}

async fn status(server: &TestServer) -> StatusResponse {
    server.get_json("/v1/status").await
}

/// Wait until the server serves `sha` on the tracked branch.
async fn wait_version(server: &TestServer, sha: &str) {
    let what = format!("the server to serve {sha}");
    wait_until(LIVE, &what, || async move {
        status(server).await.version == sha
    })
    .await;
}

async fn config_json(server: &TestServer, service: &str, env: &str) -> Value {
    server
        .get_json(&format!("/v1/config/{service}/{env}"))
        .await
}

async fn start(settings: Settings) -> TestServer {
    TestServer::start(settings).await
}

// ---------------------------------------------------------------------------
// tests

/// 120 subscribers of one pair all get a commit; subscribers of an untouched pair get
/// nothing for it (their next frame is the later commit that touches them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_subscribers_get_the_commit_untouched_pairs_get_nothing() {
    let repo = base_repo();
    let server = start(fast_settings(repo.path_str())).await;

    const N: usize = 120;
    let mut orders = Vec::with_capacity(N);
    for _ in 0..N {
        orders.push(server.watch().await);
    }
    for w in &mut orders {
        w.subscribe("orders", "prod", None).await;
    }
    for (i, w) in orders.iter_mut().enumerate() {
        let c = w
            .next_config(&format!("initial frame of subscriber {i}"))
            .await;
        assert_eq!((c.service.as_str(), c.env.as_str()), ("orders", "prod"));
        assert_eq!(c.values["db"]["pool"], 20);
    }
    let mut billing = Vec::new();
    for _ in 0..5 {
        let mut w = server.watch().await;
        w.subscribe("billing", "prod", None).await;
        let c = w.next_config("billing initial").await;
        assert_eq!(c.values["currency"], "EUR");
        billing.push(w);
    }
    // One connection watching both pairs.
    let mut both = server.watch().await;
    both.subscribe("orders", "prod", None).await;
    both.subscribe("billing", "prod", None).await;
    let first = both.next_config("both: first initial").await;
    let second = both.next_config("both: second initial").await;
    assert_eq!(
        {
            let mut s = vec![first.service, second.service];
            s.sort();
            s
        },
        ["billing", "orders"]
    );

    let st = status(&server).await;
    let count = |service: &str| {
        st.subscribers
            .iter()
            .find(|s| s.service == service && s.env == "prod")
            .map_or(0, |s| s.subscribers)
    };
    assert_eq!(count("orders"), N as u64 + 1);
    assert_eq!(count("billing"), 6);

    // Commit 1 touches orders only.
    repo.write("orders-prod.yml", "db:\n  pool: 60\n");
    let started = Instant::now();
    let sha1 = repo.commit("orders: bigger pool");
    let mut slowest = Duration::ZERO;
    let got = futures_util::future::join_all(orders.iter_mut().enumerate().map(|(i, w)| {
        let sha1 = sha1.clone();
        async move {
            let c = w.next_config(&format!("subscriber {i} after commit")).await;
            (i, c, started.elapsed(), sha1)
        }
    }))
    .await;
    for (i, c, took, sha1) in got {
        assert_eq!(c.values["db"]["pool"], 60, "subscriber {i}");
        assert_eq!(c.version, sha1, "subscriber {i}");
        slowest = slowest.max(took);
    }
    eprintln!("commit → config frame at all {N} subscribers: {slowest:?}");
    let c = both.next_config("both after commit 1").await;
    assert_eq!(
        (c.service.as_str(), c.values["db"]["pool"].as_i64()),
        ("orders", Some(60))
    );

    // Commit 2 touches billing only. If anything had been pushed to billing
    // subscribers for commit 1, it would come before this.
    repo.write("billing.yml", "currency: USD\n");
    let sha2 = repo.commit("billing: dollars");
    for (i, w) in billing.iter_mut().enumerate() {
        let c = w.next_config(&format!("billing subscriber {i}")).await;
        assert_eq!(c.service, "billing");
        assert_eq!(c.values["currency"], "USD");
        assert_eq!(c.version, sha2);
    }
    let c = both.next_config("both after commit 2").await;
    assert_eq!(
        (c.service.as_str(), c.values["currency"].as_str()),
        ("billing", Some("USD"))
    );
    // ...and the orders subscribers got nothing for commit 2: a third commit touching
    // orders is the next thing each of them sees.
    repo.write("orders-prod.yml", "db:\n  pool: 61\n");
    let sha3 = repo.commit("orders: one more");
    for (i, w) in orders.iter_mut().enumerate().take(10) {
        let c = w
            .next_config(&format!("subscriber {i} after commit 3"))
            .await;
        assert_eq!(
            (c.values["db"]["pool"].as_i64(), c.version.as_str()),
            (Some(61), sha3.as_str())
        );
    }

    // Shutdown with live subscribers is prompt, and they are told "going away".
    let stopping = Instant::now();
    server.stop().await.expect("clean stop");
    eprintln!(
        "shutdown with {} live connections: {:?}",
        N + 6,
        stopping.elapsed()
    );
    let close = both.closed("both at shutdown").await;
    assert_eq!(close.map(|c| c.0), Some(1001));
}

/// A broken commit is not pushed and the last good config keeps being served; the error
/// names the file; the fixing commit is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_commit_keeps_last_good_and_the_fix_is_pushed() {
    let repo = base_repo();
    let good_sha = repo.head();
    let server = start(fast_settings(repo.path_str())).await;
    let mut w = server.watch().await;
    w.subscribe("orders", "prod", None).await;
    assert_eq!(w.next_config("initial").await.values["db"]["pool"], 20);

    repo.write("orders-prod.yml", "db:\n  pool: [60\n  oops: {\n");
    let bad_sha = repo.commit("broken yaml");
    wait_version(&server, &bad_sha).await;

    let st = status(&server).await;
    let err = st
        .errors
        .iter()
        .find(|e| e.service == "orders" && e.env == "prod")
        .unwrap_or_else(|| panic!("no error for orders/prod in {:?}", st.errors));
    assert_eq!(
        err.error.file.as_deref(),
        Some("orders-prod.yml"),
        "{err:?}"
    );
    assert_eq!(err.version, bad_sha);
    assert!(err.error.line.is_some(), "{err:?}");
    assert!(err.error.message.contains("orders-prod.yml"), "{err:?}");
    // billing is unaffected.
    assert!(
        st.errors.iter().all(|e| e.service == "orders"),
        "{:?}",
        st.errors
    );

    let ready: ReadyResponse = server.get_json("/readyz").await;
    assert!(
        ready
            .errors
            .iter()
            .any(|e| e.error.file.as_deref() == Some("orders-prod.yml") && e.version == bad_sha),
        "{ready:?}"
    );
    let served = config_json(&server, "orders", "prod").await;
    assert_eq!(served["values"]["db"]["pool"], 20);
    assert_eq!(served["version"], good_sha.as_str());

    repo.write("orders-prod.yml", "db:\n  pool: 70\n");
    let fix_sha = repo.commit("fix yaml");
    // The broken commit pushed nothing: the next frame is the fix.
    let c = w.next_config("after the fix").await;
    assert_eq!(c.values["db"]["pool"], 70);
    assert_eq!(c.version, fix_sha);
    let st = status(&server).await;
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    assert_eq!(
        config_json(&server, "orders", "prod").await["values"]["db"]["pool"],
        70
    );
    server.stop().await.expect("clean stop");
}

/// Resume by digest: a stale digest gets the latest at once, the current one gets
/// nothing. Also: pairs outside the snapshot (several envs) follow commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_digest_and_multi_env_pairs() {
    let repo = base_repo();
    repo.write("application-eu.yml", "region: eu-west-1\n");
    repo.commit("eu");
    let server = start(fast_settings(repo.path_str())).await;
    let stale = config_json(&server, "orders", "prod").await["digest"]
        .as_str()
        .unwrap()
        .to_string();

    repo.write("orders-prod.yml", "db:\n  pool: 30\n");
    let sha = repo.commit("pool 30");
    wait_version(&server, &sha).await;
    let current = config_json(&server, "orders", "prod").await;
    let digest = current["digest"].as_str().unwrap().to_string();
    assert_ne!(digest, stale);

    let mut a = server.watch().await;
    a.subscribe("orders", "prod", Some(&stale)).await;
    let c = a.next_config("stale digest").await;
    assert_eq!(
        (c.digest.as_str(), c.version.as_str()),
        (digest.as_str(), sha.as_str())
    );
    assert_eq!(c.values["db"]["pool"], 30);

    let mut b = server.watch().await;
    b.subscribe("orders", "prod", Some(&digest)).await;
    b.subscribe("billing", "prod", None).await; // marker
    let c = b.next_config("current digest, then marker").await;
    assert_eq!(c.service, "billing", "the current digest must get nothing");

    // Several envs: not a snapshot pair, resolved by lookup and recomputed on commits.
    let mut m = server.watch().await;
    m.subscribe("orders", "prod,eu", None).await;
    let c = m.next_config("multi-env initial").await;
    assert_eq!(c.env, "prod,eu");
    assert_eq!(
        (c.values["region"].as_str(), c.values["tier"].as_str()),
        (Some("eu-west-1"), Some("prod"))
    );
    repo.write("application-eu.yml", "region: eu-central-1\n");
    repo.commit("move region");
    let c = m.next_config("multi-env after commit").await;
    assert_eq!(c.values["region"], "eu-central-1");
    // Subscribers with the current digest got nothing for that commit (orders/prod is
    // unchanged): the next frame b sees is the next orders change.
    repo.write("orders-prod.yml", "db:\n  pool: 31\n");
    repo.commit("pool 31");
    let c = b.next_config("b after pool 31").await;
    assert_eq!(
        (c.service.as_str(), c.values["db"]["pool"].as_i64()),
        ("orders", Some(31))
    );
    server.stop().await.expect("clean stop");
}

fn github_post(server: &TestServer, body: &str) -> reqwest::RequestBuilder {
    server
        .client()
        .post(server.url("/v1/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(body.to_string())
}

/// A remote repository polled only once an hour: a signed webhook triggers the fetch
/// and the push; a forged or unsigned one is a 401 and triggers nothing. A failing
/// fetch is visible in /v1/status and the last fetched commit keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_triggers_fetch_of_remote() {
    let work = base_repo();
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = bare_dir.path().join("origin.git");
    work.clone_bare(&bare);
    work.git(&["remote", "add", "origin", bare.to_str().unwrap()]);

    let mut settings = fast_settings(format!("file://{}", bare.display()));
    settings.poll = Duration::from_secs(3600);
    settings.webhook_secret = Some("s3cret-for-tests".into());
    settings.live.fetch_retry = Duration::from_millis(200);
    let server = start(settings).await;
    let first = status(&server).await;
    assert_eq!(first.source, "git-remote");
    assert_eq!(first.poll_seconds, 3600);

    let mut w = server.watch().await;
    w.subscribe("orders", "prod", None).await;
    let initial = w.next_config("initial").await;
    assert_eq!(initial.values["db"]["pool"], 20);

    work.write("orders-prod.yml", "db:\n  pool: 80\n");
    let sha = work.commit("pool 80");
    work.git(&["push", "-q", "origin", "main"]);

    let body = r#"{"ref":"refs/heads/main","after":"x"}"#;
    let forged = confhub_server::github_signature("not-the-secret", body.as_bytes());
    let resp = github_post(&server, body)
        .header("x-hub-signature-256", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = github_post(&server, body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = server
        .client()
        .post(server.url("/v1/webhook"))
        .header("x-gitlab-token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let st = status(&server).await;
    assert_eq!((st.webhooks.rejected, st.webhooks.accepted), (3, 0));
    assert_eq!(st.last_fetch.as_ref().map(|f| f.count), Some(0), "{st:?}");
    assert_eq!(st.version, initial.version);

    let signed = confhub_server::github_signature("s3cret-for-tests", body.as_bytes());
    let webhook_at = Instant::now();
    let resp = github_post(&server, body)
        .header("x-hub-signature-256", signed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let c = w.next_config("after the signed webhook").await;
    eprintln!("signed webhook → config frame: {:?}", webhook_at.elapsed());
    assert_eq!(
        (c.values["db"]["pool"].as_i64(), c.version.as_str()),
        (Some(80), sha.as_str())
    );
    let st = status(&server).await;
    let fetch = st.last_fetch.clone().expect("fetch status");
    // The three refused calls triggered nothing: only the signed one fetched.
    assert_eq!(fetch.count, 1, "{st:?}");
    assert!(
        fetch.ok && fetch.at.is_some() && fetch.last_success.is_some(),
        "{fetch:?}"
    );
    assert_eq!(st.webhooks.accepted, 1);

    // GitLab style: the token itself.
    work.write("orders-prod.yml", "db:\n  pool: 81\n");
    let sha = work.commit("pool 81");
    work.git(&["push", "-q", "origin", "main"]);
    let resp = server
        .client()
        .post(server.url("/v1/webhook"))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", "s3cret-for-tests")
        .body(r#"{"ref":"refs/heads/main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let c = w.next_config("after the GitLab webhook").await;
    assert_eq!(
        (c.values["db"]["pool"].as_i64(), c.version.as_str()),
        (Some(81), sha.as_str())
    );

    // The remote goes away: fetch fails, is retried with backoff, shows in status, and
    // the last fetched commit keeps being served.
    let moved = bare_dir.path().join("moved.git");
    std::fs::rename(&bare, &moved).unwrap();
    let signed = confhub_server::github_signature("s3cret-for-tests", body.as_bytes());
    let resp = github_post(&server, body)
        .header("x-hub-signature-256", signed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let failing = common::wait_for(LIVE, "a failed fetch in /v1/status", || async {
        let st = status(&server).await;
        st.last_fetch
            .clone()
            .filter(|f| f.consecutive_failures >= 2)
    })
    .await;
    assert!(!failing.ok && failing.error.is_some(), "{failing:?}");
    assert!(failing.next_at.is_some(), "{failing:?}");
    let served = config_json(&server, "orders", "prod").await;
    assert_eq!(
        (
            served["values"]["db"]["pool"].as_i64(),
            served["version"].as_str()
        ),
        (Some(81), Some(sha.as_str()))
    );

    // Back again: the retry (no webhook needed) recovers.
    std::fs::rename(&moved, &bare).unwrap();
    work.write("orders-prod.yml", "db:\n  pool: 82\n");
    let sha = work.commit("pool 82");
    work.git(&["push", "-q", "origin", "main"]);
    let c = w.next_config("after the remote came back").await;
    assert_eq!(
        (c.values["db"]["pool"].as_i64(), c.version.as_str()),
        (Some(82), sha.as_str())
    );
    let st = status(&server).await;
    assert!(
        st.last_fetch
            .as_ref()
            .is_some_and(|f| f.ok && f.consecutive_failures == 0),
        "{st:?}"
    );
    server.stop().await.expect("clean stop");
}

/// `--dev` directory: saving a file pushes the change; the version is a content hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_directory_save_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| std::fs::write(dir.path().join(rel), text).unwrap();
    write("application.yml", "greeting: hello\n");
    write("application-dev.yml", "debug: true\n");
    write("orders.yml", "db:\n  pool: 5\n");
    let mut settings = fast_settings(dir.path().to_str().unwrap());
    settings.dev = true;
    let server = start(settings).await;
    let st = status(&server).await;
    assert_eq!(st.source, "dir");
    assert!(!st.watching.is_empty(), "{st:?}");

    let mut w = server.watch().await;
    w.subscribe("orders", "dev", None).await;
    let before = w.next_config("initial").await;
    assert_eq!(before.values["db"]["pool"], 5);

    write("orders.yml", "db:\n  pool: 6\n");
    let after = w.next_config("after saving orders.yml").await;
    assert_eq!(after.values["db"]["pool"], 6);
    assert_ne!(after.version, before.version);
    assert_eq!(after.version.len(), 64, "content hash: {}", after.version);

    // A new file that touches the pair is seen too.
    write("orders-dev.yml", "db:\n  pool: 7\n");
    assert_eq!(
        w.next_config("after adding orders-dev.yml").await.values["db"]["pool"],
        7
    );
    server.stop().await.expect("clean stop");
}

/// Bad input gets an error frame or a close with a reason, and never affects other
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_not_panics() {
    let repo = base_repo();
    let server = start(fast_settings(repo.path_str())).await;
    let mut bystander = server.watch().await;
    bystander.subscribe("orders", "prod", None).await;
    bystander.next_config("bystander initial").await;

    let mut w = server.watch().await;
    w.send(Message::text("this is not json")).await;
    assert_eq!(w.next_error("not json").await.0, "bad_frame");
    w.send_json(json!({"op": "explode", "service": "orders"}))
        .await;
    let (code, msg) = w.next_error("unknown op").await;
    assert_eq!(code, "unknown_op");
    assert!(msg.contains("explode"), "{msg}");
    w.send_json(json!({"op": "subscribe"})).await;
    assert_eq!(w.next_error("missing fields").await.0, "bad_frame");
    w.send_json(json!([1, 2, 3])).await;
    assert_eq!(w.next_error("not an object").await.0, "bad_frame");
    w.send(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(w.next_error("binary").await.0, "bad_frame");
    w.subscribe("../etc", "prod", None).await;
    assert_eq!(w.next_error("bad service name").await.0, "bad_name");
    w.subscribe("orders", "prod/../x", None).await;
    assert_eq!(w.next_error("bad env name").await.0, "bad_name");
    w.subscribe("nosuch", "prod", None).await;
    assert_eq!(w.next_error("unknown service").await.0, "unknown_service");
    // Still usable.
    w.subscribe("orders", "prod", None).await;
    assert_eq!(
        w.next_config("after bad input").await.values["db"]["pool"],
        20
    );

    // A flood of subscriptions: the first 256 are served, the rest refused.
    let mut flood = server.watch().await;
    for i in 0..300 {
        flood.subscribe("orders", &format!("e{i}"), None).await;
    }
    let (mut configs, mut refused) = (0, 0);
    for i in 0..300 {
        match flood.next(&format!("flood reply {i}")).await {
            ServerFrame::Config { .. } => configs += 1,
            ServerFrame::Error { error, .. } => {
                assert_eq!(error, "too_many_subscriptions");
                refused += 1;
            }
        }
    }
    assert_eq!((configs, refused), (256, 44));
    flood
        .send_json(json!({"op": "unsubscribe", "service": "orders", "env": "e0"}))
        .await;
    flood.subscribe("billing", "prod", None).await;
    assert_eq!(
        flood.next_config("after unsubscribing one").await.service,
        "billing"
    );

    // An oversized frame closes that connection with 1009, and only that one.
    let mut big = server.watch().await;
    big.send(Message::text("x".repeat(64 * 1024))).await;
    let close = big.closed("oversized frame").await;
    assert_eq!(close.map(|c| c.0), Some(1009));

    // Everyone else is fine: the next commit reaches them.
    repo.write("orders-prod.yml", "db:\n  pool: 21\n");
    repo.commit("pool 21");
    assert_eq!(
        bystander.next_config("bystander").await.values["db"]["pool"],
        21
    );
    assert_eq!(w.next_config("w").await.values["db"]["pool"], 21);
    // Not a WebSocket request: a JSON error, not a crash.
    let resp = server.get("/v1/watch").await;
    assert_eq!(resp.status().as_u16() / 100, 4);
    server.stop().await.expect("clean stop");
}

/// A subscriber that stops reading is disconnected once its queue is full; the others
/// keep getting every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_dropped_without_slowing_others() {
    let repo = base_repo();
    let mut settings = fast_settings(repo.path_str());
    settings.live.ws_send_buffer = 1;
    settings.live.ws_max_subscriptions = 2;
    let server = start(settings).await;

    // The slow one: subscribes to two pairs and never reads again.
    let mut slow = ws::open(&server.ws_url("/v1/watch"), None).await.unwrap();
    for service in ["orders", "billing"] {
        let sub = json!({"op": "subscribe", "service": service, "env": "prod", "digest": null});
        slow.send(Message::text(sub.to_string())).await.unwrap();
    }
    let mut fast = server.watch().await;
    fast.subscribe("orders", "prod", None).await;
    fast.subscribe("billing", "prod", None).await;
    fast.next_config("fast initial 1").await;
    fast.next_config("fast initial 2").await;
    wait_until(LIVE, "both subscribed", || async {
        status(&server)
            .await
            .subscribers
            .iter()
            .all(|s| s.subscribers == 2)
    })
    .await;

    // ~1 MiB values, changing every pair per commit, until the slow one's socket and
    // queue are full.
    let mut dropped_after = None;
    for round in 0..40 {
        let blob: String =
            std::iter::repeat_n(char::from(b'a' + (round % 26) as u8), 1 << 20).collect();
        repo.write(
            "application.yml",
            &format!("greeting: hello\nblob: {blob}{round}\n"),
        );
        let sha = repo.commit(&format!("blob {round}"));
        for i in 0..2 {
            let c = fast
                .next_config(&format!("fast round {round} frame {i}"))
                .await;
            assert_eq!(c.version, sha);
        }
        let st = status(&server).await;
        if st.subscribers.iter().all(|s| s.subscribers == 1) {
            dropped_after = Some(round);
            break;
        }
    }
    let round = dropped_after.expect("the slow consumer was never dropped");
    eprintln!(
        "slow consumer dropped after {} commits of ~2 MiB of frames",
        round + 1
    );

    // The slow client, reading at last, finds its connection ended.
    let ended = Watcher::new(slow)
        .within(LIVE)
        .closed("slow connection")
        .await
        .map(|c| c.0);
    // Told why, not cut off: the close goes out right after the frames already sent.
    assert_eq!(ended, Some(1013));
    server.stop().await.expect("clean stop");
}

/// The server pings; a peer that never answers is dropped after the idle timeout, one
/// that answers stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_are_dropped_live_ones_stay() {
    let repo = base_repo();
    let mut settings = fast_settings(repo.path_str());
    settings.live.ws_ping_interval = Duration::from_millis(200);
    settings.live.ws_idle_timeout = Duration::from_millis(1000);
    let server = start(settings).await;
    let mut live = server.watch().await;
    live.subscribe("orders", "prod", None).await;
    live.next_config("live initial").await;

    // A raw client: handshake, then silence.
    let mut raw = TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "GET /v1/watch HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr()
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let connected = Instant::now();
    let mut received = Vec::new();
    let ended = tokio::time::timeout(LIVE, async {
        let mut buf = [0u8; 4096];
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent peer was not dropped");
    let lived = connected.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    let frames = &received[head_end..];
    assert!(
        frames.contains(&0x89),
        "no ping before the drop: {frames:?}"
    );
    assert!(frames.contains(&0x88), "no close frame: {frames:?}");
    assert!(
        lived >= Duration::from_millis(1000),
        "dropped too early: {lived:?}"
    );

    // The live client answered every ping: it is still there and gets the next commit.
    repo.write("orders-prod.yml", "db:\n  pool: 22\n");
    repo.commit("pool 22");
    assert_eq!(
        live.next_config("live after commit").await.values["db"]["pool"],
        22
    );
    server.stop().await.expect("clean stop");
}

/// A burst of commits coalesces into one refresh of the newest commit: subscribers get
/// that one frame, none for the commits in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_commits_coalesces_to_the_newest() {
    let repo = base_repo();
    let mut settings = Settings::new(repo.path_str());
    // Wider than the gap between two commits of the burst, even on a loaded machine.
    settings.live.debounce = Duration::from_secs(2);
    let server = start(settings).await;
    let mut w = server.watch().await;
    w.subscribe("orders", "prod", None).await;
    w.next_config("initial").await;
    let before = status(&server).await.last_refresh.map_or(0, |r| r.count);

    // 20 commits from one shell loop, as fast as git goes.
    let script = "for i in $(seq 100 119); do printf 'db:\\n  pool: %s\\n' $i > orders-prod.yml; \
                  git commit -q -am \"pool $i\"; done";
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(repo.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let newest = repo.head();

    // Frames arrive in order: if the first one is the newest commit, none of the
    // 19 commits before it was pushed.
    let c = w.next_config("after the burst").await;
    assert_eq!(
        (c.version.as_str(), c.values["db"]["pool"].as_i64()),
        (newest.as_str(), Some(119))
    );
    let refreshes = status(&server).await.last_refresh.map_or(0, |r| r.count) - before;
    eprintln!("burst of 20 commits: 1 frame, {refreshes} refresh(es)");
    assert!(refreshes < 20, "{refreshes} refreshes for 20 commits");
    server.stop().await.expect("clean stop");
}

/// Measurement, not a check (run by hand): server memory per idle subscriber, and
/// commit → frame time for 2,100 subscribers, with the server in its own process.
///
/// `cargo build --release -p confhub-server && CONFHUB_BIN=target/release/confhub \
///  cargo test --release --test live -- --ignored --nocapture idle_subscriber_memory`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; needs CONFHUB_BIN"]
async fn idle_subscriber_memory() {
    fn rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    let repo = base_repo();
    let port = common::free_port();
    let bin = std::env::var("CONFHUB_BIN").expect("CONFHUB_BIN: path of the confhub binary");
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--repo", &repo.path_str(), "--listen", &listen])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let pid = child.id();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{listen}");
    let digest = common::wait_for(LIVE, "the server to start", || {
        let (http, base) = (&http, &base);
        async move {
            let resp = http
                .get(format!("{base}/v1/config/orders/prod"))
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            v["digest"].as_str().map(str::to_string)
        }
    })
    .await;
    let sub = json!({"op": "subscribe", "service": "orders", "env": "prod", "digest": digest})
        .to_string();
    let mut conns = Vec::new();
    let open = |n: usize| {
        let (sub, listen) = (sub.clone(), listen.clone());
        async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let mut ws = Watcher::connect(&format!("ws://{listen}/v1/watch")).await;
                ws.send(Message::text(sub.clone())).await;
                out.push(ws);
            }
            out
        }
    };
    conns.extend(open(100).await); // warm-up
    let subscribed = |n: u64| {
        let (http, base) = (&http, &base);
        async move {
            let st: StatusResponse = http
                .get(format!("{base}/v1/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            st.subscribers.first().map(|s| s.subscribers) == Some(n)
        }
    };
    wait_until(LIVE, "warm-up subscriptions", || subscribed(100)).await;
    let before = rss_kib(pid);
    const N: usize = 2000;
    conns.extend(open(N).await);
    wait_until(LIVE, "all subscriptions", || subscribed(N as u64 + 100)).await;
    let after = rss_kib(pid);
    eprintln!(
        "server RSS {before} KiB → {after} KiB for {N} more idle subscribers: {:.2} KiB each",
        (after - before) as f64 / N as f64
    );
    repo.write("orders-prod.yml", "db:\n  pool: 21\n");
    repo.commit("push to everyone");
    let started = Instant::now();
    for ws in &mut conns {
        ws.next_text("the push").await;
    }
    eprintln!(
        "commit → frame at all {} subscribers: {:?}",
        N + 100,
        started.elapsed()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `last_refresh.count` of `/v1/status`.
async fn refreshes(server: &TestServer) -> u64 {
    status(server).await.last_refresh.map_or(0, |r| r.count)
}

/// An idle server does not refresh: reading `HEAD` and the refs (and, with `--dev`,
/// every file) during a refresh raises file events, which are not changes. Saving or
/// committing still is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_do_not_refresh() {
    let repo = base_repo();
    let mut settings = fast_settings(repo.path_str());
    // The safety-net poll stays out of the measurement.
    settings.poll = Duration::from_secs(3600);
    let git = start(settings).await;

    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| std::fs::write(dir.path().join(rel), text).unwrap();
    write("application.yml", "greeting: hello\n");
    write("orders.yml", "db:\n  pool: 5\n");
    let mut settings = fast_settings(dir.path().to_str().unwrap());
    settings.dev = true;
    settings.poll = Duration::from_secs(3600);
    let dev = start(settings).await;

    // The look taken once watching started.
    for server in [&git, &dev] {
        wait_until(LIVE, "the first refresh", || async {
            refreshes(server).await >= 1
        })
        .await;
    }
    let before = (refreshes(&git).await, refreshes(&dev).await);
    // A measurement window, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = (
        refreshes(&git).await - before.0,
        refreshes(&dev).await - before.1,
    );
    assert_eq!(
        idle,
        (0, 0),
        "refreshes in 10 s without a change (git, --dev)"
    );

    // Changes are still seen.
    let mut w = git.watch().await;
    w.subscribe("orders", "prod", None).await;
    w.next_config("git initial").await;
    repo.write("orders-prod.yml", "db:\n  pool: 23\n");
    let sha = repo.commit("pool 23");
    let c = w.next_config("git after the commit").await;
    assert_eq!(
        (c.version.as_str(), c.values["db"]["pool"].as_i64()),
        (sha.as_str(), Some(23))
    );
    let mut w = dev.watch().await;
    w.subscribe("orders", "dev", None).await;
    w.next_config("dev initial").await;
    write("orders.yml", "db:\n  pool: 6\n");
    assert_eq!(
        w.next_config("dev after saving").await.values["db"]["pool"],
        6
    );
    // ...and the refreshes they cost stop with them.
    let after = (refreshes(&git).await, refreshes(&dev).await);
    let settled = Instant::now() + Duration::from_secs(2);
    let mut last = after;
    while Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = (refreshes(&git).await, refreshes(&dev).await);
    }
    assert!(
        last.0 - after.0 <= 1 && last.1 - after.1 <= 1,
        "still refreshing after the change: {after:?} → {last:?}"
    );
    git.stop().await.expect("clean stop");
    dev.stop().await.expect("clean stop");
}

/// A subscriber that stops reading, once dropped as a slow consumer, finds the
/// frames already on their way and then a close 1013 "slow consumer" when it reads
/// again — not an abrupt end of the connection (1006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_reads_close_1013() {
    let repo = base_repo();
    let mut settings = fast_settings(repo.path_str());
    settings.live.ws_send_buffer = 1;
    settings.live.ws_max_subscriptions = 2;
    let server = start(settings).await;

    // A small receive buffer: the path to this client fills after a few frames.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(server.addr()).await.unwrap();
    let mut slow = ws::open_on(&server.ws_url("/v1/watch"), stream, None).await;
    for service in ["orders", "billing"] {
        let sub = json!({"op": "subscribe", "service": service, "env": "prod", "digest": null});
        slow.send(Message::text(sub.to_string())).await.unwrap();
    }
    for i in 0..2 {
        let msg = tokio::time::timeout(LIVE, slow.next())
            .await
            .unwrap_or_else(|_| panic!("initial frame {i}"));
        assert!(matches!(msg, Some(Ok(Message::Text(_)))), "{msg:?}");
    }
    // From here on it reads nothing, until the server gave up on it.
    let mut dropped = false;
    for round in 0..40 {
        let blob: String =
            std::iter::repeat_n(char::from(b'a' + (round % 26) as u8), 1 << 20).collect();
        repo.write(
            "application.yml",
            &format!("greeting: hello\nblob: {blob}{round}\n"),
        );
        let sha = repo.commit(&format!("blob {round}"));
        wait_version(&server, &sha).await;
        // The server takes it out of every topic when it gives up on it.
        let look_until = Instant::now() + Duration::from_secs(2);
        while !dropped && Instant::now() < look_until {
            dropped = status(&server).await.subscribers.is_empty();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if dropped {
            break;
        }
    }
    assert!(dropped, "the slow consumer was never dropped");

    let mut frames = 0;
    let mut slow = Watcher::new(slow).within(LIVE);
    let ended = loop {
        match slow.next_or_close("slow connection").await {
            Err(Some(close)) => break Some(close),
            Ok(t) => {
                let frame: ServerFrame = serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("a damaged frame before the close: {e}"));
                assert!(matches!(frame, ServerFrame::Config { .. }), "{frame:?}");
                frames += 1;
            }
            Err(None) => {
                panic!("connection broke or ended without a close frame after {frames} frames")
            }
        }
    };
    eprintln!("slow consumer: {frames} frames, then {ended:?}");
    assert_eq!(ended, Some((1013, "slow consumer".to_string())));
    server.stop().await.expect("clean stop");
}

/// Thousands of watched pairs outside the snapshot (undeclared envs here) are
/// followed after each commit, but a snapshot pair's push does not wait for them,
/// not even when its commit comes while they are still being resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_outside_the_snapshot_do_not_delay_snapshot_pairs() {
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 1000;
    let repo = base_repo();
    // A repository of some size: resolving a pair reads its listing.
    for i in 0..200 {
        repo.write(&format!("svc{i}.yml"), &format!("name: svc{i}\n"));
    }
    repo.commit("more services");
    let mut settings = fast_settings(repo.path_str());
    settings.live.ws_max_subscriptions = PER_CONNECTION;
    settings.live.ws_max_extra_pairs = CONNECTIONS * PER_CONNECTION;
    let server = start(settings).await;

    let mut extra = Vec::new();
    for c in 0..CONNECTIONS {
        let mut w = server.watch().await;
        for i in 0..PER_CONNECTION {
            w.subscribe("orders", &format!("x{c}-{i}"), None).await;
        }
        extra.push(w);
    }
    for (c, w) in extra.iter_mut().enumerate() {
        for i in 0..PER_CONNECTION {
            let cfg = w.next_config(&format!("extra {c}: initial {i}")).await;
            assert_eq!(cfg.values["greeting"], "hello");
        }
    }
    let mut marker = server.watch().await;
    marker.subscribe("orders", "prod", None).await;
    marker.next_config("marker initial").await;

    // Commit 1 changes every pair; commit 2, right after it is seen, only orders/prod.
    repo.write("application.yml", "greeting: bonjour\n");
    let sha1 = repo.commit("greeting for everyone");
    wait_version(&server, &sha1).await;
    repo.write("orders-prod.yml", "db:\n  pool: 24\n");
    let committed = Instant::now();
    let sha2 = repo.commit("pool 24");
    let took = loop {
        let c = marker.next_config("marker").await;
        if c.version == sha2 {
            assert_eq!(c.values["db"]["pool"], 24);
            break committed.elapsed();
        }
        assert_eq!(c.version, sha1);
    };
    eprintln!(
        "commit → frame of a snapshot pair, beside {} pairs outside it: {took:?}",
        CONNECTIONS * PER_CONNECTION
    );
    assert!(
        took < Duration::from_secs(2),
        "a snapshot pair waited {took:?} for pairs outside the snapshot"
    );
    // The pairs outside the snapshot got the new greeting all the same.
    for (c, w) in extra.iter_mut().enumerate() {
        for i in 0..PER_CONNECTION {
            let cfg = w.next_config(&format!("extra {c}: after commit {i}")).await;
            assert_eq!(cfg.values["greeting"], "bonjour", "{cfg:?}");
        }
    }
    server.stop().await.expect("clean stop");
}

/// The hub follows at most `ws_max_extra_pairs` distinct pairs outside the snapshot,
/// for all connections together; one more is refused with an error frame, a pair
/// already followed costs nothing more, and snapshot pairs are never refused for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_bounds_pairs_outside_the_snapshot() {
    let repo = base_repo();
    repo.write("application-eu.yml", "region: eu-west-1\n");
    repo.commit("eu");
    let mut settings = fast_settings(repo.path_str());
    settings.live.ws_max_extra_pairs = 3;
    let server = start(settings).await;

    let mut a = server.watch().await;
    a.subscribe("orders", "prod,eu", None).await;
    assert_eq!(a.next_config("prod,eu").await.env, "prod,eu");
    a.subscribe("orders", "e1", None).await;
    assert_eq!(a.next_config("e1").await.env, "e1");
    a.subscribe("nosuch", "prod", None).await;
    assert_eq!(a.next_error("unknown service").await.0, "unknown_service");
    a.subscribe("orders", "e2", None).await;
    let (code, message) = a.next_error("a fourth pair").await;
    assert_eq!(code, "too_many_watched_pairs", "{message}");
    assert!(
        message.contains("orders/e2") && message.contains('3'),
        "{message}"
    );

    let mut b = server.watch().await;
    b.subscribe("orders", "prod,eu", None).await;
    assert_eq!(b.next_config("followed already").await.env, "prod,eu");
    b.subscribe("billing", "prod", None).await;
    assert_eq!(b.next_config("snapshot pair").await.service, "billing");
    b.subscribe("orders", "e3", None).await;
    assert_eq!(b.next_error("still full").await.0, "too_many_watched_pairs");

    a.send_json(json!({"op": "unsubscribe", "service": "orders", "env": "e1"}))
        .await;
    // The unsubscribe is handled before b's next subscription can count it free:
    // retry until it is (a refusal is an answer, not a lost frame).
    let mut frees = 0;
    let env = loop {
        b.subscribe("orders", "e3", None).await;
        match b.next("e3 once e1 is free").await {
            ServerFrame::Config { env, .. } => break env,
            ServerFrame::Error { error, .. } => {
                assert_eq!(error, "too_many_watched_pairs");
                frees += 1;
                assert!(frees < 100, "e1 was never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(env, "e3");

    // Followed pairs keep following commits; the refused one was never registered.
    repo.write("application-eu.yml", "region: eu-central-1\n");
    repo.commit("move region");
    let c = a.next_config("a after the commit").await;
    assert_eq!(
        (c.env.as_str(), c.values["region"].as_str()),
        ("prod,eu", Some("eu-central-1"))
    );
    server.stop().await.expect("clean stop");
}
