//! `confhub serve` as an operator runs it: settings precedence (file < env < flag),
//! unknown keys, masked `--print-settings`, and SIGTERM with live WebSocket subscribers.
#![allow(clippy::unwrap_used)]

mod common;

use common::{confhub, TestRepo};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn print_settings(file: &Path, env: &[(&str, &str)], flags: &[&str]) -> toml::Table {
    let out = confhub()
        .args(["serve", "--print-settings", "--config"])
        .arg(file)
        .args(flags)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn settings_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("confhub-server.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_file_sets_env_overrides_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = settings_file(
        dir.path(),
        "repo = \"/from/file\"\nbranch = \"file\"\nlisten = \"127.0.0.1:1\"\npoll = \"1m\"\n[limits]\nmax_connections = 10\nrate_burst = 7\n",
    );
    let only_file = print_settings(&file, &[], &[]);
    assert_eq!(only_file["repo"].as_str(), Some("/from/file"));
    assert_eq!(only_file["branch"].as_str(), Some("file"));
    assert_eq!(
        only_file["limits"]["max_connections"].as_integer(),
        Some(10)
    );

    let env = [
        ("CONFHUB_BRANCH", "env"),
        ("CONFHUB_POLL", "2m"),
        ("CONFHUB_LIMITS_MAX_CONNECTIONS", "20"),
    ];
    let with_env = print_settings(&file, &env, &[]);
    assert_eq!(
        with_env["repo"].as_str(),
        Some("/from/file"),
        "the file still sets what env does not"
    );
    assert_eq!(with_env["branch"].as_str(), Some("env"));
    assert_eq!(with_env["poll"].as_str(), Some("2m"));
    assert_eq!(with_env["limits"]["max_connections"].as_integer(), Some(20));
    assert_eq!(with_env["limits"]["rate_burst"].as_integer(), Some(7));

    let with_flags = print_settings(
        &file,
        &env,
        &[
            "--branch",
            "flag",
            "--set",
            "limits.max_connections=30",
            "--listen",
            "127.0.0.1:2",
        ],
    );
    assert_eq!(with_flags["branch"].as_str(), Some("flag"));
    assert_eq!(
        with_flags["poll"].as_str(),
        Some("2m"),
        "env still sets what flags do not"
    );
    assert_eq!(
        with_flags["limits"]["max_connections"].as_integer(),
        Some(30)
    );
    assert_eq!(with_flags["listen"].as_str(), Some("127.0.0.1:2"));
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = settings_file(dir.path(), "repo = \"/x\"\n[limits]\nmax_conections = 5\n");
    let out = confhub()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_conections") && err.contains("confhub-server.toml"),
        "{err}"
    );

    let file = settings_file(dir.path(), "repo = \"/x\"\n");
    let out = confhub()
        .args(["serve", "--print-settings", "--config"])
        .arg(&file)
        .env("CONFHUB_LIMITS_RATE_BURST", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONFHUB_LIMITS_RATE_BURST") && err.contains("lots"),
        "{err}"
    );

    let out = confhub()
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--set", "limits.nope=1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.nope"));
}

#[test]
fn print_settings_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = settings_file(
        dir.path(),
        "repo = \"/x\"\nwebhook_secret = \"file-secret-value\"\n",
    );
    let out = confhub()
        .args(["serve", "--print-settings", "--config"])
        .arg(&file)
        .env("CONFHUB_GIT_TOKEN", "env-token-value")
        .env(
            "CONFHUB_ENCRYPT_KEY",
            "c2VjcmV0LWtleS12YWx1ZS0xMjM0NTY3ODkwMTIzNDU2",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("webhook_secret = \"<redacted>\""), "{text}");
    for secret in ["file-secret-value", "env-token-value", "c2VjcmV0"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[tokio::test]
async fn sigterm_closes_subscribers_with_1001_and_exits_0() {
    let repo = TestRepo::new();
    repo.write("orders.yml", "pool: 1\n").commit("init");
    let mut served = common::serve_repo(repo.path());
    let mut sockets = Vec::new();
    while sockets.len() < 3 {
        let mut ws = served.watch().await;
        ws.subscribe("orders", "default", None).await;
        if ws.next_or_close("the first frame").await.is_ok() {
            sockets.push(ws);
        }
    }

    let sent = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for mut ws in sockets {
        let close = ws.closed("a close frame").await;
        let frame = close.expect("close frame with a code");
        assert_eq!(frame.0, 1001, "{frame:?}");
    }
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "confhub did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}
