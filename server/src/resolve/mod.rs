//! Resolution (ARCHITECTURE.md §2): layered files merged in Spring's precedence order, then
//! `${…}` placeholders resolved against the result. Pure functions over parsed files:
//! no git and no I/O, so the same code serves snapshots, labels and `confhub check`.

pub mod catalog;
pub(crate) mod explain;
pub mod keys;
pub mod parse;
pub mod rollout;
pub mod schema;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::keys::{is_under, nest, spring_combine, Entries, Merge};
use crate::resolve::parse::{
    is_activation_key, locate_properties_key, locate_properties_key_last, locate_yaml_key,
    merge_all, parse_documents, Document, Format, ParsedDocuments,
};

/// One parsed config file.
pub struct ParsedFile {
    /// Repository-relative path, as shown to users.
    pub path: String,
    /// Every document merged top to bottom, nested, whatever its activation: the file
    /// read as data (the manifest, a JSON Schema), built on first use ([`ParsedFile::values`]).
    /// Resolution reads `documents`.
    values: std::sync::OnceLock<Map<String, Value>>,
    /// The original text, kept to point errors at a line.
    pub text: Arc<str>,
    /// Flat keys (`db.password`, `keys[0]`) whose values were `{cipher}` values,
    /// decrypted: what is secret is known by key, so nothing has to search text for a
    /// plaintext to hide it.
    pub secret_keys: BTreeSet<String>,
    /// The file's documents (one unless it has `---` / `#---` separators), flat.
    pub documents: Vec<Document>,
    /// What `check` warns about (deprecated keys, keys set twice).
    pub warnings: Vec<ConfigError>,
    /// `{cipher}` values that could not be decrypted, each naming file, line and key:
    /// their keys are served as `invalid.<key>: <n/a>` by Spring's forms, and reported
    /// as errors by the native API and `check`.
    pub cipher_errors: Vec<ConfigError>,
}

impl std::fmt::Debug for ParsedFile {
    // Values and secrets left out: decrypted plaintext must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedFile")
            .field("path", &self.path)
            .field("documents", &self.documents.len())
            .finish_non_exhaustive()
    }
}

impl ParsedFile {
    /// A file from its parsed documents (values not decrypted).
    pub fn new(path: &str, text: Arc<str>, parsed: ParsedDocuments) -> ParsedFile {
        ParsedFile {
            path: path.to_string(),
            values: std::sync::OnceLock::new(),
            text,
            secret_keys: BTreeSet::new(),
            documents: parsed.documents,
            warnings: parsed.warnings,
            cipher_errors: Vec::new(),
        }
    }

    /// Parse `text` as the file `path` (no decryption): for tests and benchmarks.
    pub fn from_text(path: &str, text: &str) -> Result<ParsedFile, ConfigError> {
        let parsed = parse_documents(path, text.as_bytes())?;
        Ok(ParsedFile::new(path, text.into(), parsed))
    }

    /// Forget the nested view after the documents' entries changed (decryption).
    pub fn refresh_values(&mut self) {
        self.values = std::sync::OnceLock::new();
    }

    /// The whole file as nested data: every document merged top to bottom, whatever
    /// its activation (for files read as data: the manifest, JSON Schemas).
    pub fn values(&self) -> &Map<String, Value> {
        self.values.get_or_init(|| merge_all(&self.documents))
    }

    /// Line of a flat key in this file (its last setting, in any document), when it
    /// can be found.
    pub fn line_of(&self, key: &str) -> Option<u64> {
        (0..self.documents.len())
            .rev()
            .find_map(|i| self.line_in(i, key))
            .or_else(|| match Format::of(&self.path)? {
                Format::Yaml => locate_yaml_key(&self.text, key),
                Format::Properties => locate_properties_key(&self.text, key),
                Format::Json => None,
            })
    }

    /// Line of a flat key in document `doc`.
    pub fn line_in(&self, doc: usize, key: &str) -> Option<u64> {
        let d = self.documents.get(doc)?;
        let (first, last) = d.lines;
        let section: String = self
            .text
            .lines()
            .skip(first.saturating_sub(1) as usize)
            .take((last + 1).saturating_sub(first) as usize)
            .collect::<Vec<_>>()
            .join("\n");
        let found = match Format::of(&self.path)? {
            Format::Yaml => locate_yaml_key(&section, key),
            Format::Properties => locate_properties_key_last(&section, key),
            Format::Json => None,
        }?;
        Some(found + first - 1)
    }

