//! `confhub history`: the commits that changed a pair's resolved config, newest first,
//! from a running server or (`--repo`) scanned from the repository itself.

use std::path::Path;
use std::process::ExitCode;

use confhub_client::wire::HistoryResponse;

use super::remote::{self, Source, Target};

#[derive(clap::Args)]
pub(crate) struct HistoryArgs {
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

pub(crate) fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let text = match args.target.source()? {
        Source::Server(server) => remote::http_get(
            &format!(
                "{server}/v1/history/{}/{}?limit={}",
                args.service, args.env, args.limit
            ),
            args.target.token.as_deref(),
        )?,
        Source::Repo(repo) => from_repo(&args, repo)?,
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The history scanned from `repo`, as the server's JSON answer.
fn from_repo(args: &HistoryArgs, repo: &Path) -> anyhow::Result<String> {
    let envs = confhub_server::names::parse_envs(&args.env)?;
    let (git, uri) = remote::open_repo(repo, args.target.search_path.as_deref())?;
    let (label, entries) =
        confhub_server::tools::history::history(&git, &uri, &args.service, &envs, args.limit)?;
    Ok(serde_json::to_string_pretty(&HistoryResponse {
        service: args.service.clone(),
        env: args.env.clone(),
        label,
        entries,
    })?)
}
