//! `confhub serve`: the effective settings (file, then `CONFHUB_*` and Spring's own
//! environment variables, then flags), then the library's `run` on a bound listener
//! until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use confhub_server::settings::file as settings_file;

/// `confhub serve`. Every setting comes from the settings file (`--config`), then its
/// `CONFHUB_*` environment variable, then these flags; flags win.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML settings file.
    #[arg(long, env = "CONFHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    print_settings: bool,
    /// Local path or URL (file://, git://, https://, ssh://) of the config repository [CONFHUB_REPO].
    #[arg(long)]
    repo: Option<String>,
    /// Branch to track (default: main, falling back to master) [CONFHUB_BRANCH].
    #[arg(long)]
    branch: Option<String>,
    /// Address to listen on (default 127.0.0.1:8888) [CONFHUB_LISTEN].
    #[arg(long)]
    listen: Option<String>,
    /// Folder of the repository holding the config files; several comma-separated folders or `{application}`/`{profile}` placeholders read them as Spring's searchPaths do [CONFHUB_SEARCH_PATH].
    #[arg(long)]
    search_path: Option<String>,
    /// Serve a plain directory from the filesystem (version = content hash) [CONFHUB_DEV].
    #[arg(long)]
    dev: bool,
    /// Where remote repositories are cloned (default ./confhub-data) [CONFHUB_DATA_DIR].
    #[arg(long)]
    data_dir: Option<String>,
    /// How often remote repositories are fetched, e.g. 30s, 5m (default 30s) [CONFHUB_POLL].
    #[arg(long)]
    poll: Option<String>,
    /// Token for https:// remotes [CONFHUB_GIT_TOKEN].
    #[arg(long)]
    git_token: Option<String>,
    /// Private key for ssh:// remotes [CONFHUB_SSH_KEY].
    #[arg(long)]
    ssh_key: Option<String>,
    /// Secret for POST /v1/webhook: the HMAC key of GitHub, Gitea and Bitbucket webhooks,
    /// the token of GitLab ones. Without it the webhook endpoint is disabled [CONFHUB_WEBHOOK_SECRET].
    #[arg(long)]
    webhook_secret: Option<String>,
    /// File holding the encryption key for {cipher} values [CONFHUB_ENCRYPT_KEY_FILE; or the key itself in CONFHUB_ENCRYPT_KEY].
    #[arg(long)]
    encrypt_key_file: Option<String>,
    /// Log format: text or json [CONFHUB_LOG_FORMAT].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// TLS certificate chain, PEM (serve HTTPS/WSS) [CONFHUB_TLS_CERT].
    #[arg(long)]
    tls_cert: Option<String>,
    /// TLS private key, PEM [CONFHUB_TLS_KEY].
    #[arg(long)]
    tls_key: Option<String>,
    /// Any other setting, e.g. `--set limits.max_connections=5000`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    /// Flags as (settings key, raw value), in precedence order.
    fn overrides(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut add = |key: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((key.to_string(), v.clone()));
            }
        };
        add("repo", &self.repo);
        add("branch", &self.branch);
        add("listen", &self.listen);
        add("search_path", &self.search_path);
        add("data_dir", &self.data_dir);
        add("poll", &self.poll);
        add("git_token", &self.git_token);
        add("ssh_key", &self.ssh_key);
        add("webhook_secret", &self.webhook_secret);
        add("encrypt_key_file", &self.encrypt_key_file);
        add("log_format", &self.log_format);
        add("tls_cert", &self.tls_cert);
        add("tls_key", &self.tls_key);
        if self.dev {
            out.push(("dev".into(), "true".into()));
        }
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            out.push((k.trim().to_string(), v.to_string()));
        }
        Ok(out)
    }
}

/// The environment variables the settings read: ours and Spring's own.
fn settings_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("CONFHUB_") || settings_file::SPRING_ENV.iter().any(|(s, _)| s == k)
        })
        .collect()
}

/// Load the settings, then serve until a shutdown signal (or print them, with
/// `--print-settings`). Named apart from the library's accept loop, which this only starts.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = settings_file::load(args.config.as_deref(), &settings_env(), &args.overrides()?)?;
    if args.print_settings {
        print!("{}", toml::to_string(&file.masked())?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::init_logging(file.log_format() == "json");
    let listen = file.listen().to_string();
    let settings = file.into_settings()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        confhub_server::run(listener, settings, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or (on unix) SIGTERM, which is how containers are stopped.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
