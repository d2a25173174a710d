//! The `confhub` binary: a thin CLI over the `confhub_server` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confhub_server::settings::file as settings_file;
use confhub_server::Settings;

#[derive(Parser)]
#[command(name = "confhub", version, about = "A git-backed configuration server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config of a git repository (or, with --dev, a directory).
    Serve(ServeArgs),
    /// Resolve every (service, env) of a repository; print `file:line: message` per problem; exit 1 on any.
    Check(CheckArgs),
    /// Fetch the resolved config of a pair from a running server.
    Get(GetArgs),
    /// Commits that changed a pair's resolved config, newest first.
    History(HistoryArgs),
    /// Key-level diff of a pair's resolved config between two labels.
    Diff(DiffArgs),
    /// Encrypt stdin into a `{cipher}…` value to commit.
    Encrypt(EncryptArgs),
    /// Print a fresh random encryption key (base64 of 32 bytes).
    Keygen,
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Exit 0 if the URL answers 2xx (container health checks without curl).
    Health {
        /// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8888/healthz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token and the `[[tokens]]` entry (its hash) for the settings file.
    New {
        /// Who will hold the token.
        #[arg(long)]
        name: String,
        /// `service/env` glob to grant read access to (e.g. `orders/*`, `*/staging`), or `admin`; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

#[derive(clap::Args)]
struct EncryptArgs {
    #[command(flatten)]
    keys: KeyArgs,
}

/// Where `get`, `history` and `diff` read from.
#[derive(clap::Args)]
struct Target {
    /// A running confhub server.
    #[arg(long, env = "CONFHUB_SERVER", conflicts_with = "repo")]
    server: Option<String>,
    /// Read a git repository directly instead of asking a server.
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Access token for the server.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Folder of the repository holding the config files (with --repo).
    #[arg(long)]
    search_path: Option<String>,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Service name.
    service: String,
    /// Environment(s), e.g. `prod` or `prod,eu`.
    env: String,
    /// Server URL.
    #[arg(long, env = "CONFHUB_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Access token.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = ["json", "yaml", "properties", "env"])]
    format: String,
    /// Branch, tag or sha.
    #[arg(long)]
    label: Option<String>,
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// Service name.
    service: String,
    /// Environment(s).
    env: String,
    /// How many commits to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// Service name.
    service: String,
    /// Environment(s).
    env: String,
    /// The older label (branch, tag or sha).
    #[arg(long)]
    from: String,
    /// The newer label (default: the tracked branch).
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `confhub serve`. Every setting comes from the settings file (`--config`), then its
/// `CONFHUB_*` environment variable, then these flags; flags win.
#[derive(clap::Args)]
struct ServeArgs {
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

/// Where the keys for `{cipher}` values come from.
#[derive(clap::Args)]
struct KeyArgs {
    /// The encryption key, base64 of 32 bytes (prefer the file or the environment).
    #[arg(
        long = "encrypt-key",
        env = "CONFHUB_ENCRYPT_KEY",
        hide_env_values = true,
        hide = true
    )]
    key: Option<String>,
    /// File holding the encryption key (base64 of 32 bytes); new values are encrypted with it.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_FILE")]
    encrypt_key_file: Option<PathBuf>,
    /// Older key files still accepted for decryption (key rotation); repeatable.
    #[arg(long)]
    decrypt_key_file: Vec<PathBuf>,
    /// Spring's `encrypt.key`: a passphrase (or a PEM RSA private key) for Spring's
    /// `{cipher}` values; Spring's own `ENCRYPT_KEY` variable is read too.
    #[arg(
        long,
        env = "CONFHUB_ENCRYPT_PASSPHRASE",
        hide_env_values = true,
        hide = true
    )]
    encrypt_passphrase: Option<String>,
    /// Spring's `encrypt.salt` (hex, default `deadbeef`); `ENCRYPT_SALT` is read too.
    #[arg(long, env = "CONFHUB_ENCRYPT_SALT")]
    encrypt_salt: Option<String>,
    /// Spring's `encrypt.key-store.location`: a PKCS#12 keystore or PEM file with an RSA key.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_STORE_LOCATION")]
    key_store: Option<PathBuf>,
    /// Spring's `encrypt.key-store.password`.
    #[arg(
        long,
        env = "CONFHUB_ENCRYPT_KEY_STORE_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    key_store_password: Option<String>,
    /// Spring's `encrypt.key-store.alias`: the default key of the keystore.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_STORE_ALIAS")]
    key_store_alias: Option<String>,
}

