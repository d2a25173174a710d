//! History and diff of a pair's *resolved* config, computed from git: a commit is in a
//! pair's history only if it changed what that pair resolves to, not merely touched a file.

use std::collections::BTreeMap;
use std::sync::Arc;

use confhub_client::wire::{DiffResponse, HistoryEntry, ValueChange};
use git2::{Oid, Sort, Tree};
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::catalog::{Catalog, MANIFEST};
use crate::entry::PairEntry;
use crate::errors::SourceError;
use crate::parse::EXTENSIONS;
use crate::resolve::flatten;
use crate::source::git::GitSource;

/// How many commits of the branch history are scanned at most.
pub const MAX_SCAN: usize = 20_000;

/// What is shown instead of a value that is encrypted in the repository.
pub const MASK: &str = "******";

/// Flat key → resolved value.
pub fn flat(entry: &PairEntry) -> BTreeMap<String, Value> {
    flatten(&entry.resolved.values)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect()
}

/// `v`, or the mask if the value at `key` is or embeds a decrypted secret of `entry`
/// (or, where ciphers were left undecrypted, is ciphertext).
fn masked(entry: &PairEntry, key: &str, v: &Value) -> Value {
    let secret = entry.resolved.holds_secret(key)
        || v.as_str()
            .is_some_and(|s| s.starts_with(crate::crypto::PREFIX));
    if secret {
        Value::String(MASK.into())
    } else {
        v.clone()
    }
}

