//! Where `history` and `diff` read from (a server, or a repository on disk), and the one
//! HTTP GET the client subcommands make.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confhub_server::source::git::GitSource;
use confhub_server::Settings;

/// Where `get`, `history` and `diff` read from.
#[derive(clap::Args)]
pub(crate) struct Target {
    /// A running confhub server.
    #[arg(long, env = "CONFHUB_SERVER", conflicts_with = "repo")]
    pub(crate) server: Option<String>,
    /// Read a git repository directly instead of asking a server.
    #[arg(long)]
    pub(crate) repo: Option<PathBuf>,
    /// Access token for the server.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Folder of the repository holding the config files (with --repo).
    #[arg(long)]
    pub(crate) search_path: Option<String>,
}

/// Which of the two a [`Target`] names.
pub(crate) enum Source<'a> {
    /// The server's URL, without a trailing `/`.
    Server(&'a str),
    /// The repository's path.
    Repo(&'a Path),
}

impl Target {
    /// The server if given (it conflicts with `--repo`), else the repository.
    pub(crate) fn source(&self) -> anyhow::Result<Source<'_>> {
        match (&self.server, &self.repo) {
            (Some(server), _) => Ok(Source::Server(server.trim_end_matches('/'))),
            (None, Some(repo)) => Ok(Source::Repo(repo)),
            (None, None) => anyhow::bail!("give --server URL or --repo PATH"),
        }
    }
}

/// The git repository at `repo`, and the URI entries read from it carry.
pub(crate) fn open_repo(
    repo: &Path,
    search_path: Option<&str>,
) -> anyhow::Result<(GitSource, Arc<str>)> {
    let mut settings = Settings::new(repo.display().to_string());
    settings.search_path = search_path.map(str::to_string);
    let git = GitSource::open(&settings).with_context(|| format!("opening {}", repo.display()))?;
    let uri: Arc<str> = git.uri().into();
    Ok((git, uri))
}

/// GET `url` and return the body; a non-2xx answer is an error carrying the server's message.
pub(crate) fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<String> {
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
