//! `--dev` source: a plain directory read from the filesystem; its version is a hash
//! of every config file's path and contents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::{is_config_name, Blob, Ciphers, Root, SearchPath, View};
use crate::errors::SourceError;

/// A plain directory of config files.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    search_path: Option<String>,
    search: Arc<SearchPath>,
    ciphers: Ciphers,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl DirSource {
    /// A directory source; fails if `root` is not a readable directory.
    pub fn open(root: &str, search_path: Option<&str>) -> Result<DirSource, SourceError> {
        let root = std::fs::canonicalize(root).map_err(io(Path::new(root)))?;
        std::fs::read_dir(&root).map_err(io(&root))?;
        let search = SearchPath::parse(search_path)?;
        Ok(DirSource {
            root,
            search_path: search.folder().map(str::to_string),
            search: Arc::new(search),
            ciphers: Ciphers::Refuse,
        })
    }

    /// What views do with `{cipher}` values (default: refuse them).
    pub(crate) fn with_ciphers(mut self, ciphers: Ciphers) -> Self {
        self.ciphers = ciphers;
        self
    }

    /// The directory, as a `file://` URI (Spring property source names).
    pub fn uri(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// The directory watched for changes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config files of a Spring search path: the root's, then those of every folder
    /// on one of `patterns` (symlinked folders are not followed).
    fn list_spring(
        &self,
        patterns: &[super::search::Pattern],
        files: &mut BTreeMap<String, Blob>,
    ) -> Result<(), SourceError> {
        let mut stack = vec![(self.root.clone(), String::new(), 0usize)];
        while let Some((path, dir, depth)) = stack.pop() {
            let on_pattern = depth == 0
                || patterns
                    .iter()
                    .any(|p| p.depth() == depth && super::git::dir_matches(p, &dir));
            for entry in std::fs::read_dir(&path).map_err(io(&path))? {
                let entry = entry.map_err(io(&path))?;
                let name = entry.file_name().to_string_lossy().to_string();
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let ty = entry.file_type().map_err(io(&entry.path()))?;
                if ty.is_file() && on_pattern && is_config_name(&name) {
                    files.insert(rel, Blob::Disk(entry.path()));
                } else if ty.is_dir()
                    && !name.starts_with('.')
                    && patterns
                        .iter()
                        .any(|p| p.depth() > depth && super::git::dir_matches(p, &rel))
                {
                    stack.push((entry.path(), rel, depth + 1));
                }
            }
        }
        Ok(())
    }

    /// The files as they are now, with their content hash as the version. Blocking.
    pub fn view(&self) -> Result<View<'static>, SourceError> {
        let (base, prefix) = match &self.search_path {
            Some(sp) => (self.root.join(sp), format!("{sp}/")),
            None => (self.root.clone(), String::new()),
        };
        let mut files = BTreeMap::new();
        if let SearchPath::Spring(patterns) = &*self.search {
            self.list_spring(patterns, &mut files)?;
        } else if base.is_dir() {
            for entry in std::fs::read_dir(&base).map_err(io(&base))? {
                let entry = entry.map_err(io(&base))?;
                let name = entry.file_name().to_string_lossy().to_string();
                let ty = entry.file_type().map_err(io(&entry.path()))?;
                if ty.is_file() && is_config_name(&name) {
                    files.insert(name, Blob::Disk(entry.path()));
                } else if ty.is_dir() && !name.starts_with('.') {
                    for child in std::fs::read_dir(entry.path()).map_err(io(&entry.path()))? {
                        let child = child.map_err(io(&entry.path()))?;
                        let child_name = child.file_name().to_string_lossy().to_string();
                        if child.file_type().map(|t| t.is_file()).unwrap_or(false)
                            && is_config_name(&child_name)
                        {
                            files.insert(format!("{name}/{child_name}"), Blob::Disk(child.path()));
                        }
                    }
                }
            }
        }
        let mut hasher = Sha256::new();
        let mut view = View::new(String::new(), prefix, files, None, Root::Disk(base));
        view.ciphers = self.ciphers.clone();
        view.search = self.search.clone();
        let names: Vec<String> = view.files.keys().cloned().collect();
        for name in names {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            // A file over the size limit is refused unread when parsed; hash its size
            // and mtime rather than read it here.
            let len = view.size(&name)?.unwrap_or_default();
            if len > crate::resolve::parse::MAX_FILE_BYTES as u64 {
                let modified = view
                    .files
                    .get(&name)
                    .and_then(|b| match b {
                        Blob::Disk(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                        Blob::Git(_) => None,
                    })
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .unwrap_or_default();
                hasher.update(len.to_le_bytes());
                hasher.update(modified.as_nanos().to_le_bytes());
                continue;
            }
            let bytes = view.read(&name)?.unwrap_or_default();
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        view.version = hex::encode(hasher.finalize());
        Ok(view)
    }
}
