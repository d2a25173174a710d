//! What a repository holds at one version: its environments and services, and which
//! files make up a (service, envs) pair, in precedence order (ARCHITECTURE.md §2).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::errors::{ConfigError, ErrorKind};
use crate::parse::{Activation, ProfileExpr, EXTENSIONS};
use crate::source::View;

/// The optional manifest at the root of the config repository.
pub const MANIFEST: &str = "confhub.yml";

/// `confhub.yml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Declared environments; when set, any other env is unknown.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// Per-service settings.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceManifest>,
}

/// Per-service entry of `confhub.yml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceManifest {
    /// Path of a JSON Schema the resolved config must satisfy.
    #[serde(default)]
    pub schema: Option<String>,
}

/// Environments and services of one version.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Known environments, sorted.
    pub envs: BTreeSet<String>,
    /// Whether `envs` was declared in `confhub.yml` (then other envs are unknown).
    pub envs_declared: bool,
    /// Services, sorted.
    pub services: BTreeSet<String>,
    /// The manifest (`confhub.yml`), or the default when there is none.
    pub manifest: Manifest,
}

fn stem(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    EXTENSIONS.contains(&ext).then_some(stem)
}

impl Catalog {
    /// Read the catalog of a view: the manifest, then file names.
    pub fn of(view: &mut View<'_>) -> Result<Catalog, ConfigError> {
        let manifest = read_manifest(view)?;
        let root_stems: Vec<String> = view
            .files
            .keys()
            .filter(|p| !p.contains('/') && p.as_str() != MANIFEST)
            .filter_map(|p| stem(p).map(str::to_string))
            .collect();
        let (envs, envs_declared): (BTreeSet<String>, bool) = match &manifest.environments {
            Some(envs) => (envs.iter().cloned().collect(), true),
            None => {
                let mut envs: BTreeSet<String> = root_stems
                    .iter()
                    .filter_map(|s| s.strip_prefix("application-"))
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect();
                // A Spring repository often has no `application-prod.yml`, only
                // documents activated `on-profile: prod`: those profiles are envs too.
                // Looked for only when a file name needs them (`orders-prod.properties`
                // with no `application-prod`): every lookup builds a catalog, and most
                // repositories need not have their files read for it.
                let needs_profiles = root_stems.iter().any(|s| {
                    !s.starts_with("application-")
                        && s.rsplit_once('-').is_some_and(|(_, e)| !envs.contains(e))
                });
                if needs_profiles {
                    envs.extend(activation_profiles(view).into_iter().flatten());
                }
                (envs, false)
            }
        };
        let mut services = BTreeSet::new();
        let mut add = |stem: &str| {
            let (service, _) = split_stem(&envs, stem);
            if service != "application" && !service.is_empty() {
                services.insert(service.to_string());
            }
        };
        for s in &root_stems {
            add(s);
        }
        for path in view.files.keys() {
            if let Some((dir, file)) = path.split_once('/') {
                if let Some(s) = stem(file) {
                    if s == dir || s.starts_with(&format!("{dir}-")) {
                        add(s);
                    }
                }
            }
        }
        Ok(Catalog {
            envs,
            envs_declared,
            services,
            manifest,
        })
    }

    /// Is `env` acceptable here? Always, unless the manifest declares the envs.
    pub fn env_known(&self, env: &str) -> bool {
        !self.envs_declared || self.envs.contains(env)
    }

    /// Whose config the file at `rel` is: the one reading of its name at this version
    /// (ARCHITECTURE.md, "Who may read what"). `None` for names that are not config files.
    pub fn owner_of(&self, rel: &str) -> Option<Owner> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let (service, env) = split_stem(&self.envs, stem(name)?);
        Some(Owner {
            service: service.to_string(),
            env: env.map(str::to_string),
        })
    }
}

/// The profile names of every `on-profile` expression in the view's config files, one
/// set an expression (files that do not parse are skipped: they fail elsewhere).
pub fn activation_profiles(view: &mut View<'_>) -> Vec<BTreeSet<String>> {
    let paths: Vec<String> = view
        .files
        .keys()
        .filter(|p| p.as_str() != MANIFEST)
        .cloned()
        .collect();
    let mut out = Vec::new();
    for path in paths {
        // Only a file that mentions profiles is parsed for them (each key spells
        // `profile` somewhere: `on-profile`, `spring.profiles`, `profiles:`).
        let mentions = view
            .read(&path)
            .ok()
            .flatten()
            .is_some_and(|b| b.windows(7).any(|w| w == b"profile"));
        if !mentions {
            continue;
        }
        let Some(Ok(file)) = view.parsed(&path) else {
            continue;
        };
        for doc in &file.documents {
            if let Activation::OnProfile { expressions, .. } = &doc.activation {
                for e in expressions {
                    let mut names = BTreeSet::new();
                    profile_names(e, &mut names);
                    out.push(names);
                }
            }
        }
    }
    out
}

fn profile_names(e: &ProfileExpr, out: &mut BTreeSet<String>) {
    match e {
        ProfileExpr::Name(n) => {
            out.insert(n.clone());
        }
        ProfileExpr::Not(e) => profile_names(e, out),
        ProfileExpr::And(all) | ProfileExpr::Or(all) => {
            for e in all {
                profile_names(e, out);
            }
        }
    }
}

