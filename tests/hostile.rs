//! Hostile input against a live server (issue 5, ARCHITECTURE.md §8): one server takes a corpus of
//! bad requests, WebSocket abuse, forged webhooks and poisoned repository files, and
//! afterwards still answers correctly with bounded memory. Requests go over raw TCP where
//! an HTTP client would normalize or refuse what an attacker sends.
//!
//! Every wait has a deadline; "the server closed it" is observed, never slept for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ws::{Message, Watcher};
use common::{TestRepo, TestServer};
use confhub_server::crypto::{Key, Keyring};
use confhub_server::github_signature;
use confhub_server::settings::Secret;
use confhub_server::Settings;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any single exchange must end within this, even on a loaded 2-core machine.
const ANSWER: Duration = Duration::from_secs(10);
const WEBHOOK_SECRET: &str = "hostile-test-webhook-secret";

// ---------------------------------------------------------------------------
// raw HTTP

/// What a raw request got back.
#[derive(Debug)]
enum Raw {
    /// An HTTP response: status and the whole text (head and body).
    Answer(u16, String),
    /// The connection ended without an HTTP response.
    Closed,
}

impl Raw {
    fn status(&self) -> Option<u16> {
        match self {
            Raw::Answer(s, _) => Some(*s),
            Raw::Closed => None,
        }
    }

    fn body(&self) -> &str {
        match self {
            Raw::Answer(_, text) => text.split_once("\r\n\r\n").map_or("", |(_, b)| b),
            Raw::Closed => "",
        }
    }
}

/// Read until the peer closes (or resets); panics if that takes longer than [`ANSWER`].
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + ANSWER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: connection still open after {ANSWER:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn parse_raw(bytes: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(bytes).to_string();
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => Raw::Answer(status, text),
        None => Raw::Closed,
    }
}

/// Send `request` on a fresh connection and read until the server closes it.
async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let what = String::from_utf8_lossy(&request[..request.len().min(120)]).to_string();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server refusing the request may close (or reset) before all of it is written:
    // that is an answer too, read below.
    let _ = stream.write_all(request).await;
    let bytes = read_until_closed(&mut stream, &what).await;
    parse_raw(&bytes)
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: confhub\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

// ---------------------------------------------------------------------------
// the repository

/// Services whose only file is poisoned, and that file.
const BOMBS: &[(&str, &str)] = &[
    ("laughs", "laughs.yml"),
    ("deepseq", "deepseq.yml"),
    ("deepmap", "deepmap.yml"),
    ("megadeep", "megadeep.yml"),
    ("big", "big.yml"),
    ("chain", "chain.yml"),
    ("expand", "expand.yml"),
    ("deepkey", "deepkey.properties"),
];

/// Services with one `{cipher}` value that cannot be decrypted, and its key.
const BAD_CIPHERS: &[(&str, &str)] = &[
    ("garbage", "db.password"),
    ("truncated", "api.key"),
    ("wrongkey", "token"),
    ("tampered", "smtp.pass"),
    ("tooshort", "x"),
];

fn billion_laughs() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ('a'..='y').zip('b'..='z') {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    text
}

fn hostile_repo(ring: &Keyring) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n")
        .write("application-prod.yml", "tier: prod\n")
        .write("application-dev.yml", "tier: dev\n")
        .write("orders.yml", "db:\n  host: db.internal\n  pool: 10\n")
        .write(
            "orders-prod.yml",
            &format!(
                "db:\n  pool: 50\nsecret: '{}'\n",
                ring.encrypt("s3cr3t").unwrap()
            ),
        );

    // YAML bombs and friends: each fails its own pairs, nothing else.
    repo.write("laughs.yml", &billion_laughs())
        .write(
            "deepseq.yml",
            &format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        )
        .write(
            "deepmap.yml",
            &format!("a: {}1{}\n", "{a: ".repeat(10_000), "}".repeat(10_000)),
        )
        // Without the pre-scan in `parse`, libyaml's scanner would chew on this for most of an hour.
        .write("megadeep.yml", &format!("a: {}\n", "[".repeat(1_000_000)))
        .write("big.yml", &format!("a: \"{}\"\n", "x".repeat(5 << 20)))
        .write(
            "deepkey.properties",
            &format!("{}=1\n", vec!["a"; 10_000].join(".")),
        );
    let mut chain = String::new();
    for i in 0..10_000 {
        chain.push_str(&format!("k{i}: ${{k{}}}\n", i + 1));
    }
    chain.push_str("k10000: end\n");
    repo.write("chain.yml", &chain);
    // About 1 KB whose keys each reference the next ten times: 10^12 bytes expanded.
    let mut expand = String::new();
    for i in 0..12 {
        expand.push_str(&format!(
            "k{i}: \"{}\"\n",
            format!("${{k{}}}", i + 1).repeat(10)
        ));
    }
    expand.push_str("k12: \"0123456789\"\n");
    repo.write("expand.yml", &expand);
    // Large but legitimate: must load fast (duplicate detection is not quadratic).
    let many: String = (0..40_000).map(|i| format!("key{i}.value={i}\n")).collect();
    repo.write("manykeys.properties", &many);

    // Ciphertexts that cannot be decrypted.
    let good = ring.encrypt("never-served").unwrap();
    let body = good.strip_prefix("{cipher}").unwrap();
    let other = Keyring::new(vec![Key::from_base64(&Key::generate()).unwrap()]).unwrap();
    let mut tampered: Vec<char> = body.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    repo.write(
        "garbage.yml",
        "db:\n  password: '{cipher}!!!not base64!!!'\n",
    )
    .write(
        "truncated.yml",
        &format!("api:\n  key: '{{cipher}}{}'\n", &body[..body.len() - 7]),
    )
    .write(
        "wrongkey.yml",
        &format!("token: '{}'\n", other.encrypt("x").unwrap()),
    )
    .write(
        "tampered.yml",
        &format!("smtp:\n  pass: '{{cipher}}{tampered}'\n"),
    )
    .write("tooshort.yml", "x: '{cipher}AAAA'\n");
    repo.commit("a hostile repository");
    repo
}

