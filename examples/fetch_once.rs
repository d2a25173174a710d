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

use std::collections::BTreeMap;

use confhub_client::Client;
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
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
            service: "orders".into(),
            env: "prod".into(),
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
        Ok(args)
    }
}