    /// The name Spring gives document `doc`'s property source: the path, with
    /// ` (document #N)` when the file has several documents.
    pub fn source_name(&self, doc: usize) -> String {
        match self.documents.get(doc) {
            Some(d) if self.documents.len() > 1 => format!("{} (document #{})", self.path, d.index),
            _ => self.path.clone(),
        }
    }
}

/// A resolved (service, envs) config.
#[derive(Debug)]
pub struct Resolved {
    /// Files that contributed (at least one document applied), highest precedence first.
    pub layers: Vec<Arc<ParsedFile>>,
    /// Every file the pair read, applied or not, highest first: what a later
    /// resolution compares with to reuse this one.
    pub inputs: Vec<Arc<ParsedFile>>,
    /// The documents that applied, highest precedence first (a file's later documents
    /// above its earlier ones): Spring's property sources, as (file, document number in
    /// `documents`).
    pub sources: Vec<(Arc<ParsedFile>, usize)>,
    /// Merged values with placeholders as written.
    pub merged: Value,
    /// Merged values with placeholders resolved.
    pub values: Value,
    /// Spring's file forms (`.yml`, `.properties`, `.json`), flat and in Spring's order,
    /// placeholders as written.
    pub spring_merged: Entries,
    /// The same with placeholders resolved. When some cannot be, these are resolved
    /// as Spring's file forms do (`EnvironmentPropertySource.resolvePlaceholders`): an
    /// unresolvable placeholder is left as written.
    pub spring_values: Entries,
    /// Why even that lenient resolution failed (a cycle, a limit): Spring answers 400.
    pub spring_error: Option<ConfigError>,
    /// sha256 (hex) of the canonical JSON of `values`; shared by every frame and
    /// instance record that names it.
    pub digest: Arc<str>,
    /// Length of that canonical JSON: what a cache weighs this resolution by.
    pub size: usize,
    /// Flat keys whose resolved value is, or was built from, a decrypted secret: set
    /// in a file as `{cipher}`, or a placeholder that reads one (`url: ${db.password}@…`).
    pub secret_keys: HashSet<String>,
    /// Where each value comes from, built on first use (the console): shared by every
    /// version that reuses this resolution.
    pub(crate) explained: std::sync::OnceLock<Vec<explain::Explained>>,
}

impl Resolved {
    /// Every leaf with the file and line that set it and what it overrode.
    pub(crate) fn explained(&self) -> &[explain::Explained] {
        self.explained.get_or_init(|| explain::explain(self))
    }
}

/// The documents of `layers` (highest first) that apply when `profiles` are requested,
/// highest first.
pub fn select(layers: &[Arc<ParsedFile>], profiles: &[String]) -> Vec<(Arc<ParsedFile>, usize)> {
    let mut out = Vec::new();
    for file in layers {
        for (i, doc) in file.documents.iter().enumerate().rev() {
            if doc.activation.applies(profiles) {
                out.push((file.clone(), i));
            }
        }
    }
    out
}

/// A document's entries as served: without the keys that only said when it applies.
fn served_entries(doc: &Document) -> impl Iterator<Item = &(String, Value)> {
    doc.entries.iter().filter(|(k, _)| !is_activation_key(k))
}

/// How Spring's YAML loader turns a leaf into a property value: `null` and `[]` become
/// `""` (so an empty list clears a lower one for Spring clients); `{}` vanishes.
pub fn spring_leaf(v: &Value) -> Option<Value> {
    match v {
        Value::Null => Some(Value::String(String::new())),
        Value::Array(a) if a.is_empty() => Some(Value::String(String::new())),
        Value::Object(m) if m.is_empty() => None,
        other => Some(other.clone()),
    }
}

/// A document's Spring property source: its flat keys as Spring's loaders give them.
pub fn spring_source(doc: &Document) -> Entries {
    doc.entries
        .iter()
        .filter_map(|(k, v)| spring_leaf(v).map(|v| (k.clone(), v)))
        .collect()
}

struct Merged {
    layers: Vec<Arc<ParsedFile>>,
    sources: Vec<(Arc<ParsedFile>, usize)>,
    native: Entries,
    spring: Entries,
}