fn hostile_settings(repo: &TestRepo, ring: Keyring) -> Settings {
    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(ring);
    settings.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    settings.limits.header_read_timeout = Duration::from_secs(1);
    settings
}

/// The good pair, exactly.
async fn assert_good_pair(server: &TestServer, when: &str) {
    let resp = server.get("/v1/config/orders/prod").await;
    assert_eq!(resp.status(), 200, "{when}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["values"],
        json!({
            "greeting": "hello",
            "tier": "prod",
            "db": {"host": "db.internal", "pool": 50},
            "secret": "s3cr3t",
        }),
        "{when}"
    );
}

// ---------------------------------------------------------------------------
// the corpus

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_leaves_the_server_answering() {
    let key = Key::generate();
    let ring = Keyring::new(vec![Key::from_base64(&key).unwrap()]).unwrap();
    let repo = hostile_repo(&ring);
    let server = TestServer::start(hostile_settings(&repo, ring)).await;
    let rss_before = rss_bytes();
    assert_good_pair(&server, "at start").await;

    poisoned_files_fail_only_their_pairs(&server).await;
    traversal_and_odd_bytes_are_refused(&server).await;
    long_names_are_refused(&server).await;
    oversized_requests_are_refused_early(&server).await;
    slow_loris_is_cut_off_while_others_are_served(&server).await;
    webhooks_need_the_secret(&server).await;
    websocket_abuse_is_contained(&server).await;

    assert_good_pair(&server, "after the corpus").await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 1 << 30,
        "resident memory grew by {} MiB",
        growth >> 20
    );
    server.stop().await.expect("clean stop");
}

/// YAML bombs, a 5 MB file, a 10k placeholder chain, a 10k-deep properties key and
/// undecryptable values: each is a 422 naming the file (and the key), for every env.
async fn poisoned_files_fail_only_their_pairs(server: &TestServer) {
    for (service, file) in BOMBS {
        for env in ["prod", "dev"] {
            let path = format!("/v1/config/{service}/{env}");
            let e = server.get_error(&path, 422).await;
            assert_eq!(e.error, "unresolvable", "{path}: {e:?}");
            assert_eq!(e.file.as_deref(), Some(*file), "{path}: {e:?}");
        }
        if matches!(*service, "chain" | "expand") {
            continue; // Spring's Environment shows placeholders as written: that one is fine.
        }
        // The Spring forms fail the same way.
        let path = format!("/{service}/prod");
        assert_eq!(
            server.get_error(&path, 422).await.file.as_deref(),
            Some(*file)
        );
    }
    for (service, key) in BAD_CIPHERS {
        let path = format!("/v1/config/{service}/prod");
        let e = server.get_error(&path, 422).await;
        assert_eq!(e.key.as_deref(), Some(*key), "{path}: {e:?}");
        assert_eq!(
            e.file.as_deref(),
            Some(&*format!("{service}.yml")),
            "{path}: {e:?}"
        );
        assert!(e.message.contains(key), "{path}: {e:?}");
        assert!(!e.message.contains("never-served"), "{path}: {e:?}");
        // Spring's forms serve the rest, the key as `invalid.<key>: <n/a>`, as Spring does:
        // never plaintext nor ciphertext.
        let yml = server.get(&format!("/{service}-prod.properties")).await;
        assert_eq!(yml.status(), 200, "{service}");
        let text = yml.text().await.unwrap();
        assert!(
            text.contains(&format!("invalid.{key}: <n/a>")),
            "{service}: {text}"
        );
        assert!(
            !text.contains("{cipher}") && !text.contains("never-served"),
            "{service}: {text}"
        );
    }
    let many: Value = server.get_json("/v1/config/manykeys/prod").await;
    assert_eq!(many["values"]["key39999"]["value"], json!("39999"));
    assert_good_pair(server, "next to poisoned files").await;
}

