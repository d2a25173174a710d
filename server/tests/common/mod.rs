//! Helpers shared by the binary-level tests in `server/tests/`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Run the real `git` in `dir`, isolated from the machine's git configuration; panics
/// with git's stderr on failure; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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
