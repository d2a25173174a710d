//! Git source: open a local repository or keep a clone of a remote one in the data
//! dir, and read config files straight from git objects (commit → tree → blob).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{
    AutotagOption, Cred, FetchOptions, FetchPrune, ObjectType, Oid, RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};

use super::{is_config_name, Blob, Ciphers, Root, View};
use crate::errors::SourceError;
use crate::settings::Settings;

/// Where a remote repository is fetched from, with its credentials.
#[derive(Clone)]
struct Remote {
    url: String,
    token: Option<String>,
    ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    // Hand-written so a token can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// A git repository, local or a clone of a remote.
pub struct GitSource {
    path: PathBuf,
    remote: Option<Remote>,
    branch: Option<String>,
    search_path: Option<String>,
    /// Open handles for reuse: `Repository` is `Send` but not `Sync`, so each blocking
    /// task takes one out and puts it back, instead of all sharing one behind a lock.
    pool: Mutex<Vec<Repository>>,
    uri: String,
    ciphers: Ciphers,
}

/// Is `repo` a URL to clone rather than a local path?
pub fn is_remote(repo: &str) -> bool {
    ["file://", "git://", "http://", "https://", "ssh://"]
        .iter()
        .any(|p| repo.starts_with(p))
        || (repo.contains('@') && repo.contains(':') && !Path::new(repo).exists())
}

/// `https://user:secret@host/x` → `https://host/x`, for logs and Spring source names.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("path", &self.path)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Open the repository (cloning or fetching a remote first). Blocking.
    pub fn open(settings: &Settings) -> Result<GitSource, SourceError> {
        let (path, remote, uri) = if is_remote(&settings.repo) {
            let digest = hex::encode(&Sha256::digest(redact_url(&settings.repo).as_bytes())[..8]);
            let path = settings.data_dir.join(format!("repo-{digest}.git"));
            let remote = Remote {
                url: settings.repo.clone(),
                token: settings.git_token.as_ref().map(|t| t.expose().to_string()),
                ssh_key: settings.ssh_key.clone(),
            };
            (path, Some(remote), redact_url(&settings.repo))
        } else {
            let path = PathBuf::from(&settings.repo);
            let abs = std::fs::canonicalize(&path).map_err(|source| SourceError::Io {
                path: settings.repo.clone(),
                source,
            })?;
            let uri = format!("file://{}", abs.display());
            (abs, None, uri)
        };
        let source = GitSource {
            path,
            remote,
            branch: settings.branch.clone(),
            search_path: settings
                .search_path
                .clone()
                .map(|p| p.trim_matches('/').to_string())
                .filter(|p| !p.is_empty()),
            pool: Mutex::new(Vec::new()),
            uri,
            ciphers: Ciphers::from_keyring(settings.keyring.as_ref()),
        };
        if let Some(remote) = &source.remote {
            if !source.path.exists() {
                std::fs::create_dir_all(&settings.data_dir).map_err(|e| SourceError::Io {
                    path: settings.data_dir.display().to_string(),
                    source: e,
                })?;
                Repository::init_bare(&source.path)
                    .map_err(SourceError::git("creating the clone"))?;
                tracing::info!(url = %redact_url(&remote.url), path = %source.path.display(), "cloning remote repository");
            }
            source.fetch()?;
        } else {
            // Fail at start, not at the first request, if this is not a repository.
            source.with_repo(|_| Ok(()))?;
        }
        Ok(source)
    }

    /// `{repo uri}` as used in Spring property source names.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Override what views do with `{cipher}` values (`confhub check` without a key ignores them).
    pub fn set_ciphers(&mut self, ciphers: Ciphers) {
        self.ciphers = ciphers;
    }

    /// The search path as a tree path prefix (`""` or `config/`).
    pub fn search_prefix(&self) -> String {
        self.search_path
            .as_ref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default()
    }

    /// Whether this is a clone of a remote (and so needs fetching to see changes).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Where the repository lives on disk (the clone, for remotes).
    pub fn git_dir(&self) -> &Path {
        &self.path
    }