/// Traversal in every segment and spelling, NUL and control bytes: 400 (or 404 for a
/// path no route has), never a file from outside the config.
async fn traversal_and_odd_bytes_are_refused(server: &TestServer) {
    let targets = [
        "/v1/config/../prod",
        "/v1/config/orders/..",
        "/v1/config/%2e%2e/prod",
        "/v1/config/%2E%2E/prod",
        "/v1/config/..%2F..%2Fetc%2Fpasswd/prod",
        "/v1/config/orders%2F..%2F..%2Fetc/prod",
        "/v1/config/orders/prod%2F..%2F..",
        "/v1/config/%252e%252e/prod",
        "/v1/config/%252e%252e%252fetc/prod",
        "/v1/config/..(_)../prod",
        "/v1/config/orders/prod,..",
        "/v1/config/orders/prod?label=..",
        "/v1/config/orders/prod?label=..(_)..(_)etc",
        "/v1/config/orders/prod?label=main(_)..(_)..",
        "/v1/config/orders/prod?label=%2e%2e%2F%2e%2e",
        "/v1/config/orders/prod?label=%252e%252e",
        "/v1/config/orders/prod?label=main%252F..",
        "/v1/config/orders/prod?label=HEAD~1",
        "/v1/config/orders/prod?label=main@%7B1%7D",
        "/v1/config/orders/prod?label=main%5E",
        "/v1/config/orders/prod?label=:%2Fmsg",
        "/v1/config/orders/prod?label=-main",
        "/v1/config/orders/prod?label=refs(_)heads(_)main.lock",
        "/v1/config/or%00ders/prod",
        "/v1/config/orders/pr%00od",
        "/v1/config/orders%0a/prod",
        "/v1/config/orders%0d%0aX-Injected:%20yes/prod",
        "/v1/config/orders%7f/prod",
        "/v1/config/orders/prod?label=ma%00in",
        "/v1/config/orders/prod?label=main%0a",
        "/v1/config/%C3%A9/prod",
        "/v1/config/%ff%fe/prod",
        "/v1/history/../prod",
        "/v1/history/orders/..",
        "/v1/history/orders/prod?limit=..",
        "/v1/diff/orders/prod?from=..(_)..",
        "/v1/diff/orders/prod?from=main&to=%2e%2e",
        "/orders/../main",
        "/../prod/main",
        "/orders/prod/..",
        "/orders/prod/..(_)..",
        "/orders/prod/%2e%2e%2F%2e%2e",
        "/orders/prod/%252e%252e",
        "/..%2F..%2Fetc%2Fpasswd-prod.yml",
        "/%2e%2e-prod.yml",
        "/orders-..%2F...yml",
        "/..(_)../orders-prod.yml",
        "/main(_)..%2F../orders-prod.yml",
        "/%2e%2e/orders-prod.properties",
        "/../../../../etc/passwd",
        "/v1/config/orders/prod/../../../../etc/passwd",
        "/v1/../v1/config/orders/prod",
    ];
    for target in targets {
        let got = raw(server.addr(), &get(target)).await;
        let status = got
            .status()
            .unwrap_or_else(|| panic!("{target}: no answer"));
        assert!(
            status == 400 || status == 404,
            "{target}: {status}: {}",
            got.body()
        );
        let body = got.body();
        assert!(
            !body.contains("root:") && !body.contains("s3cr3t") && !body.contains("db.internal"),
            "{target}: leaked {body}"
        );
        assert!(
            !got_header(&got, "x-injected"),
            "{target}: header injection"
        );
    }
    // Raw control bytes in the request line: hyper refuses them (or drops the connection).
    for target in [
        &b"/v1/config/or\x00ders/prod"[..],
        b"/v1/config/orders\x7f/prod",
        b"/v1/config/\x01/prod",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: confhub\r\nConnection: close\r\n\r\n");
        let got = raw(server.addr(), &req).await;
        assert!(
            matches!(got.status(), None | Some(400) | Some(404)),
            "{target:?}: {got:?}"
        );
    }
    assert_good_pair(server, "after traversal attempts").await;
}

fn got_header(raw: &Raw, name: &str) -> bool {
    match raw {
        Raw::Answer(_, text) => text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:"))),
        Raw::Closed => false,
    }
}

/// 10 KB names and labels: refused (or unknown), never a 5xx.
async fn long_names_are_refused(server: &TestServer) {
    let long = "a".repeat(10 * 1024);
    let cases = [
        (format!("/v1/config/{long}/prod"), &[404][..]),
        // Without `confhub.yml` any env name is served (the defaults).
        (format!("/v1/config/orders/{long}"), &[200][..]),
        (format!("/v1/config/orders/prod?label={long}"), &[400][..]),
        (
            format!("/v1/config/orders/prod?label={}", "a(_)".repeat(2500)),
            &[400][..],
        ),
        (
            format!("/v1/config/{}/prod", "%00".repeat(3000)),
            &[400][..],
        ),
        (format!("/{long}/prod"), &[200, 404][..]),
        (format!("/{long}-prod.yml"), &[200, 404][..]),
    ];
    for (target, allowed) in &cases {
        let got = raw(server.addr(), &get(target)).await;
        let status = got
            .status()
            .unwrap_or_else(|| panic!("{}: no answer", &target[..40]));
        assert!(
            allowed.contains(&status),
            "{}…: {status}: {}",
            &target[..40],
            &got.body()[..got.body().len().min(300)]
        );
        // A refused name is not echoed back whole.
        if status == 400 {
            assert!(
                got.body().len() < 1024,
                "{}…: body of {} bytes",
                &target[..40],
                got.body().len()
            );
        }
    }
    // Past the header limit (16 KiB): refused by the HTTP layer, not served.
    let huge = format!("/v1/config/{}/prod", "a".repeat(40 * 1024));
    let got = raw(server.addr(), &get(&huge)).await;
    assert!(
        matches!(got.status(), None | Some(400) | Some(414) | Some(431)),
        "40 KB target: {got:?}"
    );
}

