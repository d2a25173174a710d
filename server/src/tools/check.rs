//! `confhub check`: resolve every (service, env) of a repository the way the server
//! would, and report every problem as `file:line: message`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::crypto::Keyring;
use crate::errors::{ConfigError, ErrorKind, SourceError};
use crate::resolve::catalog::MANIFEST;
use crate::resolve::catalog::{activation_profiles, Catalog};
use crate::resolve::rollout::{parse_rollouts, RolloutSpec};
use crate::settings::Settings;
use crate::source::dir::DirSource;
use crate::source::git::GitSource;
use crate::source::{Ciphers, View};
use crate::store::entry::PairEntry;
use crate::store::rollouts::{candidate_commit, servable};

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
    /// What works, as in Spring, but deserves a look (the legacy `spring.profiles`, a
    /// `.properties` key set twice): reported, never a failure.
    pub warnings: Vec<ConfigError>,
}

/// Check the repository (or, if it is not a git repository, the directory) at `repo`,
/// at `rev` (default `HEAD`).
///
/// With a `keyring`, `{cipher}` values must decrypt; without one they are left alone.
pub fn check(
    repo: &Path,
    rev: Option<&str>,
    search_path: Option<&str>,
    keyring: Option<&Keyring>,
) -> Result<Report, SourceError> {
    check_as(repo, rev, search_path, keyring, Clients::Native)
}

/// Which clients the repository serves, so which placeholders must resolve on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// The native API: every placeholder resolves on the server or the pair fails (422).
    Native,
    /// Spring clients only (`confhub check --spring`): a placeholder nothing in the
    /// repository sets is served as written, as Spring Cloud Config does, for the client
    /// to resolve from its own environment (`${HOSTNAME}`); it is a warning. A cycle is
    /// still a problem (Spring answers 400).
    Spring,
}

/// [`check`], for the given clients.
pub fn check_as(
    repo: &Path,
    rev: Option<&str>,
    search_path: Option<&str>,
    keyring: Option<&Keyring>,
    clients: Clients,
) -> Result<Report, SourceError> {
    let repo_str = repo.display().to_string();
    let is_git = git2::Repository::open(repo).is_ok();
    let ciphers = match keyring {
        Some(k) => Ciphers::Decrypt(Arc::new(k.clone())),
        None => Ciphers::Ignore,
    };
    if !is_git {
        let dir = DirSource::open(&repo_str, search_path)?.with_ciphers(ciphers);
        let mut view = dir.view()?;
        let mut report = check_view(&mut view, clients);
        if let Ok(catalog) = Catalog::of(&mut view) {
            if catalog
                .manifest
                .rollouts
                .as_ref()
                .is_some_and(|r| !r.is_null())
            {
                report.problems.push(
                    ConfigError::new(
                        ErrorKind::Manifest,
                        "rollouts need a git repository: their labels are git refs".to_string(),
                    )
                    .in_file(MANIFEST),
                );
            }
        }
        return Ok(report);
    }
    let mut settings = Settings::new(repo_str);
    settings.search_path = search_path.map(str::to_string);
    let mut git = GitSource::open(&settings)?;
    git.set_ciphers(ciphers);
    git.with_repo(|r| {
        let rev = rev.unwrap_or("HEAD");
        let object = r
            .revparse_single(rev)
            .map_err(SourceError::git(format!("resolving `{rev}`")))?;
        // A tree (`git write-tree` in a pre-commit hook) is checked as it is.
        let tree = object.peel_to_tree().map_err(SourceError::git(format!(
            "`{rev}` is not a commit or a tree"
        )))?;
        let version = object
            .peel_to_commit()
            .map_or_else(|_| tree.id().to_string(), |c| c.id().to_string());
        let mut view = git.view_tree(r, tree, version)?;
        let mut report = check_view(&mut view, clients);
        report.problems.extend(check_rollouts(&git, r, &mut view));
        Ok(report)
    })
}

/// The rollouts `confhub.yml` declares, as the server would build them: well-formed
/// declarations on known pairs, none sharing a pair, each label naming a commit, and each
/// candidate resolving whole (and passing its schema) at that commit.
fn check_rollouts(
    git: &GitSource,
    repo: &git2::Repository,
    view: &mut View<'_>,
) -> Vec<ConfigError> {
    let Ok(catalog) = Catalog::of(view) else {
        return Vec::new(); // already reported
    };
    let text = match view.parsed(MANIFEST) {
        Some(Ok(file)) => file.text.clone(),
        _ => Default::default(),
    };
    let (specs, refused) = parse_rollouts(catalog.manifest.rollouts.as_ref(), &text, MANIFEST);
    let mut problems: Vec<ConfigError> = refused.into_iter().map(|d| d.error).collect();
    for spec in &specs {
        let oid = match candidate_commit(git, repo, &catalog, spec) {
            Ok(oid) => oid,
            Err(message) => {
                problems.push(spec.error(message));
                continue;
            }
        };
        problems.extend(check_candidate(git, repo, oid, spec));
    }
    problems
}

fn check_candidate(
    git: &GitSource,
    repo: &git2::Repository,
    oid: git2::Oid,
    spec: &RolloutSpec,
) -> Vec<ConfigError> {
    let at = |e: ConfigError| ConfigError {
        message: format!("rollout `{}` at `{}`: {}", spec.name, spec.label, e.message),
        ..e
    };
    let mut view = match git.view(repo, oid) {
        Ok(view) => view,
        Err(e) => return vec![at(ConfigError::new(ErrorKind::Git, e.to_string()))],
    };
    let catalog = match Catalog::of(&mut view) {
        Ok(c) => c,
        Err(e) => return vec![at(e)],
    };
    let uri: Arc<str> = Arc::from("check");
    spec.envs
        .iter()
        .filter_map(|env| {
            let envs = [env.clone()];
            PairEntry::build(&mut view, &catalog, &uri, &spec.label, &spec.service, &envs)
                .and_then(|entry| servable(&entry, spec))
                .err()
                .map(at)
        })
        .collect()
}