/// Spring's own environment variable for `name`, when ours is not set.
fn spring_env(ours: &Option<String>, spring: &str) -> Option<String> {
    ours.clone()
        .or_else(|| std::env::var(spring).ok().filter(|v| !v.is_empty()))
}

impl KeyArgs {
    fn keyring(&self) -> anyhow::Result<Option<confhub_server::crypto::Keyring>> {
        use confhub_server::crypto::{Key, Keyring};
        let mut keys = Vec::new();
        if let Some(k) = &self.key {
            keys.push(Key::from_base64(k).context("CONFHUB_ENCRYPT_KEY")?);
        }
        for file in self.encrypt_key_file.iter().chain(&self.decrypt_key_file) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading key file {}", file.display()))?;
            keys.push(
                Key::from_base64(&text).with_context(|| format!("key file {}", file.display()))?,
            );
        }
        let store_location = self
            .key_store
            .clone()
            .or_else(|| std::env::var_os("ENCRYPT_KEY_STORE_LOCATION").map(PathBuf::from));
        let spring = confhub_server::crypto::spring::SpringKeySettings {
            passphrase: spring_env(&self.encrypt_passphrase, "ENCRYPT_KEY"),
            salt: spring_env(&self.encrypt_salt, "ENCRYPT_SALT"),
            key_store: store_location.map(|location| {
                confhub_server::crypto::spring::KeyStoreSettings {
                    location,
                    password: spring_env(&self.key_store_password, "ENCRYPT_KEY_STORE_PASSWORD")
                        .unwrap_or_default(),
                    alias: spring_env(&self.key_store_alias, "ENCRYPT_KEY_STORE_ALIAS"),
                    secret: None,
                    kind: None,
                }
            }),
            ..Default::default()
        };
        let (default, named) = confhub_server::crypto::spring::build(&spring)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.setting, e.message))?;
        Ok(Keyring::with_spring(keys, default, named))
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Path of the config repository (a git repository or a plain directory).
    repo: PathBuf,
    /// Revision to check (git repositories).
    #[arg(long)]
    rev: Option<String>,
    /// Folder of the repository holding the config files.
    #[arg(long)]
    search_path: Option<String>,
    /// Output format: `file:line: message` lines, or a JSON array.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Check as Spring Cloud Config serves: a placeholder nothing in the repository sets
    /// is left for the client to resolve (a warning), not a problem.
    #[arg(long)]
    spring: bool,
    /// With a key, `{cipher}` values must decrypt; without one they are not checked.
    #[command(flatten)]
    keys: KeyArgs,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

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

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("CONFHUB_") || settings_file::SPRING_ENV.iter().any(|(s, _)| s == k)
        })
        .collect();
    let file = settings_file::load(args.config.as_deref(), &env, &args.overrides()?)?;
    if args.print_settings {
        print!("{}", toml::to_string(&file.masked())?);
        return Ok(());
    }
    init_logging(file.log_format() == "json");
    let listen = file.listen().to_string();
    let settings = file.into_settings()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        confhub_server::run(listener, settings, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let clients = if args.spring {
        confhub_server::tools::check::Clients::Spring
    } else {
        confhub_server::tools::check::Clients::Native
    };
    let report = confhub_server::tools::check::check_as(
        &args.repo,
        args.rev.as_deref(),
        args.search_path.as_deref(),
        args.keys.keyring()?.as_ref(),
        clients,
    )
    .with_context(|| format!("checking {}", args.repo.display()))?;
    if args.format == "json" {
        let problems: Vec<_> = report.problems.iter().map(|p| p.to_body()).collect();
        println!("{}", serde_json::to_string_pretty(&problems)?);
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
    }
    // Warnings never fail the check; they go where a human reads them.
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "{}: {} services × {} envs, {} pairs ok, {} problem(s) at {}",
        args.repo.display(),
        report.services,
        report.envs,
        report.pairs_ok,
        report.problems.len(),
        report.version
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn open_repo(
    repo: &std::path::Path,
    search_path: Option<&str>,
) -> anyhow::Result<(confhub_server::source::git::GitSource, std::sync::Arc<str>)> {
    let mut settings = Settings::new(repo.display().to_string());
    settings.search_path = search_path.map(str::to_string);
    let git = confhub_server::source::git::GitSource::open(&settings)
        .with_context(|| format!("opening {}", repo.display()))?;
    let uri: std::sync::Arc<str> = git.uri().into();
    Ok((git, uri))
}

/// GET `url` and return the body; a non-2xx answer is an error carrying the server's message.
fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut req = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            anyhow::bail!("{url}: {status}: {body}");
        }
        Ok(body)
    })
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            serve(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(args),
        Command::Token(TokenCommand::New { name, scopes }) => {
            let scopes: Vec<String> = scopes
                .into_iter()
                .map(|s| {
                    if s == "admin" || s.starts_with("read:") {
                        s
                    } else {
                        format!("read:{s}")
                    }
                })
                .collect();
            let token = confhub_server::auth::generate_token();
            let entry = confhub_server::auth::TokenConfig {
                name,
                sha256: confhub_server::auth::token_hash(&token),
                scopes,
            };
            confhub_server::auth::Auth::new(std::slice::from_ref(&entry))?;
            #[derive(serde::Serialize)]
            struct Entry<'a> {
                tokens: [&'a confhub_server::auth::TokenConfig; 1],
            }
            eprintln!("token (give it to the client; it is not stored anywhere):");
            println!("{token}");
            eprintln!("\nadd to the settings file:");
            eprint!("{}", toml::to_string(&Entry { tokens: [&entry] })?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { url } => Ok(match http_get(&url, None) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        }),
        Command::Keygen => {
            println!("{}", confhub_server::crypto::Key::generate());
            Ok(ExitCode::SUCCESS)
        }
        Command::Encrypt(args) => {
            let keyring = args
                .keys
                .keyring()?
                .context("no key: give --encrypt-key-file or set CONFHUB_ENCRYPT_KEY")?;
            let mut plain = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut plain)
                .context("reading stdin")?;
            // A trailing newline from `echo` is almost never part of the secret.
            let plain = plain.strip_suffix('\n').unwrap_or(&plain);
            println!("'{}'", keyring.encrypt(plain)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(args) => {
            let mut url = format!(
                "{}/v1/config/{}/{}?format={}",
                args.server.trim_end_matches('/'),
                args.service,
                args.env,
                args.format
            );
            if let Some(label) = &args.label {
                url.push_str(&format!("&label={label}"));
            }
            print!("{}", http_get(&url, args.token.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => {
            let text = match (&args.target.server, &args.target.repo) {
                (Some(server), _) => http_get(
                    &format!(
                        "{}/v1/history/{}/{}?limit={}",
                        server.trim_end_matches('/'),
                        args.service,
                        args.env,
                        args.limit
                    ),
                    args.target.token.as_deref(),
                )?,
                (None, Some(repo)) => {
                    let envs = confhub_server::names::parse_envs(&args.env)?;
                    let (git, uri) = open_repo(repo, args.target.search_path.as_deref())?;
                    let (label, entries) = confhub_server::tools::history::history(
                        &git,
                        &uri,
                        &args.service,
                        &envs,
                        args.limit,
                    )?;
                    serde_json::to_string_pretty(&confhub_client::wire::HistoryResponse {
                        service: args.service.clone(),
                        env: args.env.clone(),
                        label,
                        entries,
                    })?
                }
                (None, None) => anyhow::bail!("give --server URL or --repo PATH"),
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff(args) => {
            let text = match (&args.target.server, &args.target.repo) {
                (Some(server), _) => {
                    let mut url = format!(
                        "{}/v1/diff/{}/{}?from={}",
                        server.trim_end_matches('/'),
                        args.service,
                        args.env,
                        args.from
                    );
                    if let Some(to) = &args.to {
                        url.push_str(&format!("&to={to}"));
                    }
                    http_get(&url, args.target.token.as_deref())?
                }
                (None, Some(repo)) => {
                    let report = confhub_server::tools::history::diff_repo(
                        repo,
                        args.target.search_path.as_deref(),
                        &args.service,
                        &args.env,
                        &args.from,
                        args.to.as_deref(),
                    )?;
                    serde_json::to_string_pretty(&report)?
                }
                (None, None) => anyhow::bail!("give --server URL or --repo PATH"),
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
