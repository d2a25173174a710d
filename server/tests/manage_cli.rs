//! Config management from the command line and git hooks: `confhub history`/`diff` on a
//! repository, the pre-commit hook refusing a broken staged file, and the pre-receive
//! hook refusing a broken push to a bare repository.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::git::{git_command, init, run_git};

/// `git args` in `dir`, with `$CONFHUB` naming this build's binary for the example hooks.
fn hooked_git(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = git_command(dir, args);
    cmd.env("CONFHUB", env!("CARGO_BIN_EXE_confhub"));
    cmd
}

/// Run git (hooks included), which may fail.
fn git_in(dir: &Path, args: &[&str]) -> Output {
    hooked_git(dir, args).output().unwrap()
}

/// Run git (hooks included), which must succeed; returns trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    run_git(hooked_git(dir, args))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/hooks")
        .join(name)
}

fn confhub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confhub"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn history_and_diff_read_a_repository_directly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, "main");
    write(d, "application.yml", "a: 1\n");
    write(d, "orders.yml", "pool: 1\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "first"]);
    git(d, &["tag", "v1"]);
    write(d, "orders.yml", "pool: 2\n");
    git(d, &["commit", "-q", "-am", "second"]);

    let repo = d.to_str().unwrap();
    let out = confhub(&["history", "orders", "default", "--repo", repo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["second", "first"]);
    assert_eq!(h["entries"][0]["changed_keys"], serde_json::json!(["pool"]));

    let out = confhub(&["diff", "orders", "default", "--from", "v1", "--repo", repo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        diff["changed"],
        serde_json::json!({"pool": {"old": 1, "new": 2}})
    );
    assert_eq!(diff["to"], "main");

    let out = confhub(&[
        "diff", "orders", "default", "--from", "nope", "--repo", repo,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown label `nope`"));
}

#[test]
fn the_pre_commit_hook_checks_what_is_staged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, "main");
    let hooks = d.join(".git/hooks");
    std::fs::copy(hook("pre-commit"), hooks.join("pre-commit")).unwrap();
    write(d, "application.yml", "a: 1\n");
    write(d, "orders.yml", "pool: 1\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "good"]);

    write(d, "orders.yml", "pool: [1\n");
    git(d, &["add", "orders.yml"]);
    let refused = git_in(d, &["commit", "-q", "-m", "broken"]);
    assert!(
        !refused.status.success(),
        "a broken staged file must be refused"
    );
    let out = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        out.contains("orders.yml:2:") && out.contains("commit refused"),
        "{out}"
    );

    // Only the index counts: fixing the working tree without staging is still refused...
    write(d, "orders.yml", "pool: 2\n");
    assert!(!git_in(d, &["commit", "-q", "-m", "still broken"])
        .status
        .success());
    // ...and staging the fix lets the commit through.
    git(d, &["add", "orders.yml"]);
    git(d, &["commit", "-q", "-m", "fixed"]);
    assert_eq!(git(d, &["log", "-1", "--format=%s"]), "fixed");
}

#[test]
fn the_pre_receive_hook_refuses_a_broken_push() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("config.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    std::fs::copy(hook("pre-receive"), bare.join("hooks/pre-receive")).unwrap();
    init(&work, "main");
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    write(&work, "application.yml", "a: 1\n");
    write(&work, "orders.yml", "url: x${db.host}\ndb:\n  host: h\n");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "good"]);
    git(&work, &["push", "-q", "origin", "main"]);

    write(&work, "orders.yml", "url: x${db.nope}\n");
    git(&work, &["commit", "-q", "-am", "broken placeholder"]);
    let refused = git_in(&work, &["push", "-q", "origin", "main"]);
    assert!(!refused.status.success(), "the push must be refused");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("db.nope") && err.contains("push to refs/heads/main refused"),
        "{err}"
    );
    let head = git(&bare, &["rev-parse", "main"]);
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", &head]),
        "good",
        "the bare repo kept the good commit"
    );

    write(&work, "orders.yml", "url: x${db.host}\ndb:\n  host: h2\n");
    git(&work, &["commit", "-q", "-am", "fixed"]);
    git(&work, &["push", "-q", "origin", "main"]);
    assert_eq!(git(&bare, &["log", "-1", "--format=%s", "main"]), "fixed");
}
