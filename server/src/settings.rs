//! Server settings: what `confhub serve` was asked to do.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to run. Built by the CLI from flags, environment and
/// the settings file; tests build it directly with [`Settings::new`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Local path of a git repository (or, with `dev`, a plain directory), or a remote URL
    /// (`file://`, `git://`, `https://`, `ssh://`) to clone into `data_dir`.
    pub repo: String,
    /// Branch to track; `None` means `main`, falling back to `master`.
    pub branch: Option<String>,
    /// Subfolder of the repository holding the config files (Spring's `searchPaths`).
    pub search_path: Option<String>,
    /// Serve a plain directory from the filesystem (version = content hash).
    pub dev: bool,
    /// Where remote repositories are cloned.
    pub data_dir: PathBuf,
    /// How often remote repositories are fetched.
    pub poll: Duration,
    /// Token for `https://` remotes (sent as the password of HTTP Basic auth).
    pub git_token: Option<String>,
    /// Private key for `ssh://` remotes.
    pub ssh_key: Option<PathBuf>,
    /// How many resolved (label, service, env) results to keep for non-tracked labels.
    pub cache_capacity: usize,
}

impl Settings {
    /// Settings with production defaults for serving `repo`.
    pub fn new(repo: impl Into<String>) -> Self {
        Settings {
            repo: repo.into(),
            branch: None,
            search_path: None,
            dev: false,
            data_dir: std::env::temp_dir().join("confhub-data"),
            poll: Duration::from_secs(30),
            git_token: None,
            ssh_key: None,
            cache_capacity: 1024,
        }
    }
}
