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
