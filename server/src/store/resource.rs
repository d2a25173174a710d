//! Plain-text and binary resources (Spring's `ResourceController`): any file of the
//! repository, served at `/{name}/{profile}/{label}/{path}`, with `${…}` placeholders
//! resolved from that application's config for text.
//!
//! A resource is read as part of its pair: the pair's config goes through
//! [`Store::lookup_as_written`] (so the token must be able to read it, as for config),
//! and the file's owner is added to the pair's [`Access`] before
//! [`crate::auth::Principal::may_read`] decides. Reading a file takes git (a tree walk
//! and a blob read), so what was read and rendered is kept by (commit, pair, path, form)
//! in a cache bounded in bytes: a commit's files never change, and hot resources are
//! served from memory with no git.

use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;

use super::entry::PairEntry;
use super::Store;
use crate::auth::Principal;
use crate::errors::LookupError;
use crate::errors::{ConfigError, SourceError};
use crate::resolve::catalog::{Access, Catalog, Owner};
use crate::source::View;

/// Largest file served as a resource. Spring has no limit; here a file is held in
/// memory whole (and kept in the cache), so a bound keeps one request from taking a
/// large share of it.
pub(crate) const MAX_RESOURCE_BYTES: u64 = 4 << 20;

/// Bytes the resource cache may hold in all (bodies and keys).
pub(crate) const RESOURCE_CACHE_BYTES: usize = 32 << 20;

/// Entries the resource cache may hold.
pub(crate) const RESOURCE_CACHE_ENTRIES: usize = 4096;

/// How a resource is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ResourceForm {
    /// Text, placeholders resolved (`resolvePlaceholders`, the default) or not.
    Text { resolve: bool },
    /// The bytes as stored (`Accept: application/octet-stream`).
    Binary,
}

/// A resource ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// `text/plain; charset=utf-8` or `application/octet-stream`.
    pub(crate) content_type: &'static str,
    /// The body.
    pub(crate) body: Bytes,
    /// The file served, repository-relative.
    pub(crate) file: String,
}

/// Why a resource is not served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResourceError {
    /// The pair cannot be looked up (unknown label, out of scope, …).
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The path is not one a resource may have (`..`, absolute, `.git`).
    #[error("invalid resource path `{0}`: {1}")]
    InvalidPath(String, &'static str),
    /// No such file (nor a profile-specific one) at that version.
    #[error("no resource `{0}` at this label")]
    NotFound(String),
    /// The file is over [`MAX_RESOURCE_BYTES`].
    #[error("resource `{file}` is {size} bytes, over the {max} bytes served")]
    TooLarge { file: String, size: u64, max: u64 },
    /// The text's placeholders form a cycle (or go over a limit).
    #[error(transparent)]
    Placeholder(ConfigError),
}

/// A read made once per (commit, pair, path, form).
#[derive(Debug)]
struct Read {
    /// Owner of the file served, and its path, when it is not a file every service
    /// may read.
    owner: Vec<(Owner, String)>,
    result: Result<Resource, CachedError>,
}

#[derive(Debug, Clone)]
enum CachedError {
    NotFound(String),
    TooLarge { file: String, size: u64 },
    Placeholder(ConfigError),
}

type Key = (String, String, String, String, ResourceForm);

/// Reads by (commit, service, envs, path, form), bounded by count and bytes.
#[derive(Debug)]
pub(crate) struct ResourceCache {
    lru: LruCache<Key, Arc<Read>>,
    bytes: usize,
}

impl Default for ResourceCache {
    fn default() -> Self {
        ResourceCache {
            lru: LruCache::new(
                NonZeroUsize::new(RESOURCE_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            ),
            bytes: 0,
        }
    }
}

impl ResourceCache {
    fn weight(key: &Key, read: &Read) -> usize {
        let body = match &read.result {
            Ok(r) => r.body.len() + r.file.len(),
            Err(_) => 64,
        };
        256 + key.0.len() + key.1.len() + key.2.len() + key.3.len() + body
    }

