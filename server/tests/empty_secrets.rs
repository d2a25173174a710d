//! A secret that is set but empty is a mistake, not "no secret": `confhub serve` refuses
//! to start, naming the setting, instead of serving a webhook anyone can sign or a token
//! any request can present.
#![allow(clippy::unwrap_used)]

mod common;

use common::{confhub, TestRepo};

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("orders.yml", "pool: 1\n").commit("init");
    repo
}

/// Start `confhub serve` on `repo` with `file` as settings and `env`; it must exit with a
/// failure within the deadline (a server that starts is killed and the test fails).
/// Returns its stderr.
fn refused(repo: &Path, file: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("confhub-server.toml");
    std::fs::write(&settings, file).unwrap();
    let mut child: Child = confhub()
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(repo)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&settings)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "confhub served with {file:?} {env:?}; log: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success(), "{file:?} {env:?}: exit {status:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn an_empty_webhook_secret_is_refused_at_start() {
    let repo = repo();
    for (file, env) in [
        ("webhook_secret = \"\"\n", vec![]),
        ("", vec![("CONFHUB_WEBHOOK_SECRET", "")]),
        ("", vec![("CONFHUB_WEBHOOK_SECRET", "   ")]),
    ] {
        let err = refused(repo.path(), file, &env);
        assert!(
            err.contains("webhook_secret") && err.contains("empty"),
            "{file:?} {env:?}: {err}"
        );
    }
}

#[test]
fn a_token_hashing_the_empty_string_is_refused_at_start() {
    let repo = repo();
    // sha256("")
    let file = "[[tokens]]\nname = \"nobody\"\nsha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\nscopes = [\"admin\"]\n";
    let err = refused(repo.path(), file, &[]);
    assert!(
        err.contains("tokens") && err.contains("nobody") && err.contains("empty token"),
        "{err}"
    );
}

#[test]
fn other_empty_secrets_and_key_files_are_refused_at_start() {
    let repo = repo();
    for (file, key) in [
        ("git_token = \"\"\n", "git_token"),
        ("encrypt_key = \"\"\n", "encrypt_key"),
        ("encrypt_key_file = \"\"\n", "encrypt_key_file"),
        ("ssh_key = \"\"\n", "ssh_key"),
        ("tls_cert = \"/tmp/c.pem\"\ntls_key = \"\"\n", "tls_key"),
        ("tls_cert = \"\"\ntls_key = \"/tmp/k.pem\"\n", "tls_cert"),
    ] {
        let err = refused(repo.path(), file, &[]);
        assert!(
            err.contains(&format!("`{key}`")) && err.contains("empty"),
            "{file:?}: {err}"
        );
    }
}
