//! Where config files come from: a git repository read from objects at a commit
//! ([`git`]), or a plain directory in `--dev` mode ([`dir`]). Both produce a [`View`]:
//! the config files of one version, which [`crate::resolve::catalog`] and [`crate::resolve`] work on.
//!
//! Everything here blocks; callers run it on a blocking thread, never an async worker.

pub mod dir;
pub mod git;
pub mod search;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::crypto::{Keyring, PREFIX};
use crate::errors::{ConfigError, ErrorKind, SourceError};
use crate::resolve::parse::{parse_documents, Format};
use crate::resolve::ParsedFile;
pub use search::SearchPath;

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
    root: Root,
    parsed: HashMap<String, Result<Arc<ParsedFile>, ConfigError>>,
    /// What to do with `{cipher}` values.
    pub ciphers: Ciphers,
    /// Files parsed for an earlier version, by path and blob id: a blob that did not
    /// change is not read or parsed again.
    pub prior: HashMap<String, (::git2::Oid, Arc<ParsedFile>)>,
    /// Compiled JSON Schemas by path, so each is compiled once per view.
    pub(crate) schemas: HashMap<String, Result<Arc<jsonschema::Validator>, ConfigError>>,
    /// Told when a blob cannot be read, so the clone gets verified (and repaired).
    pub(crate) suspicion: Option<Arc<git::Suspicion>>,
    /// The folders searched, which say whose file a file in a folder is.
    pub search: Arc<SearchPath>,
}

/// What a view does with `{cipher}` values.
#[derive(Debug, Clone)]
pub enum Ciphers {
    /// Decrypt them with these keys.
    Decrypt(Arc<Keyring>),
    /// Fail the file: the server has no key, and must never serve ciphertext.
    Refuse,
    /// Leave them as they are (`confhub check` without a key, or a server told to pass
    /// them through to clients that decrypt them).
    Ignore,
}

impl Ciphers {
    /// What the server's settings ask for: decrypt with its keys, pass values through
    /// when told to (and no key is configured), refuse them otherwise.
    pub fn of(settings: &crate::settings::Settings) -> Ciphers {
        match &settings.keyring {
            None if settings.pass_ciphers_through => Ciphers::Ignore,
            keyring => Ciphers::from_keyring(keyring.as_ref()),
        }
    }

    /// `Decrypt` with the keyring, or `Refuse` without one.
    pub(crate) fn from_keyring(keyring: Option<&Keyring>) -> Ciphers {
        match keyring {
            Some(k) => Ciphers::Decrypt(Arc::new(k.clone())),
            None => Ciphers::Refuse,
        }
    }
}

/// The search path's root, for files outside the listing (schemas in nested folders).
#[derive(Debug, Clone)]
pub(crate) enum Root {
    /// A git tree (absent when the search path does not exist at this commit).
    Git(Option<::git2::Oid>),
    /// A directory.
    Disk(PathBuf),
}

impl<'r> View<'r> {
    pub(crate) fn new(
        version: String,
        prefix: String,
        files: BTreeMap<String, Blob>,
        repo: Option<&'r ::git2::Repository>,
        root: Root,
    ) -> Self {
        View {
            version,
            prefix,
            files,
            repo,
            root,
            parsed: HashMap::new(),
            schemas: HashMap::new(),
            ciphers: Ciphers::Refuse,
            prior: HashMap::new(),
            suspicion: None,
            search: Arc::new(SearchPath::Root),
        }
    }

    /// Find a file by path anywhere under the search path (not only the listed config
    /// files), e.g. a JSON Schema in `schemas/v1/`. `..` and absolute paths are refused.
    pub(crate) fn locate(&self, rel: &str) -> Option<Blob> {
        let rel = rel.trim_start_matches("./");
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.split('/').any(|p| p == ".." || p.is_empty())
        {
            return None;
        }
        if let Some(blob) = self.files.get(rel) {
            return Some(blob.clone());
        }
        match &self.root {
            Root::Git(tree) => {
                let repo = self.repo?;
                let tree = repo.find_tree((*tree)?).ok()?;
                let entry = tree.get_path(std::path::Path::new(rel)).ok()?;
                // A symlink is stored as a blob holding its target: not a file here.
                let file = entry.kind() == Some(::git2::ObjectType::Blob)
                    && entry.filemode() != i32::from(::git2::FileMode::Link);
                file.then(|| Blob::Git(entry.id()))
            }
            Root::Disk(base) => {
                // No component may be a symlink: one could lead out of the directory
                // served (`schema: ../../etc/…` is refused above, a link would not be).
                let mut path = base.clone();
                for part in rel.split('/') {
                    path.push(part);
                    let meta = std::fs::symlink_metadata(&path).ok()?;
                    if meta.file_type().is_symlink() {
                        return None;
                    }
                }
                path.is_file().then_some(Blob::Disk(path))
            }
        }
    }