/// A 10 MB body is a 413 before it is read; a 64 KB header is a 431 (or a closed
/// connection), not a hang.
async fn oversized_requests_are_refused_early(server: &TestServer) {
    // Content-Length announces 10 MB, only 256 KB follow: a server reading it all would
    // wait for the rest; one enforcing the limit answers at once.
    let mut req = format!(
        "POST /encrypt HTTP/1.1\r\nHost: confhub\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        10 << 20
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'p', 256 * 1024));
    let started = Instant::now();
    let got = raw(server.addr(), &req).await;
    assert_eq!(got.status(), Some(413), "10 MB announced: {got:?}");
    assert!(started.elapsed() < ANSWER);

    // Chunked, no length: the limit stops the read part-way (the body never ends).
    let mut req = b"POST /encrypt HTTP/1.1\r\nHost: confhub\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..32 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend(std::iter::repeat_n(b'q', 8192));
        req.extend_from_slice(b"\r\n");
    }
    let got = raw(server.addr(), &req).await;
    assert_eq!(got.status(), Some(413), "256 KB chunked: {got:?}");

    // A real 10 MB upload through an HTTP client: the same 413.
    let resp = server
        .client()
        .post(server.url("/encrypt"))
        .body(vec![b'z'; 10 << 20])
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    } // else: the server closed the connection while the upload was still going.

    // Webhooks have their own limit (1 MiB by default): 20 MB announced with a well-formed
    // signature is a 413 before any of it is read.
    let mut req = format!(
        "POST /v1/webhook HTTP/1.1\r\nHost: confhub\r\nContent-Length: {}\r\nX-Hub-Signature-256: sha256={}\r\nConnection: close\r\n\r\n",
        20 << 20,
        "0".repeat(64)
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'w', (8 << 20) + 256 * 1024));
    assert_eq!(raw(server.addr(), &req).await.status(), Some(413));

    // One 64 KB header, and many small ones adding up to 64 KB.
    let mut req = b"GET /v1/config/orders/prod HTTP/1.1\r\nHost: confhub\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'h', 64 * 1024));
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let got = raw(server.addr(), &req).await;
    assert!(
        matches!(got.status(), None | Some(431)),
        "64 KB header: {got:?}"
    );
    let mut req = b"GET /v1/config/orders/prod HTTP/1.1\r\nHost: confhub\r\n".to_vec();
    for i in 0..2048 {
        req.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(24)).as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    let got = raw(server.addr(), &req).await;
    assert!(
        matches!(got.status(), None | Some(431)),
        "2048 headers: {got:?}"
    );
    assert_good_pair(server, "after oversized requests").await;
}

/// Nothing, half a preface, half a request line or half the headers, then silence; an
/// idle HTTP/1 keep-alive connection; an HTTP/2 connection with PINGs only: closed after
/// `header_read_timeout` (1 s here), while everyone else is served.
async fn slow_loris_is_cut_off_while_others_are_served(server: &TestServer) {
    let addr = server.addr();
    let stall = |partial: &'static [u8]| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let started = Instant::now();
        let rest = read_until_closed(&mut s, "slow loris").await;
        (started.elapsed(), parse_raw(&rest))
    };
    // A kept-alive connection gone quiet after its answer is closed the same way.
    let idle = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(keep_alive_get(&mut s, "/healthz").await, 200);
        let started = Instant::now();
        let rest = read_until_closed(&mut s, "idle keep-alive").await;
        (started.elapsed(), parse_raw(&rest))
    });
    // An HTTP/2 client (prior knowledge) past the preface that only sends PINGs (and never
    // acknowledges the server's, so its GOAWAY cannot complete): closed too. This used to
    // be asserted to stay open, which let PING-answering clients hold every slot.
    let h2_idle = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let started = Instant::now();
        let pinger = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if wr
                    .write_all(b"\0\0\x08\x06\0\0\0\0\0pingpong")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let rest = read_until_closed(&mut rd, "idle HTTP/2 with PINGs").await;
        pinger.abort();
        (started.elapsed(), parse_raw(&rest))
    });
    let lorises = futures_util::future::join_all([
        idle,
        h2_idle,
        // Nothing at all, and half an HTTP/2 preface: no request line to time yet.
        tokio::spawn(stall(b"")),
        tokio::spawn(stall(b"PRI * HTTP/2.0\r\n")),
        tokio::spawn(stall(b"GET /v1/conf")),
        tokio::spawn(stall(
            b"GET /v1/config/orders/prod HTTP/1.1\r\nHost: confhub\r\nX-Slow: ",
        )),
        tokio::spawn(stall(b"GET /v1/config/orders/prod HTTP/1.1\r\n")),
    ]);
    tokio::pin!(lorises);
    // Meanwhile, others are served.
    let mut served = 0;
    let results = loop {
        tokio::select! {
            done = &mut lorises => break done,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                assert_eq!(server.get("/healthz").await.status(), 200, "served during the stall");
                served += 1;
            }
        }
    };
    assert!(
        served >= 3,
        "only {served} requests served while the slow clients stalled"
    );
    for r in results {
        let (took, answer) = r.expect("slow loris task");
        assert!(
            took >= Duration::from_millis(250),
            "closed after {took:?}: before the header timeout?"
        );
        // Closed silently, or told 408.
        assert!(matches!(answer.status(), None | Some(408)), "{answer:?}");
    }
    assert_good_pair(server, "after slow clients").await;
}

