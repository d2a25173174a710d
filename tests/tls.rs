//! TLS (ARCHITECTURE.md §8): with a certificate and key configured the server speaks HTTPS and
//! WSS only; a plain HTTP request to the same port fails cleanly and harms nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ws::{self, Connector, Watcher};
use common::{TestRepo, DEADLINE, POLL_INTERVAL};
use confhub_server::settings::TlsFiles;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files.
struct Cert {
    dir: tempfile::TempDir,
    pem: String,
}

impl Cert {
    fn new() -> Cert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("self-signed cert");
        let dir = tempfile::tempdir().unwrap();
        let pem = certified.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &pem).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        Cert { dir, pem }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("cert.pem"),
            key: self.dir.path().join("key.pem"),
        }
    }
}

/// An HTTPS client that trusts only `cert`, with `localhost` pinned to the server.
fn https_client(cert: &Cert, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// A rustls client config that trusts only `cert`.
fn rustls_config(cert: &Cert) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_self_signed_certificate() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n");
    repo.commit("baseline");
    let cert = Cert::new();
    let data = tempfile::tempdir().unwrap();
    let mut settings = common::settings(repo.path_str());
    settings.data_dir = data.path().to_path_buf();
    settings.tls = Some(cert.files());

    // `TestServer` speaks plain HTTP; start this one by hand.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(confhub_server::run(listener, settings, async move {
        let _ = stop_rx.await;
    }));
    let https = https_client(&cert, addr);
    let base = format!("https://localhost:{}", addr.port());
    let deadline = Instant::now() + DEADLINE;
    loop {
        match https.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "not ready over HTTPS within {DEADLINE:?}: {other:?}"
            ),
        }
        assert!(!handle.is_finished(), "server stopped");
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // HTTPS: the config, exactly.
    let resp = https
        .get(format!("{base}/v1/config/orders/prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["values"],
        json!({"greeting": "hello", "db": {"pool": 20}})
    );

    // An HTTPS client that does not trust the certificate is refused by the handshake.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", addr)
        .timeout(DEADLINE)
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());

    // WSS: subscribe and get the config frame.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("wss://localhost:{}/v1/watch", addr.port());
    let tls = Connector::Rustls(rustls_config(&cert));
    let mut ws = Watcher::new(ws::open_on(&url, tcp, Some(tls)).await).within(DEADLINE);
    ws.subscribe("orders", "prod", None).await;
    let frame = ws.next_json("a config frame over WSS").await;
    assert_eq!(frame["op"], "config", "{frame}");
    assert_eq!(frame["values"]["db"]["pool"], 20);
    ws.close().await;

    // Plain HTTP to the TLS port: no HTTP answer, the connection just ends, quickly.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /v1/config/orders/prod HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "plain HTTP to the TLS port: connection still open"
    );
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    assert!(http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());

    // And HTTPS carries on.
    let again = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(again.status(), 200);

    let _ = stop_tx.send(());
    tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("clean stop");
}

/// A certificate or key that cannot be used stops the server at start, naming the file.
#[tokio::test]
async fn unusable_tls_files_are_refused_at_start() {
    let repo = TestRepo::new();
    repo.write("application.yml", "a: 1\n");
    repo.commit("a");
    let cert = Cert::new();
    std::fs::write(cert.dir.path().join("key.pem"), "not a key\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut settings = common::settings(repo.path_str());
    settings.data_dir = data.path().to_path_buf();
    settings.tls = Some(cert.files());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = tokio::time::timeout(
        DEADLINE,
        confhub_server::run(listener, settings, std::future::pending()),
    )
    .await
    .expect("refused at once");
    let message = outcome.unwrap_err().to_string();
    assert!(message.contains("key.pem"), "{message}");
}

/// HTTP/2 over TLS (ALPN `h2`) is held to the same idle timeout as h2c: after its last
/// answer, a connection that only exchanges PINGs is closed; one that sends a request
/// slowly is kept while the request is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_h2_connections_are_closed() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n");
    repo.commit("baseline");
    let cert = Cert::new();
    let data = tempfile::tempdir().unwrap();
    let mut settings = common::settings(repo.path_str());
    settings.data_dir = data.path().to_path_buf();
    settings.tls = Some(cert.files());
    settings.limits.header_read_timeout = Duration::from_secs(1);
    let key = confhub_server::crypto::Key::generate();
    settings.keyring = confhub_server::crypto::Keyring::new(vec![
        confhub_server::crypto::Key::from_base64(&key).unwrap(),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(confhub_server::run(listener, settings, async move {
        let _ = stop_rx.await;
    }));
    let mut config = (*rustls_config(&cert)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let h2_over_tls = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        common::h2_connect(tls).await
    };
    common::wait_until(DEADLINE, "readiness over TLS h2", || async {
        h2_over_tls()
            .await
            .request("GET", "/readyz", &[], Duration::ZERO)
            .await
            .0
            == 200
    })
    .await;

    let mut idle = h2_over_tls().await;
    assert_eq!(
        idle.request("GET", "/healthz", &[], Duration::ZERO).await.0,
        200
    );
    let (pongs, lived) = idle
        .ping_until_closed(Duration::from_millis(200), Duration::from_secs(20))
        .await;
    assert!(pongs >= 2, "only {pongs} PINGs answered");
    assert!(
        lived >= Duration::from_millis(500),
        "closed after {lived:?}"
    );

    let mut slow = h2_over_tls().await;
    let started = Instant::now();
    let (status, body) = slow
        .request(
            "POST",
            "/encrypt",
            &[b"s", b"l", b"o", b"w"],
            Duration::from_millis(700),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Spring's bare ciphertext (the value to commit is `{cipher}` followed by it):
    // confhub's format, base64 of version byte 1.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&body).trim())
        .unwrap_or_default();
    assert_eq!(raw.first(), Some(&1), "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() >= Duration::from_secs(2));

    let _ = stop_tx.send(());
    tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("clean stop");
}
