//! The operator's encryption round trip with the real binary: `confhub keygen`,
//! `confhub encrypt` → commit → `confhub check` with the key → the server serves the
//! plaintext to an authorized token and nothing to another.
#![allow(clippy::unwrap_used)]

mod common;

use common::{confhub, TestRepo};

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn get(url: &str, token: &str) -> (u16, String) {
    // The binary's own client (`confhub get`) would hide the status; use a raw request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap()).await;
        let Ok(mut stream) = stream else { return (0, String::new()) };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = &url[url.find("/v1").unwrap()..];
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    })
}

#[test]
fn keygen_encrypt_commit_check_serve() {
    let dir = tempfile::tempdir().unwrap();
    let key = String::from_utf8(confhub().arg("keygen").output().unwrap().stdout).unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &key).unwrap();

    let mut enc = confhub()
        .args(["encrypt", "--encrypt-key-file"])
        .arg(&key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    enc.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = enc.wait_with_output().unwrap();
    assert!(out.status.success());
    let cipher = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        cipher.starts_with("'{cipher}") && !cipher.contains("hunter2"),
        "{cipher}"
    );

    let repo = TestRepo::new();
    repo.write("orders.yml", &format!("db:\n  password: {cipher}\n"))
        .write("payments.yml", "a: 1\n")
        .commit("secret");

    let check = |with_key: bool| {
        let mut cmd = confhub();
        cmd.arg("check").arg(repo.path());
        if with_key {
            cmd.arg("--encrypt-key-file").arg(&key_file);
        } else {
            cmd.env(
                "CONFHUB_ENCRYPT_KEY",
                confhub_server::crypto::Key::generate(),
            );
        }
        cmd.output().unwrap()
    };
    assert!(check(true).status.success());
    let wrong = check(false);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("orders.yml:2: key `db.password`"));

    let token = "tok-orders";
    let settings = dir.path().join("confhub-server.toml");
    std::fs::write(
        &settings,
        format!(
            "[[tokens]]\nname = \"orders\"\nsha256 = \"{}\"\nscopes = [\"read:orders/*\"]\n",
            confhub_server::auth::token_hash(token)
        ),
    )
    .unwrap();
    let port = common::free_port();
    let mut server = confhub()
        .args(["serve", "--config"])
        .arg(&settings)
        .arg("--repo")
        .arg(repo.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--encrypt-key-file",
        ])
        .arg(&key_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/config/orders/default");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = get(&url, token);
        if status == 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"password\":\"hunter2\""), "{body}");
    let (status, body) = get(&url.replace("orders/default", "payments/default"), token);
    assert_eq!(status, 403);
    assert!(!body.contains("hunter2"));
    let (status, body) = get(&url, "tok-wrong");
    assert_eq!(status, 401);
    assert!(!body.contains("hunter2"));
    let _ = server.kill();
    let _ = server.wait();
}