fn merge_sources(layers: &[Arc<ParsedFile>], profiles: &[String]) -> Merged {
    let sources = select(layers, profiles);
    let mut used: Vec<Arc<ParsedFile>> = Vec::new();
    for (file, _) in &sources {
        if !used.iter().any(|u| Arc::ptr_eq(u, file)) {
            used.push(file.clone());
        }
    }
    let mut merge = Merge::default();
    let mut spring: Vec<Entries> = Vec::with_capacity(sources.len());
    let mut only: Option<Entries> = None;
    for (file, i) in sources.iter().rev() {
        let doc = &file.documents[*i];
        let entries: Entries = served_entries(doc).cloned().collect();
        spring.push(
            entries
                .iter()
                .filter_map(|(k, v)| spring_leaf(v).map(|v| (k.clone(), v)))
                .collect(),
        );
        if sources.len() == 1 {
            // One document merges with nothing: its keys are already distinct.
            only = Some(entries);
        } else {
            merge.apply(&entries);
        }
    }
    Merged {
        layers: used,
        spring: spring_combine(spring.iter().map(Vec::as_slice)),
        native: only.unwrap_or_else(|| merge.into_entries()),
        sources,
    }
}

/// Merge `layers` without resolving placeholders (`values` = `merged`), for Spring's
/// Environment form when placeholders cannot be resolved here. Only documents without
/// a profile activation apply; see [`merge_only_for`].
pub fn merge_only(layers: Vec<Arc<ParsedFile>>) -> Resolved {
    merge_only_for(layers, &[])
}

/// [`merge_only`] for the requested `profiles`.
pub fn merge_only_for(layers: Vec<Arc<ParsedFile>>, profiles: &[String]) -> Resolved {
    let m = merge_sources(&layers, profiles);
    let merged = Value::Object(nest(&m.native));
    let (digest, size) = digest_and_size(&merged);
    // Done here, once per commit, so the file forms serve pre-rendered bodies.
    let mut secret_keys = file_secrets(&m.layers);
    let (spring_values, spring_error) =
        match resolve_lenient(&m.spring, &m.layers, &mut secret_keys) {
            Ok(values) => (values, None),
            Err(e) => (m.spring.clone(), Some(e)),
        };
    Resolved {
        secret_keys,
        explained: std::sync::OnceLock::new(),
        spring_error,
        layers: m.layers,
        inputs: layers,
        sources: m.sources,
        values: merged.clone(),
        digest: digest.into(),
        size,
        merged,
        spring_values,
        spring_merged: m.spring,
    }
}

/// Keys any layer set from a `{cipher}` value. A higher layer's plain value for the same
/// key counts as secret too: hiding a value too many is the safe mistake.
fn file_secrets(layers: &[Arc<ParsedFile>]) -> HashSet<String> {
    layers
        .iter()
        .flat_map(|l| l.secret_keys.iter().cloned())
        .collect()
}

fn has_placeholder(entries: &[(String, Value)]) -> bool {
    entries
        .iter()
        .any(|(_, v)| v.as_str().is_some_and(|s| s.contains("${")))
}

