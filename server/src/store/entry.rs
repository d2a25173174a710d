//! A resolved (service, envs) pair at one version, with its responses rendered at most
//! once each: requests hand out the same `Bytes` and do no serialization themselves.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use confhub_client::wire::{ConfigResponse, ServerFrame};

use crate::errors::ConfigError;
use crate::errors::ErrorKind;
use crate::resolve::catalog::{pair_files, Access, Catalog, PairFiles};
use crate::resolve::keys::Entries;
use crate::resolve::{merge_only_for, resolve_for, spring_source, ParsedFile, Resolved};
use crate::source::View;
use crate::store::render;

/// Response bodies a pair can be served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Native JSON (`ConfigResponse`).
    Json,
    /// Native `format=yaml`.
    Yaml,
    /// Native `format=properties`.
    Properties,
    /// Native `format=env`.
    Env,
    /// Spring `Environment`.
    SpringEnv,
    /// Spring `Environment`, v2 form (`{value, origin}`).
    SpringEnvV2,
    /// Spring `/{name}-{profiles}.yml`.
    SpringYaml(Placeholders),
    /// Spring `/{name}-{profiles}.properties`.
    SpringProperties(Placeholders),
    /// Spring `/{name}-{profiles}.json`.
    SpringJson(Placeholders),
    /// WebSocket `config` frame.
    Frame,
}

/// Whether a Spring file form has its `${…}` placeholders resolved (the default) or
/// as written (`?resolvePlaceholders=false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// Resolved against the merged config.
    Resolved,
    /// As the files wrote them.
    AsWritten,
}

impl Placeholders {
    fn index(self) -> usize {
        match self {
            Placeholders::AsWritten => 0,
            Placeholders::Resolved => 1,
        }
    }

    /// `Resolved` when `resolve`.
    pub(crate) fn resolved_if(resolve: bool) -> Placeholders {
        if resolve {
            Placeholders::Resolved
        } else {
            Placeholders::AsWritten
        }
    }
}

const BODIES: usize = 13;

impl Body {
    /// Where this body is kept in [`PairEntry`]'s table of rendered bodies.
    fn index(self) -> usize {
        match self {
            Body::Json => 0,
            Body::Yaml => 1,
            Body::Properties => 2,
            Body::Env => 3,
            Body::SpringEnv => 4,
            Body::SpringEnvV2 => 5,
            Body::SpringYaml(p) => 6 + p.index(),
            Body::SpringProperties(p) => 8 + p.index(),
            Body::SpringJson(p) => 10 + p.index(),
            Body::Frame => 12,
        }
    }
}

/// A resolved pair, ready to serve.
#[derive(Debug)]
pub struct PairEntry {
    /// Service name as asked.
    pub(crate) service: String,
    /// Environments, in request order.
    pub(crate) envs: Vec<String>,
    /// The label this entry answers to (echoed in responses).
    pub(crate) label: String,
    /// Commit sha or content hash; shared by every frame and instance record that
    /// names it.
    pub(crate) version: Arc<str>,
    /// False when the service has no file of its own (Spring then serves `application*` only; the native API says 404).
    pub(crate) service_known: bool,
    /// Whose files it read: what a token needs to be shown it.
    pub(crate) access: Access,
    /// The resolution.
    pub(crate) resolved: Arc<Resolved>,
    /// `"digest"`, ready for the `ETag` header.
    pub(crate) etag: axum::http::HeaderValue,
    /// Set when placeholders could not be resolved: only the forms that show them as
    /// written (Spring's Environment, `resolvePlaceholders=false`) may be served.
    pub(crate) placeholder_error: Option<ConfigError>,
    /// Set when a `{cipher}` value of a layer could not be decrypted: Spring's forms
    /// serve the rest (the key as `invalid.<key>: <n/a>`); the native API refuses.
    pub(crate) cipher_error: Option<ConfigError>,
    /// The rollout this entry is the candidate of (named in the native body and frame).
    pub(crate) rollout: Option<Arc<str>>,
    uri: Arc<str>,
    bodies: [OnceLock<Bytes>; BODIES],
}

impl PairEntry {
    /// Resolve `service` for `envs` in `view`.
    pub(crate) fn build(
        view: &mut View<'_>,
        catalog: &Catalog,
        uri: &Arc<str>,
        label: &str,
        service: &str,
        envs: &[String],
    ) -> Result<PairEntry, ConfigError> {
        Self::build_reusing(view, catalog, uri, label, service, envs, None)
    }

