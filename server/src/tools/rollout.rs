//! `confhub rollout promote|abandon NAME`: the one commit that ends a rollout (README
//! "Gray release"). *Abandon* removes the rollout from `confhub.yml`; *promote* merges
//! the candidate label into the tracked branch and removes the rollout in the same
//! commit, so the instances that held the candidate hold the promoted digest and get no
//! frame. The plan is computed in memory; only [`Plan::commit`] writes (the objects,
//! then the branch, and the work tree when the branch is checked out and clean).

use std::path::Path;

use git2::{Commit, Index, Oid, Repository, Signature};
use serde_json::Value;

use crate::resolve::catalog::MANIFEST;
use crate::resolve::rollout::item_lines;

/// Why a rollout cannot be ended this way.
#[derive(Debug, thiserror::Error)]
pub enum RolloutToolError {
    /// Reading or writing the repository failed.
    #[error("git: {context}: {source}")]
    Git {
        /// What was being done.
        context: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The rollout, the branch or the candidate is not where it should be.
    #[error("{0}")]
    Refused(String),
}

fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> RolloutToolError {
    let context = context.into();
    move |source| RolloutToolError::Git { context, source }
}

/// End a rollout by promoting or abandoning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Merge the candidate and remove the rollout.
    Promote,
    /// Remove the rollout.
    Abandon,
}

/// The commit that ends a rollout, not yet written.
pub struct Plan {
    /// The branch it goes on.
    pub branch: String,
    /// Its message.
    pub message: String,
    /// Its parents: the branch head, and for a promotion the candidate commit.
    pub parents: Vec<Oid>,
    /// `confhub.yml` before and after.
    pub manifest_before: String,
    /// `confhub.yml` as the commit leaves it.
    pub manifest_after: String,
    /// Files the merge changes on the branch (promotion only), besides `confhub.yml`.
    pub merged_paths: Vec<String>,
    index: Index,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("branch", &self.branch)
            .field("message", &self.message)
            .field("parents", &self.parents)
            .field("merged_paths", &self.merged_paths)
            .finish_non_exhaustive()
    }
}

/// Plan the commit that ends rollout `name` on `branch` of the repository at `repo`.
pub fn plan(
    repo_path: &Path,
    branch: &str,
    name: &str,
    ending: Ending,
) -> Result<Plan, RolloutToolError> {
    let repo =
        Repository::open(repo_path).map_err(git(format!("opening {}", repo_path.display())))?;
    let head = branch_head(&repo, branch)?;
    let before = manifest_text(&repo, &head)?;
    let (label, after) = without_rollout(&before, name)?;
    let (mut index, parents, message) = match ending {
        Ending::Abandon => {
            let mut index = Index::new().map_err(git("a new index"))?;
            let tree = head.tree().map_err(git("the head's tree"))?;
            index
                .read_tree(&tree)
                .map_err(git("reading the head's tree"))?;
            (index, vec![head.id()], format!("Abandon rollout {name}\n\nRemove it from {MANIFEST}: its instances get the tracked config back."))
        }
        Ending::Promote => {
            let candidate = candidate_commit(&repo, &label)?;
            let index = repo
                .merge_commits(&head, &candidate, None)
                .map_err(git(format!("merging `{label}` into `{branch}`")))?;
            if index.has_conflicts() {
                let paths = conflicts(&index);
                return Err(RolloutToolError::Refused(format!(
                    "merging `{label}` into `{branch}` conflicts in {}: merge it by hand, remove the rollout from {MANIFEST} in the merge commit",
                    paths.join(", ")
                )));
            }
            let message = format!("Promote rollout {name}\n\nMerge `{label}` into `{branch}` and remove the rollout from {MANIFEST}.");
            (index, vec![head.id(), candidate.id()], message)
        }
    };
    let merged_paths = changed_paths(&repo, &head, &mut index)?;
    Ok(Plan {
        branch: branch.to_string(),
        message,
        parents,
        manifest_before: before,
        manifest_after: after,
        merged_paths,
        index,
    })
}

