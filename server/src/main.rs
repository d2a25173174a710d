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
    /// Log format.
    #[arg(long, env = "CONFHUB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
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
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    confhub_server::run(listener, settings, shutdown_signal()).await?;
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report =
        confhub_server::check::check(&args.repo, args.rev.as_deref(), args.search_path.as_deref())
            .with_context(|| format!("checking {}", args.repo.display()))?;
    for problem in &report.problems {
        println!("{problem}");
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

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(args),
    }
}
