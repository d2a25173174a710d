//! The tracked branch, resolved: every (service, env) of one version with its
//! pre-rendered responses. Immutable once built; a new version builds a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use confhub_client::wire::{PairError, ServiceInfo, ServicesResponse};

use crate::auth::{Denied, Principal};
use crate::errors::ConfigError;
use crate::resolve::catalog::{pair_files, Access, Catalog};
use crate::resolve::ParsedFile;
use crate::source::View;
use crate::store::entry::{Body, PairEntry};

/// Why a pair has no fresh config at this version.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The resolution error.
    pub(crate) error: ConfigError,
    /// The version at which it failed.
    pub(crate) version: String,
}

/// One (service, env) of a snapshot.
#[derive(Debug, Clone, Default)]
pub struct PairState {
    /// What is served: the config at this version, or the last good one if this version failed.
    pub entry: Option<Arc<PairEntry>>,
    /// Set when resolution failed at this version.
    pub(crate) failure: Option<Failure>,
    /// Whose files the pair reads at this version (the served `entry` may be an older
    /// version's, with its own [`PairEntry::access`]): both are checked before either
    /// the entry or the failure is shown.
    pub(crate) access: Access,
    /// The config at this version with placeholders as written, when only placeholders
    /// failed: Spring's Environment form serves it (clients resolve those themselves).
    pub(crate) as_written: Option<Arc<PairEntry>>,
}

/// One pair of [`Snapshot::build`]: what it needs to resolve the pair at this version.
struct PairBuild<'a> {
    catalog: &'a Catalog,
    /// A broken `confhub.yml`: every pair fails with it.
    global_error: Option<&'a ConfigError>,
    uri: &'a Arc<str>,
    label: &'a str,
    service: &'a str,
    env: &'a String,
    /// The pair in the previous snapshot: its entry is reused when unchanged, and kept
    /// when this version fails.
    previous: Option<&'a PairState>,
}

impl PairBuild<'_> {
    fn run(&self, view: &mut View<'_>) -> PairState {
        let envs = std::slice::from_ref(self.env);
        let result = match self.global_error {
            Some(e) => Err(e.clone()),
            None => PairEntry::build_reusing(
                view,
                self.catalog,
                self.uri,
                self.label,
                self.service,
                envs,
                self.previous.and_then(|s| s.entry.as_deref()),
            ),
        };
        let access = match &result {
            Ok(entry) => entry.access.clone(),
            Err(_) if self.global_error.is_some() => Access::own(self.service, envs),
            Err(_) => pair_files(view, self.catalog, self.service, envs).access,
        };
        let failure = |error| Failure {
            error,
            version: view.version.clone(),
        };
        let last_good = self.previous.and_then(|s| s.entry.clone());
        match result {
            // Only placeholders (or secrets) failed: the as-written config is still
            // served where Spring's Environment form wants it.
            Ok(entry) if entry.placeholder_error.is_some() || entry.cipher_error.is_some() => {
                PairState {
                    entry: last_good,
                    failure: entry
                        .placeholder_error
                        .clone()
                        .or_else(|| entry.cipher_error.clone())
                        .map(failure),
                    as_written: Some(Arc::new(entry)),
                    access,
                }
            }
            Ok(entry) => {
                let entry = Arc::new(entry);
                // Warm the bodies clients hit on every request and push.
                entry.body(Body::Json);
                entry.body(Body::Frame);
                PairState {
                    entry: Some(entry),
                    failure: None,
                    as_written: None,
                    access,
                }
            }
            Err(error) => PairState {
                entry: last_good,
                failure: Some(failure(error)),
                as_written: None,
                access,
            },
        }
    }
}

/// `GET /v1/services` of one version: every service, each with every environment.
fn listing(label: &str, version: &str, catalog: &Catalog) -> ServicesResponse {
    ServicesResponse {
        label: label.to_string(),
        version: version.to_string(),
        environments: catalog.envs.iter().cloned().collect(),
        services: catalog
            .services
            .iter()
            .map(|s| ServiceInfo {
                name: s.clone(),
                envs: catalog.envs.iter().cloned().collect(),
            })
            .collect(),
    }
}

/// Everything the server answers for the tracked branch.
#[derive(Debug)]
pub struct Snapshot {
    /// The tracked label (branch name, or `dev` for directories).
    pub(crate) label: String,
    /// Commit sha or content hash.
    pub(crate) version: String,
    /// Environments and services at this version.
    pub(crate) catalog: Catalog,
    /// Set when the whole version is unusable (a broken `confhub.yml`).
    pub(crate) global_error: Option<ConfigError>,
    /// service → env → the pair's state.
    pub pairs: BTreeMap<String, BTreeMap<String, PairState>>,
    /// `GET /v1/services`, rendered.
    pub(crate) services_body: Bytes,
    /// The same listing, typed: scoped tokens get a filtered copy of it.
    pub(crate) services: ServicesResponse,
    /// The files parsed for this version, reused by the next one where unchanged.
    pub(crate) parsed_blobs: HashMap<String, (git2::Oid, Arc<ParsedFile>)>,
}