/// The one way a file stem is read: split at the last `-` whose suffix is a known
/// environment (`orders-api-prod` → `orders-api`, `prod`), else the whole stem names a
/// service. Listing and scope checks both use it, so a name cannot mean one pair to the
/// catalog and another to a token.
fn split_stem<'s>(envs: &BTreeSet<String>, stem: &'s str) -> (&'s str, Option<&'s str>) {
    match stem.rsplit_once('-') {
        Some((svc, env)) if envs.contains(env) => (svc, Some(env)),
        _ => (stem, None),
    }
}

/// The (service, env) a config file belongs to: `orders-prod.yml` → (`orders`, `prod`),
/// `orders.yml` → (`orders`, none), `application-prod.yml` → (`application`, `prod`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// `application` for the files every service shares.
    pub service: String,
    /// `None` for a service's (or `application`'s) env-independent file.
    pub env: Option<String>,
}

/// The files a (service, envs) pair reads at one version, and what scopes reading
/// them takes.
#[derive(Debug, Clone)]
pub struct PairFiles {
    /// False when the service has no file of its own (only `application*` is read).
    pub service_known: bool,
    /// The files, highest precedence first.
    pub paths: Vec<String>,
    /// Who owns them, for [`crate::auth::Principal::may_read`].
    pub access: Access,
}

/// Which owners' files a read touches: checked against a token's scopes in one place,
/// [`crate::auth::Principal::may_read`], by every surface that serves config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The pair as asked.
    pub service: String,
    /// Its environments as asked.
    pub envs: Vec<String>,
    /// Owners of files read that are not the pair itself (nor the shared
    /// `application*` files), each with the first such file: `orders-prod.yml` read for the asked pair
    /// (`orders-prod`, `staging`) belongs to (`orders`, `prod`). Empty for every pair
    /// whose files are all its own, which is every pair the catalog lists.
    pub foreign: Vec<(Owner, String)>,
}

impl Access {
    /// A read of `service` in `envs` that touches only the pair's own files.
    pub fn own(service: &str, envs: &[String]) -> Access {
        Access {
            service: service.to_string(),
            envs: envs.to_vec(),
            foreign: Vec::new(),
        }
    }
}

/// The files of `service` in `envs` at `view`'s version, and their owners.
pub fn pair_files(view: &View<'_>, catalog: &Catalog, service: &str, envs: &[String]) -> PairFiles {
    let service_known = service_exists(view, catalog, service, envs);
    let paths = layer_paths(view, service_known.then_some(service), envs);
    let mut access = Access::own(service, envs);
    for path in &paths {
        let name = path.rsplit('/').next().unwrap_or(path);
        let shared = stem(name).is_some_and(|s| {
            s == "application"
                || s.strip_prefix("application-")
                    .is_some_and(|e| envs.iter().any(|env| env == e))
        });
        // `application*` files are every service's defaults, read only for the asked envs.
        let Some(owner) = catalog.owner_of(path).filter(|_| !shared) else {
            continue;
        };
        let own = owner.service == service && owner.env.as_ref().is_none_or(|e| envs.contains(e));
        if !own && !access.foreign.iter().any(|(o, _)| *o == owner) {
            access.foreign.push((owner, view.display(path)));
        }
    }
    PairFiles {
        service_known,
        paths,
        access,
    }
}

fn read_manifest(view: &mut View<'_>) -> Result<Manifest, ConfigError> {
    match view.parsed(MANIFEST) {
        None => Ok(Manifest::default()),
        Some(Err(e)) => Err(ConfigError {
            kind: ErrorKind::Manifest,
            ..e
        }),
        Some(Ok(file)) => serde_json::from_value(serde_json::Value::Object(file.values().clone()))
            .map_err(|e| {
                ConfigError::new(ErrorKind::Manifest, format!("invalid manifest: {e}"))
                    .in_file(view.display(MANIFEST))
            }),
    }
}

/// The files of a (service, envs) pair that exist in `view`, highest precedence first.
/// With several envs, the later env's pair sits above the earlier's.
pub fn layer_paths(view: &View<'_>, service: Option<&str>, envs: &[String]) -> Vec<String> {
    let mut bases: Vec<(Option<&str>, String)> = Vec::new();
    for env in envs.iter().rev() {
        if let Some(svc) = service {
            bases.push((Some(svc), format!("{svc}-{env}")));
        }
        bases.push((None, format!("application-{env}")));
    }
    if let Some(svc) = service {
        bases.push((Some(svc), svc.to_string()));
    }
    bases.push((None, "application".to_string()));

    let mut out = Vec::new();
    for (svc, base) in bases {
        for ext in EXTENSIONS {
            // A service's own folder sits above the root within one layer.
            if let Some(svc) = svc {
                let nested = format!("{svc}/{base}.{ext}");
                if view.files.contains_key(&nested) {
                    out.push(nested);
                }
            }
            let flat = format!("{base}.{ext}");
            if view.files.contains_key(&flat) && !out.contains(&flat) {
                out.push(flat);
            }
        }
    }
    out
}

/// Does the service have any file of its own for these envs (or any known env)?
pub fn service_exists(view: &View<'_>, catalog: &Catalog, service: &str, envs: &[String]) -> bool {
    if catalog.services.contains(service) {
        return true;
    }
    let all_envs: Vec<String> = catalog
        .envs
        .iter()
        .cloned()
        .chain(envs.iter().cloned())
        .collect();
    !layer_paths(view, Some(service), &all_envs).iter().all(|p| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name.starts_with("application")
    })
}
