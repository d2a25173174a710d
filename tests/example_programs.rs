//! The client examples run for real against a server: `watch` prints one JSON line for
//! the initial config and one per accepted change; `fetch_once` prints the config.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{TestRepo, TestServer};
use serde_json::{json, Value};

/// `cargo test` builds the examples next to the test binaries' folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo test builds examples)",
        path.display()
    );
    path
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Value {
    let line = tokio::time::timeout(common::DEADLINE, rx.recv())
        .await
        .expect("a line in time")
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn watch_prints_a_line_per_accepted_change() {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\n")
        .write("orders.yml", "pool: 1\n");
    repo.commit("initial");
    let server = TestServer::start(common::settings(repo.path_str())).await;

    let mut child = Command::new(example("watch"))
        .args([
            "--server",
            &server.base_url(),
            "--service",
            "orders",
            "--env",
            "default",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = next_line(&mut rx).await;
    assert_eq!(first["values"], json!({"region": "eu", "pool": 1}));
    assert!(common::is_sha256_hex(first["digest"].as_str().unwrap()));

    repo.write("orders.yml", "pool: 2\n");
    let sha = repo.commit("more");
    let second = next_line(&mut rx).await;
    assert_eq!(second["values"]["pool"], json!(2));
    assert_eq!(second["version"], json!(sha));
    assert_ne!(second["digest"], first["digest"]);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn fetch_once_prints_the_config() {
    let repo = TestRepo::new();
    repo.write("orders.yml", "orders:\n  max-items: 3\n");
    repo.commit("initial");
    let server = TestServer::start(common::settings(repo.path_str())).await;
    let out = tokio::task::spawn_blocking({
        let url = server.base_url();
        move || {
            Command::new(example("fetch_once"))
                .args(["--server", &url, "--service", "orders", "--env", "default"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("orders/default"), "{text}");
}
