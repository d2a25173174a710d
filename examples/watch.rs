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

use std::io::Write;

use confhub_client::{Client, Snapshot, Watched};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse()?;
    let mut builder = Client::builder()
        .servers(args.servers)
        .service(args.service)
        .env(args.env);
    if let Some(token) = args.token {
        builder = builder.token(token);
    }
    if let Some(dir) = args.cache_dir {
        builder = builder.cache_dir(dir);
    }
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

/// `--server` (repeatable), `--service`, `--env`, `--token`, `--cache-dir`.
struct Args {
    servers: Vec<String>,
    service: String,
    env: String,
    token: Option<String>,
    cache_dir: Option<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            servers: Vec::new(),
            service: String::new(),
            env: String::new(),
            token: std::env::var("CONFHUB_TOKEN").ok(),
            cache_dir: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
            };
            match name.as_str() {
                "--server" => args.servers.push(value()?),
                "--service" => args.service = value()?,
                "--env" => args.env = value()?,
                "--token" => args.token = Some(value()?),
                "--cache-dir" => args.cache_dir = Some(value()?),
                other => anyhow::bail!(
                    "unknown flag {other}; use --server URL --service S --env E [--token T] [--cache-dir D]"
                ),
            }
        }
        if args.servers.is_empty() {
            args.servers.push("http://127.0.0.1:8888".into());
        }
        anyhow::ensure!(!args.service.is_empty(), "--service is required");
        anyhow::ensure!(!args.env.is_empty(), "--env is required");
        Ok(args)
    }
}
