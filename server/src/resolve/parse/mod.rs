//! Turning one config file (`.yml`, `.yaml`, `.json`, `.properties`) into documents of
//! flat entries: the file formats and their limits, [`Document`], [`parse_documents`]
//! and the merged view of a file read as data ([`parse_file`]). Each format's parser is
//! in its own module ([`yaml`], [`json`], [`properties`]); when a document applies is
//! [`profiles`]. All YAML parsing in the crate goes through here.

mod json;
pub mod profiles;
mod properties;
mod yaml;

use serde_json::{Map, Value};

use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::keys;

pub use profiles::{
    is_activation_key, Activation, ProfileExpr, LEGACY_PROFILES, ON_CLOUD_PLATFORM, ON_PROFILE,
};
pub use properties::{locate_properties_key, locate_properties_key_last};
pub use yaml::locate_yaml_key;

/// Config file formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yml` / `.yaml`, possibly multi-document.
    Yaml,
    /// `.json`.
    Json,
    /// Java `.properties`.
    Properties,
}

/// Config file extensions, in precedence order within one layer (Spring reads
/// `.properties` over `.yml`).
pub const EXTENSIONS: [&str; 4] = ["properties", "yml", "yaml", "json"];

impl Format {
    /// The format of a file name, if it is a config file.
    pub fn of(path: &str) -> Option<Format> {
        let ext = path.rsplit_once('.')?.1;
        match ext {
            "yml" | "yaml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "properties" => Some(Format::Properties),
            _ => None,
        }
    }
}

/// How deep keys may nest (the YAML and JSON parsers' own recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Files bigger than this are refused rather than parsed.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Refuse a file of `len` bytes over [`MAX_FILE_BYTES`]; sources check this before they
/// read a file at all.
pub fn check_size(file: &str, len: u64) -> Result<(), ConfigError> {
    if len > MAX_FILE_BYTES as u64 {
        return Err(ConfigError::new(
            ErrorKind::Parse,
            format!("file is {len} bytes, over the {MAX_FILE_BYTES}-byte limit"),
        )
        .in_file(file));
    }
    Ok(())
}

/// One document of a config file: the whole file, or one `---` section of a YAML file or
/// one `#---`/`!---` section of a `.properties` file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Spring's number for it among the file's documents, counted from 0 (Spring names a
    /// property source `… (document #N)` when a file has more than one).
    pub index: usize,
    /// Its first and last line (1-based) in the file.
    pub lines: (u64, u64),
    /// When it applies.
    pub activation: Activation,
    /// Its keys, flat (`a.b.c`, `a.b[0]`), in file order. A key set twice keeps its first
    /// place and its last value. Leaves are scalars, `null`, `[]` or `{}`.
    pub entries: Vec<(String, Value)>,
}

/// A file read into documents, and what `check` should warn about.
#[derive(Debug, Clone, Default)]
pub struct ParsedDocuments {
    /// Its documents, in file order (empty ones left out, as Spring leaves them out).
    pub documents: Vec<Document>,
    /// Things that work but deserve a look (`file:line: message`).
    pub warnings: Vec<ConfigError>,
}

/// Parse `bytes` (the contents of `file`) into a map: every document, merged top to
/// bottom whatever its activation. For files read as data (the manifest, JSON Schemas).
pub fn parse_file(file: &str, bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    let parsed = parse_documents(file, bytes)?;
    Ok(merge_all(&parsed.documents))
}

/// Every document of `docs` merged top to bottom, nested.
pub fn merge_all(docs: &[Document]) -> Map<String, Value> {
    if let [only] = docs {
        // One document merges with nothing: its keys are already distinct.
        return keys::nest(&only.entries);
    }
    let mut merge = keys::Merge::default();
    for doc in docs {
        merge.apply(&doc.entries);
    }
    keys::nest(&merge.into_entries())
}