    /// [`PairEntry::build`], reusing `previous`'s resolution when it was made from the
    /// very same parsed files (and no schema could judge it differently): a commit that
    /// touches one file re-resolves only the pairs that read it.
    pub(crate) fn build_reusing(
        view: &mut View<'_>,
        catalog: &Catalog,
        uri: &Arc<str>,
        label: &str,
        service: &str,
        envs: &[String],
        previous: Option<&PairEntry>,
    ) -> Result<PairEntry, ConfigError> {
        // Every resolution comes through here. Repository content is bounded everywhere
        // we know of; should a bug still panic on some content, that fails this pair
        // alone instead of the snapshot (and, at start, the server).
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::build_unguarded(view, catalog, uri, label, service, envs, previous)
        }));
        built.unwrap_or_else(|_| {
            tracing::error!(%service, envs = %envs.join(","), "resolving a pair panicked; it is reported as failing");
            Err(ConfigError::new(
                ErrorKind::Parse,
                format!("resolving `{service}/{}` failed unexpectedly (a confhub bug: please report it); other pairs are unaffected", envs.join(",")),
            ))
        })
    }

    /// [`PairEntry::build_reusing`] without the guard against panics.
    fn build_unguarded(
        view: &mut View<'_>,
        catalog: &Catalog,
        uri: &Arc<str>,
        label: &str,
        service: &str,
        envs: &[String],
        previous: Option<&PairEntry>,
    ) -> Result<PairEntry, ConfigError> {
        let PairFiles {
            service_known,
            paths,
            access,
        } = pair_files(view, catalog, service, envs);
        let layers = read_layers(view, paths)?;
        let cipher_error = layers.iter().find_map(|l| l.cipher_errors.first().cloned());
        let reusable = previous.filter(|p| {
            !has_schema(catalog, service) && p.service_known == service_known && p.reads(&layers)
        });
        let (resolved, placeholder_error) = match reusable {
            Some(p) => (p.resolved.clone(), p.placeholder_error.clone()),
            None => {
                let checked = service_known && cipher_error.is_none();
                resolve_layers(view, catalog, service, envs, layers, checked)?
            }
        };
        let etag = etag_of(&resolved.digest);
        Ok(PairEntry {
            etag,
            service: service.to_string(),
            envs: envs.to_vec(),
            label: label.to_string(),
            version: view.version.as_str().into(),
            service_known,
            access,
            resolved,
            placeholder_error,
            cipher_error,
            rollout: None,
            uri: uri.clone(),
            bodies: Default::default(),
        })
    }

    /// This entry as the candidate of `rollout`: the same resolution, with bodies of its
    /// own that name the rollout.
    pub(crate) fn in_rollout(&self, rollout: &Arc<str>) -> PairEntry {
        PairEntry {
            service: self.service.clone(),
            envs: self.envs.clone(),
            label: self.label.clone(),
            version: self.version.clone(),
            service_known: self.service_known,
            access: self.access.clone(),
            resolved: self.resolved.clone(),
            etag: self.etag.clone(),
            placeholder_error: self.placeholder_error.clone(),
            cipher_error: self.cipher_error.clone(),
            rollout: Some(rollout.clone()),
            uri: self.uri.clone(),
            bodies: Default::default(),
        }
    }

    /// Whether this entry was resolved from exactly `layers` (the very same parsed
    /// files, not equal copies).
    fn reads(&self, layers: &[Arc<ParsedFile>]) -> bool {
        self.resolved.inputs.len() == layers.len()
            && self
                .resolved
                .inputs
                .iter()
                .zip(layers)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// The digest of the resolved values.
    pub(crate) fn digest(&self) -> &str {
        &self.resolved.digest
    }

    /// `prod` or `prod,eu`.
    pub(crate) fn env_string(&self) -> String {
        self.envs.join(",")
    }

    /// The response body in the given form, rendered on first use.
    pub fn body(&self, body: Body) -> Bytes {
        self.bodies[body.index()]
            .get_or_init(|| self.render(body))
            .clone()
    }

    fn render(&self, body: Body) -> Bytes {
        let r = &self.resolved;
        let spring = |placeholders: Placeholders| match placeholders {
            Placeholders::Resolved => &r.spring_values,
            Placeholders::AsWritten => &r.spring_merged,
        };
        let text = match body {
            Body::Json => json(&ConfigResponse {
                service: self.service.clone(),
                env: self.env_string(),
                label: self.label.clone(),
                version: self.version.to_string(),
                digest: r.digest.to_string(),
                values: r.values.clone(),
                sources: r.layers.iter().map(|l| l.path.clone()).collect(),
                rollout: self.rollout.as_deref().map(str::to_string),
            }),
            Body::Frame => json(&ServerFrame::Config {
                service: self.service.clone(),
                env: self.env_string(),
                version: self.version.to_string(),
                digest: r.digest.to_string(),
                values: r.values.clone(),
                rollout: self.rollout.as_deref().map(str::to_string),
            }),
            Body::Yaml => render::yaml(&r.values),
            Body::Properties => render::properties(&r.values, "="),
            Body::Env => render::dotenv(&r.values),
            Body::SpringEnv => json(&self.spring_environment(false)),
            Body::SpringEnvV2 => json(&self.spring_environment(true)),
            Body::SpringYaml(p) => render::spring_yaml(spring(p)),
            Body::SpringProperties(p) => render::spring_properties(spring(p)),
            Body::SpringJson(p) => render::spring_json(spring(p)),
        };
        Bytes::from(text)
    }

    /// Spring's `Environment`: one property source a document that applies, highest
    /// first, its keys flat and in file order (so serialized here, not through a JSON
    /// map, which would sort them).
    fn spring_environment(&self, v2: bool) -> SpringEnvironmentOut<'_> {
        let property_sources = self
            .resolved
            .sources
            .iter()
            .map(|(file, doc)| {
                let mut source = spring_source(&file.documents[*doc]);
                if v2 {
                    for (key, value) in &mut source {
                        let origin = match file.line_in(*doc, key) {
                            Some(line) => format!("{}:{line}", file.path),
                            None => file.path.clone(),
                        };
                        *value = serde_json::json!({"value": value, "origin": origin});
                    }
                }
                SpringSourceOut {
                    name: format!("{}/{}", self.uri, file.source_name(*doc)),
                    source: Ordered(source),
                }
            })
            .collect();
        SpringEnvironmentOut {
            name: &self.service,
            profiles: &self.envs,
            label: Some(&self.label),
            version: Some(&self.version),
            state: Some(""),
            property_sources,
        }
    }
}

