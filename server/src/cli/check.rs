//! `confhub check`: every problem of a repository as `file:line: message` lines (or a
//! JSON array) on stdout, warnings and a summary on stderr, exit 1 on any problem.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use confhub_server::tools::check::{check_as, Clients, Report};

use super::keys::KeyArgs;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
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

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let clients = if args.spring {
        Clients::Spring
    } else {
        Clients::Native
    };
    let report = check_as(
        &args.repo,
        args.rev.as_deref(),
        args.search_path.as_deref(),
        args.keys.keyring()?.as_ref(),
        clients,
    )
    .with_context(|| format!("checking {}", args.repo.display()))?;
    print_problems(&report, &args.format)?;
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

fn print_problems(report: &Report, format: &str) -> anyhow::Result<()> {
    if format == "json" {
        let problems: Vec<_> = report.problems.iter().map(|p| p.to_body()).collect();
        println!("{}", serde_json::to_string_pretty(&problems)?);
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
    }
    Ok(())
}