    /// Run `f` with an open repository handle. Blocking.
    pub fn with_repo<T>(
        &self,
        f: impl FnOnce(&Repository) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let taken = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let repo = match taken {
            Some(r) => r,
            // Inside a git hook the new objects may sit in a quarantine directory that
            // only the environment (GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES) names.
            None if self.remote.is_none() && std::env::var_os("GIT_QUARANTINE_PATH").is_some() => {
                Repository::open_from_env()
                    .map_err(SourceError::git(format!("opening {}", self.path.display())))?
            }
            None => Repository::open(&self.path)
                .map_err(SourceError::git(format!("opening {}", self.path.display())))?,
        };
        let out = f(&repo);
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < 8 {
                pool.push(repo);
            }
        }
        out
    }

    /// Fetch branches and tags from the remote. Blocking; a no-op for local repositories.
    pub fn fetch(&self) -> Result<(), SourceError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        self.with_repo(|repo| {
            let mut callbacks = RemoteCallbacks::new();
            let mut attempts = 0;
            callbacks.credentials(|_url, user_from_url, allowed| {
                attempts += 1;
                if attempts > 3 {
                    return Err(git2::Error::from_str("authentication failed"));
                }
                if allowed.contains(git2::CredentialType::SSH_KEY) {
                    if let Some(key) = &remote.ssh_key {
                        return Cred::ssh_key(user_from_url.unwrap_or("git"), None, key, None);
                    }
                    return Cred::ssh_key_from_agent(user_from_url.unwrap_or("git"));
                }
                if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                    if let Some(token) = &remote.token {
                        return Cred::userpass_plaintext(
                            user_from_url.unwrap_or("x-access-token"),
                            token,
                        );
                    }
                }
                Cred::default()
            });
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(callbacks)
                .prune(FetchPrune::On)
                .download_tags(AutotagOption::All);
            let mut anon = repo
                .remote_anonymous(&remote.url)
                .map_err(SourceError::git(format!(
                    "remote {}",
                    redact_url(&remote.url)
                )))?;
            anon.fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut options),
                None,
            )
            .map_err(SourceError::git(format!(
                "fetching {}",
                redact_url(&remote.url)
            )))?;
            Ok(())
        })
    }

    fn branch_ref(&self, repo: &Repository, name: &str) -> Option<Oid> {
        let candidates = if self.remote.is_some() {
            vec![format!("refs/remotes/origin/{name}")]
        } else {
            vec![
                format!("refs/heads/{name}"),
                format!("refs/remotes/origin/{name}"),
            ]
        };
        candidates.iter().find_map(|r| {
            repo.find_reference(r)
                .ok()?
                .peel_to_commit()
                .ok()
                .map(|c| c.id())
        })
    }

    /// The tracked branch's name and commit (`main`, falling back to `master`).
    pub fn tracked(&self, repo: &Repository) -> Result<(String, Oid), SourceError> {
        let wanted = self.branch.clone();
        let names: Vec<String> = match &wanted {
            Some(b) => vec![b.clone()],
            None => vec!["main".into(), "master".into()],
        };
        for name in &names {
            if let Some(oid) = self.branch_ref(repo, name) {
                return Ok((name.clone(), oid));
            }
        }
        Err(SourceError::NoBranch(names.join("` or `")))
    }

    /// Resolve a label (branch, tag, full or short sha) to a commit; `None` if unknown.
    /// The label must already be validated (`names::parse_label`).
    pub fn resolve_label(&self, repo: &Repository, label: &str) -> Option<Oid> {
        if let Some(oid) = self.branch_ref(repo, label) {
            return Some(oid);
        }
        if label == "main" && self.branch.is_none() {
            if let Some(oid) = self.branch_ref(repo, "master") {
                return Some(oid);
            }
        }
        if let Ok(r) = repo.find_reference(&format!("refs/tags/{label}")) {
            return r.peel_to_commit().ok().map(|c| c.id());
        }
        if (4..=40).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_hexdigit()) {
            let obj = repo.revparse_single(label).ok()?;
            return obj.peel_to_commit().ok().map(|c| c.id());
        }
        None
    }

    /// The config files at `commit`.
    pub fn view<'r>(&self, repo: &'r Repository, commit: Oid) -> Result<View<'r>, SourceError> {
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(SourceError::git(format!("reading commit {commit}")))?;
        self.view_tree(repo, tree, commit.to_string())
    }

    /// The config files of a tree (a commit's, or the index's from `git write-tree`,
    /// which is how a pre-commit hook checks what is staged).
    pub fn view_tree<'r>(
        &self,
        repo: &'r Repository,
        tree: git2::Tree<'r>,
        version: String,
    ) -> Result<View<'r>, SourceError> {
        let tree_id = tree.id();
        let context = || format!("reading tree {tree_id}");
        let mut files = BTreeMap::new();
        let (root, prefix): (Option<git2::Tree<'_>>, String) = match &self.search_path {
            None => (Some(tree), String::new()),
            Some(sp) => {
                let sub = match tree.get_path(Path::new(sp)) {
                    Ok(entry) if entry.kind() == Some(ObjectType::Tree) => Some(
                        repo.find_tree(entry.id())
                            .map_err(SourceError::git(context()))?,
                    ),
                    _ => None,
                };
                (sub, format!("{sp}/"))
            }
        };
        let root_id = root.as_ref().map(|t| t.id());
        if let Some(root) = root {
            for entry in root.iter() {
                let Ok(name) = entry.name() else { continue };
                match entry.kind() {
                    Some(ObjectType::Blob) if is_config_name(name) => {
                        files.insert(name.to_string(), Blob::Git(entry.id()));
                    }
                    Some(ObjectType::Tree) if !name.starts_with('.') => {
                        let sub = repo
                            .find_tree(entry.id())
                            .map_err(SourceError::git(context()))?;
                        for child in sub.iter() {
                            let Ok(child_name) = child.name() else {
                                continue;
                            };
                            if child.kind() == Some(ObjectType::Blob) && is_config_name(child_name)
                            {
                                files.insert(format!("{name}/{child_name}"), Blob::Git(child.id()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut view = View::new(version, prefix, files, Some(repo), Root::Git(root_id));
        view.ciphers = self.ciphers.clone();
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:tok@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(redact_url("ssh://git@host/x.git"), "ssh://host/x.git");
        assert_eq!(redact_url("file:///tmp/x@y/repo"), "file:///tmp/x@y/repo");
    }

    #[test]
    fn remote_detection() {
        assert!(is_remote("file:///tmp/x.git"));
        assert!(is_remote("git://127.0.0.1:9418/x.git"));
        assert!(is_remote("https://example.com/x.git"));
        assert!(!is_remote("/tmp/some/path"));
        assert!(!is_remote("examples/config-repo"));
    }
}