    /// The target of the symlink at `rel`, as stored (a git blob with the link mode, or
    /// a link on disk whose parents are not links), `None` when `rel` is no symlink.
    /// Nothing follows it here: the caller decides whether the target stays in the tree.
    pub(crate) fn link_target(&self, rel: &str) -> Option<String> {
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.split('/').any(|p| p == ".." || p.is_empty())
        {
            return None;
        }
        match &self.root {
            Root::Git(tree) => {
                let repo = self.repo?;
                let tree = repo.find_tree((*tree)?).ok()?;
                let entry = tree.get_path(std::path::Path::new(rel)).ok()?;
                if entry.filemode() != i32::from(::git2::FileMode::Link) {
                    return None;
                }
                let blob = repo.find_blob(entry.id()).ok()?;
                // A link's target is a path; anything longer is no link git made.
                if blob.size() > 4096 {
                    return None;
                }
                String::from_utf8(blob.content().to_vec()).ok()
            }
            Root::Disk(base) => {
                let mut path = base.clone();
                let parts: Vec<&str> = rel.split('/').collect();
                for (i, part) in parts.iter().enumerate() {
                    path.push(part);
                    let meta = std::fs::symlink_metadata(&path).ok()?;
                    let last = i + 1 == parts.len();
                    if meta.file_type().is_symlink() != last {
                        return None;
                    }
                }
                std::fs::read_link(&path).ok()?.to_str().map(str::to_string)
            }
        }
    }

