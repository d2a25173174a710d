//! Command-line flags shared by the client examples.

use confhub_client::{Client, ClientBuilder};

/// `--server` (repeatable), `--service`, `--env`, `--token`, `--cache-dir`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Base URL of a confhub server; repeat for failover.
    #[arg(long = "server", default_value = "http://127.0.0.1:8888")]
    pub servers: Vec<String>,
    /// Service to read.
    #[arg(long, default_value = "orders")]
    pub service: String,
    /// Environment(s), e.g. `prod` or `prod,eu`.
    #[arg(long, default_value = "prod")]
    pub env: String,
    /// Access token.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Keep the last accepted config here, to start from when every server is down.
    #[arg(long)]
    pub cache_dir: Option<String>,
}

impl ServerArgs {
    /// A client builder set up from the flags.
    pub fn builder(&self) -> ClientBuilder {
        let mut builder = Client::builder()
            .servers(self.servers.clone())
            .service(self.service.clone())
            .env(self.env.clone());
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        if let Some(dir) = &self.cache_dir {
            builder = builder.cache_dir(dir);
        }
        builder
    }
}

/// Logs to stderr (stdout is the examples' output), filtered by `RUST_LOG`, else `default`.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}