impl Plan {
    /// Write the commit and move the branch to it (if nobody moved it meanwhile). A
    /// checked-out branch must have a clean work tree, which is then updated too.
    pub fn commit(mut self, repo_path: &Path) -> Result<Oid, RolloutToolError> {
        let repo =
            Repository::open(repo_path).map_err(git(format!("opening {}", repo_path.display())))?;
        let checked_out = !repo.is_bare()
            && repo
                .head()
                .ok()
                .map(|h| h.shorthand().ok() == Some(self.branch.as_str()))
                .unwrap_or(false);
        if checked_out {
            let dirty = repo
                .statuses(None)
                .map_err(git("reading the work tree's status"))?
                .iter()
                .any(|s| !s.status().is_ignored() && !s.status().is_wt_new());
            if dirty {
                return Err(RolloutToolError::Refused(format!(
                    "`{}` is checked out with uncommitted changes: commit or stash them first",
                    self.branch
                )));
            }
        }
        let blob = repo
            .blob(self.manifest_after.as_bytes())
            .map_err(git("writing confhub.yml"))?;
        let mut entry = self
            .index
            .get_path(Path::new(MANIFEST), 0)
            .ok_or_else(|| RolloutToolError::Refused(format!("{MANIFEST} is not in the tree")))?;
        entry.id = blob;
        entry.file_size = self.manifest_after.len() as u32;
        self.index.add(&entry).map_err(git("staging confhub.yml"))?;
        let tree_id = self
            .index
            .write_tree_to(&repo)
            .map_err(git("writing the tree"))?;
        let tree = repo
            .find_tree(tree_id)
            .map_err(git("reading the new tree"))?;
        let parents: Vec<Commit<'_>> = self
            .parents
            .iter()
            .map(|p| repo.find_commit(*p).map_err(git("reading a parent")))
            .collect::<Result<_, _>>()?;
        let parent_refs: Vec<&Commit<'_>> = parents.iter().collect();
        let sig = repo
            .signature()
            .or_else(|_| Signature::now("confhub", "confhub@localhost"))
            .map_err(git("a signature"))?;
        let oid = repo
            .commit(None, &sig, &sig, &self.message, &tree, &parent_refs)
            .map_err(git("writing the commit"))?;
        let refname = format!("refs/heads/{}", self.branch);
        let now = repo
            .refname_to_id(&refname)
            .map_err(git(format!("reading `{}`", self.branch)))?;
        if now != self.parents[0] {
            return Err(RolloutToolError::Refused(format!(
                "`{}` moved while the commit was made: run the command again",
                self.branch
            )));
        }
        if checked_out {
            // Against the current head, so the files the commit changes are rewritten
            // (and any the user changed meanwhile refuse it, untouched).
            let mut checkout = git2::build::CheckoutBuilder::new();
            checkout.safe();
            repo.checkout_tree(tree.as_object(), Some(&mut checkout))
                .map_err(git("updating the work tree"))?;
        }
        repo.reference_matching(&refname, oid, true, self.parents[0], &self.message)
            .map_err(git(format!(
                "moving `{}` (did it move meanwhile?)",
                self.branch
            )))?;
        Ok(oid)
    }
}

fn branch_head<'r>(repo: &'r Repository, branch: &str) -> Result<Commit<'r>, RolloutToolError> {
    repo.find_branch(branch, git2::BranchType::Local)
        .map_err(|_| {
            RolloutToolError::Refused(format!(
                "no local branch `{branch}` (--branch names the tracked one)"
            ))
        })?
        .get()
        .peel_to_commit()
        .map_err(git(format!("the head of `{branch}`")))
}

fn manifest_text(repo: &Repository, head: &Commit<'_>) -> Result<String, RolloutToolError> {
    let tree = head.tree().map_err(git("the head's tree"))?;
    let entry = tree.get_path(Path::new(MANIFEST)).map_err(|_| {
        RolloutToolError::Refused(format!(
            "no {MANIFEST} on the branch: there is no rollout to end"
        ))
    })?;
    let blob = repo
        .find_blob(entry.id())
        .map_err(git(format!("reading {MANIFEST}")))?;
    String::from_utf8(blob.content().to_vec())
        .map_err(|_| RolloutToolError::Refused(format!("{MANIFEST} is not UTF-8")))
}

fn candidate_commit<'r>(repo: &'r Repository, label: &str) -> Result<Commit<'r>, RolloutToolError> {
    let names = [
        label.to_string(),
        format!("refs/heads/{label}"),
        format!("refs/tags/{label}"),
        format!("refs/remotes/origin/{label}"),
    ];
    names
        .iter()
        .find_map(|n| repo.revparse_single(n).ok()?.peel_to_commit().ok())
        .ok_or_else(|| {
            RolloutToolError::Refused(format!(
                "the candidate label `{label}` names no commit in this repository (fetch it first)"
            ))
        })
}

fn conflicts(index: &Index) -> Vec<String> {
    let mut paths: Vec<String> = index
        .conflicts()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| c.our.or(c.their).or(c.ancestor))
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Paths whose blob differs between the head's tree and `index`, `confhub.yml` aside.
fn changed_paths(
    repo: &Repository,
    head: &Commit<'_>,
    index: &mut Index,
) -> Result<Vec<String>, RolloutToolError> {
    let tree = head.tree().map_err(git("the head's tree"))?;
    let diff = repo
        .diff_tree_to_index(Some(&tree), Some(index), None)
        .map_err(git("comparing the merge with the head"))?;
    let mut paths: Vec<String> = diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .map(|p| p.display().to_string())
        })
        .filter(|p| p != MANIFEST)
        .collect();
    paths.sort();
    Ok(paths)
}