impl Resolved {
    /// Is the value at flat key `key` (`""` for the whole config) a secret, or a map or
    /// list holding one? Whatever would show it (an error quoting it, a diff) must not.
    pub fn holds_secret(&self, key: &str) -> bool {
        if key.is_empty() {
            return !self.secret_keys.is_empty();
        }
        self.secret_keys.iter().any(|s| {
            s == key
                || s.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }
}

/// Merge `layers` (highest precedence first) and resolve placeholders. Only documents
/// without a profile activation apply; see [`resolve_for`].
pub fn resolve(layers: Vec<Arc<ParsedFile>>) -> Result<Resolved, ConfigError> {
    resolve_for(layers, &[])
}

/// Merge the documents of `layers` (highest precedence first) that apply when
/// `profiles` are requested, and resolve placeholders.
pub fn resolve_for(
    layers: Vec<Arc<ParsedFile>>,
    profiles: &[String],
) -> Result<Resolved, ConfigError> {
    let m = merge_sources(&layers, profiles);
    let mut secret_keys = file_secrets(&m.layers);
    // Most configs have no placeholder: skip building the resolver's index.
    let native_values = if has_placeholder(&m.native) {
        resolve_placeholders(&m.native, &m.layers, &mut secret_keys)?
    } else {
        m.native.clone()
    };
    // Spring's file forms hold the same raw values under the same keys (bar `""` for
    // nulls and emptied lists): take their resolution from the native one rather than
    // resolving twice. A value only Spring's merge has stays as written, as Spring
    // leaves what it cannot resolve.
    let spring_values = if has_placeholder(&m.spring) {
        let raw: HashMap<&str, &Value> = m.native.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let done: HashMap<&str, &Value> =
            native_values.iter().map(|(k, v)| (k.as_str(), v)).collect();
        m.spring
            .iter()
            .map(|(k, v)| {
                let resolved = match v {
                    Value::String(s) if s.contains("${") && raw.get(k.as_str()) == Some(&v) => {
                        done.get(k.as_str()).map(|r| (*r).clone())
                    }
                    _ => None,
                };
                (k.clone(), resolved.unwrap_or_else(|| v.clone()))
            })
            .collect()
    } else {
        m.spring.clone()
    };
    let merged = Value::Object(nest(&m.native));
    let values = if native_values == m.native {
        merged.clone()
    } else {
        Value::Object(nest(&native_values))
    };
    let (digest, size) = digest_and_size(&values);
    Ok(Resolved {
        digest: digest.into(),
        size,
        secret_keys,
        explained: std::sync::OnceLock::new(),
        layers: m.layers,
        inputs: layers,
        sources: m.sources,
        merged,
        values,
        spring_merged: m.spring,
        spring_values,
        spring_error: None,
    })
}

/// sha256 of the canonical JSON (sorted keys, no whitespace) of `v`, in hex.
pub fn digest_of(v: &Value) -> String {
    digest_and_size(v).0
}

/// [`digest_of`], and the length of the canonical JSON it hashed.
fn digest_and_size(v: &Value) -> (String, usize) {
    let mut buf = Vec::with_capacity(256);
    write_canonical(v, &mut buf);
    (hex::encode(Sha256::digest(&buf)), buf.len())
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            // Sorted explicitly: serde_json's map order depends on a cargo feature
            // any crate in the build may turn on.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Flatten to Spring-style keys: `a.b.c`, `a.b[0]`. Empty maps and lists vanish, as in Spring.
pub fn flatten(v: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    walk(&keys::join(prefix, k), child, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(&keys::index(prefix, i), child, out);
                }
            }
            leaf => out.push((prefix.to_string(), leaf)),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// The highest-precedence file that sets `key` (a flat key, or a prefix of one), for
/// provenance.
pub fn origin_of<'a>(layers: &'a [Arc<ParsedFile>], key: &str) -> Option<&'a ParsedFile> {
    layers.iter().map(|l| l.as_ref()).find(|l| {
        l.documents
            .iter()
            .any(|d| d.entries.iter().any(|(k, _)| is_under(k, key)))
    })
}

struct Resolver<'a> {
    /// Secret keys: seeded with the files' `{cipher}` keys, grown by every key whose
    /// expansion reads one.
    secret: &'a mut HashSet<String>,
    flat: HashMap<String, &'a Value>,
    layers: &'a [Arc<ParsedFile>],
    done: HashMap<String, Value>,
    stack: Vec<String>,
    /// Nesting of placeholder expansions (chains and defaults inside defaults).
    depth: usize,
    /// Keys that name a map or a list, built on first need.
    containers: Option<HashSet<String>>,
    /// Bytes of values placeholders produced so far, against [`MAX_EXPANSION_BYTES`].
    produced: usize,
    /// Leave unresolvable placeholders as written (Spring's file forms) instead of
    /// failing.
    lenient: bool,
}

/// Largest value a placeholder expansion may produce. Placeholders only ever copy
/// text the repository holds, so a legitimate value is small; a file whose keys each
/// reference the next several times would otherwise grow exponentially.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Largest total a pair's placeholder expansions may produce: with
/// [`MAX_VALUE_BYTES`], this bounds the memory one resolution can take.
pub const MAX_EXPANSION_BYTES: usize = 16 << 20;

/// Placeholders may chain (`a: ${b}`, `b: ${c}`, …) or nest defaults this deep; more is
/// refused rather than risking the stack of the thread resolving it.
pub const MAX_PLACEHOLDER_DEPTH: usize = 64;

fn resolve_placeholders(
    entries: &[(String, Value)],
    layers: &[Arc<ParsedFile>],
    secret_keys: &mut HashSet<String>,
) -> Result<Entries, ConfigError> {
    resolve_with(entries, layers, secret_keys, false)
}

