//! The `confhub` binary: a thin CLI over the `confhub_server` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Local path or URL (file://, git://, https://, ssh://) of the config repository.
    #[arg(long, env = "CONFHUB_REPO")]
    repo: String,
    /// Branch to track (default: main, falling back to master).
    #[arg(long, env = "CONFHUB_BRANCH")]
    branch: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "CONFHUB_LISTEN", default_value = "127.0.0.1:8888")]
    listen: String,
    /// Folder of the repository holding the config files.
    #[arg(long, env = "CONFHUB_SEARCH_PATH")]
    search_path: Option<String>,
    /// Serve a plain directory from the filesystem (version = content hash).
    #[arg(long, env = "CONFHUB_DEV")]
    dev: bool,
    /// Where remote repositories are cloned.
    #[arg(long, env = "CONFHUB_DATA_DIR", default_value = "./confhub-data")]
    data_dir: PathBuf,
    /// How often remote repositories are fetched (e.g. 30s, 5m).
    #[arg(long, env = "CONFHUB_POLL", default_value = "30s", value_parser = parse_duration)]
    poll: Duration,
    /// Token for https:// remotes.
    #[arg(long, env = "CONFHUB_GIT_TOKEN", hide_env_values = true)]
    git_token: Option<String>,
    /// Private key for ssh:// remotes.
    #[arg(long, env = "CONFHUB_SSH_KEY")]
    ssh_key: Option<PathBuf>,
    /// Secret for POST /v1/webhook: the HMAC key of GitHub, Gitea and Bitbucket webhooks,
    /// the token of GitLab ones. Without it the webhook endpoint is disabled.
    #[arg(long, env = "CONFHUB_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Log format.
    #[arg(long, env = "CONFHUB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    keys: KeyArgs,
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
        Ok(Keyring::new(keys))
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
    /// With a key, `{cipher}` values must decrypt; without one they are not checked.
    #[command(flatten)]
    keys: KeyArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 500ms"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    })
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format == "json");
    let mut settings = Settings::new(args.repo);
    settings.branch = args.branch;
    settings.search_path = args.search_path;
    settings.dev = args.dev;
    settings.data_dir = args.data_dir;
    settings.poll = args.poll;
    settings.git_token = args.git_token;
    settings.ssh_key = args.ssh_key;
    settings.webhook_secret = args
        .webhook_secret
        .filter(|s| !s.is_empty())
        .map(Into::into);
    settings.keyring = args.keys.keyring()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    confhub_server::run(listener, settings, shutdown_signal()).await?;
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = confhub_server::check::check(
        &args.repo,
        args.rev.as_deref(),
        args.search_path.as_deref(),
        args.keys.keyring()?.as_ref(),
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
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(args),
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
            println!("'{}'", keyring.encrypt(plain));
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
                    let (label, entries) = confhub_server::history::history(
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
                    let report = confhub_server::history::diff_repo(
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
