//! Secrets never reach the logs (ARCHITECTURE.md §8): the real `confhub` binary, logging at TRACE,
//! is shown tokens (valid and not), a webhook with a forged signature, an encrypted value
//! that decrypts and one that does not, `/encrypt` and `/decrypt`; its whole log must
//! hold none of the tokens, the key, the webhook secret or a plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestRepo;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use confhub_server::auth::{generate_token, token_hash};
use confhub_server::crypto::{Key, Keyring};
use confhub_server::github_signature;

const DEADLINE: Duration = Duration::from_secs(20);

/// The log so far, with ANSI colours stripped.
fn log_text(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Stops (SIGTERM, then SIGKILL) the server on drop, so a failing test leaves nothing behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_text_log() {
    secrets_never_reach_the_log("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_json_log() {
    secrets_never_reach_the_log("json").await;
}

async fn secrets_never_reach_the_log(format: &str) {
    let reader = generate_token();
    let admin = generate_token();
    let unknown = generate_token();
    let webhook_secret = generate_token();
    let git_token = generate_token();
    let key = Key::generate();
    let plain = format!("plain-{}", generate_token());
    let plain2 = format!("plain2-{}", generate_token());
    // A PEM-like secret: JSON-escaped in a schema error it no longer matches its plaintext.
    let pem_body = format!("pem-{}", generate_token());
    let pem = format!("-----BEGIN KEY-----\n{pem_body}\n\"quoted\" back\\slash\n");
    let ring = Keyring::new(vec![Key::from_base64(&key).unwrap()]).unwrap();
    let other_ring = Keyring::new(vec![Key::from_base64(&Key::generate()).unwrap()]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n");
    repo.write(
        "orders.yml",
        &format!(
            "db:\n  password: '{}'\n  url: pg://app:${{db.password}}@db\n",
            ring.encrypt(&plain).unwrap()
        ),
    );
    // Decrypts with no configured key: the pair fails, naming the key, not the value.
    repo.write(
        "broken.yml",
        &format!("api:\n  key: '{}'\n", other_ring.encrypt(&plain).unwrap()),
    );
    // Fails its schema: the pair's error is logged at WARN, and must not quote the value.
    repo.write(
        "pem.yml",
        &format!("tls:\n  key: '{}'\n", ring.encrypt(&pem).unwrap()),
    );
    repo.write(
        "confhub.yml",
        "environments: [prod]\nservices:\n  pem:\n    schema: pem.schema.json\n",
    );
    repo.write(
        "pem.schema.json",
        r#"{"properties": {"tls": {"properties": {"key": {"maxLength": 8}}}}}"#,
    );
    repo.commit("secrets");

    let settings = dir.path().join("confhub.toml");
    std::fs::write(
        &settings,
        format!(
            r#"repo = "{repo}"
listen = "127.0.0.1:0"
data_dir = "{data}"
webhook_secret = "{webhook_secret}"
git_token = "{git_token}"

[[tokens]]
name = "reader"
sha256 = "{reader_hash}"
scopes = ["read:*/*"]

[[tokens]]
name = "ops"
sha256 = "{admin_hash}"
scopes = ["admin"]
"#,
            repo = repo.path().display(),
            data = dir.path().join("data").display(),
            reader_hash = token_hash(&reader),
            admin_hash = token_hash(&admin),
        ),
    )
    .unwrap();

    let stderr_path = dir.path().join("stderr.log");
    let stdout_path = dir.path().join("stdout.log");
    let child = Command::new(env!("CARGO_BIN_EXE_confhub"))
        .args(["serve", "--config"])
        .arg(&settings)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env("CONFHUB_LOG_FORMAT", format)
        .env("CONFHUB_ENCRYPT_KEY", &key)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start confhub");
    let mut server = Server(child);

    // The bound address, from the "listening" line.
    let deadline = Instant::now() + DEADLINE;
    let addr = loop {
        let log = log_text(&stderr_path);
        let found = log
            .lines()
            .filter(|l| l.contains("listening"))
            .find_map(|l| l.split("addr=").nth(1).or(l.split("\"addr\":\"").nth(1)))
            .and_then(|rest| rest.split([' ', '"']).next())
            .map(str::to_string);
        if let Some(addr) = found {
            break addr;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("confhub exited ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "no listening line:\n{log}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let get = |path: &str, header: (&str, String)| {
        http.get(format!("{base}{path}"))
            .header(header.0, header.1)
            .send()
    };
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));
    let basic = |t: &str| {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("app:{t}"));
        ("Authorization", format!("Basic {creds}"))
    };

    // Valid tokens, in every header form: the plaintext is served (to the client only).
    let resp = get("/v1/config/orders/prod", bearer(&reader))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(&plain));
    let resp = get("/v1/config/orders/prod", ("X-Config-Token", reader.clone()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get("/orders/prod", basic(&reader)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get("/orders-prod.properties", basic(&reader))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        get("/v1/status", bearer(&admin)).await.unwrap().status(),
        200
    );
    // Unknown tokens, and a valid token outside its scope.
    for header in [
        bearer(&unknown),
        ("X-Config-Token", unknown.clone()),
        basic(&unknown),
        ("Authorization", format!("Bearer {reader}x")),
    ] {
        let resp = get("/v1/config/orders/prod", header).await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = http
        .post(format!("{base}/encrypt"))
        .header("Authorization", format!("Bearer {reader}"))
        .body(plain2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A pair whose value cannot be decrypted.
    let resp = get("/v1/config/broken/prod", bearer(&reader))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body = resp.text().await.unwrap();
    assert!(body.contains("api.key") && !body.contains(&plain), "{body}");
    // A schema violation by a secret: the error names the key, never the value.
    let resp = get("/v1/config/pem/prod", bearer(&reader)).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("tls.key") && !body.contains(&pem_body),
        "{body}"
    );
    for path in ["/v1/status", "/readyz"] {
        let body = get(path, bearer(&admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains("tls.key") && !body.contains(&pem_body),
            "{path}: {body}"
        );
    }
    // /encrypt and /decrypt with the admin token.
    let cipher = http
        .post(format!("{base}/encrypt"))
        .header("Authorization", format!("Bearer {admin}"))
        .body(plain2.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !cipher.starts_with("{cipher}"),
        "bare, as Spring answers: {cipher}"
    );
    let back = http
        .post(format!("{base}/decrypt"))
        .header("Authorization", format!("Bearer {admin}"))
        .body(cipher)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(back, plain2);
    // Webhooks: forged (wrong secret, GitLab token guess) and genuine.
    let payload = br#"{"ref":"refs/heads/main"}"#;
    for (name, value) in [
        ("X-Hub-Signature-256", github_signature(&unknown, payload)),
        ("X-Gitlab-Token", unknown.clone()),
        (
            "X-Hub-Signature-256",
            github_signature(&webhook_secret, payload),
        ),
    ] {
        let resp = http
            .post(format!("{base}/v1/webhook"))
            .header(name, value)
            .body(payload.to_vec())
            .send()
            .await
            .unwrap();
        assert!(
            [401, 202].contains(&resp.status().as_u16()),
            "{name}: {}",
            resp.status()
        );
    }

    // Stop it the way an operator does, so everything it had to say is written.
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let deadline = Instant::now() + DEADLINE;
    while server.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(server);

    let log = log_text(&stderr_path) + &log_text(&stdout_path);
    // The paths that could leak were logged at all.
    for expected in [
        "unauthenticated request",
        "webhook call refused",
        "webhook: fetching",
    ] {
        assert!(log.contains(expected), "no `{expected}` in the log");
    }
    assert!(
        log.lines().any(|l| l.contains("TRACE")),
        "the log is not at TRACE level"
    );
    let raw_key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    let secrets = [
        ("the reader token", reader.clone()),
        ("the admin token", admin.clone()),
        ("an unknown token", unknown.clone()),
        ("the webhook secret", webhook_secret.clone()),
        ("the git token", git_token.clone()),
        ("the encryption key", key.trim().to_string()),
        ("the encryption key (hex)", hex::encode(&raw_key)),
        ("a decrypted value", plain.clone()),
        ("a decrypted PEM value", pem_body.clone()),
        ("an /encrypt plaintext", plain2.clone()),
        (
            "Basic credentials",
            base64::engine::general_purpose::STANDARD.encode(format!("app:{reader}")),
        ),
    ];
    for (what, secret) in secrets {
        if let Some(at) = log.find(&secret) {
            let line = log[..at].rsplit('\n').next().unwrap_or("");
            panic!("{what} is in the log, in a line starting: {line}");
        }
    }
}