/// Forged webhooks: every wrong proof is a 401 and triggers nothing.
async fn webhooks_need_the_secret(server: &TestServer) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = server
            .client()
            .post(server.url("/v1/webhook"))
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let forged = [
        vec![],
        vec![(
            "X-Hub-Signature-256",
            github_signature("wrong secret", body),
        )],
        vec![(
            "X-Hub-Signature-256",
            github_signature(WEBHOOK_SECRET, b"another body"),
        )],
        vec![("X-Hub-Signature-256", "sha256=".to_string())],
        vec![("X-Hub-Signature-256", "sha256=zz".to_string())],
        vec![(
            "X-Hub-Signature-256",
            github_signature(WEBHOOK_SECRET, body)[7..].to_string(),
        )],
        vec![("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))],
        vec![("X-Gitea-Signature", "00".repeat(32))],
        vec![("X-Hub-Signature", format!("sha1={}", "0".repeat(40)))],
        vec![("X-Gitlab-Token", "wrong secret".to_string())],
        vec![("X-Gitlab-Token", String::new())],
        vec![("X-Gitlab-Token", format!("{WEBHOOK_SECRET}x"))],
        vec![("X-Gitlab-Token", WEBHOOK_SECRET[1..].to_string())],
    ];
    for headers in forged {
        let what = format!("{headers:?}");
        let resp = post(headers).await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
    }
    // The right secret still works.
    let ok = post(vec![(
        "X-Hub-Signature-256",
        github_signature(WEBHOOK_SECRET, body),
    )])
    .await
    .unwrap();
    assert_eq!(ok.status(), 202);
}

/// A `/v1/watch` client that gets [`ANSWER`] for each frame.
async fn ws(server: &TestServer) -> Watcher {
    server.watch().await.within(ANSWER)
}

/// Malformed, binary and oversized frames, a flood of 10k subscriptions: error frames
/// or a close for the offender, and nothing for anyone else.
async fn websocket_abuse_is_contained(server: &TestServer) {
    let mut bystander = ws(server).await;
    bystander.subscribe("orders", "prod", None).await;
    let first = bystander.next_json("bystander").await;
    assert_eq!(first["op"], "config");
    assert_eq!(first["values"]["db"]["pool"], 50);

    // A few bad frames each get an error frame; the connection stays usable.
    let mut w = ws(server).await;
    let junk = [
        Message::text("{"),
        Message::text("null"),
        Message::text("\u{0}\u{1}\u{2}"),
        Message::text(r#"{"op": 5}"#),
        Message::text(r#"{"op": "subscribe", "service": ["orders"], "env": {}}"#),
        Message::text(r#"{"op": "subscribe", "service": "orders"}"#),
        Message::binary(vec![0xff; 100]),
    ];
    for msg in junk {
        let what = format!("{msg:?}");
        w.send(msg).await;
        let frame = w.next_json(&what).await;
        assert_eq!(frame["op"], "error", "{what}: {frame}");
    }
    for (service, env) in [
        ("../etc", "prod"),
        ("orders", "%2e%2e"),
        ("or\u{0}ders", "prod"),
        ("orders", "prod,.."),
    ] {
        w.subscribe(service, env, None).await;
        let frame = w.next_json(service).await;
        assert_eq!(frame["error"], "bad_name", "{service}/{env}: {frame}");
    }
    w.subscribe("laughs", "prod", None).await;
    let frame = w.next_json("a bomb over the socket").await;
    assert_eq!(frame["error"], "unresolvable", "{frame}");
    w.subscribe("orders", "prod", None).await;
    assert_eq!(w.next_json("after junk").await["op"], "config");

    // Endless junk: the connection is closed (policy), not served forever.
    // Its socket is read in the background meanwhile, as a real client's would be.
    let mut spammer = ws(server).await;
    for _ in 0..1000 {
        if spammer.try_send(Message::text("not json")).await.is_err() {
            break;
        }
    }
    let code = spammer.closed("a junk flood").await.map(|c| c.0);
    assert_eq!(code, Some(1008), "a junk flood ends in a policy close");

    // An oversized frame (> 16 KiB): close 1009.
    let mut big = ws(server).await;
    let _ = big.try_send(Message::text("x".repeat(17 * 1024))).await;
    assert_eq!(
        big.next_or_close("oversized")
            .await
            .unwrap_err()
            .map(|c| c.0),
        Some(1009)
    );
    let mut big = ws(server).await;
    let _ = big.try_send(Message::binary(vec![0u8; 1 << 20])).await;
    assert_eq!(
        big.next_or_close("1 MB binary")
            .await
            .unwrap_err()
            .map(|c| c.0),
        Some(1009)
    );

    // 10k subscriptions on one connection: at most 256 held, the rest refused; the
    // connection may be closed for it. Others are unaffected meanwhile.
    // The answers are read in the background while the frames go out.
    let mut flood = ws(server).await.within(Duration::from_secs(60));
    let reader = tokio::spawn(async move {
        for i in 0..10_000 {
            let frame = json!({"op": "subscribe", "service": format!("svc{i}"), "env": "prod"});
            if flood
                .try_send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
        }
        let (mut held, mut refused, mut closed) = (0u32, 0u32, false);
        while held + refused < 10_000 {
            let what = format!("flood: {held} held, {refused} refused");
            let Ok(t) = flood.next_or_close(&what).await else {
                closed = true;
                break;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["error"].as_str() {
                Some("too_many_subscriptions") => refused += 1,
                Some("unknown_service") => held += 1,
                _ => panic!("flood: unexpected {v}"),
            }
        }
        (held, refused, closed)
    });
    // While the flood runs, a fresh connection is served at once.
    let mut other = ws(server).await;
    other.subscribe("orders", "prod", None).await;
    assert_eq!(other.next_json("during the flood").await["op"], "config");
    let (held, refused, closed) = reader.await.expect("flood reader");
    assert!(held <= 256, "{held} subscriptions held");
    assert!(
        closed || (held == 256 && refused == 10_000 - 256),
        "{held} held, {refused} refused"
    );

    // The bystander saw nothing of it and still gets pushes: a new commit would reach it;
    // here a resubscription proves the connection is alive and current.
    bystander.subscribe("orders", "dev", None).await;
    let frame = bystander.next_json("bystander after the abuse").await;
    assert_eq!(
        (frame["op"].as_str(), frame["env"].as_str()),
        (Some("config"), Some("dev"))
    );
}

// ---------------------------------------------------------------------------
// connection cap

/// `limits.max_connections = 5`: five connections are served, a sixth is closed at once
/// without an answer, and a slot freed is a slot usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_the_sixth() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n");
    repo.write("orders.yml", "db:\n  pool: 10\n");
    repo.commit("small");
    let mut settings = common::settings(repo.path_str());
    settings.limits.max_connections = 5;
    let data = tempfile::tempdir().unwrap();
    settings.data_dir = data.path().to_path_buf();

    // Not `TestServer`: its HTTP client would keep a pooled connection open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(confhub_server::run(listener, settings, async move {
        let _ = stop_rx.await;
    }));
    common::wait_until(common::DEADLINE, "readiness", || async move {
        raw(addr, &get("/readyz")).await.status() == Some(200)
    })
    .await;

    // Five keep-alive connections, each answered.
    let mut held = Vec::new();
    for i in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            keep_alive_get(&mut s, "/v1/config/orders/default").await,
            200,
            "connection {i}"
        );
        held.push(s);
    }
    // The sixth: accepted by the kernel, closed by the server without a byte.
    let mut sixth = TcpStream::connect(addr).await.unwrap();
    let _ = sixth.write_all(&get("/healthz")).await;
    let started = Instant::now();
    let answer = read_until_closed(&mut sixth, "sixth connection").await;
    assert!(
        answer.is_empty(),
        "the sixth got {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    // The five still work.
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(
            keep_alive_get(s, "/v1/config/orders/default").await,
            200,
            "connection {i} again"
        );
    }
    // Free one: a new connection is served (once the server has seen the close).
    drop(held.pop());
    common::wait_until(common::DEADLINE, "a freed slot", || async move {
        raw(addr, &get("/healthz")).await.status() == Some(200)
    })
    .await;
    drop(held);
    let _ = stop_tx.send(());
    tokio::time::timeout(common::DEADLINE, handle)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("clean stop");
}

