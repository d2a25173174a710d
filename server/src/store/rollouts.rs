//! The rollouts of the tracked version (ARCHITECTURE.md §2.4, §6.3): each declared
//! rollout with its candidate config resolved, once per change of the tracked commit or
//! of the candidate label's commit, off the request path like every other config. A
//! rollout whose candidate cannot be served (unknown label, a pair that does not resolve
//! or violates its schema, an unknown service or env) is *broken*: nobody gets it. One
//! that an instance in it rejected (with `halt_on_reject`) is *halted*: nobody gets it
//! until a commit changes the rollout, which builds it anew.
//!
//! Which instance is in a rollout is [`RolloutSpec::selects`], a pure function of the
//! declaration and the instance, so every replica answers alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::entry::PairEntry;
use super::snapshot::Snapshot;
use super::Source;
use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::catalog::{Catalog, MANIFEST};
use crate::resolve::rollout::{parse_rollouts, DeclarationError, RolloutSpec};
use crate::source::git::GitSource;

/// (service, env).
pub(crate) type PairKey = (String, String);

/// Why a rollout was halted.
#[derive(Debug, Clone)]
pub(crate) struct Halt {
    /// The instance whose rejection halted it.
    pub(crate) instance: String,
    /// What it said.
    pub(crate) error: String,
    pub(crate) at: SystemTime,
}

/// A rollout's candidate: the commit the label named, and the config of each env.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) version: String,
    /// env → the candidate entry, which names the rollout in its bodies.
    pub(crate) entries: BTreeMap<String, Arc<PairEntry>>,
}

/// One declared rollout at one version.
#[derive(Debug)]
pub(crate) struct Rollout {
    pub(crate) spec: RolloutSpec,
    /// The name, shared by the entries and frames that carry it.
    pub(crate) name: Arc<str>,
    /// The candidate, or why it cannot be served.
    pub(crate) candidate: Result<Candidate, Vec<ConfigError>>,
    halt: OnceLock<Halt>,
    applied: AtomicU64,
    rejected: AtomicU64,
}

impl Rollout {
    pub(crate) fn new(
        spec: RolloutSpec,
        candidate: Result<Candidate, Vec<ConfigError>>,
    ) -> Rollout {
        Rollout {
            name: spec.name.as_str().into(),
            spec,
            candidate,
            halt: OnceLock::new(),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// `active`, `halted` or `broken`.
    pub(crate) fn state(&self) -> &'static str {
        match (&self.candidate, self.halt.get()) {
            (Err(_), _) => "broken",
            (Ok(_), Some(_)) => "halted",
            (Ok(_), None) => "active",
        }
    }

    /// The candidate entry of `env` for the instance `id` (whose labels `label` gives),
    /// when this rollout is served and picks it.
    pub(crate) fn candidate_for<'l>(
        &self,
        env: &str,
        id: &str,
        label: impl Fn(&str) -> Option<&'l str>,
    ) -> Option<&Arc<PairEntry>> {
        if self.halt.get().is_some() || !self.spec.selects(id, label) {
            return None;
        }
        self.candidate.as_ref().ok()?.entries.get(env)
    }

    /// The candidate digest of `env`, whether served or not.
    pub(crate) fn candidate_digest(&self, env: &str) -> Option<&str> {
        Some(self.candidate.as_ref().ok()?.entries.get(env)?.digest())
    }

    /// Halt it because `instance` rejected the candidate; `false` when it already was.
    pub(crate) fn halt(&self, instance: &str, error: &str) -> bool {
        let mut first = false;
        self.halt.get_or_init(|| {
            first = true;
            Halt {
                instance: instance.to_string(),
                error: error.to_string(),
                at: SystemTime::now(),
            }
        });
        first
    }

    pub(crate) fn halted(&self) -> Option<&Halt> {
        self.halt.get()
    }

