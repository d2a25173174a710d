//! `confhub check`: resolve every (service, env) of a repository the way the server
//! would, and report every problem as `file:line: message`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::entry::PairEntry;
use crate::errors::{ConfigError, SourceError};
use crate::settings::Settings;
use crate::source::dir::DirSource;
use crate::source::git::GitSource;
use crate::source::View;

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// The version checked (commit sha or content hash).
    pub version: String,
    /// Services found.
    pub services: usize,
    /// Environments found.
    pub envs: usize,
    /// Pairs resolved successfully.
    pub pairs_ok: usize,
    /// Every distinct problem.
    pub problems: Vec<ConfigError>,
}

/// Check the repository (or, if it is not a git repository, the directory) at `repo`,
/// at `rev` (default `HEAD`).
pub fn check(
    repo: &Path,
    rev: Option<&str>,
    search_path: Option<&str>,
) -> Result<Report, SourceError> {
    let repo_str = repo.display().to_string();
    let is_git = git2::Repository::open(repo).is_ok();
    if !is_git {
        let dir = DirSource::open(&repo_str, search_path)?;
        let mut view = dir.view()?;
        return Ok(check_view(&mut view));
    }
    let mut settings = Settings::new(repo_str);
    settings.search_path = search_path.map(str::to_string);
    let git = GitSource::open(&settings)?;
    git.with_repo(|r| {
        let rev = rev.unwrap_or("HEAD");
        let commit = r
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(SourceError::git(format!("resolving `{rev}`")))?;
        let mut view = git.view(r, commit.id())?;
        Ok(check_view(&mut view))
    })
}

fn check_view(view: &mut View<'_>) -> Report {
    let mut report = Report {
        version: view.version.clone(),
        ..Report::default()
    };
    let mut seen = BTreeSet::new();
    let mut push = |report: &mut Report, e: ConfigError| {
        if seen.insert(e.to_string()) {
            report.problems.push(e);
        }
    };
    // Every file, even one no pair reads, must parse.
    let paths: Vec<String> = view.files.keys().cloned().collect();
    for path in &paths {
        if let Some(Err(e)) = view.parsed(path) {
            push(&mut report, e);
        }
    }
    let catalog = match Catalog::of(view) {
        Ok(c) => c,
        Err(e) => {
            push(&mut report, e);
            return report;
        }
    };
    report.services = catalog.services.len();
    report.envs = catalog.envs.len();
    let uri: Arc<str> = Arc::from("check");
    let envs: Vec<String> = if catalog.envs.is_empty() {
        vec!["default".into()]
    } else {
        catalog.envs.iter().cloned().collect()
    };
    for service in &catalog.services {
        for env in &envs {
            match PairEntry::build(
                view,
                &catalog,
                &uri,
                "check",
                service,
                std::slice::from_ref(env),
            ) {
                Ok(_) => report.pairs_ok += 1,
                Err(e) => push(&mut report, e),
            }
        }
    }
    report
}