/// [`confhub_client::wire::SpringEnvironment`], serialized with keys in order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SpringEnvironmentOut<'a> {
    name: &'a str,
    profiles: &'a [String],
    label: Option<&'a str>,
    version: Option<&'a str>,
    state: Option<&'a str>,
    property_sources: Vec<SpringSourceOut>,
}

#[derive(serde::Serialize)]
struct SpringSourceOut {
    name: String,
    source: Ordered,
}

/// Flat entries serialized as a JSON object in their order.
struct Ordered(Entries);

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The parsed files at `paths` that exist, in order; the first that fails to parse
/// fails the pair.
fn read_layers(
    view: &mut View<'_>,
    paths: Vec<String>,
) -> Result<Vec<Arc<ParsedFile>>, ConfigError> {
    let mut layers = Vec::with_capacity(paths.len());
    for path in paths {
        if let Some(parsed) = view.parsed(&path) {
            layers.push(parsed?);
        }
    }
    Ok(layers)
}

/// Whether `service` declares a schema: a schema may judge the same files differently,
/// so its resolutions are never reused.
fn has_schema(catalog: &Catalog, service: &str) -> bool {
    catalog
        .manifest
        .services
        .get(service)
        .is_some_and(|s| s.schema.is_some())
}

/// Resolve `layers` for `envs`; unresolvable placeholders leave the merged values and
/// the error. A resolution with none is checked against the service's schema when
/// `checked` (a known service whose values all decrypted).
fn resolve_layers(
    view: &mut View<'_>,
    catalog: &Catalog,
    service: &str,
    envs: &[String],
    layers: Vec<Arc<ParsedFile>>,
    checked: bool,
) -> Result<(Arc<Resolved>, Option<ConfigError>), ConfigError> {
    // The requested envs are the active profiles: they pick the documents
    // (`spring.config.activate.on-profile`) that apply.
    let (resolved, placeholder_error) = match resolve_for(layers.clone(), envs) {
        Ok(r) => (r, None),
        Err(e) if e.kind == ErrorKind::Placeholder => (merge_only_for(layers, envs), Some(e)),
        Err(e) => return Err(e),
    };
    if checked && placeholder_error.is_none() {
        crate::resolve::schema::validate(view, catalog, service, &resolved)?;
    }
    Ok((Arc::new(resolved), placeholder_error))
}

fn etag_of(digest: &str) -> axum::http::HeaderValue {
    // A hex digest in quotes is always a valid header value.
    axum::http::HeaderValue::from_str(&format!("\"{digest}\""))
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("\"\""))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Our wire types and JSON values always serialize.
    serde_json::to_string(v).unwrap_or_default()
}