/// One request on a kept-alive connection; returns the status after reading the body.
async fn keep_alive_get(s: &mut TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: confhub\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the answer");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    return head[9..12].parse().unwrap();
                }
            }
        }
    };
    tokio::time::timeout(ANSWER, read).await.expect("an answer")
}

// ===========================================================================
// Hardening (idle HTTP/2 connections, webhook bodies, empty secrets).
// Everything from here to the matching end marker belongs to that block.

/// A small repository and a server whose idle timeout (`header_read_timeout`) is 1 s.
async fn quick_idle_server() -> (TestRepo, TestServer) {
    let key = Key::generate();
    let ring = Keyring::new(vec![Key::from_base64(&key).unwrap()]).unwrap();
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n");
    repo.commit("small");
    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(ring);
    settings.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    settings.limits.header_read_timeout = Duration::from_secs(1);
    let server = TestServer::start(settings).await;
    (repo, server)
}

/// An h2c connection that has served a request and then only answers and sends PINGs is
/// idle: it is closed after the idle timeout, however faithfully it PINGs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connection_is_closed_even_while_it_pings() {
    let (_repo, server) = quick_idle_server().await;
    let mut h2 = common::h2_connect(TcpStream::connect(server.addr()).await.unwrap()).await;
    let (status, body) = h2.request("GET", "/healthz", &[], Duration::ZERO).await;
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    let (pongs, lived) = h2
        .ping_until_closed(Duration::from_millis(200), Duration::from_secs(20))
        .await;
    assert!(pongs >= 2, "only {pongs} PINGs answered: closed too early?");
    assert!(
        lived >= Duration::from_millis(500),
        "closed after {lived:?}, before the 1 s idle timeout"
    );
    server.stop().await.expect("clean stop");
}

/// A request whose body trickles in over several idle timeouts keeps its h2c connection
/// (an open stream is not idle); once it is answered, the connection idles out as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connection_with_a_slow_request_is_kept() {
    let (_repo, server) = quick_idle_server().await;
    let mut h2 = common::h2_connect(TcpStream::connect(server.addr()).await.unwrap()).await;
    let chunks: [&[u8]; 6] = [b"s", b"l", b"o", b"w", b"l", b"y"];
    let started = Instant::now();
    let (status, body) = h2
        .request("POST", "/encrypt", &chunks, Duration::from_millis(600))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the body took {:?}: not longer than the idle timeout",
        started.elapsed()
    );
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 200, "{body}");
    // Spring's bare ciphertext: confhub's format is base64 of a version byte 1 (then
    // the key id, so the second base64 character varies).
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_default();
    assert_eq!(raw.first(), Some(&1), "{body}");
    // And a second request on the same connection still works before it idles out.
    let (status, _) = h2.request("GET", "/healthz", &[], Duration::ZERO).await;
    assert_eq!(status, 200);
    let (_, lived) = h2
        .ping_until_closed(Duration::from_millis(200), Duration::from_secs(20))
        .await;
    assert!(
        lived >= Duration::from_millis(500),
        "closed after {lived:?}"
    );
    server.stop().await.expect("clean stop");
}

