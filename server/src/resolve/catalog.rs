//! What a repository holds at one version: its environments and services, and which
//! files make up a (service, envs) pair, in precedence order (ARCHITECTURE.md §2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::parse::{Activation, ProfileExpr, EXTENSIONS};
use crate::source::{SearchPath, View};

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
    /// Rollouts, as written: each is read on its own ([`super::rollout::parse_rollouts`]),
    /// so a mistake in one breaks that rollout, not the manifest.
    #[serde(default)]
    pub rollouts: Option<serde_json::Value>,
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
    /// The folders searched: a file in an `{application}` or `{profile}` folder is
    /// that application's or profile's.
    pub search: Arc<SearchPath>,
}

fn stem(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    EXTENSIONS.contains(&ext).then_some(stem)
}

/// The environments a repository without declared ones has: every `application-{env}`
/// file; under Spring's search paths also those in folders, and `{profile}` folders.
fn found_envs(view: &mut View<'_>, root_stems: &[String]) -> BTreeSet<String> {
    let spring = matches!(*view.search, SearchPath::Spring(_));
    // Under Spring's search paths, `orders/application-prod.yml` names `prod` too, and so
    // does a `{profile}` folder.
    let in_folders = view
        .files
        .keys()
        .filter(|p| spring && p.contains('/'))
        .filter_map(|p| stem(p.rsplit('/').next().unwrap_or(p)));
    let folder_profiles = view
        .files
        .keys()
        .filter(|_| spring)
        .filter_map(|p| p.rsplit_once('/'))
        .filter_map(|(dir, _)| view.search.captures(dir)?.profile);
    let mut envs: BTreeSet<String> = root_stems
        .iter()
        .map(String::as_str)
        .chain(in_folders)
        .filter_map(|s| s.strip_prefix("application-"))
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .chain(folder_profiles)
        .collect();
    // A Spring repository often has no `application-prod.yml`, only documents activated
    // `on-profile: prod`: those profiles are envs too. Looked for only when a file name
    // needs them (`orders-prod.properties` with no `application-prod`): every lookup
    // builds a catalog, and most repositories need not have their files read for it.
    let needs_profiles = root_stems.iter().any(|s| {
        !s.starts_with("application-") && s.rsplit_once('-').is_some_and(|(_, e)| !envs.contains(e))
    });
    if needs_profiles {
        envs.extend(activation_profiles(view).into_iter().flatten());
    }
    envs
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
        let (envs, envs_declared) = match &manifest.environments {
            Some(envs) => (envs.iter().cloned().collect(), true),
            None => (found_envs(view, &root_stems), false),
        };
        let mut catalog = Catalog {
            envs,
            envs_declared,
            services: BTreeSet::new(),
            manifest,
            search: view.search.clone(),
        };
        let in_root = root_stems.iter().map(|s| catalog.service_of_stem(s));
        let in_folders: Vec<Option<String>> = view
            .files
            .keys()
            .filter(|p| p.contains('/'))
            .map(|path| catalog.service_in_folder(path))
            .collect();
        catalog.services = in_root
            .chain(in_folders)
            .flatten()
            .filter(|service| service != "application" && !service.is_empty())
            .collect();
        Ok(catalog)
    }

    /// The service a root file's stem names (`orders-prod` → `orders`).
    fn service_of_stem(&self, stem: &str) -> Option<String> {
        Some(split_stem(&self.envs, stem).0.to_string())
    }

    /// The service a file in a folder belongs to. Under Spring's search paths, whatever
    /// `{application}` folder it is in; otherwise a `dir/dir[-env].yml` file names `dir`.
    fn service_in_folder(&self, path: &str) -> Option<String> {
        if matches!(*self.search, SearchPath::Spring(_)) {
            return self.owner_of(path).map(|owner| owner.service);
        }
        let (dir, file) = path.split_once('/')?;
        let s = stem(file)?;
        (s == dir || s.starts_with(&format!("{dir}-")))
            .then(|| split_stem(&self.envs, s).0.to_string())
    }

    /// Is `env` acceptable here? Always, unless the manifest declares the envs.
    pub fn env_known(&self, env: &str) -> bool {
        !self.envs_declared || self.envs.contains(env)
    }

    /// Whose config the file at `rel` is: the one reading of its name at this version
    /// (ARCHITECTURE.md, "Who may read what"). `None` for names that are not config files.
    pub fn owner_of(&self, rel: &str) -> Option<Owner> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let stem = stem(name)?;
        let (service, env) = split_stem(&self.envs, stem);
        let mut owner = Owner {
            service: service.to_string(),
            env: env.map(str::to_string),
        };
        // Under Spring's search paths the folder says whose a file is too:
        // `orders/application.yml` in `{application}` is `orders`'s, not every app's.
        if let Some(caps) = self.search.captures(dir).filter(|_| !dir.is_empty()) {
            if stem == "application" || stem.starts_with("application-") {
                owner.service = "application".into();
                owner.env = stem
                    .strip_prefix("application-")
                    .map(str::to_string)
                    .or(owner.env);
            }
            if let (true, Some(app)) = (owner.service == "application", caps.application) {
                owner.service = app;
            }
            if owner.env.is_none() {
                owner.env = caps.profile;
            }
        }
        Some(owner)
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
///
/// `service` may name several applications (`orders,common`, Spring's form): their files
/// are read together, later names winning, and the first is the pair asked; the others'
/// files count as read from other owners, so a token needs their scopes too.
pub fn pair_files(view: &View<'_>, catalog: &Catalog, service: &str, envs: &[String]) -> PairFiles {
    let names: Vec<&str> = service.split(',').collect();
    let known: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| service_exists(view, catalog, n, envs))
        .collect();
    let service_known = !known.is_empty();
    let first = names.first().copied().unwrap_or(service);
    let paths = layer_paths(view, &known, envs);
    let mut access = Access::own(first, envs);
    for path in &paths {
        let name = path.rsplit('/').next().unwrap_or(path);
        let shared = stem(name).is_some_and(|s| {
            s == "application"
                || s.strip_prefix("application-")
                    .is_some_and(|e| envs.iter().any(|env| env == e))
        }) && catalog
            .owner_of(path)
            .is_some_and(|o| o.service == "application");
        // `application*` files are every service's defaults, read only for the asked envs.
        let Some(owner) = catalog.owner_of(path).filter(|_| !shared) else {
            continue;
        };
        let own = owner.service == first && owner.env.as_ref().is_none_or(|e| envs.contains(e));
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

/// The files of `services` (none: only `application*`) in `envs` that exist in `view`,
/// highest precedence first, as Spring Boot orders them for `spring.config.name=
/// application,<services>`: every profile file above every plain one, the later env above
/// the earlier, the later name above the earlier, `application` lowest.
pub fn layer_paths(view: &View<'_>, services: &[&str], envs: &[String]) -> Vec<String> {
    if let SearchPath::Spring(_) = &*view.search {
        return spring_layer_paths(view, services, envs);
    }
    let mut bases: Vec<(Option<&str>, String)> = Vec::new();
    for env in envs.iter().rev() {
        for svc in services.iter().rev() {
            bases.push((Some(svc), format!("{svc}-{env}")));
        }
        bases.push((None, format!("application-{env}")));
    }
    for svc in services.iter().rev() {
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

/// Spring's search path order (`NativeEnvironmentRepository` loads the folders as one
/// location group, `AbstractScmAccessor.getSearchLocations` orders them): profile
/// files first, the later env first; within that the later folder first (the root
/// last), and within a folder the later name first, `application` last.
fn spring_layer_paths(view: &View<'_>, services: &[&str], envs: &[String]) -> Vec<String> {
    let locations = view.search.locations(services, envs);
    let mut names: Vec<&str> = services.iter().rev().copied().collect();
    names.push("application");
    let mut bases: Vec<String> = Vec::new();
    let folder = |loc: &str, base: String| {
        if loc.is_empty() {
            base
        } else {
            format!("{loc}/{base}")
        }
    };
    for env in envs.iter().rev() {
        for loc in locations.iter().rev() {
            for name in &names {
                bases.push(folder(loc, format!("{name}-{env}")));
            }
        }
    }
    for loc in locations.iter().rev() {
        for name in &names {
            bases.push(folder(loc, name.to_string()));
        }
    }
    let mut out = Vec::new();
    for base in bases {
        for ext in EXTENSIONS {
            let path = format!("{base}.{ext}");
            if view.files.contains_key(&path) && !out.contains(&path) {
                out.push(path);
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
    layer_paths(view, &[service], &all_envs).iter().any(|p| {
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        !name.starts_with("application")
            || catalog
                .search
                .captures(dir)
                .and_then(|c| c.application)
                .is_some_and(|a| a == service)
    })
}
