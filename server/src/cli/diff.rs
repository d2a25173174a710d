//! `confhub diff`: the key-level diff of a pair's resolved config between two labels,
//! from a running server or (`--repo`) computed from the repository itself.

use std::process::ExitCode;

use super::remote::{self, Source, Target};

#[derive(clap::Args)]
pub(crate) struct DiffArgs {
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

pub(crate) fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let text = match args.target.source()? {
        Source::Server(server) => {
            let mut url = format!(
                "{server}/v1/diff/{}/{}?from={}",
                args.service, args.env, args.from
            );
            if let Some(to) = &args.to {
                url.push_str(&format!("&to={to}"));
            }
            remote::http_get(&url, args.target.token.as_deref())?
        }
        Source::Repo(repo) => {
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
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