/// Read one whole HTTP/1.1 response (head and `Content-Length` body) from `stream`, without
/// waiting for the connection to close; `None` if it closes first. Panics after [`ANSWER`].
async fn one_response(stream: &mut TcpStream, what: &str) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let status = head.get(9..12)?.parse().ok()?;
                    return Some((status, text));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(ANSWER, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER:?}"))
}

/// The head of a webhook call announcing `length` bytes of body, with `proof` headers.
fn webhook_head(length: usize, proof: &str) -> String {
    format!(
        "POST /v1/webhook HTTP/1.1\r\nHost: confhub\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nContent-Length: {length}\r\n{proof}\r\n"
    )
}

/// 100 callers each announce an 8 MiB webhook body and send only the headers: a missing
/// proof, a malformed one, a wrong GitLab token, a body over the limit are all answered at
/// once (the server never waited for the bodies, so it never buffered them); so is every
/// call to a server without a webhook secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_webhook_bodies_are_refused_before_they_are_read() {
    let (_repo, server) = quick_idle_server().await;
    let proofs = [
        ("", 401),
        ("X-Hub-Signature-256: sha256=zz\r\n", 401),
        ("X-Hub-Signature-256: sha256=00\r\n", 401),
        ("X-Hub-Signature: sha1=00\r\n", 401),
        ("X-Gitea-Signature: 0123\r\n", 401),
        ("X-Gitlab-Token: not the secret\r\n", 401),
        ("X-Gitlab-Token: \r\n", 401),
        // Well-formed: the HMAC needs the body, but 8 MiB is over the 1 MiB limit.
        (
            "X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\n",
            413,
        ),
    ];
    let rss_before = rss_bytes();
    let mut callers = Vec::new();
    for i in 0..100 {
        let (proof, want) = proofs[i % proofs.len()];
        let addr = server.addr();
        callers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(webhook_head(8 << 20, proof).as_bytes())
                .await
                .unwrap();
            let got = one_response(&mut s, proof).await;
            // Kept open (body unsent) until every caller has its answer.
            (s, proof, want, got)
        }));
    }
    let mut held = Vec::new();
    for caller in callers {
        let (s, proof, want, got) = caller.await.unwrap();
        let (status, text) = got.unwrap_or_else(|| panic!("{proof:?}: closed without an answer"));
        assert_eq!(status, want, "{proof:?}: {text}");
        held.push(s);
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 64 << 20,
        "resident memory grew by {} MiB for 100 refused webhooks",
        growth >> 20
    );
    drop(held);

    // A server without a webhook secret refuses before reading, too.
    let repo = TestRepo::new();
    repo.write("application.yml", "a: 1\n");
    repo.commit("a");
    let open = TestServer::start(common::settings(repo.path_str())).await;
    let mut s = TcpStream::connect(open.addr()).await.unwrap();
    let proof = "X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\n";
    s.write_all(webhook_head(512 * 1024, proof).as_bytes())
        .await
        .unwrap();
    let (status, text) = one_response(&mut s, "webhooks disabled").await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("webhook_disabled"), "{text}");

    // A valid GitHub signature still triggers a fetch.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let resp = server
        .client()
        .post(server.url("/v1/webhook"))
        .header(
            "X-Hub-Signature-256",
            github_signature(WEBHOOK_SECRET, body),
        )
        .header("X-GitHub-Event", "push")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    server.stop().await.expect("clean stop");
    open.stop().await.expect("clean stop");
}

/// Signed-looking bodies are read only within `limits.webhook_body_budget_bytes`: once
/// slow senders hold it all, the next one is a 503 with `Retry-After` at once; a GitLab
/// call (proved by its header) still goes through; when the budget frees up, signed
/// webhooks are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_body_budget_is_bounded() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n");
    repo.commit("small");
    let mut settings = common::settings(repo.path_str());
    settings.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    settings.limits.webhook_max_body_bytes = 64 * 1024;
    settings.limits.webhook_body_budget_bytes = 128 * 1024;
    let server = TestServer::start(settings).await;
    let addr = server.addr();
    let forged =
        "X-Hub-Signature-256: sha256=1111111111111111111111111111111111111111111111111111111111111111\r\n";

    // Two senders announce 64 KiB each, send a little, and stall: the budget is theirs.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = webhook_head(64 * 1024, forged).into_bytes();
        req.extend_from_slice(&[b'{'; 100]);
        s.write_all(&req).await.unwrap();
        stalled.push(s);
    }
    // The next signed body is refused at once (probes send their whole body, so one that
    // finds room is answered 401 and frees it).
    let probe = |length: usize| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = webhook_head(length, forged).into_bytes();
        req.extend(std::iter::repeat_n(b' ', length));
        let _ = s.write_all(&req).await;
        one_response(&mut s, "budget probe").await
    };
    // The stalled senders' headers are read by server tasks that a loaded machine may
    // schedule late: give them longer than a plain request gets.
    let spent_within = common::DEADLINE * 3;
    let (status, text) = common::wait_for(spent_within, "the budget to be spent", || async {
        probe(1024).await.filter(|(status, _)| *status == 503)
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        text.to_ascii_lowercase().contains("retry-after: "),
        "{text}"
    );
    assert!(text.contains("webhook_body_budget_bytes"), "{text}");

    // GitLab proves itself in the headers: no budget needed.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let gitlab = server
        .client()
        .post(server.url("/v1/webhook"))
        .header("X-Gitlab-Token", WEBHOOK_SECRET)
        .header("X-Gitlab-Event", "Push Hook")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(gitlab.status(), 202);

    // The stalled senders leave: a signed webhook is accepted again.
    drop(stalled);
    common::wait_until(common::DEADLINE, "the budget to come back", || async {
        server
            .client()
            .post(server.url("/v1/webhook"))
            .header(
                "X-Hub-Signature-256",
                github_signature(WEBHOOK_SECRET, body),
            )
            .header("X-GitHub-Event", "push")
            .body(body.to_vec())
            .send()
            .await
            .is_ok_and(|r| r.status() == 202)
    })
    .await;
    // A body over the 64 KiB limit sent without a length (chunked) stops at the limit.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /v1/webhook HTTP/1.1\r\nHost: confhub\r\nTransfer-Encoding: chunked\r\n{forged}\r\n"
    )
    .into_bytes();
    for _ in 0..16 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend(std::iter::repeat_n(b'c', 8192));
        req.extend_from_slice(b"\r\n");
    }
    let _ = s.write_all(&req).await;
    let (status, text) = one_response(&mut s, "chunked over the limit")
        .await
        .unwrap();
    assert_eq!(status, 413, "{text}");
    server.stop().await.expect("clean stop");
}