/// Resolve as Spring's file forms do: Spring's `PropertyPlaceholderHelper` is built with
/// `ignoreUnresolvablePlaceholders = true` (`EnvironmentPropertySource`), so a
/// placeholder naming no key (or a map), without a default, is left as written, and so
/// is an unterminated one. A cycle is still an error (Spring's helper throws
/// `PlaceholderResolutionException`, an `IllegalArgumentException`: 400), and so is
/// going over this resolver's depth and size limits.
pub(crate) fn resolve_lenient(
    entries: &[(String, Value)],
    layers: &[Arc<ParsedFile>],
    secret_keys: &mut HashSet<String>,
) -> Result<Entries, ConfigError> {
    if !has_placeholder(entries) {
        return Ok(entries.to_vec());
    }
    resolve_with(entries, layers, secret_keys, true)
}

/// Resolve the placeholders of `text` (a resource file served by
/// `/{name}/{profile}/{label}/{path}`) against a pair's flat Spring entries, as
/// Spring's `ResourceController` does: unresolvable placeholders are left as written,
/// `\${` is a literal `${`.
pub(crate) fn resolve_text_lenient(
    text: &str,
    entries: &[(String, Value)],
    layers: &[Arc<ParsedFile>],
) -> Result<String, ConfigError> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let mut secret = HashSet::new();
    let mut r = Resolver::new(entries, layers, &mut secret, true);
    // A key no config holds, so the text cannot be named by a placeholder (and so
    // cannot take part in a cycle).
    Ok(match r.expand("\0resource", text)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn resolve_with(
    entries: &[(String, Value)],
    layers: &[Arc<ParsedFile>],
    secret_keys: &mut HashSet<String>,
    lenient: bool,
) -> Result<Entries, ConfigError> {
    let mut r = Resolver::new(entries, layers, secret_keys, lenient);
    entries
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                match v {
                    Value::String(s) if s.contains("${") => r.key(k, s)?,
                    other => other.clone(),
                },
            ))
        })
        .collect()
}

impl<'a> Resolver<'a> {
    fn new(
        entries: &'a [(String, Value)],
        layers: &'a [Arc<ParsedFile>],
        secret: &'a mut HashSet<String>,
        lenient: bool,
    ) -> Resolver<'a> {
        Resolver {
            secret,
            flat: entries.iter().map(|(k, v)| (k.clone(), v)).collect(),
            layers,
            done: HashMap::new(),
            stack: Vec::new(),
            depth: 0,
            containers: None,
            produced: 0,
            lenient,
        }
    }
}

