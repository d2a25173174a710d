//! Watch a service's configuration and print one JSON line per accepted version:
//! `{"version": "...", "digest": "...", "values": {...}}` on stdout — the initial config
//! first, then every change pushed by the server. Logs go to stderr.
//!
//! ```sh
//! cargo run --example watch -- --server http://127.0.0.1:8888 --service orders --env prod
//! ```
//!
//! Flags: `--server URL` (repeatable, tried in order), `--service`, `--env`, `--token`
//! (or `CONFHUB_TOKEN`), `--cache-dir`. With every server down and a cache directory
//! given, it starts from the cached config and says so on stderr.

mod common;

use clap::Parser;
use std::io::Write;

use confhub_client::{Snapshot, Watched};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging("info");
    let args = Args::parse();
    let builder = args.server.builder();
    let client = builder.build()?;

    // A dynamic config: any JSON is accepted.
    let mut watched: Watched<Value> = client.watch().await?;
    if watched.is_from_cache() {
        eprintln!(
            "every server is unreachable: started from {}",
            watched.origin()
        );
    }
    let mut printed = print(&watched.snapshot(), None)?;
    loop {
        tokio::select! {
            _ = watched.changed() => {
                printed = print(&watched.snapshot(), Some(printed))?;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Print `snap` unless its digest was the last printed; return the printed digest.
fn print(snap: &Snapshot<Value>, last: Option<String>) -> anyhow::Result<String> {
    if last.as_deref() != Some(snap.digest.as_str()) {
        let line = json!({
            "version": snap.version,
            "digest": snap.digest,
            "values": *snap.value,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(snap.digest.clone())
}

/// Flags: `--server` (repeatable), `--service`, `--env`, `--token`, `--cache-dir`.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    server: common::ServerArgs,
}