    /// Count an instance's answer to the candidate.
    pub(crate) fn count(&self, applied: bool) {
        let counter = if applied {
            &self.applied
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (applied, rejected) answers to the candidate so far.
    pub(crate) fn answers(&self) -> (u64, u64) {
        (
            self.applied.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Is `other` the same rollout (the same declaration and candidate commit), so the
    /// state it has gathered (halt, counts) carries over?
    fn same_as(&self, spec: &RolloutSpec, version: Option<&str>) -> bool {
        self.spec.same_declaration(spec)
            && self.candidate.as_ref().ok().map(|c| c.version.as_str()) == version
            && version.is_some()
    }
}

/// Every rollout of a version.
#[derive(Debug, Default)]
pub(crate) struct Rollouts {
    /// Sorted by name.
    pub(crate) list: Vec<Arc<Rollout>>,
    /// Declarations that could not be used at all.
    pub(crate) refused: Vec<DeclarationError>,
    /// service → env → its rollout: looked up by borrowed names on every request.
    by_pair: HashMap<String, HashMap<String, Arc<Rollout>>>,
}

impl Rollouts {
    pub(crate) fn new(mut list: Vec<Arc<Rollout>>, refused: Vec<DeclarationError>) -> Rollouts {
        list.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        let mut by_pair: HashMap<String, HashMap<String, Arc<Rollout>>> = HashMap::new();
        for r in &list {
            let envs = by_pair.entry(r.spec.service.clone()).or_default();
            for env in &r.spec.envs {
                envs.insert(env.clone(), r.clone());
            }
        }
        Rollouts {
            list,
            refused,
            by_pair,
        }
    }

    /// The rollout on (service, env), served or not.
    pub(crate) fn on(&self, service: &str, env: &str) -> Option<&Arc<Rollout>> {
        self.by_pair.get(service)?.get(env)
    }

    fn pairs(&self) -> impl Iterator<Item = (PairKey, &Arc<Rollout>)> {
        self.by_pair.iter().flat_map(|(service, envs)| {
            envs.iter()
                .map(move |(env, r)| ((service.clone(), env.clone()), r))
        })
    }

    /// `built`, or the rollout of `self` it equals (the same declaration, broken for the
    /// same reasons): a rollout that stays broken is not rebuilt, re-announced and
    /// republished by every refresh.
    pub(crate) fn unchanged(&self, built: Rollout) -> Arc<Rollout> {
        let same = self.list.iter().find(|old| {
            old.spec.same_declaration(&built.spec)
                && match (&old.candidate, &built.candidate) {
                    (Ok(a), Ok(b)) => a.version == b.version,
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                }
        });
        same.cloned().unwrap_or_else(|| Arc::new(built))
    }

    /// The rollout of `previous` to keep instead of a new one for `spec` at `version`.
    pub(crate) fn reusable(
        &self,
        spec: &RolloutSpec,
        version: Option<&str>,
    ) -> Option<Arc<Rollout>> {
        self.list.iter().find(|r| r.same_as(spec, version)).cloned()
    }

    /// Pairs whose rollout changed from `old` to `self` (added, removed, rebuilt), so
    /// their subscribers may need another config.
    pub(crate) fn changed_since(&self, old: &Rollouts) -> Vec<PairKey> {
        let mut out: Vec<PairKey> = Vec::new();
        for (pair, rollout) in self.pairs() {
            if !old
                .on(&pair.0, &pair.1)
                .is_some_and(|o| Arc::ptr_eq(o, rollout))
            {
                out.push(pair);
            }
        }
        for (pair, _) in old.pairs() {
            if self.on(&pair.0, &pair.1).is_none() {
                out.push(pair);
            }
        }
        out.sort();
        out
    }

    /// What keeps rollouts from being served, as errors per pair: broken candidates
    /// and refused declarations.
    pub(crate) fn errors(&self) -> Vec<(PairKey, String, ConfigError)> {
        let mut out = Vec::new();
        for r in &self.list {
            if let Err(errors) = &r.candidate {
                for env in &r.spec.envs {
                    for e in errors {
                        out.push((
                            (r.spec.service.clone(), env.clone()),
                            r.spec.name.clone(),
                            e.clone(),
                        ));
                    }
                }
            }
        }
        for d in &self.refused {
            let name = d.name.clone().unwrap_or_else(|| "(unnamed)".into());
            for pair in &d.pairs {
                out.push((pair.clone(), name.clone(), d.error.clone()));
            }
        }
        out
    }
}

impl super::Store {
    /// The rollouts `snap`'s manifest declares, each with its candidate resolved; those
    /// whose declaration and candidate commit are unchanged from `old` are kept as they
    /// are, with what they have gathered (a halt, the answers counted). Blocking.
    pub(super) fn build_rollouts(&self, snap: &Snapshot, old: &Rollouts) -> Rollouts {
        let text = snap
            .parsed_blobs
            .get(MANIFEST)
            .map(|(_, f)| f.text.clone())
            .unwrap_or_default();
        let (specs, refused) =
            parse_rollouts(snap.catalog.manifest.rollouts.as_ref(), &text, MANIFEST);
        let list = specs
            .into_iter()
            .map(|spec| self.build_rollout(snap, old, spec))
            .collect();
        Rollouts::new(list, refused)
    }

    fn build_rollout(&self, snap: &Snapshot, old: &Rollouts, spec: RolloutSpec) -> Arc<Rollout> {
        let version = match self.candidate_commit(snap, &spec) {
            Ok(version) => version,
            Err(message) => {
                let error = spec.error(message);
                return old.unchanged(Rollout::new(spec, Err(vec![error])));
            }
        };
        // Resolved already at this commit: keep it, with what it gathered.
        if let Some(same) = old.reusable(&spec, Some(&version)) {
            return same;
        }
        let candidate = self.resolve_candidate(&spec, version);
        old.unchanged(Rollout::new(spec, candidate))
    }

    /// The commit the rollout's label names, if the rollout can have a candidate at all.
    fn candidate_commit(&self, snap: &Snapshot, spec: &RolloutSpec) -> Result<String, String> {
        let Source::Git(git) = &self.source else {
            known_pairs(&snap.catalog, spec)?;
            return Err("rollouts need a git repository: a `--dev` directory has no labels".into());
        };
        git.with_repo(|repo| Ok(candidate_commit(git, repo, &snap.catalog, spec)))
            .unwrap_or_else(|e| {
                Err(format!(
                    "rollout `{}`: reading label `{}`: {e}",
                    spec.name, spec.label
                ))
            })
            .map(|oid| oid.to_string())
    }

    /// Each env of the rollout resolved at its label, through the label cache (a
    /// `?label=` request for it is then served from the same resolution). Any env that
    /// does not resolve whole (placeholders, ciphers, schema) breaks the rollout.
    fn resolve_candidate(
        &self,
        spec: &RolloutSpec,
        version: String,
    ) -> Result<Candidate, Vec<ConfigError>> {
        let name: Arc<str> = spec.name.as_str().into();
        let mut entries = BTreeMap::new();
        let mut errors = Vec::new();
        let at = |e: ConfigError, env: &str| ConfigError {
            message: format!(
                "rollout `{}`, {}/{env} at `{}`: {}",
                spec.name, spec.service, spec.label, e.message
            ),
            ..e
        };
        for env in &spec.envs {
            let envs = [env.clone()];
            let resolution = match self.lookup_blocking(&spec.label, None, &spec.service, &envs) {
                Ok(resolution) => resolution,
                Err(e) => {
                    errors.push(at(ConfigError::new(ErrorKind::Git, e.to_string()), env));
                    continue;
                }
            };
            let entry = resolution
                .result
                .clone()
                .and_then(|entry| servable(&entry, spec).map(|()| entry));
            match entry {
                Ok(entry) => {
                    entries.insert(env.clone(), Arc::new(entry.in_rollout(&name)));
                }
                Err(e) => errors.push(at(e, env)),
            }
        }
        if errors.is_empty() {
            Ok(Candidate { version, entries })
        } else {
            Err(errors)
        }
    }
}

/// Can a candidate entry be served whole? Its service must have files at the label, and
/// its placeholders and ciphers must resolve: a rollout is served to every client alike,
/// so nothing is left for a Spring client to fill in.
pub(crate) fn servable(entry: &PairEntry, spec: &RolloutSpec) -> Result<(), ConfigError> {
    if !entry.service_known {
        let message = format!("no {0}.yml or {0}-{{env}}.yml at the label", spec.service);
        return Err(ConfigError::new(ErrorKind::Manifest, message));
    }
    match entry
        .placeholder_error
        .clone()
        .or_else(|| entry.cipher_error.clone())
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The commit a rollout's label names in `repo`, if the rollout may have a candidate
/// there: its pairs are pairs of `catalog` (the tracked version's) and the label names a
/// commit. The server and `confhub check` both ask this.
pub(crate) fn candidate_commit(
    git: &GitSource,
    repo: &git2::Repository,
    catalog: &Catalog,
    spec: &RolloutSpec,
) -> Result<git2::Oid, String> {
    known_pairs(catalog, spec)?;
    match git.resolve_label(repo, &spec.label) {
        Ok(Some(oid)) => Ok(oid),
        Ok(None) => Err(format!(
            "rollout `{}`: label `{}` names no branch, tag or commit",
            spec.name, spec.label
        )),
        Err(e) => Err(format!(
            "rollout `{}`: reading label `{}`: {e}",
            spec.name, spec.label
        )),
    }
}

/// A rollout may only name pairs the tracked version serves.
fn known_pairs(catalog: &Catalog, spec: &RolloutSpec) -> Result<(), String> {
    if !catalog.services.contains(&spec.service) {
        return Err(format!(
            "rollout `{}`: unknown service `{}` (no {}.yml on the tracked branch)",
            spec.name, spec.service, spec.service
        ));
    }
    match spec.envs.iter().find(|e| !catalog.envs.contains(*e)) {
        Some(env) => Err(format!(
            "rollout `{}`: unknown environment `{env}` on the tracked branch",
            spec.name
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::rollout::parse_rollouts;

    fn spec(percent: u32) -> RolloutSpec {
        let raw = serde_json::json!([{"name": "r", "service": "orders", "envs": ["prod"],
            "label": "rollout/r", "to": {"percent": percent}}]);
        parse_rollouts(Some(&raw), "", MANIFEST).0.remove(0)
    }

    fn broken_for(spec: RolloutSpec, why: &str) -> Rollout {
        let error = spec.error(why.to_string());
        Rollout::new(spec, Err(vec![error]))
    }

    #[test]
    fn a_rollout_that_stays_broken_is_kept_and_a_changed_one_is_new() {
        let old = Rollouts::new(vec![Arc::new(broken_for(spec(10), "no label"))], Vec::new());
        let again = old.unchanged(broken_for(spec(10), "no label"));
        assert!(Arc::ptr_eq(&again, &old.list[0]), "the same breakage: kept");
        let other = old.unchanged(broken_for(spec(10), "another reason"));
        assert!(!Arc::ptr_eq(&other, &old.list[0]));
        let changed = old.unchanged(broken_for(spec(20), "no label"));
        assert!(
            !Arc::ptr_eq(&changed, &old.list[0]),
            "a new declaration: new"
        );
        let new = Rollouts::new(vec![again], Vec::new());
        assert!(new.changed_since(&old).is_empty());
        let new = Rollouts::new(vec![changed], Vec::new());
        assert_eq!(
            new.changed_since(&old),
            [("orders".to_string(), "prod".to_string())]
        );
    }

    #[test]
    fn a_halt_is_once_and_stops_serving() {
        let r = broken_for(spec(100), "x");
        assert_eq!(r.state(), "broken");
        let r = Rollout::new(
            spec(100),
            Ok(Candidate {
                version: "c".into(),
                entries: BTreeMap::new(),
            }),
        );
        assert_eq!(r.state(), "active");
        assert!(r.halt("a", "bad"));
        assert!(!r.halt("b", "worse"), "the first halt stays");
        assert_eq!(r.state(), "halted");
        assert_eq!(r.halted().map(|h| h.instance.as_str()), Some("a"));
    }
}