/// `text` with rollout `name` taken out of its `rollouts:` list (and the key too when
/// no rollout is left), and the rollout's label. The edit is made on the text, so
/// comments and layout stay; it is checked by reading both texts back.
pub fn without_rollout(text: &str, name: &str) -> Result<(String, String), RolloutToolError> {
    let refused = |m: String| RolloutToolError::Refused(m);
    let read = |t: &str| -> Result<Value, RolloutToolError> {
        serde_yaml::from_str::<Value>(t)
            .map_err(|e| refused(format!("{MANIFEST} does not parse: {e}")))
    };
    let before = read(text)?;
    let items = before
        .get("rollouts")
        .and_then(Value::as_array)
        .ok_or_else(|| refused(format!("{MANIFEST} declares no rollouts")))?;
    let index = items
        .iter()
        .position(|i| i.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| refused(format!("{MANIFEST} declares no rollout named `{name}`")))?;
    let label = items[index]
        .get("label")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (key_line, starts) = item_lines(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let form_error = || {
        refused(format!("{MANIFEST} writes its rollouts in a form this command does not edit (a flow list?): remove `{name}` by hand"))
    };
    let (Some(key_line), Some(start)) = (key_line, starts.get(index).copied()) else {
        return Err(form_error());
    };
    let block_end = block_end(&lines, key_line as usize);
    let end = starts.get(index + 1).map_or(block_end, |n| *n as usize - 1);
    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let number = n + 1;
        let in_item = number >= start as usize && number <= end;
        let lone_key = starts.len() == 1 && number == key_line as usize;
        if !in_item && !lone_key {
            kept.push(line);
        }
    }
    let after = kept.concat();
    let mut expected = before.clone();
    if let Some(list) = expected.get_mut("rollouts").and_then(Value::as_array_mut) {
        list.remove(index);
        if list.is_empty() {
            if let Some(map) = expected.as_object_mut() {
                map.remove("rollouts");
            }
        }
    }
    let mut got = read(&after)?;
    if got.is_null() {
        got = Value::Object(Default::default());
    }
    if got != expected {
        return Err(form_error());
    }
    Ok((label, after))
}

/// The last line (1-based) of the block under the top-level key on `key_line`.
fn block_end(lines: &[&str], key_line: usize) -> usize {
    let mut last = key_line;
    for (n, line) in lines.iter().enumerate().skip(key_line) {
        let content = line.trim_start();
        let top_level = line.len() == content.len()
            && !content.trim().is_empty()
            && !content.starts_with('#')
            && !content.starts_with('-');
        if top_level {
            break;
        }
        if !content.trim().is_empty() {
            last = n + 1;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_TEXT: &str = "\
environments: [dev, prod]
# rollouts under way
rollouts:
  - name: a
    service: orders
    envs: [prod]
    label: rollout/a
  # the next one
  - name: b
    service: billing
    envs: [prod]
    label: rollout/b
    to:
      percent: 10
services:
  orders: {schema: schemas/orders.json}
";

    #[test]
    fn one_item_is_removed_and_the_rest_stays_as_written() {
        let (label, after) = without_rollout(MANIFEST_TEXT, "b").expect("edited");
        assert_eq!(label, "rollout/b");
        assert!(
            after.contains("# rollouts under way\nrollouts:\n  - name: a\n"),
            "{after}"
        );
        assert!(
            !after.contains("name: b") && !after.contains("percent"),
            "{after}"
        );
        assert!(
            after.ends_with("services:\n  orders: {schema: schemas/orders.json}\n"),
            "{after}"
        );
        let (_, after) = without_rollout(MANIFEST_TEXT, "a").expect("edited");
        assert!(after.contains("rollouts:\n  - name: b\n"), "{after}");
        // The last one takes the key with it.
        let (_, only_b) = without_rollout(MANIFEST_TEXT, "a").expect("a");
        let (_, none) = without_rollout(&only_b, "b").expect("b");
        assert!(!none.contains("rollouts:"), "{none}");
        assert!(none.contains("services:"), "{none}");
    }

    #[test]
    fn what_cannot_be_edited_is_refused() {
        assert!(without_rollout(MANIFEST_TEXT, "c").is_err());
        let flow = "rollouts: [{name: a, service: orders, envs: [prod], label: x}]\n";
        let e = without_rollout(flow, "a").expect_err("flow");
        assert!(e.to_string().contains("by hand"), "{e}");
    }
}
