//! `confhub rollout promote|abandon NAME`: print (or with `--commit`, make) the commit
//! that ends a rollout, on a local clone of the config repository. Nothing is pushed.

use std::path::PathBuf;
use std::process::ExitCode;

use confhub_server::tools::rollout::{plan, Ending};

#[derive(clap::Subcommand)]
pub(crate) enum RolloutCommand {
    /// Merge the candidate into the tracked branch and remove the rollout, in one commit.
    Promote(RolloutArgs),
    /// Remove the rollout: its instances get the tracked config back.
    Abandon(RolloutArgs),
}

#[derive(clap::Args)]
pub(crate) struct RolloutArgs {
    /// The rollout's name in `confhub.yml`.
    name: String,
    /// The config repository (a local clone).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The tracked branch.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Make the commit on the branch (and update the work tree if it is checked out and
    /// clean). Without it, only print what the commit would be.
    #[arg(long)]
    commit: bool,
}

pub(crate) fn run(command: RolloutCommand) -> anyhow::Result<ExitCode> {
    let (args, ending) = match command {
        RolloutCommand::Promote(args) => (args, Ending::Promote),
        RolloutCommand::Abandon(args) => (args, Ending::Abandon),
    };
    let plan = plan(&args.repo, &args.branch, &args.name, ending)?;
    let parents: Vec<String> = plan.parents.iter().map(|p| p.to_string()).collect();
    println!("branch:  {}", plan.branch);
    println!("parents: {}", parents.join(" "));
    println!(
        "message: {}",
        plan.message.lines().next().unwrap_or_default()
    );
    if !plan.merged_paths.is_empty() {
        println!("merges:  {}", plan.merged_paths.join(", "));
    }
    println!("--- confhub.yml");
    println!("+++ confhub.yml");
    print!("{}", line_diff(&plan.manifest_before, &plan.manifest_after));
    if !args.commit {
        println!("(not written: run again with --commit to make this commit, then push it)");
        return Ok(ExitCode::SUCCESS);
    }
    let oid = plan.commit(&args.repo)?;
    println!(
        "committed {oid} on {}: push it to end the rollout",
        args.branch
    );
    Ok(ExitCode::SUCCESS)
}

/// The removed lines, marked `-` (the edit only ever removes lines).
fn line_diff(before: &str, after: &str) -> String {
    let mut kept = after.lines().peekable();
    let mut out = String::new();
    for line in before.lines() {
        if kept.peek() == Some(&line) {
            kept.next();
            out.push_str(&format!(" {line}\n"));
        } else {
            out.push_str(&format!("-{line}\n"));
        }
    }
    out
}
