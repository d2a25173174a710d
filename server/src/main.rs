//! The `confhub` binary: a thin CLI over the `confhub_server` library. This file parses
//! the arguments, sets up logging and hands each subcommand to its module in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "confhub", version, about = "A git-backed configuration server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config of a git repository (or, with --dev, a directory).
    Serve(cli::serve::ServeArgs),
    /// Resolve every (service, env) of a repository; print `file:line: message` per problem; exit 1 on any.
    Check(cli::check::CheckArgs),
    /// Fetch the resolved config of a pair from a running server.
    Get(cli::get::GetArgs),
    /// Commits that changed a pair's resolved config, newest first.
    History(cli::history::HistoryArgs),
    /// Key-level diff of a pair's resolved config between two labels.
    Diff(cli::diff::DiffArgs),
    /// Which instance holds which config, from a running server.
    Instances(cli::instances::InstancesArgs),
    /// End a rollout with a commit: promote (merge the candidate) or abandon it.
    #[command(subcommand)]
    Rollout(cli::rollout::RolloutCommand),
    /// Encrypt stdin into a `{cipher}…` value to commit.
    Encrypt(cli::encrypt::EncryptArgs),
    /// Print a fresh random encryption key (base64 of 32 bytes).
    Keygen,
    /// Access tokens.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Exit 0 if the URL answers 2xx (container health checks without curl).
    Health {
        /// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8888/healthz")]
        url: String,
    },
}

/// Logs go to stderr, so stdout stays the subcommand's output. `serve` calls this once it
/// has read the log format from its settings.
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

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Get(args) => cli::get::run(args),
        Command::History(args) => cli::history::run(args),
        Command::Diff(args) => cli::diff::run(args),
        Command::Instances(args) => cli::instances::run(args),
        Command::Rollout(command) => cli::rollout::run(command),
        Command::Encrypt(args) => cli::encrypt::run(args),
        Command::Keygen => cli::encrypt::keygen(),
        Command::Token(command) => cli::token::run(command),
        Command::Health { url } => Ok(cli::health::run(&url)),
    }
}