    /// The path users see for `rel` (repository-relative).
    pub fn display(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// The parsed git blobs of this view, to seed [`View::prior`] of the next version.
    pub(crate) fn parsed_blobs(&self) -> HashMap<String, (::git2::Oid, Arc<ParsedFile>)> {
        self.parsed
            .iter()
            .filter_map(|(rel, parsed)| match (self.files.get(rel), parsed) {
                (Some(Blob::Git(oid)), Ok(file)) => Some((rel.clone(), (*oid, file.clone()))),
                _ => None,
            })
            .collect()
    }

    /// Size of a file in bytes, without reading it.
    pub fn size(&self, rel: &str) -> Result<Option<u64>, SourceError> {
        self.open_blob(
            rel,
            |repo, oid| {
                let odb = repo.odb()?;
                odb.read_header(oid).map(|(size, _)| size as u64)
            },
            |path| std::fs::symlink_metadata(path).map(|m| m.len()),
        )
    }

    /// Find `rel` and apply `in_git` (to its blob) or `on_disk` (to its path), turning
    /// failures into errors naming the file; a failed object read is noted as a
    /// suspected damaged clone.
    fn open_blob<T>(
        &self,
        rel: &str,
        in_git: impl FnOnce(&::git2::Repository, ::git2::Oid) -> Result<T, ::git2::Error>,
        on_disk: impl FnOnce(&std::path::Path) -> std::io::Result<T>,
    ) -> Result<Option<T>, SourceError> {
        let Some(blob) = self.files.get(rel).cloned().or_else(|| self.locate(rel)) else {
            return Ok(None);
        };
        match blob {
            Blob::Git(oid) => {
                let repo = self
                    .repo
                    .ok_or_else(|| SourceError::Task("git blob without a repository".into()))?;
                in_git(repo, oid).map(Some).map_err(|e| {
                    if let Some(s) = &self.suspicion {
                        s.note(&e);
                    }
                    SourceError::git(format!("reading {}", self.display(rel)))(e)
                })
            }
            Blob::Disk(path) => on_disk(&path).map(Some).map_err(|source| SourceError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Raw bytes of a file.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        self.open_blob(
            rel,
            |repo, oid| repo.find_blob(oid).map(|b| b.content().to_vec()),
            |path| std::fs::read(path),
        )
    }

    /// A parsed file (memoized for the life of the view), `None` if absent.
    pub fn parsed(&mut self, rel: &str) -> Option<Result<Arc<ParsedFile>, ConfigError>> {
        if let Some(done) = self.parsed.get(rel) {
            return Some(done.clone());
        }
        if let (Some(Blob::Git(oid)), Some((prior_oid, file))) =
            (self.files.get(rel), self.prior.get(rel))
        {
            if oid == prior_oid {
                let file = file.clone();
                self.parsed.insert(rel.to_string(), Ok(file.clone()));
                return Some(Ok(file));
            }
        }
        if Format::of(rel).is_none()
            || (!self.files.contains_key(rel) && self.locate(rel).is_none())
        {
            return None;
        }
        let shown = self.display(rel);
        // Sized before it is read: a file over the limit never reaches memory.
        let result = match self.size(rel) {
            Ok(Some(len)) => crate::resolve::parse::check_size(&shown, len).map(|()| true),
            Ok(None) => return None,
            Err(e) => Err(ConfigError::new(ErrorKind::Git, e.to_string()).in_file(shown.clone())),
        };
        if let Err(e) = result {
            self.parsed.insert(rel.to_string(), Err(e.clone()));
            return Some(Err(e));
        }
        let result = match self.read(rel) {
            Ok(Some(bytes)) => parse_documents(&shown, &bytes).map(|parsed| {
                let text: Arc<str> = String::from_utf8_lossy(&bytes).into();
                let mut file = ParsedFile::new(&shown, text, parsed);
                // Once per blob: a file is parsed again only when it changes. Warnings
                // name keys and lines, never values.
                for warning in &file.warnings {
                    tracing::warn!(%warning, "config file works but deserves a look");
                }
                // Values are decrypted where Spring keeps them, flat, document by
                // document; the nested view is rebuilt from the plaintext.
                decrypt_documents(&self.ciphers, &mut file);
                if !file.secret_keys.is_empty() || !file.cipher_errors.is_empty() {
                    file.refresh_values();
                }
                Arc::new(file)
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

/// What Spring serves in place of a value it cannot decrypt (under `invalid.<key>`).
pub(crate) const NOT_AVAILABLE: &str = "<n/a>";

/// Replace every `{cipher}` value of the file's documents by its plaintext (recording its key in
/// `file.secret_keys`). A value that cannot be decrypted is never kept, as plaintext or
/// ciphertext: as Spring's `CipherEnvironmentEncryptor` does, its key becomes
/// `invalid.<key>` with the value `<n/a>` (a list element keeps its place, reading
/// `<n/a>`, so the rest of the list is not renumbered), and the error, naming the key
/// (never the value), goes to `file.cipher_errors`, so the native API and `check` report
/// it while Spring's forms serve the rest.
fn decrypt_documents(ciphers: &Ciphers, file: &mut ParsedFile) {
    for doc in 0..file.documents.len() {
        decrypt_document(ciphers, doc, file);
    }
}

fn decrypt_document(ciphers: &Ciphers, doc: usize, file: &mut ParsedFile) {
    use serde_json::Value;
    let taken = std::mem::take(&mut file.documents[doc].entries);
    let mut entries = Vec::with_capacity(taken.len());
    for (key, mut value) in taken {
        let Value::String(s) = &mut value else {
            entries.push((key, value));
            continue;
        };
        if !s.starts_with(PREFIX) {
            entries.push((key, value));
            continue;
        }
        let message = match ciphers {
            Ciphers::Ignore => {
                entries.push((key, value));
                continue;
            }
            Ciphers::Refuse => format!(
                "key `{key}` is encrypted but this server has no encryption key (set CONFHUB_ENCRYPT_KEY, encrypt_key_file or encrypt_passphrase; or encrypt_enabled = false to pass values through)"
            ),
            Ciphers::Decrypt(keyring) => match keyring.decrypt(s) {
                Ok(plain) => {
                    file.secret_keys.insert(key.clone());
                    *s = plain;
                    entries.push((key, value));
                    continue;
                }
                Err(e) => format!("key `{key}` cannot be decrypted: {e}"),
            },
        };
        let error = ConfigError::new(ErrorKind::Secret, message)
            .in_file(&file.path)
            .at_line(file.line_in(doc, &key).or_else(|| file.line_of(&key)))
            .with_key(&key);
        file.cipher_errors.push(error);
        let invalid = format!("invalid.{key}");
        if key.ends_with(']') {
            entries.push((key, Value::String(NOT_AVAILABLE.into())));
        }
        entries.push((invalid, Value::String(NOT_AVAILABLE.into())));
    }
    file.documents[doc].entries = entries;
}