/// Parse `bytes` (the contents of `file`) into its documents.
pub fn parse_documents(file: &str, bytes: &[u8]) -> Result<ParsedDocuments, ConfigError> {
    let fail = |(msg, line): (String, Option<u64>)| {
        ConfigError::new(ErrorKind::Parse, msg)
            .in_file(file)
            .at_line(line)
    };
    check_size(file, bytes.len() as u64)?;
    let text = utf8(bytes).map_err(fail)?;
    let format = Format::of(file).ok_or_else(|| fail(("not a config file".into(), None)))?;
    let mut warnings = Vec::new();
    let raw = match format {
        Format::Yaml => yaml::parse(text),
        Format::Json => json::parse(text),
        Format::Properties => properties::parse(text, &mut warnings),
    }
    .map_err(fail)?;
    let mut documents = Vec::with_capacity(raw.len());
    for (index, (lines, entries)) in raw.into_iter().enumerate() {
        let line_of = |key: &str| activation_line(text, format, lines, key);
        let activation =
            profiles::activation_of(&entries, &line_of, &mut warnings).map_err(fail)?;
        documents.push(Document {
            index,
            lines,
            activation,
            entries,
        });
    }
    Ok(ParsedDocuments {
        documents,
        warnings: warnings.into_iter().map(fail).collect(),
    })
}

/// `bytes` as text, or why not with the line of the first bad byte.
fn utf8(bytes: &[u8]) -> Result<&str, (String, Option<u64>)> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        ("file is not valid UTF-8".into(), Some(line))
    })
}

/// The line of `key` in the document spanning `lines` of `text`, else the document's
/// first line: warnings and errors about an activation point at its key.
fn activation_line(text: &str, format: Format, lines: (u64, u64), key: &str) -> u64 {
    let section: String = text
        .lines()
        .skip(lines.0.saturating_sub(1) as usize)
        .take((lines.1 + 1).saturating_sub(lines.0) as usize)
        .collect::<Vec<_>>()
        .join("\n");
    let found = match format {
        Format::Yaml => locate_yaml_key(&section, key),
        Format::Properties => locate_properties_key(&section, key),
        Format::Json => None,
    };
    found.map_or(lines.0, |l| l + lines.0 - 1)
}

/// Documents as (first line, last line) and flat entries.
type RawDocs = Vec<((u64, u64), Vec<(String, Value)>)>;
/// A format's parse: its documents, or a message and line.
type ParseResult = Result<RawDocs, (String, Option<u64>)>;

/// Deep merge `higher` into `base`: maps merge key by key, anything else replaces.
pub fn deep_merge(base: &mut Map<String, Value>, higher: Map<String, Value>) {
    for (k, v) in higher {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(h)) => deep_merge(b, h),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file parsed and merged, as a value; panics on an error.
    pub(super) fn ok(file: &str, text: &str) -> Value {
        Value::Object(parse_file(file, text.as_bytes()).unwrap())
    }

    /// The error parsing the file; panics if it parses.
    pub(super) fn err(file: &str, text: &str) -> ConfigError {
        parse_file(file, text.as_bytes()).unwrap_err()
    }

    #[test]
    fn deep_nesting_is_refused_in_every_format() {
        let deep_key = format!("{}=1\n", vec!["a"; 10_000].join("."));
        assert!(err("a.properties", &deep_key)
            .message
            .contains("deeper than 128"));
        let deep_yaml = format!("a: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_file("a.yml", deep_yaml.as_bytes()).is_err());
        let deep_json = format!("{{\"a\": {}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_file("a.json", deep_json.as_bytes()).is_err());
    }

    #[test]
    fn big_and_binary_files_are_refused() {
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        assert!(parse_file("a.yml", &big)
            .unwrap_err()
            .message
            .contains("limit"));
        assert!(parse_file("a.yml", b"a: \xff\n")
            .unwrap_err()
            .message
            .contains("UTF-8"));
    }
}