impl Resolver<'_> {
    /// The resolved value of flat key `key` whose raw string is `raw`.
    fn key(&mut self, key: &str, raw: &str) -> Result<Value, ConfigError> {
        if let Some(v) = self.done.get(key) {
            let v = v.clone();
            // Every copy counts: a value reused many times costs its size each time.
            self.charge(key, &v)?;
            return Ok(v);
        }
        if let Some(pos) = self.stack.iter().position(|k| k == key) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
            chain.push(key);
            return Err(self.error(
                &self.stack[pos].clone(),
                format!("placeholder cycle: {}", chain.join(" → ")),
            ));
        }
        self.stack.push(key.to_string());
        let result = self.expand(key, raw);
        self.stack.pop();
        let v = result?;
        self.charge(key, &v)?;
        self.done.insert(key.to_string(), v.clone());
        Ok(v)
    }

    /// Count `v` against the pair's expansion budget.
    fn charge(&mut self, key: &str, v: &Value) -> Result<(), ConfigError> {
        self.produced = self.produced.saturating_add(match v {
            Value::String(s) => s.len(),
            _ => 8,
        });
        if self.produced > MAX_EXPANSION_BYTES {
            return Err(self.error(
                key,
                format!(
                    "placeholders of this config expand to more than {} MiB in all (at key `{key}`): reference large values fewer times",
                    MAX_EXPANSION_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// Expand every placeholder in `raw`, the value of `key`.
    fn expand(&mut self, key: &str, raw: &str) -> Result<Value, ConfigError> {
        if self.depth >= MAX_PLACEHOLDER_DEPTH {
            return Err(self.error(
                key,
                format!("placeholders nest or chain deeper than {MAX_PLACEHOLDER_DEPTH} levels at key `{key}`"),
            ));
        }
        self.depth += 1;
        let result = self.expand_parts(key, raw);
        self.depth -= 1;
        result
    }

    fn expand_parts(&mut self, key: &str, raw: &str) -> Result<Value, ConfigError> {
        let parts = match split_placeholders(raw) {
            Ok(parts) => parts,
            Err(_) if self.lenient => return Ok(Value::String(raw.to_string())),
            Err(m) => return Err(self.error(key, m)),
        };
        if let [Part::Placeholder { name, default }] = parts.as_slice() {
            return self.lookup(key, name, default.as_deref(), true);
        }
        let mut out = String::new();
        for part in parts {
            let piece = match part {
                Part::Text(t) => t,
                Part::Placeholder { name, default } => {
                    match self.lookup(key, &name, default.as_deref(), false)? {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    }
                }
            };
            // Checked before growing, so an oversized value is never allocated.
            if out.len() + piece.len() > MAX_VALUE_BYTES {
                return Err(self.error(
                    key,
                    format!(
                        "key `{key}` expands to more than {} MiB through its placeholders",
                        MAX_VALUE_BYTES >> 20
                    ),
                ));
            }
            out.push_str(&piece);
        }
        Ok(Value::String(out))
    }

    fn lookup(
        &mut self,
        key: &str,
        name: &str,
        default: Option<&str>,
        whole: bool,
    ) -> Result<Value, ConfigError> {
        if self.secret.contains(name) {
            self.secret
                .insert(key.trim_end_matches("#default").to_string());
        }
        match self.flat.get(name).copied() {
            Some(Value::String(s)) if s.contains("${") => {
                let v = self.key(name, s)?;
                // Known only now, for a key that became secret through its own placeholders.
                if self.secret.contains(name) {
                    self.secret
                        .insert(key.trim_end_matches("#default").to_string());
                }
                Ok(v)
            }
            Some(v) => {
                self.charge(key, v)?;
                Ok(v.clone())
            }
            None if self.lenient && default.is_none() => Ok(Value::String(format!("${{{name}}}"))),
            None if !self.lenient && self.is_container(name) => Err(self.error(
                key,
                format!("placeholder `${{{name}}}` refers to a map or list, not a value"),
            )),
            None => match default {
                Some(d) if d.contains("${") => {
                    let pseudo = format!("{key}#default");
                    let v = self.expand(&pseudo, d).map_err(|mut e| {
                        e.key = Some(key.to_string());
                        e
                    })?;
                    Ok(if whole {
                        v
                    } else {
                        Value::String(v.as_str().unwrap_or_default().to_string())
                    })
                }
                Some(d) if whole => Ok(typed_scalar(d)),
                Some(d) => Ok(Value::String(d.to_string())),
                None => Err(self.error(
                    key,
                    format!(
                        "placeholder `${{{name}}}` in key `{key}`: no key `{name}` and no default"
                    ),
                )),
            },
        }
    }

    fn is_container(&mut self, name: &str) -> bool {
        // Built once, on the first miss: every proper prefix of a flat key that ends
        // where a `.` or `[` follows names a map or a list.
        let flat = &self.flat;
        self.containers
            .get_or_insert_with(|| {
                let mut set = HashSet::new();
                for key in flat.keys() {
                    for (i, b) in key.bytes().enumerate() {
                        if (b == b'.' || b == b'[') && i > 0 {
                            set.insert(key[..i].to_string());
                        }
                    }
                }
                set
            })
            .contains(name)
    }

    fn error(&self, key: &str, message: String) -> ConfigError {
        let mut e = ConfigError::new(ErrorKind::Placeholder, message).with_key(key);
        if let Some(file) = origin_of(self.layers, key) {
            e = e.in_file(&file.path).at_line(file.line_of(key));
        }
        e
    }
}

/// A default written in a placeholder (`${port:8080}`) standing alone keeps its YAML type.
fn typed_scalar(s: &str) -> Value {
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    // Only plain decimals: `inf`, `nan` and `1e5`-looking names stay strings.
    if s.contains('.')
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'))
    {
        if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Placeholder {
        name: String,
        default: Option<String>,
    },
}

/// Split `a${b:c}d` into text and placeholders; `\${` is a literal `${`.
fn split_placeholders(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        // Bytes, not str slices: `j` below steps one byte at a time and may sit inside a
        // multi-byte character; `$`, `{` and `}` never occur inside one.
        if bytes[i..].starts_with(b"\\${") {
            text.push_str("${");
            i += 3;
            continue;
        }
        if bytes[i..].starts_with(b"${") {
            let end = closing_brace(bytes, i).ok_or_else(|| {
                let start: String = s[i..].chars().take(40).collect();
                format!("unterminated placeholder `{start}…`")
            })?;
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(placeholder(&s[i + 2..end])?);
            i = end + 1;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or_default();
        text.push(ch);
        i += ch.len_utf8().max(1);
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// The `}` closing the placeholder opened at `start`, allowing nested placeholders in
/// its default.
fn closing_brace(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = start;
    while j < bytes.len() {
        if bytes[j..].starts_with(b"${") {
            depth += 1;
            j += 2;
            continue;
        }
        if bytes[j] == b'}' {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

/// `name` or `name:default`, the inside of `${…}`.
fn placeholder(inner: &str) -> Result<Part, String> {
    let (name, default) = match inner.split_once(':') {
        Some((name, default)) => (name, Some(default.to_string())),
        None => (inner, None),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("empty placeholder `${}`".to_string());
    }
    Ok(Part::Placeholder {
        name: name.to_string(),
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(path: &str, text: &str) -> Arc<ParsedFile> {
        Arc::new(ParsedFile::from_text(path, text).unwrap())
    }

    fn values(layers: Vec<Arc<ParsedFile>>) -> Value {
        resolve(layers).unwrap().values
    }

    #[test]
    fn higher_layer_wins_and_maps_merge_deeply() {
        let v = values(vec![
            file("orders.yml", "db: {pool: 10}\n"),
            file("application.yml", "db: {pool: 5, host: h}\nname: app\n"),
        ]);
        assert_eq!(v, json!({"db": {"pool": 10, "host": "h"}, "name": "app"}));
    }

    #[test]
    fn lists_are_replaced_whole() {
        let v = values(vec![
            file("orders.yml", "features: [c]\n"),
            file("application.yml", "features: [a, b]\n"),
        ]);
        assert_eq!(v["features"], json!(["c"]));
    }

    #[test]
    fn explicit_null_overrides() {
        let v = values(vec![
            file("o.yml", "db: null\n"),
            file("application.yml", "db: {pool: 1}\n"),
        ]);
        assert_eq!(v, json!({"db": null}));
    }

    #[test]
    fn placeholders_resolve_with_types_defaults_and_escapes() {
        let v = values(vec![file(
            "a.yml",
            "db: {host: h, port: 5432}\nurl: jdbc://${db.host}:${db.port}/x\nport: ${db.port}\n\
             timeout: ${missing:30}\nname: ${missing:}\nlit: \\${db.host}\nnested: ${missing:${db.host}}\n\
             chain: ${url}\nfirst: ${list[0]}\nlist: [a, b]\n",
        )]);
        assert_eq!(v["url"], json!("jdbc://h:5432/x"));
        assert_eq!(v["port"], json!(5432));
        assert_eq!(v["timeout"], json!(30));
        assert_eq!(v["name"], json!(""));
        assert_eq!(v["lit"], json!("${db.host}"));
        assert_eq!(v["nested"], json!("h"));
        assert_eq!(v["chain"], json!("jdbc://h:5432/x"));
        assert_eq!(v["first"], json!("a"));
    }

    #[test]
    fn placeholders_see_the_merged_result() {
        let v = values(vec![
            file("orders-prod.yml", "db: {host: prod-db}\n"),
            file(
                "application.yml",
                "db: {host: localhost}\nurl: pg://${db.host}\n",
            ),
        ]);
        assert_eq!(v["url"], json!("pg://prod-db"));
    }

    #[test]
    fn missing_placeholder_names_key_file_and_line() {
        let e = resolve(vec![file("orders.yml", "a: 1\ndb:\n  url: x${db.nope}\n")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("db.url"));
        assert_eq!(e.file.as_deref(), Some("orders.yml"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("db.nope"), "{e}");
    }

    #[test]
    fn long_chains_and_deep_defaults_are_refused_not_overflowing() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("k{i}: ${{k{}}}\n", i + 1));
        }
        text.push_str("k10000: end\n");
        let e = resolve(vec![file("chain.yml", &text)]).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e}");
        let nested = format!("x: {}end{}\n", "${a:".repeat(5_000), "}".repeat(5_000));
        let e = resolve(vec![file("nested.yml", &nested)]).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e}");
        let ok: String = (0..60)
            .map(|i| format!("k{i}: ${{k{}}}\n", i + 1))
            .collect::<String>()
            + "k60: end\n";
        assert_eq!(
            resolve(vec![file("ok.yml", &ok)]).unwrap().values["k0"],
            json!("end")
        );
    }

    /// `EnvironmentPropertySource`: Spring's file forms leave what they cannot resolve
    /// as written, and still refuse a cycle.
    #[test]
    fn spring_forms_leave_unresolvable_placeholders_as_written() {
        let layers = vec![file(
            "o.yml",
            "a: hi ${who}\nb: ${a}!\nc: ${m:dflt}\nm:\n  k: 1\nd: ${m}\ne: \\${x}\nf: ${open\n",
        )];
        let r = merge_only_for(layers.clone(), &[]);
        assert!(r.spring_error.is_none());
        let got: HashMap<&str, &Value> = r
            .spring_values
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        assert_eq!(got["a"], &json!("hi ${who}"));
        assert_eq!(got["b"], &json!("hi ${who}!"));
        // `m` is no flat key in Spring's Environment: its default applies, or it stays.
        assert_eq!(got["c"], &json!("dflt"));
        assert_eq!(got["d"], &json!("${m}"));
        assert_eq!(got["e"], &json!("${x}"));
        assert_eq!(got["f"], &json!("${open"));
        let text =
            resolve_text_lenient("x=${a} y=${none} z=\\${a}", &r.spring_merged, &layers).unwrap();
        assert_eq!(text, "x=hi ${who} y=${none} z=${a}");
        let cyclic = merge_only_for(vec![file("o.yml", "a: ${b}\nb: x${a}\n")], &[]);
        let e = cyclic.spring_error.expect("a cycle is an error");
        assert!(e.message.contains("cycle"), "{e}");
    }

    #[test]
    fn cycles_are_detected() {
        let e = resolve(vec![file("o.yml", "a: ${b}\nb: x${c}\nc: ${a}\n")]).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
        let e = resolve(vec![file("o.yml", "a: ${a}\n")]).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }

    #[test]
    fn placeholder_to_a_map_is_an_error() {
        let e = resolve(vec![file("o.yml", "db: {a: 1}\nx: ${db}\n")]).unwrap_err();
        assert!(e.message.contains("map or list"), "{e}");
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        assert!(resolve(vec![file("o.yml", "x: ${db\n")])
            .unwrap_err()
            .message
            .contains("unterminated"));
    }

    #[test]
    fn digest_is_canonical() {
        assert_eq!(
            digest_of(&json!({"b": 1, "a": [1, {"d": 2, "c": 3}]})),
            digest_of(&json!({"a": [1, {"c": 3, "d": 2}], "b": 1}))
        );
        assert_ne!(digest_of(&json!({"a": 1})), digest_of(&json!({"a": "1"})));
    }

    #[test]
    fn flattens_spring_style() {
        let v = json!({"a": {"b": [1, {"c": true}]}, "e": {}});
        let flat: Vec<(String, Value)> = flatten(&v)
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a.b[0]".into(), json!(1)),
                ("a.b[1].c".into(), json!(true))
            ]
        );
    }

    #[test]
    fn documents_apply_by_profile_later_ones_first() {
        let app = file(
            "application.yml",
            "a: 1\nlist: [x, y]\n---\nspring.config.activate.on-profile: prod\na: 2\nlist: []\n---\nspring.config.activate.on-profile: '!prod'\nb: 3\n",
        );
        let prod = resolve_for(vec![app.clone()], &["prod".into()]).unwrap();
        let order: Vec<usize> = prod.sources.iter().map(|(_, i)| *i).collect();
        assert_eq!(order, vec![1, 0]);
        assert_eq!(prod.values, json!({"a": 2, "list": []}));
        // Spring's file forms: the emptied list is `""`, activation keys are gone.
        assert_eq!(
            prod.spring_values,
            vec![("a".to_string(), json!(2)), ("list".to_string(), json!(""))]
        );
        let dev = resolve_for(vec![app], &["dev".into()]).unwrap();
        assert_eq!(dev.values, json!({"a": 1, "b": 3, "list": ["x", "y"]}));
        assert_eq!(dev.layers.len(), 1);
    }

    #[test]
    fn placeholders_read_the_flat_key_that_won() {
        let v = values(vec![file(
            "application.yml",
            "spring.datasource.url: flat\nspring:\n  datasource:\n    url: nested\nuses: ${spring.datasource.url}\n",
        )]);
        assert_eq!(v["uses"], json!("nested"));
        assert_eq!(v["spring"], json!({"datasource": {"url": "nested"}}));
    }

    #[test]
    fn origin_is_the_highest_file_setting_the_key() {
        let layers = vec![
            file("orders.yml", "db: {pool: 10}\n"),
            file("application.yml", "db: {pool: 5, host: h}\n"),
        ];
        assert_eq!(origin_of(&layers, "db.pool").unwrap().path, "orders.yml");
        assert_eq!(
            origin_of(&layers, "db.host").unwrap().path,
            "application.yml"
        );
    }
}
