//! Fetch a service's configuration once, read a few keys, and deserialize it into a
//! typed struct.
//!
//! Start a server on the bundled example repository, then run this:
//!
//! ```sh
//! cargo run -p confhub-server --bin confhub -- serve --repo examples/config-repo --dev
//! cargo run --example fetch_once -- --server http://127.0.0.1:8888 --service orders --env prod
//! ```
//!
//! Flags: `--server URL` (repeatable, tried in order), `--service`, `--env`, `--token`,
//! `--cache-dir`.

mod common;

use clap::Parser;
use std::collections::BTreeMap;

use serde::Deserialize;

/// The part of the orders config this program cares about.
#[derive(Debug, Deserialize)]
struct Orders {
    db: Db,
    #[serde(default)]
    kafka: Kafka,
}

#[derive(Debug, Deserialize)]
struct Db {
    url: String,
    pool: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
struct Kafka {
    #[serde(rename = "bootstrap-servers", default)]
    bootstrap_servers: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging("warn");
    let args = Args::parse();
    let builder = args.server.builder();
    let client = builder.build()?;

    let config = client.fetch().await?;
    println!(
        "{}/{} at {} (digest {}, from {})",
        config.service(),
        config.env(),
        config.version(),
        config.digest(),
        config.origin()
    );
    println!("sources: {}", config.sources().join(", "));

    // One key at a time: a missing key or a wrong type is an error, not a panic.
    match config.get::<u32>("db.pool.max") {
        Ok(max) => println!("db.pool.max = {max}"),
        Err(e) => println!("db.pool.max: {e}"),
    }
    match config.get::<String>("kafka.bootstrap-servers[0]") {
        Ok(first) => println!("first kafka broker = {first}"),
        Err(e) => println!("kafka.bootstrap-servers[0]: {e}"),
    }

    // The whole thing, typed.
    match config.deserialize::<Orders>() {
        Ok(orders) => println!(
            "db {} with pool {:?}; {} kafka broker(s)",
            orders.db.url,
            orders.db.pool,
            orders.kafka.bootstrap_servers.len()
        ),
        Err(e) => println!("not an orders config: {e}"),
    }
    Ok(())
}

/// Flags: `--server` (repeatable), `--service`, `--env`, `--token`, `--cache-dir`.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    server: common::ServerArgs,
}
