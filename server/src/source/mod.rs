//! Where config files come from: a git repository read from objects at a commit
//! ([`git`]), or a plain directory in `--dev` mode ([`dir`]). Both produce a [`View`]:
//! the config files of one version, which [`crate::catalog`] and [`crate::resolve`] work on.
//!
//! Everything here blocks; callers run it on a blocking thread, never an async worker.

pub mod dir;
pub mod git;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::errors::{ConfigError, ErrorKind, SourceError};
use crate::parse::{parse_file, Format};
use crate::resolve::ParsedFile;

/// Where one file's bytes live.
#[derive(Debug, Clone)]
pub enum Blob {
    /// A blob in the git object database.
    Git(::git2::Oid),
    /// A file on disk (`--dev`).
    Disk(PathBuf),
}

/// The config files of one version, relative to the search path.
pub struct View<'r> {
    /// Commit sha or content hash.
    pub version: String,
    /// Path of the search path inside the repository (`""` or `config/`), prefixed to file names shown to users.
    pub prefix: String,
    /// Config files (root and one folder level), relative to the search path.
    pub files: BTreeMap<String, Blob>,
    repo: Option<&'r ::git2::Repository>,
    parsed: HashMap<String, Result<Arc<ParsedFile>, ConfigError>>,
}

impl<'r> View<'r> {
    pub(crate) fn new(
        version: String,
        prefix: String,
        files: BTreeMap<String, Blob>,
        repo: Option<&'r ::git2::Repository>,
    ) -> Self {
        View {
            version,
            prefix,
            files,
            repo,
            parsed: HashMap::new(),
        }
    }

    /// The path users see for `rel` (repository-relative).
    pub fn display(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// Raw bytes of a file.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(blob) = self.files.get(rel) else {
            return Ok(None);
        };
        match blob {
            Blob::Git(oid) => {
                let repo = self
                    .repo
                    .ok_or_else(|| SourceError::Task("git blob without a repository".into()))?;
                let blob = repo
                    .find_blob(*oid)
                    .map_err(SourceError::git(format!("reading {}", self.display(rel))))?;
                Ok(Some(blob.content().to_vec()))
            }
            Blob::Disk(path) => std::fs::read(path)
                .map(Some)
                .map_err(|source| SourceError::Io {
                    path: path.display().to_string(),
                    source,
                }),
        }
    }

    /// A parsed file (memoized for the life of the view), `None` if absent.
    pub fn parsed(&mut self, rel: &str) -> Option<Result<Arc<ParsedFile>, ConfigError>> {
        if let Some(done) = self.parsed.get(rel) {
            return Some(done.clone());
        }
        if !self.files.contains_key(rel) || Format::of(rel).is_none() {
            return None;
        }
        let shown = self.display(rel);
        let result = match self.read(rel) {
            Ok(Some(bytes)) => parse_file(&shown, &bytes).map(|values| {
                Arc::new(ParsedFile {
                    path: shown.clone(),
                    values,
                    text: String::from_utf8_lossy(&bytes).into(),
                })
            }),
            Ok(None) => return None,
            Err(e) => Err(ConfigError::new(ErrorKind::Git, e.to_string()).in_file(shown)),
        };
        self.parsed.insert(rel.to_string(), result.clone());
        Some(result)
    }
}

/// True for names we read as config files (by extension).
pub(crate) fn is_config_name(name: &str) -> bool {
    Format::of(name).is_some()
}