/// An empty presented token never authenticates (`Authorization: Bearer ` with nothing,
/// an empty `X-Config-Token`, Basic with an empty password), and a server is never
/// started with a token entry that an empty header would match, or an empty webhook secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_tokens_and_secrets_never_authenticate() {
    let repo = TestRepo::new();
    repo.write("orders.yml", "db:\n  pool: 10\n");
    repo.commit("small");
    let mut settings = common::settings(repo.path_str());
    settings.tokens = vec![confhub_server::auth::TokenConfig {
        name: "reader".into(),
        sha256: confhub_server::auth::token_hash("real-token"),
        scopes: vec!["read:*/*".into()],
    }];
    let server = TestServer::start(settings).await;
    let path = "/v1/config/orders/default";
    for header in [
        "Authorization: Bearer \r\n",
        "Authorization: Bearer\r\n",
        "Authorization: Bearer    \r\n",
        "X-Config-Token: \r\n",
        // base64("user:")
        "Authorization: Basic dXNlcjo=\r\n",
    ] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: confhub\r\n{header}Connection: close\r\n\r\n");
        let got = raw(server.addr(), req.as_bytes()).await;
        assert_eq!(got.status(), Some(401), "{header:?}: {got:?}");
    }
    let ok = server
        .client()
        .get(server.url(path))
        .bearer_auth("real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.stop().await.expect("clean stop");

    // The library refuses the same settings as the binary, naming them.
    let start = |settings: Settings| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::time::timeout(
            ANSWER,
            confhub_server::run(listener, settings, std::future::pending()),
        )
        .await
        .expect("refused at once, not served")
        .unwrap_err()
        .to_string()
    };
    let mut empty_hash = common::settings(repo.path_str());
    empty_hash.tokens = vec![confhub_server::auth::TokenConfig {
        name: "nobody".into(),
        sha256: confhub_server::auth::token_hash(""),
        scopes: vec!["admin".into()],
    }];
    let e = start(empty_hash).await;
    assert!(e.contains("nobody") && e.contains("empty token"), "{e}");
    let mut empty_secret = common::settings(repo.path_str());
    empty_secret.webhook_secret = Some(Secret::new(""));
    let e = start(empty_secret).await;
    assert!(e.contains("webhook_secret") && e.contains("empty"), "{e}");
}

// End of the hardening block (idle HTTP/2 connections, webhook bodies, empty secrets).
// ===========================================================================

// ===========================================================================
// Hardening: work one caller can make the server do.

/// Env lists are bounded (each spelling is resolved and cached on its own), and a
/// `--dev` directory's schema path cannot follow a symlink out of the directory.
#[tokio::test]
async fn env_lists_are_bounded_and_dev_schemas_stay_inside() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("orders.json"),
        r#"{"required": ["from-outside"]}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yml"), "pool: 1\n").unwrap();
    std::fs::write(
        dir.path().join("confhub.yml"),
        "services:\n  orders:\n    schema: schemas/orders.json\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("schemas")).unwrap();
    let mut settings = common::settings(dir.path().display().to_string());
    settings.dev = true;
    let server = TestServer::start(settings).await;

    let e = server.get_error("/v1/config/orders/prod", 422).await;
    assert!(
        e.message.contains("does not exist") && !e.message.contains("from-outside"),
        "a schema through a symlink must not be read: {e:?}"
    );

    let sixteen = vec!["prod"; 16].join(",");
    assert_eq!(
        server
            .get(&format!("/v1/config/orders/{sixteen}"))
            .await
            .status(),
        422,
        "16 envs are accepted (and fail on the schema)"
    );
    let seventeen = vec!["prod"; 17].join(",");
    for path in [
        format!("/v1/config/orders/{seventeen}"),
        format!("/orders/{seventeen}"),
    ] {
        let e = server.get_error(&path, 400).await;
        assert!(e.message.contains("16"), "{path}: {e:?}");
    }
}