    fn get(&mut self, key: &Key) -> Option<Arc<Read>> {
        self.lru.get(key).cloned()
    }

    fn put(&mut self, key: Key, read: Arc<Read>) {
        let weight = Self::weight(&key, &read);
        if weight > RESOURCE_CACHE_BYTES {
            return;
        }
        if let Some((k, evicted)) = self.lru.push(key, read) {
            self.bytes = self.bytes.saturating_sub(Self::weight(&k, &evicted));
        }
        self.bytes += weight;
        while self.bytes > RESOURCE_CACHE_BYTES {
            match self.lru.pop_lru() {
                Some((k, evicted)) => {
                    self.bytes = self.bytes.saturating_sub(Self::weight(&k, &evicted))
                }
                None => break,
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.lru.clear();
        self.bytes = 0;
    }
}

/// Refuse what `PathUtils.isInvalidPath` refuses (Spring answers 400), and what could
/// leave the tree served: `..`, absolute paths, empty segments, backslashes, NULs, and
/// `.git` (a `--dev` directory may be a checkout).
pub(crate) fn check_path(path: &str) -> Result<(), ResourceError> {
    let bad = |why| {
        Err(ResourceError::InvalidPath(
            path.escape_default().to_string(),
            why,
        ))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not served");
    }
    if path.contains('\\') || path.contains('\0') || path.contains(':') {
        return bad("`\\`, `:` and NUL are not allowed");
    }
    for segment in path.split('/') {
        match segment {
            "" => return bad("empty segment"),
            "." | ".." => return bad("`.` and `..` segments are not allowed"),
            ".git" => return bad("`.git` is not served"),
            _ => {}
        }
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    Ok(())
}

/// The paths tried for `path` in `profiles`, in Spring's order
/// (`GenericResourceRepository.getProfilePaths`): `nginx-prod.conf` for each profile as
/// listed (`nginx.conf` itself for `default`), then `nginx.conf`.
pub(crate) fn profile_paths(profiles: &[String], path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), path),
    };
    for profile in profiles {
        let candidate = if profile.is_empty() || profile == "default" {
            path.to_string()
        } else {
            // Spring's `getFilenameExtension` is what follows the last `.` of the
            // file name (a leading one included: `.env` → `-prod.env`).
            match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{dir}{stem}-{profile}.{ext}"),
                None => format!("{path}-{profile}"),
            }
        };
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    if !out.iter().any(|p| p == path) {
        out.push(path.to_string());
    }
    out
}

/// Whose file `rel` is: a config file's owner as the catalog reads its name (the
/// shared `application*` files of the asked envs excepted), or, for any file in a
/// service's folder (`payments/nginx.conf`), that service. Other files (`nginx.conf`
/// at the root, `templates/…`) are every service's.
fn owner_of(catalog: &Catalog, rel: &str, envs: &[String]) -> Option<Owner> {
    if let Some(owner) = catalog.owner_of(rel) {
        let shared =
            owner.service == "application" && owner.env.as_ref().is_none_or(|e| envs.contains(e));
        if !shared {
            return Some(owner);
        }
    }
    let (dir, _) = rel.split_once('/')?;
    catalog.services.contains(dir).then(|| Owner {
        service: dir.to_string(),
        env: None,
    })
}

/// Links followed, one after another, before a resource is taken as missing.
const MAX_LINK_HOPS: usize = 8;

/// The file `rel` names: itself, or where its symlinks lead, followed (as Spring's
/// checkout on disk would) only while they stay in the tree served. `None` when there
/// is no such file, or a link leads out of the tree (`/etc/passwd`, `../../x`).
fn find_file(view: &View<'_>, rel: &str) -> Option<String> {
    let mut rel = rel.to_string();
    for _ in 0..=MAX_LINK_HOPS {
        if view.locate(&rel).is_some() {
            return Some(rel);
        }
        let target = view.link_target(&rel)?;
        rel = join_in_tree(&rel, &target)?;
    }
    None
}

/// `target` read from the folder of the link at `link`, if it stays in the tree.
fn join_in_tree(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    check_path(&joined).ok()?;
    Some(joined)
}

impl Store {
    /// The resource `path` of `service` in `envs` at `label`, if `principal` may read
    /// both the pair's config (its placeholders' values) and the file.
    pub(crate) async fn resource(
        self: &Arc<Self>,
        principal: &Principal,
        label: Option<&str>,
        service: &str,
        envs: &[String],
        path: &str,
        form: ResourceForm,
    ) -> Result<Resource, ResourceError> {
        check_path(path)?;
        // Spring reads the Environment first (`environmentRepository.findOne`); so does
        // this, through the one lookup every read goes through.
        let entry = self
            .lookup_as_written(principal, label, service, envs)
            .await?;
        let read = self.read_once(&entry, service, envs, path, form).await?;
        super::allow(principal, &with_owners(&entry.access, &read.owner))?;
        served(&read)
    }