/// Key-level differences between two flat configs.
pub fn diff_flat(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> (
    Map<String, Value>,
    Map<String, Value>,
    BTreeMap<String, ValueChange>,
) {
    let mut added = Map::new();
    let mut removed = Map::new();
    let mut changed = BTreeMap::new();
    for (k, v) in new {
        match old.get(k) {
            None => {
                added.insert(k.clone(), v.clone());
            }
            Some(o) if o != v => {
                changed.insert(
                    k.clone(),
                    ValueChange {
                        old: o.clone(),
                        new: v.clone(),
                    },
                );
            }
            Some(_) => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            removed.insert(k.clone(), v.clone());
        }
    }
    (added, removed, changed)
}

/// The diff response between two resolved entries of a pair.
pub fn diff(from_label: &str, to_label: &str, from: &PairEntry, to: &PairEntry) -> DiffResponse {
    // Compared in clear (a rotated password is a change), shown masked.
    let (added, removed, changed) = diff_flat(&flat(from), &flat(to));
    let added = added
        .into_iter()
        .map(|(k, v)| {
            let v = masked(to, &k, &v);
            (k, v)
        })
        .collect();
    let removed = removed
        .into_iter()
        .map(|(k, v)| {
            let v = masked(from, &k, &v);
            (k, v)
        })
        .collect();
    let changed = changed
        .into_iter()
        .map(|(k, c)| {
            let change = ValueChange {
                old: masked(from, &k, &c.old),
                new: masked(to, &k, &c.new),
            };
            (k, change)
        })
        .collect();
    DiffResponse {
        service: to.service.clone(),
        env: to.env_string(),
        from: from_label.to_string(),
        to: to_label.to_string(),
        from_version: from.version.clone(),
        to_version: to.version.clone(),
        added,
        removed,
        changed,
    }
}

/// Blob ids of every file a pair's resolution can depend on at one commit; equal
/// fingerprints mean equal resolved configs, so only commits that change it are resolved.
fn fingerprint(
    tree: &Tree<'_>,
    prefix: &str,
    service: &str,
    envs: &[String],
) -> Vec<(String, Oid)> {
    let mut bases = vec![service.to_string(), "application".to_string()];
    for env in envs {
        bases.push(format!("{service}-{env}"));
        bases.push(format!("application-{env}"));
    }
    let mut paths = vec![MANIFEST.to_string()];
    for base in &bases {
        for ext in EXTENSIONS {
            paths.push(format!("{base}.{ext}"));
            paths.push(format!("{service}/{base}.{ext}"));
        }
    }
    let mut out: Vec<(String, Oid)> = paths
        .into_iter()
        .filter_map(|p| {
            let id = tree
                .get_path(std::path::Path::new(&format!("{prefix}{p}")))
                .ok()?
                .id();
            Some((p, id))
        })
        .collect();
    // Schemas live anywhere; a change to the schemas folder must count too.
    if let Ok(entry) = tree.get_path(std::path::Path::new(&format!("{prefix}schemas"))) {
        out.push(("schemas/".into(), entry.id()));
    }
    out
}

/// Commits of the tracked branch that changed the resolved config of (service, envs),
/// newest first, at most `limit`. Blocking.
pub fn history(
    git: &GitSource,
    uri: &Arc<str>,
    principal: &Principal,
    service: &str,
    envs: &[String],
    limit: usize,
) -> Result<(String, Vec<HistoryEntry>), SourceError> {
    git.with_repo(|repo| {
        // A deleted branch still has the history of the commit served for it.
        let (branch, head) = git.serving_commit(repo, None)?;
        let mut walk = repo
            .revwalk()
            .map_err(SourceError::git("walking history"))?;
        walk.push(head)
            .map_err(SourceError::git("walking history"))?;
        walk.simplify_first_parent()
            .map_err(SourceError::git("walking history"))?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
            .map_err(SourceError::git("walking history"))?;
        let commits: Vec<Oid> = walk.filter_map(Result::ok).collect();
        let commits = &commits[commits.len().saturating_sub(MAX_SCAN)..];

        let prefix = git.search_prefix();
        let mut last_print: Option<Vec<(String, Oid)>> = None;
        let mut last_good: Option<BTreeMap<String, Value>> = None;
        let mut entries = Vec::new();
        for &oid in commits {
            let commit = repo
                .find_commit(oid)
                .map_err(SourceError::git(format!("reading {oid}")))?;
            let tree = commit
                .tree()
                .map_err(SourceError::git(format!("reading {oid}")))?;
            let print = fingerprint(&tree, &prefix, service, envs);
            if last_print.as_ref() == Some(&print) {
                continue;
            }
            last_print = Some(print);
            let mut view = git.view(repo, oid)?;
            // A commit that does not resolve was never served: it changes nothing.
            let Ok(catalog) = Catalog::of(&mut view) else {
                continue;
            };
            let Ok(entry) = PairEntry::build(&mut view, &catalog, uri, &branch, service, envs)
            else {
                continue;
            };
            // A commit at which the pair read a file outside the token's scopes is
            // left out, as if it had not resolved: its keys are not the token's to see.
            if entry.placeholder_error.is_some()
                || entry.cipher_error.is_some()
                || principal.may_read(&entry.access).is_err()
            {
                continue;
            }
            let values = if entry.service_known {
                flat(&entry)
            } else {
                BTreeMap::new()
            };
            let empty = BTreeMap::new();
            let (added, removed, changed) =
                diff_flat(last_good.as_ref().unwrap_or(&empty), &values);
            let mut keys: Vec<String> = added
                .keys()
                .chain(removed.keys())
                .chain(changed.keys())
                .cloned()
                .collect();
            keys.sort();
            if !keys.is_empty() {
                let author = commit.author();
                entries.push(HistoryEntry {
                    sha: oid.to_string(),
                    author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                    email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
                    time: crate::timefmt::rfc3339(commit.time().seconds()),
                    message: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                        .into_owned(),
                    changed_keys: keys,
                });
            }
            last_good = Some(values);
        }
        entries.reverse();
        entries.truncate(limit);
        Ok((branch, entries))
    })
}

/// `confhub diff --repo`: the diff of a pair between two labels of a local repository. Blocking.
pub fn diff_repo(
    repo: &std::path::Path,
    search_path: Option<&str>,
    service: &str,
    env: &str,
    from: &str,
    to: Option<&str>,
) -> Result<DiffResponse, crate::errors::DiffError> {
    use crate::errors::DiffError;
    let envs = crate::names::parse_envs(env)?;
    let from = crate::names::parse_label(from)?;
    let to = to.map(crate::names::parse_label).transpose()?;
    let mut settings = crate::settings::Settings::new(repo.display().to_string());
    settings.search_path = search_path.map(str::to_string);
    let git = GitSource::open(&settings)?;
    let uri: Arc<str> = git.uri().into();
    let entries = git.with_repo(|r| {
        let to_label = match &to {
            Some(t) => t.clone(),
            None => git.tracked(r)?.0,
        };
        let mut out = Vec::new();
        for label in [from.as_str(), to_label.as_str()] {
            let Some(oid) = git.resolve_label(r, label) else {
                return Ok(Err(DiffError::UnknownLabel(label.to_string())));
            };
            let mut view = git.view(r, oid)?;
            let entry = Catalog::of(&mut view).and_then(|catalog| {
                PairEntry::build(&mut view, &catalog, &uri, label, service, &envs)
            });
            match entry {
                Ok(PairEntry {
                    placeholder_error: Some(e),
                    ..
                })
                | Ok(PairEntry {
                    cipher_error: Some(e),
                    ..
                })
                | Err(e) => return Ok(Err(DiffError::Config(e))),
                Ok(e) => out.push(e),
            }
        }
        Ok(Ok((out, to_label)))
    })??;
    let (entries, to_label) = entries;
    Ok(diff(&from, &to_label, &entries[0], &entries[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_flat_keys() {
        let old: BTreeMap<String, Value> =
            [("a".into(), Value::from(1)), ("b".into(), Value::from(2))].into();
        let new: BTreeMap<String, Value> =
            [("b".into(), Value::from(3)), ("c".into(), Value::from(4))].into();
        let (added, removed, changed) = diff_flat(&old, &new);
        assert_eq!(added.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(removed.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            changed["b"],
            ValueChange {
                old: Value::from(2),
                new: Value::from(3)
            }
        );
    }
}
