//! Helpers shared by the binary-level tests in `server/tests/`.
//!
//! Real git and the WebSocket client are the end-to-end tests' own modules, compiled
//! here too so that each has one definition.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

#[path = "../../../tests/common/git.rs"]
pub mod git;
// Not every test file uses both.
#[allow(unused_imports)]
pub use git::{git, TestRepo};

#[path = "../../../tests/common/ws.rs"]
pub mod ws;

/// The `confhub` binary, with no `CONFHUB_*` variable inherited from the machine running
/// the tests: each test sets exactly what it means.
pub fn confhub() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confhub"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONFHUB_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `confhub serve` on a repository, on a free loopback port with its own data dir.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    _data: tempfile::TempDir,
}

/// Start `confhub serve --repo repo` (its log discarded).
pub fn serve_repo(repo: &std::path::Path) -> Served {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let child = confhub()
        .args(["serve", "--repo"])
        .arg(repo)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Served {
        child,
        port,
        _data: data,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Already gone when a test waited for its exit; then this does nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// A WebSocket on `/v1/watch`, once the server accepts one (within 20 s).
    pub async fn watch(&self) -> ws::Watcher {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let url = format!("ws://127.0.0.1:{}/v1/watch", self.port);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "server did not come up"
            );
            match ws::Watcher::try_connect(&url, None).await {
                Ok(ws) => return ws.within(std::time::Duration::from_secs(10)),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}