    /// The read of `path` for `entry`'s pair (`service` in `envs`) at its version: from
    /// the cache, or read on a blocking thread and kept.
    async fn read_once(
        self: &Arc<Self>,
        entry: &Arc<PairEntry>,
        service: &str,
        envs: &[String],
        path: &str,
        form: ResourceForm,
    ) -> Result<Arc<Read>, LookupError> {
        let key: Key = (
            entry.version.to_string(),
            service.to_string(),
            envs.join(","),
            path.to_string(),
            form,
        );
        if let Some(read) = self.resources.lock().ok().and_then(|mut c| c.get(&key)) {
            return Ok(read);
        }
        let store = self.clone();
        let entry = entry.clone();
        let envs = envs.to_vec();
        let path = path.to_string();
        let read = self
            .off_the_workers(move || store.read_resource(&entry, &envs, &path, form))
            .await?
            .map_err(LookupError::Source)?;
        let read = Arc::new(read);
        if let Ok(mut cache) = self.resources.lock() {
            cache.put(key, read.clone());
        }
        Ok(read)
    }

    /// Find, read and render a resource at the entry's version. Blocking.
    fn read_resource(
        &self,
        entry: &PairEntry,
        envs: &[String],
        path: &str,
        form: ResourceForm,
    ) -> Result<Read, SourceError> {
        self.with_view_at(&entry.version, "reading the resource's commit", |view| {
            read_in(view, entry, envs, path, form)
        })
    }
}

/// [`Store::read_resource`] in `view`, the files at the entry's version.
fn read_in(
    view: &mut View<'_>,
    entry: &PairEntry,
    envs: &[String],
    path: &str,
    form: ResourceForm,
) -> Result<Read, SourceError> {
    let not_found = || CachedError::NotFound(path.to_string());
    // Spring tries each search location, then each profile path in it; the
    // search path here is one location.
    let found = profile_paths(envs, path)
        .into_iter()
        .find_map(|p| find_file(view, &p).map(|real| (p, real)));
    let Some((asked, rel)) = found else {
        return Ok(Read {
            owner: Vec::new(),
            result: Err(not_found()),
        });
    };
    let shown = view.display(&rel);
    let owner = owners(view, &asked, &rel, &shown, envs);
    let size = view.size(&rel)?.unwrap_or(0);
    if size > MAX_RESOURCE_BYTES {
        return Ok(Read {
            owner,
            result: Err(CachedError::TooLarge { file: shown, size }),
        });
    }
    let result = match view.read(&rel)? {
        Some(bytes) => render(bytes, &shown, entry, form),
        None => Err(not_found()),
    };
    Ok(Read { owner, result })
}

/// Whose files a reader of the resource needs: through a link, both the link's place
/// (`asked`) and the file's (`rel`, shown as `shown`).
fn owners(
    view: &mut View<'_>,
    asked: &str,
    rel: &str,
    shown: &str,
    envs: &[String],
) -> Vec<(Owner, String)> {
    match Catalog::of(view) {
        Ok(catalog) => [asked, rel]
            .into_iter()
            .filter_map(|p| owner_of(&catalog, p, envs).map(|o| (o, view.display(p))))
            .collect(),
        // No catalog, no way to say whose the file is: only an admin reads it.
        Err(_) => vec![(
            Owner {
                service: "confhub.yml".into(),
                env: None,
            },
            shown.to_string(),
        )],
    }
}

/// The pair's `access` with the owners of the resource's files added.
fn with_owners(access: &Access, owners: &[(Owner, String)]) -> Access {
    let mut access = access.clone();
    for owner in owners {
        if !access.foreign.iter().any(|(o, _)| *o == owner.0) {
            access.foreign.push(owner.clone());
        }
    }
    access
}

/// What a read serves: the resource, or why not.
fn served(read: &Read) -> Result<Resource, ResourceError> {
    match &read.result {
        Ok(resource) => Ok(resource.clone()),
        Err(CachedError::NotFound(p)) => Err(ResourceError::NotFound(p.clone())),
        Err(CachedError::TooLarge { file, size }) => Err(ResourceError::TooLarge {
            file: file.clone(),
            size: *size,
            max: MAX_RESOURCE_BYTES,
        }),
        Err(CachedError::Placeholder(e)) => Err(ResourceError::Placeholder(e.clone())),
    }
}

/// The resource `form` asks for, from the file's `bytes`.
fn render(
    bytes: Vec<u8>,
    shown: &str,
    entry: &PairEntry,
    form: ResourceForm,
) -> Result<Resource, CachedError> {
    let binary = |bytes: Vec<u8>| Resource {
        content_type: "application/octet-stream",
        body: Bytes::from(bytes),
        file: shown.to_string(),
    };
    let resolve = match form {
        ResourceForm::Binary => return Ok(binary(bytes)),
        ResourceForm::Text { resolve } => resolve,
    };
    // Spring decodes every file as text (`StreamUtils.copyToString`), mangling binary
    // ones; a file that is not UTF-8 is served as its bytes instead.
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Ok(binary(e.into_bytes())),
    };
    let text = if resolve {
        let r = &entry.resolved;
        crate::resolve::resolve_text_lenient(&text, &r.spring_merged, &r.layers).map_err(|e| {
            let mut e = e.in_file(shown);
            e.key = None;
            CachedError::Placeholder(e)
        })?
    } else {
        text
    };
    Ok(Resource {
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from(text),
        file: shown.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(e: &[&str]) -> Vec<String> {
        e.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn profile_paths_follow_springs_order() {
        assert_eq!(
            profile_paths(&envs(&["prod", "eu"]), "conf/nginx.conf"),
            [
                "conf/nginx-prod.conf",
                "conf/nginx-eu.conf",
                "conf/nginx.conf"
            ]
        );
        assert_eq!(profile_paths(&envs(&["default"]), "Makefile"), ["Makefile"]);
        assert_eq!(
            profile_paths(&envs(&["prod"]), "Makefile"),
            ["Makefile-prod", "Makefile"]
        );
    }

    #[test]
    fn links_are_followed_only_inside_the_tree() {
        assert_eq!(
            join_in_tree("a/link", "b.conf").as_deref(),
            Some("a/b.conf")
        );
        assert_eq!(
            join_in_tree("a/link", "../b.conf").as_deref(),
            Some("b.conf")
        );
        assert_eq!(join_in_tree("a/link", "./c/../b").as_deref(), Some("a/b"));
        assert_eq!(join_in_tree("link", "../etc/passwd"), None);
        assert_eq!(join_in_tree("a/link", "/etc/passwd"), None);
        assert_eq!(join_in_tree("a/link", "../.git/config"), None);
    }

    #[test]
    fn paths_leaving_the_tree_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            ".git/config",
            "a\\b",
            "c:/x",
            "./x",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("conf/nginx.conf").is_ok());
        assert!(check_path(".env").is_ok());
    }
}