fn check_view(view: &mut View<'_>, clients: Clients) -> Report {
    let mut found = Findings {
        report: Report {
            version: view.version.clone(),
            ..Report::default()
        },
        seen: BTreeSet::new(),
    };
    found.parse_every_file(view);
    let catalog = match Catalog::of(view) {
        Ok(c) => c,
        Err(e) => {
            found.problem(e);
            return found.report;
        }
    };
    for e in naming_problems(view, &catalog) {
        found.problem(e);
    }
    found.report.services = catalog.services.len();
    found.report.envs = catalog.envs.len();
    let uri: Arc<str> = Arc::from("check");
    let env_sets = env_sets(view, &catalog);
    for service in &catalog.services {
        for envs in &env_sets {
            match PairEntry::build(view, &catalog, &uri, "check", service, envs) {
                Ok(entry) => found.pair(entry, clients),
                Err(e) => found.problem(e),
            }
        }
    }
    found.report
}

/// The report being built, and the problems already in it: the same problem reached
/// through several pairs is reported once.
struct Findings {
    report: Report,
    seen: BTreeSet<String>,
}

impl Findings {
    fn problem(&mut self, e: ConfigError) {
        if self.seen.insert(e.to_string()) {
            self.report.problems.push(e);
        }
    }

    /// Every file, even one no pair reads, must parse.
    fn parse_every_file(&mut self, view: &mut View<'_>) {
        let paths: Vec<String> = view.files.keys().cloned().collect();
        for path in &paths {
            match view.parsed(path) {
                Some(Err(e)) => self.problem(e),
                Some(Ok(file)) => {
                    self.report.warnings.extend(file.warnings.iter().cloned());
                    for e in &file.cipher_errors {
                        self.problem(e.clone());
                    }
                }
                None => {}
            }
        }
    }

    /// One resolved pair: ok, or the problem it is served with.
    fn pair(&mut self, entry: PairEntry, clients: Clients) {
        let placeholder = match clients {
            Clients::Native => entry.placeholder_error,
            Clients::Spring => {
                if let Some(mut e) = entry.placeholder_error {
                    e.message.push_str(
                        " (served as written to Spring clients; the native API answers 422 for this pair)",
                    );
                    if !self.report.warnings.contains(&e) {
                        self.report.warnings.push(e);
                    }
                }
                entry.resolved.spring_error.clone()
            }
        };
        match placeholder.or(entry.cipher_error) {
            Some(e) => self.problem(e),
            None => self.report.pairs_ok += 1,
        }
    }
}

/// The env lists every service is checked with: each env alone, and every profile a
/// document is activated for.
fn env_sets(view: &mut View<'_>, catalog: &Catalog) -> Vec<Vec<String>> {
    let mut env_sets: Vec<Vec<String>> = if catalog.envs.is_empty() {
        vec![vec!["default".into()]]
    } else {
        catalog.envs.iter().map(|e| vec![e.clone()]).collect()
    };
    // A document for `prod & eu` applies only when both are asked for (`prod,eu`):
    // check every such combination too.
    let profiles = activation_profiles(view);
    for name in profiles.iter().flatten() {
        let single = vec![name.clone()];
        if catalog.env_known(name) && !env_sets.contains(&single) {
            env_sets.push(single);
        }
    }
    let mut combos: Vec<Vec<String>> = profiles
        .into_iter()
        .filter(|names| names.len() > 1 && names.iter().all(|n| catalog.env_known(n)))
        .map(|names| names.into_iter().collect())
        .collect();
    combos.sort();
    combos.dedup();
    env_sets.extend(combos);
    env_sets
}

/// File names that are probably typos: an env file for an undeclared env, or a
/// `{service}-{x}` file where `x` is not a known env (so it reads as a new service).
fn naming_problems(view: &View<'_>, catalog: &Catalog) -> Vec<ConfigError> {
    let known = catalog.envs.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    for path in view.files.keys() {
        if path.contains('/') || path == MANIFEST {
            continue;
        }
        let Some((stem, _)) = path.rsplit_once('.') else {
            continue;
        };
        let Some((head, tail)) = stem.rsplit_once('-') else {
            continue;
        };
        if catalog.envs.contains(tail) {
            continue;
        }
        let problem = if head == "application" {
            Some(format!(
                "environment `{tail}` is not declared in {MANIFEST} (declared: {known})"
            ))
        } else if catalog.services.contains(head)
            && catalog.envs.iter().any(|e| edit_distance(e, tail) <= 2)
        {
            Some(format!(
                "`{tail}` is not a known environment (known: {known}), so this file is read as a separate service `{stem}`; a typo?"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            out.push(
                ConfigError::new(ErrorKind::Manifest, message)
                    .in_file(view.display(path))
                    .at_line(Some(1)),
            );
        }
    }
    out
}

/// Levenshtein distance, for "did you mean" on environment names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("prod", "prod"), 0);
        assert_eq!(edit_distance("prod", "prdo"), 2);
        assert_eq!(edit_distance("staging", "stagin"), 1);
        assert_eq!(edit_distance("dev", "api"), 3);
    }
}