impl Snapshot {
    /// Resolve every (service, env) of `view`. Pairs failing here keep their entry from
    /// `previous`, so a broken commit never replaces a good config.
    pub fn build(
        view: &mut View<'_>,
        label: &str,
        uri: &Arc<str>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let (catalog, global_error) = match Catalog::of(view) {
            Ok(c) => (c, None),
            Err(e) => (
                previous.map(|p| p.catalog.clone()).unwrap_or_default(),
                Some(e),
            ),
        };
        let mut pairs: BTreeMap<String, BTreeMap<String, PairState>> = BTreeMap::new();
        for service in &catalog.services {
            let envs = pairs.entry(service.clone()).or_default();
            for env in &catalog.envs {
                let build = PairBuild {
                    catalog: &catalog,
                    global_error: global_error.as_ref(),
                    uri,
                    label,
                    service,
                    env,
                    previous: previous.and_then(|p| p.pair(service, env)),
                };
                envs.insert(env.clone(), build.run(view));
            }
        }
        let services = listing(label, &view.version, &catalog);
        Snapshot {
            label: label.to_string(),
            version: view.version.clone(),
            catalog,
            global_error,
            pairs,
            services_body: Bytes::from(serde_json::to_vec(&services).unwrap_or_default()),
            services,
            parsed_blobs: view.parsed_blobs(),
        }
    }

    /// A snapshot holding only `entries` (the last good config of pairs that fail at
    /// the head, resolved at older commits) and `catalog`, for [`Snapshot::build`] to
    /// take as `previous` when a server starts on a broken head.
    pub(crate) fn baseline(
        label: &str,
        catalog: Catalog,
        entries: BTreeMap<(String, String), Arc<PairEntry>>,
    ) -> Snapshot {
        let mut pairs: BTreeMap<String, BTreeMap<String, PairState>> = BTreeMap::new();
        for ((service, env), entry) in entries {
            pairs.entry(service).or_default().insert(
                env,
                PairState {
                    access: entry.access.clone(),
                    entry: Some(entry),
                    failure: None,
                    as_written: None,
                },
            );
        }
        Snapshot {
            label: label.to_string(),
            version: String::new(),
            catalog,
            global_error: None,
            pairs,
            services_body: Bytes::new(),
            services: ServicesResponse {
                label: label.to_string(),
                version: String::new(),
                environments: Vec::new(),
                services: Vec::new(),
            },
            parsed_blobs: HashMap::new(),
        }
    }

    /// Files parsed for this version and kept for the next one: never more than the
    /// version's config files.
    pub(crate) fn parsed_files(&self) -> usize {
        self.parsed_blobs.len()
    }

    /// Pairs that fail at this version and have nothing to serve.
    pub(crate) fn unserved(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .flat_map(|(service, envs)| {
                envs.iter()
                    .filter(|(_, slot)| slot.entry.is_none() && slot.failure.is_some())
                    .map(move |(env, _)| (service.clone(), env.clone()))
            })
            .collect()
    }

    /// A pair's state, if the snapshot has the pair.
    pub fn pair(&self, service: &str, env: &str) -> Option<&PairState> {
        self.pairs.get(service)?.get(env)
    }

    /// May `principal` see this pair of the snapshot (its config, its errors)?
    pub(crate) fn may_read(
        &self,
        principal: &Principal,
        service: &str,
        env: &str,
    ) -> Result<(), Denied> {
        match self.pair(service, env) {
            Some(slot) => {
                principal.may_read(&slot.access)?;
                match &slot.entry {
                    Some(entry) => principal.may_read(&entry.access),
                    None => Ok(()),
                }
            }
            None => principal.may_read(&Access::own(service, &[env.to_string()])),
        }
    }

    /// Every pair that failed at this version.
    pub fn errors(&self) -> Vec<PairError> {
        let mut out = Vec::new();
        if let Some(e) = &self.global_error {
            out.push(PairError {
                service: "*".into(),
                env: "*".into(),
                version: self.version.clone(),
                error: e.to_body(),
            });
        }
        for (service, envs) in &self.pairs {
            for (env, slot) in envs {
                if let Some(f) = &slot.failure {
                    if self.global_error.is_none() {
                        out.push(PairError {
                            service: service.clone(),
                            env: env.clone(),
                            version: f.version.clone(),
                            error: f.error.to_body(),
                        });
                    }
                }
            }
        }
        out
    }
}
