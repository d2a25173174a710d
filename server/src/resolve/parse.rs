//! Turning one config file (`.yml`, `.yaml`, `.json`, `.properties`) into a JSON map.
//! All YAML parsing in the crate goes through here.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::keys;

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

/// When a document applies, from its `spring.config.activate.on-profile` (or legacy
/// `spring.profiles`) key.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// No activation key: every profile.
    Always,
    /// `on-profile`: when any of the expressions matches the requested profiles.
    OnProfile {
        /// The expressions as written (a list, or a comma-separated string).
        written: Vec<String>,
        /// Parsed.
        expressions: Vec<ProfileExpr>,
        /// Set with the legacy `spring.profiles` key.
        legacy: bool,
    },
    /// `spring.config.activate.on-cloud-platform`: confhub runs on no cloud platform a
    /// document could name, so it never applies.
    Never,
}

impl Activation {
    /// Does a document with this activation apply when `profiles` are requested?
    pub fn applies(&self, profiles: &[String]) -> bool {
        match self {
            Activation::Always => true,
            Activation::Never => false,
            Activation::OnProfile { expressions, .. } => {
                expressions.iter().any(|e| e.matches(profiles))
            }
        }
    }
}

/// A Spring profile expression (`prod`, `!prod`, `prod & eu`, `prod | eu`, parentheses),
/// as `org.springframework.core.env.Profiles.of` parses it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileExpr {
    /// A profile name.
    Name(String),
    /// `!e`.
    Not(Box<ProfileExpr>),
    /// `a & b & …`.
    And(Vec<ProfileExpr>),
    /// `a | b | …`.
    Or(Vec<ProfileExpr>),
}

impl ProfileExpr {
    /// Does the expression match when `profiles` are active?
    pub fn matches(&self, profiles: &[String]) -> bool {
        match self {
            ProfileExpr::Name(n) => profiles.iter().any(|p| p == n),
            ProfileExpr::Not(e) => !e.matches(profiles),
            ProfileExpr::And(all) => all.iter().all(|e| e.matches(profiles)),
            ProfileExpr::Or(any) => any.iter().any(|e| e.matches(profiles)),
        }
    }

    /// Parse one expression. Like Spring's `ProfilesParser`, mixing `&` and `|` without
    /// parentheses is malformed.
    pub fn parse(text: &str) -> Result<ProfileExpr, String> {
        let malformed = || format!("malformed profile expression `{text}`");
        let mut tokens = Vec::new();
        let mut name = String::new();
        for c in text.chars() {
            if matches!(c, '(' | ')' | '&' | '|' | '!') || c.is_whitespace() {
                if !name.is_empty() {
                    tokens.push(std::mem::take(&mut name));
                }
                if !c.is_whitespace() {
                    tokens.push(c.to_string());
                }
            } else {
                name.push(c);
            }
        }
        if !name.is_empty() {
            tokens.push(name);
        }
        if tokens.is_empty() {
            return Err(malformed());
        }
        let mut at = 0;
        let expr = parse_or_and(&tokens, &mut at, 0).ok_or_else(malformed)?;
        if at != tokens.len() {
            return Err(malformed());
        }
        Ok(expr)
    }
}

fn parse_or_and(tokens: &[String], at: &mut usize, depth: usize) -> Option<ProfileExpr> {
    // Nesting is bounded by the file size limit; refuse absurd depths before recursing.
    if depth > MAX_DEPTH {
        return None;
    }
    let first = parse_unary(tokens, at, depth)?;
    let mut op: Option<&str> = None;
    let mut items = vec![first];
    while let Some(t) = tokens.get(*at).map(String::as_str) {
        if t != "&" && t != "|" {
            break;
        }
        if op.is_some_and(|o| o != t) {
            return None;
        }
        op = Some(if t == "&" { "&" } else { "|" });
        *at += 1;
        items.push(parse_unary(tokens, at, depth)?);
    }
    Some(match op {
        None => items.pop()?,
        Some("&") => ProfileExpr::And(items),
        Some(_) => ProfileExpr::Or(items),
    })
}

fn parse_unary(tokens: &[String], at: &mut usize, depth: usize) -> Option<ProfileExpr> {
    let t = tokens.get(*at)?.as_str();
    *at += 1;
    match t {
        "!" => Some(ProfileExpr::Not(Box::new(parse_unary(
            tokens,
            at,
            depth + 1,
        )?))),
        "(" => {
            let e = parse_or_and(tokens, at, depth + 1)?;
            (tokens.get(*at).map(String::as_str) == Some(")")).then(|| *at += 1)?;
            Some(e)
        }
        ")" | "&" | "|" => None,
        name => Some(ProfileExpr::Name(name.to_string())),
    }
}

/// Keys that say when a document applies: read, then left out of what is served
/// (Spring strips `spring.profiles` from its file forms; confhub strips these too, in
/// every form but Spring's Environment).
pub const ON_PROFILE: &str = "spring.config.activate.on-profile";
/// The legacy activation key (Spring Boot before 2.4).
pub const LEGACY_PROFILES: &str = "spring.profiles";
/// The cloud-platform activation key.
pub const ON_CLOUD_PLATFORM: &str = "spring.config.activate.on-cloud-platform";

/// Is `key` one of the activation keys (or an item of one)?
pub fn is_activation_key(key: &str) -> bool {
    keys::is_under(key, "spring.config.activate")
        || (keys::is_under(key, LEGACY_PROFILES) && !key.starts_with("spring.profiles."))
}

/// The values of `key` as a profile list: `a` / `a,b` / `key[0]…`.
fn profile_values(entries: &[(String, Value)], key: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut found = false;
    for (k, v) in entries {
        let item = k == key
            || k.strip_prefix(key).is_some_and(|r| {
                r.starts_with('[') && r.ends_with(']') && r[1..r.len() - 1].parse::<usize>().is_ok()
            });
        if !item {
            continue;
        }
        found = true;
        let text = crate::store::render::scalar_text(v);
        out.extend(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    found.then_some(out)
}

fn activation_of(
    entries: &[(String, Value)],
    line_of: &dyn Fn(&str) -> u64,
    warnings: &mut Vec<(String, Option<u64>)>,
) -> Result<Activation, (String, Option<u64>)> {
    if entries
        .iter()
        .any(|(k, _)| keys::is_under(k, ON_CLOUD_PLATFORM))
    {
        return Ok(Activation::Never);
    }
    let (written, legacy, line) = match profile_values(entries, ON_PROFILE) {
        Some(w) => (w, false, line_of(ON_PROFILE)),
        None => match profile_values(entries, LEGACY_PROFILES) {
            Some(w) => {
                let line = line_of(LEGACY_PROFILES);
                warnings.push((
                    format!("`{LEGACY_PROFILES}` is deprecated (Spring Boot 2.4 and later refuse it): write `{ON_PROFILE}`"),
                    Some(line),
                ));
                (w, true, line)
            }
            None => return Ok(Activation::Always),
        },
    };
    if written.is_empty() {
        return Ok(Activation::Always);
    }
    let expressions = written
        .iter()
        .map(|w| ProfileExpr::parse(w).map_err(|m| (m, Some(line))))
        .collect::<Result<_, _>>()?;
    Ok(Activation::OnProfile {
        written,
        expressions,
        legacy,
    })
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
    let fail = |msg: String, line: Option<u64>| {
        ConfigError::new(ErrorKind::Parse, msg)
            .in_file(file)
            .at_line(line)
    };
    check_size(file, bytes.len() as u64)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        fail("file is not valid UTF-8".into(), Some(line))
    })?;
    let format = Format::of(file).ok_or_else(|| fail("not a config file".into(), None))?;
    let mut warnings = Vec::new();
    let raw = match format {
        Format::Yaml => parse_yaml(text),
        Format::Json => parse_json(text).map(|m| {
            let mut entries = Vec::new();
            let mut index = HashMap::new();
            flatten_json_into(&Value::Object(m), "", &mut entries, &mut index);
            vec![((1, text.lines().count().max(1) as u64), entries)]
        }),
        Format::Properties => parse_properties(text, &mut warnings),
    }
    .map_err(|(m, l)| fail(m, l))?;
    let mut documents = Vec::with_capacity(raw.len());
    for (index, (lines, entries)) in raw.into_iter().enumerate() {
        // Warnings and errors about the activation point at its key.
        let line_of = |key: &str| {
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
        };
        let activation =
            activation_of(&entries, &line_of, &mut warnings).map_err(|(m, l)| fail(m, l))?;
        documents.push(Document {
            index,
            lines,
            activation,
            entries,
        });
    }
    Ok(ParsedDocuments {
        documents,
        warnings: warnings
            .into_iter()
            .map(|(m, l)| {
                ConfigError::new(ErrorKind::Parse, m)
                    .in_file(file)
                    .at_line(l)
            })
            .collect(),
    })
}

/// Documents as (first line, last line) and flat entries.
type RawDocs = Vec<((u64, u64), Vec<(String, Value)>)>;
type ParseResult = Result<RawDocs, (String, Option<u64>)>;

/// Split YAML text at document markers (`---` at the start of a line, which no scalar
/// may contain), returning each section with the line it starts on. A section holding
/// only comments or directives joins the next one.
fn yaml_sections(text: &str) -> Vec<(u64, &str)> {
    let is_marker = |l: &str| {
        l.strip_prefix("---")
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']))
    };
    let mut sections = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u64;
    let mut offset = 0usize;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if idx > 0 && is_marker(line) {
            let section = &text[start..offset];
            let meaningful = section.lines().any(|l| {
                let t = l.trim();
                !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_marker(l))
            });
            if meaningful {
                sections.push((start_line, section));
                start = offset;
                start_line = idx as u64 + 1;
            }
        }
        offset += line.len();
    }
    sections.push((start_line, &text[start..]));
    sections
}

fn parse_yaml(text: &str) -> ParseResult {
    if let Some(line) = flow_depth_over(text, 2 * MAX_DEPTH) {
        return Err((
            format!("`[` and `{{` nest too deeply (the limit is {MAX_DEPTH} levels)"),
            Some(line),
        ));
    }
    let mut docs = Vec::new();
    for (first_line, section) in yaml_sections(text) {
        let shift = first_line - 1;
        let last_line = shift + section.lines().count().max(1) as u64;
        for doc in serde_yaml::Deserializer::from_str(section) {
            // Deserializing into a mapping (not any value) makes a non-map top level an
            // error that carries the document's position.
            let mapping = Option::<serde_yaml::Mapping>::deserialize(doc).map_err(|e| {
                let line = e.location().map(|l| l.line() as u64);
                let message = yaml_message(&e);
                // The library points a duplicate key at the start of its map; point at
                // the repeated key instead.
                let line = duplicate_key_name(&message)
                    .and_then(|key| locate_duplicate(section, line.unwrap_or(1), key))
                    .or(line);
                (message, line.map(|l| l + shift))
            })?;
            // An empty document (only comments) is no document, as in Spring.
            let Some(mapping) = mapping else { continue };
            let mut value = serde_yaml::Value::Mapping(mapping);
            value.apply_merge().map_err(|e| {
                (
                    yaml_message(&e),
                    e.location().map(|l| l.line() as u64 + shift),
                )
            })?;
            let mut entries = Vec::new();
            let mut index = HashMap::new();
            flatten_yaml(value, "", &mut entries, &mut index).map_err(|(msg, key)| {
                let line = locate_yaml_key(section, &key).map(|l| l + shift);
                (format!("key `{key}`: {msg}"), line)
            })?;
            docs.push(((first_line, last_line), entries));
        }
    }
    Ok(docs)
}

/// The line where flow collections (`[`, `{`) first nest deeper than `limit`, as the YAML
/// scanner tokenizes `text` (brackets in quoted, block and block-context plain scalars
/// and in comments do not count), or `None`.
///
/// The parser refuses anything deeper than [`MAX_DEPTH`] on its own, but only after
/// scanning the whole document, and its scanner costs O(flow depth) per token: a 2 MB
/// file of `[` would take the better part of an hour. This linear pre-scan refuses it
/// first. It follows libyaml's scanner closely, not exactly, hence the margin in `limit`.
fn flow_depth_over(text: &str, limit: usize) -> Option<u64> {
    let b = text.as_bytes();
    let n = b.len();
    // Past the end reads as a line break.
    let at = |i: usize| b.get(i).copied().unwrap_or(b'\n');
    let blank = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let flow_indicator = |c: u8| matches!(c, b',' | b'[' | b']' | b'{' | b'}');
    // The block indentation a scalar starting after `prefix` (its line so far) belongs
    // to: the column of the key on the line, else of the last `- `, else of the line.
    let parent_indent = |prefix: &[u8]| {
        let mut col = prefix.iter().take_while(|c| **c == b' ').count();
        let mut parent = col;
        while prefix.get(col) == Some(&b'-') && prefix.get(col + 1) == Some(&b' ') {
            parent = col;
            col += 1;
            while prefix.get(col) == Some(&b' ') {
                col += 1;
            }
        }
        if prefix[col..].windows(2).any(|w| w == b": ") {
            parent = col;
        }
        parent
    };
    let (mut i, mut depth, mut line, mut line_start) = (0usize, 0usize, 1u64, 0usize);
    // Each turn starts at a token boundary.
    while i < n {
        let c = b[i];
        let doc_marker = i == line_start
            && (b[i..].starts_with(b"---") || b[i..].starts_with(b"..."))
            && blank(at(i + 3));
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                line_start = i;
            }
            b' ' | b'\t' | b'\r' | b',' => i += 1,
            _ if doc_marker => i += 3,
            b'#' | b'%' => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'?' | b':' if blank(at(i + 1)) || (depth > 0 && c != b'-') => i += 1,
            b'&' | b'*' | b'!' => {
                while i < n && !blank(b[i]) && !(depth > 0 && flow_indicator(b[i])) {
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                i += 1;
                while i < n {
                    match b[i] {
                        b'\n' => {
                            line += 1;
                            i += 1;
                            line_start = i;
                        }
                        b'\\' if c == b'"' && at(i + 1) != b'\n' => i += 2,
                        q if q == c && c == b'\'' && at(i + 1) == b'\'' => i += 2,
                        q if q == c => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'|' | b'>' if depth == 0 => {
                // A block scalar: the rest of the header line, then every line indented
                // at least as far as the first (or the explicit indentation indicator).
                let parent = parent_indent(&b[line_start..i]);
                let mut content = None;
                while i < n && b[i] != b'\n' {
                    if content.is_none() && (b'1'..=b'9').contains(&b[i]) {
                        content = Some(parent + usize::from(b[i] - b'0'));
                    }
                    i += 1;
                }
                while i < n {
                    let next = i + 1;
                    let indent = b[next.min(n)..].iter().take_while(|c| **c == b' ').count();
                    let empty = matches!(at(next + indent), b'\n' | b'\r');
                    if !empty && indent < *content.get_or_insert(indent.max(parent + 1)) {
                        break;
                    }
                    i = next;
                    line += 1;
                    line_start = next;
                    while i < n && b[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            _ => {
                // A plain scalar: runs of non-blanks, across blanks and (in flow context,
                // or indented past its block) line breaks.
                let parent = parent_indent(&b[line_start..i]);
                'plain: loop {
                    while i < n && !blank(b[i]) {
                        let ends_at_colon = b[i] == b':'
                            && (blank(at(i + 1))
                                || (depth > 0 && (flow_indicator(at(i + 1)) || at(i + 1) == b'?')));
                        if ends_at_colon || (depth > 0 && flow_indicator(b[i])) {
                            break 'plain;
                        }
                        i += 1;
                    }
                    let mut new_line = false;
                    while i < n && blank(b[i]) {
                        if b[i] == b'\n' {
                            line += 1;
                            line_start = i + 1;
                            new_line = true;
                        }
                        i += 1;
                    }
                    if i >= n || b[i] == b'#' {
                        break;
                    }
                    if new_line {
                        let marker = i == line_start
                            && (b[i..].starts_with(b"---") || b[i..].starts_with(b"..."))
                            && blank(at(i + 3));
                        if marker || (depth == 0 && i - line_start <= parent) {
                            break;
                        }
                    }
                }
            }
        }
    }
    None
}

fn duplicate_key_name(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("duplicate entry with key ")?;
    Some(rest.trim_matches('"'))
}

/// Line of the second `key:` at one indentation, from `from` (1-based) on.
fn locate_duplicate(text: &str, from: u64, key: &str) -> Option<u64> {
    let mut first_at_indent: Vec<usize> = Vec::new();
    for (idx, line) in text
        .lines()
        .enumerate()
        .skip(from.saturating_sub(1) as usize)
    {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        let content = content.trim_start_matches("- ");
        let Some(k) = content
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(['"', '\'']))
        else {
            continue;
        };
        if k == key {
            if first_at_indent.contains(&indent) {
                return Some(idx as u64 + 1);
            }
            first_at_indent.push(indent);
        }
    }
    None
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    // The library appends " at line L column C"; we report the line separately.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
    .replace(
        "expected a YAML mapping",
        "the top level must be a map of keys",
    )
}

/// Flatten a YAML document as Spring's `YamlProcessor` does: nested maps and dotted keys
/// give the same flat key (the later one wins), list items are `key[i]`.
fn flatten_yaml(
    value: serde_yaml::Value,
    path: &str,
    out: &mut Vec<(String, Value)>,
    index: &mut HashMap<String, usize>,
) -> Result<(), (String, String)> {
    use serde_yaml::Value as Y;
    match value {
        Y::Mapping(m) => {
            if m.is_empty() && !path.is_empty() {
                keys::put(out, index, path.to_string(), Value::Object(Map::new()));
            }
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Tagged(t) => match t.value {
                        Y::String(s) => s,
                        _ => {
                            return Err((
                                "keys must be strings, numbers or booleans".into(),
                                path.to_string(),
                            ))
                        }
                    },
                    Y::Null => return Err(("null is not a valid key".into(), path.to_string())),
                    _ => {
                        return Err((
                            "keys must be strings, numbers or booleans".into(),
                            path.to_string(),
                        ))
                    }
                };
                flatten_yaml(v, &keys::child(path, &key), out, index)?;
            }
        }
        Y::Sequence(seq) => {
            if seq.is_empty() {
                keys::put(out, index, path.to_string(), Value::Array(Vec::new()));
            }
            for (i, v) in seq.into_iter().enumerate() {
                flatten_yaml(v, &keys::index(path, i), out, index)?;
            }
        }
        Y::Tagged(t) => flatten_yaml(t.value, path, out, index)?,
        scalar => {
            let v = match scalar {
                Y::Null => Value::Null,
                Y::Bool(b) => Value::Bool(b),
                Y::String(s) => Value::String(s),
                Y::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        Value::from(i)
                    } else if let Some(u) = n.as_u64() {
                        Value::from(u)
                    } else {
                        let f = n.as_f64().unwrap_or(f64::NAN);
                        serde_json::Number::from_f64(f)
                            .map(Value::Number)
                            .ok_or_else(|| {
                                (
                                    format!(
                                        "`{n}` (NaN or infinity) cannot be represented; quote it"
                                    ),
                                    path.to_string(),
                                )
                            })?
                    }
                }
                _ => Value::Null,
            };
            keys::put(out, index, path.to_string(), v);
        }
    }
    Ok(())
}

fn flatten_json_into(
    value: &Value,
    path: &str,
    out: &mut Vec<(String, Value)>,
    index: &mut HashMap<String, usize>,
) {
    match value {
        Value::Object(m) => {
            if m.is_empty() && !path.is_empty() {
                keys::put(out, index, path.to_string(), value.clone());
            }
            for (k, v) in m {
                flatten_json_into(v, &keys::child(path, k), out, index);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten_json_into(v, &keys::index(path, i), out, index);
            }
        }
        leaf => keys::put(out, index, path.to_string(), leaf.clone()),
    }
}

fn parse_json(text: &str) -> Result<Map<String, Value>, (String, Option<u64>)> {
    // serde_json keeps the last of duplicate keys silently; a config file with two
    // `db` keys is a mistake, so detect them with a map type that refuses duplicates.
    let value: NoDupValue = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        (msg, Some(e.line() as u64))
    })?;
    match value.0 {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(("the top level must be a map of keys".into(), Some(1))),
    }
}

/// A JSON value whose objects reject duplicate keys.
struct NoDupValue(Value);

impl<'de> Deserialize<'de> for NoDupValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NoDupValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<NoDupValue, E> {
                Ok(NoDupValue(
                    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::Null))
            }
            fn visit_none<E>(self) -> Result<NoDupValue, E> {
                Ok(NoDupValue(Value::Null))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<NoDupValue, D::Error> {
                NoDupValue::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<NoDupValue, A::Error> {
                let mut out = Vec::new();
                while let Some(NoDupValue(v)) = a.next_element()? {
                    out.push(v);
                }
                Ok(NoDupValue(Value::Array(out)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<NoDupValue, A::Error> {
                let mut out = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let NoDupValue(v) = a.next_value()?;
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(NoDupValue(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Java `.properties`, read as Spring Boot's `OriginTrackedPropertiesLoader` reads it:
/// `key=value`, `key: value` or `key value`; `#`/`!` comments; `\` line continuations
/// and escapes; `#---` or `!---` alone on a line starts a new document (unless the line
/// before is a comment with the same prefix); `key[]=a,b` is `key[0]=a`, `key[1]=b`; a
/// key set twice keeps its last value.
fn parse_properties(text: &str, warnings: &mut Vec<(String, Option<u64>)>) -> ParseResult {
    let mut docs: RawDocs = Vec::new();
    let mut entries: Vec<(String, Value)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Line each key of the current document was first set on, for the duplicate warning.
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut doc_start = 1u64;
    let mut last_comment: Option<char> = None;
    let mut lines = text.lines().enumerate().peekable();
    let mut last_line = 1u64;
    while let Some((idx, raw)) = lines.next() {
        let line_no = idx as u64 + 1;
        last_line = line_no;
        let trimmed = raw.trim_start();
        if let Some(prefix) = trimmed.chars().next().filter(|c| *c == '#' || *c == '!') {
            let separator = raw.len() == trimmed.len()
                && raw[1..].starts_with("---")
                && raw[4..].trim().is_empty()
                && last_comment != Some(prefix);
            if separator {
                if !entries.is_empty() {
                    docs.push(((doc_start, line_no - 1), std::mem::take(&mut entries)));
                    index.clear();
                    first_line.clear();
                }
                doc_start = line_no + 1;
            } else {
                // Spring's loader reopens the previous document when a comment follows
                // a separator before any key.
                if entries.is_empty() {
                    if let Some(((start, _), prev)) = docs.pop() {
                        doc_start = start;
                        entries = prev;
                        index = entries
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect();
                    }
                }
                last_comment = Some(prefix);
            }
            continue;
        }
        last_comment = None;
        if trimmed.is_empty() {
            continue;
        }
        let mut logical = trimmed.to_string();
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((i, next)) => {
                    last_line = i as u64 + 1;
                    logical.push_str(next.trim_start());
                }
                None => break,
            }
        }
        let (key, value) = split_property(&logical);
        let key = unescape_property(&key).map_err(|m| (m, Some(line_no)))?;
        let key = key.trim().to_string();
        if key.is_empty() {
            continue;
        }
        if keys::split(&key).is_some_and(|s| s.len() > MAX_DEPTH) {
            return Err((
                format!(
                    "key `{}…` nests deeper than {MAX_DEPTH} levels",
                    key.chars().take(40).collect::<String>()
                ),
                Some(line_no),
            ));
        }
        if let Some(list) = key.strip_suffix("[]") {
            for (i, item) in value.split(',').enumerate() {
                let item = unescape_property(item).map_err(|m| (m, Some(line_no)))?;
                keys::put(
                    &mut entries,
                    &mut index,
                    keys::index(list, i),
                    Value::String(item),
                );
            }
            continue;
        }
        let value = unescape_property(&value).map_err(|m| (m, Some(line_no)))?;
        if let Some(first) = first_line.get(&key) {
            warnings.push((
                format!("key `{key}` is set again (first on line {first}); the last value wins, as in Java"),
                Some(line_no),
            ));
        } else {
            first_line.insert(key.clone(), line_no);
        }
        keys::put(&mut entries, &mut index, key, Value::String(value));
    }
    if !entries.is_empty() {
        docs.push(((doc_start, last_line), entries));
    }
    Ok(docs)
}

fn ends_with_continuation(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn split_property(line: &str) -> (String, String) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                let key = line[..i].to_string();
                let mut rest = line[i..].trim_start_matches([' ', '\t']);
                if c == ' ' || c == '\t' {
                    if let Some(r) = rest.strip_prefix(['=', ':']) {
                        rest = r;
                    }
                } else {
                    rest = &rest[1..];
                }
                return (key, rest.trim_start_matches([' ', '\t']).to_string());
            }
            _ => {}
        }
    }
    (line.to_string(), String::new())
}

fn unescape_property(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let cp = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad unicode escape `\\u{hex}`"))?;
                out.push(cp);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

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

/// Best-effort line of a dotted key in block-style YAML, for error messages.
pub fn locate_yaml_key(text: &str, key: &str) -> Option<u64> {
    let want: Vec<&str> = key
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    let want_joined = want.join(".");
    let mut found = None;
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
            if content.starts_with("---") {
                stack.clear();
            }
            continue;
        }
        let mut indent = line.len() - content.len();
        let mut content = content;
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest;
        }
        let Some(colon) = content.find(':') else {
            continue;
        };
        let k = content[..colon].trim().trim_matches(['"', '\'']);
        if k.is_empty() || k.contains(' ') && !content.starts_with(['"', '\'']) {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, k.to_string()));
        // Keys written dotted (`spring.datasource.url:`) name the same flat key as the
        // nested form, so compare the joined paths.
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        if path == want {
            return Some(idx as u64 + 1);
        }
        if path.join(".") == want_joined {
            found = Some(idx as u64 + 1);
        }
    }
    found
}

/// Best-effort line of the last setting of a key in a `.properties` file (the one
/// whose value counts).
pub fn locate_properties_key_last(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', ' ', '\t']))
        })
        .last()
        .map(|(i, _)| i as u64 + 1)
}

/// Best-effort line of a key in a `.properties` file.
pub fn locate_properties_key(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', ' ', '\t']))
        })
        .map(|i| i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(file: &str, text: &str) -> Value {
        Value::Object(parse_file(file, text.as_bytes()).unwrap())
    }

    fn err(file: &str, text: &str) -> ConfigError {
        parse_file(file, text.as_bytes()).unwrap_err()
    }

    #[test]
    fn yaml_documents_merge_top_to_bottom() {
        let v = ok("a.yml", "a: 1\nb: {c: 1, d: 2}\n---\nb: {c: 3}\ne: [1]\n");
        assert_eq!(v, json!({"a": 1, "b": {"c": 3, "d": 2}, "e": [1]}));
    }

    #[test]
    fn yaml_merge_keys_and_non_string_keys() {
        let v = ok(
            "a.yml",
            "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\ncodes: {404: nf, true: yes}\n",
        );
        assert_eq!(v["derived"], json!({"x": 1, "y": 2}));
        assert_eq!(v["codes"], json!({"404": "nf", "true": "yes"}));
    }

    #[test]
    fn yaml_errors_carry_file_and_line() {
        let e = err("orders.yml", "a: 1\nb: [1, 2\nc: 3\n");
        assert_eq!(e.file.as_deref(), Some("orders.yml"));
        assert!(e.line.is_some(), "{e}");

        let e = err("orders.yml", "a: 1\nb: 2\na: 3\n");
        assert!(
            e.message.contains("duplicate") && e.message.contains("\"a\""),
            "{e}"
        );
        assert_eq!(e.line, Some(3), "{e}");

        let e = err("orders.yml", "- 1\n- 2\n");
        assert!(e.message.contains("top level must be a map"), "{e}");
        assert_eq!(e.line, Some(1));

        let e = err("orders.yml", "a:\n  b: .nan\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("a.b"), "{e}");
    }

    #[test]
    fn json_rejects_duplicates_and_non_maps() {
        assert_eq!(
            ok("a.json", r#"{"a": {"b": [1, 2]}}"#),
            json!({"a": {"b": [1, 2]}})
        );
        let e = err("a.json", "{\"a\": 1,\n \"a\": 2}");
        assert!(e.message.contains("duplicate key \"a\""), "{e}");
        assert_eq!(e.line, Some(2));
        assert!(err("a.json", "[1]").message.contains("top level"));
    }

    #[test]
    fn properties_nest_and_make_lists() {
        let v = ok(
            "a.properties",
            "# comment\ndb.url=jdbc:x\ndb.pool : 5\nlist[0]=a\nlist[1]=b\nlong=one \\\n  two\nesc=a\\=b\\u0041\n",
        );
        assert_eq!(
            v,
            json!({"db": {"url": "jdbc:x", "pool": "5"}, "list": ["a", "b"], "long": "one two", "esc": "a=bA"})
        );
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
    fn deep_flow_nesting_is_refused_before_the_parser_scans_it() {
        // Quadratic in libyaml's scanner: this would take the better part of an hour.
        let bomb = format!("a: {}\n", "[".repeat(2_000_000));
        let started = std::time::Instant::now();
        let e = err("a.yml", &bomb);
        assert!(e.message.contains("nest too deeply"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Quoted closers do not hide the depth.
        let e = err("a.yml", &format!("a: {}\n", "[\"]\", ".repeat(1000)));
        assert!(e.message.contains("nest too deeply"), "{e}");
        // Brackets that are not flow collections do not count.
        let fine = format!(
            "a: x{o}\nb: '{o}'\nc: \"{o}\"\nd: 1 # {o}\ne: |\n  {o}\nf: {d}1{c}\n",
            o = "[".repeat(1000),
            d = "[".repeat(100),
            c = "]".repeat(100)
        );
        assert_eq!(
            ok("a.yml", &fine)["e"],
            json!(format!("{}\n", "[".repeat(1000)))
        );
    }

    #[test]
    fn properties_read_as_java_and_spring_read_them() {
        // A key that is both a value and a prefix, a key set twice (the last wins, as in
        // `java.util.Properties`), a list with a gap: none fails the file.
        let parsed = parse_documents(
            "a.properties",
            b"logging.level.org.hibernate=INFO\nlogging.level.org.hibernate.SQL=DEBUG\na=1\n\na=2\nl[1]=x\nk[]=p,q\n",
        )
        .unwrap();
        let entries = &parsed.documents[0].entries;
        assert_eq!(entries[2], ("a".to_string(), json!("2")));
        assert!(entries.contains(&("k[1]".to_string(), json!("q"))));
        assert_eq!(parsed.warnings.len(), 1);
        assert_eq!(parsed.warnings[0].line, Some(5));
        assert!(parsed.warnings[0].message.contains("last value wins"));
        assert_eq!(
            ok("a.properties", "x.y=1\nx=0\n"),
            json!({"x": 0, "x.y": 1})
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), json!(v.to_string())))
                        .collect::<Map<_, _>>()
                })
                .map(Value::Object)
                .unwrap()
        );
    }

    #[test]
    fn properties_documents_split_like_spring_boot() {
        // OriginTrackedPropertiesLoaderTests: `#---` and `!---` at column 0, trailing
        // blanks allowed; leading blanks or trailing text make no separator; a separator
        // right after a comment of the same prefix is part of that comment.
        let docs = |t: &str| {
            parse_documents("a.properties", t.as_bytes())
                .unwrap()
                .documents
                .len()
        };
        assert_eq!(docs("a=a\n#---\nb=b"), 2);
        assert_eq!(docs("a=a\n!---\nb=b"), 2);
        assert_eq!(docs("a=a\n#--- \t \nb=b"), 2);
        assert_eq!(docs("a=a\n \t#---\nb=b"), 1);
        assert_eq!(docs("a=a\n#--- \tcomment\nb=b"), 1);
        assert_eq!(docs("a=a\n# comment\n!---\nb=b"), 2);
        assert_eq!(docs("a=a\n# comment\n#---\nb=b"), 1);
        let p = parse_documents(
            "a.properties",
            b"a=1\n#---\nspring.config.activate.on-profile=prod & eu\na=2\n",
        )
        .unwrap();
        assert_eq!(p.documents[1].lines, (3, 4));
        assert!(p.documents[1]
            .activation
            .applies(&["eu".into(), "prod".into()]));
        assert!(!p.documents[1].activation.applies(&["prod".into()]));
    }

    #[test]
    fn yaml_documents_carry_activation_and_lines() {
        let text = "a: 1\n---\nspring:\n  config:\n    activate:\n      on-profile: prod\na: 2\n---\n# nothing\n---\nspring.profiles: dev, test\na: 3\n";
        let p = parse_documents("application.yml", text.as_bytes()).unwrap();
        assert_eq!(
            p.documents.len(),
            3,
            "the comment-only document is no document"
        );
        assert_eq!(p.documents[0].activation, Activation::Always);
        assert_eq!(p.documents[1].lines.0, 2);
        assert!(p.documents[1].activation.applies(&["prod".into()]));
        assert!(matches!(
            p.documents[2].activation,
            Activation::OnProfile { legacy: true, .. }
        ));
        assert!(p.documents[2].activation.applies(&["test".into()]));
        assert_eq!(p.warnings.len(), 1, "the legacy key is warned about");
        assert_eq!(p.documents[2].index, 2);
        let e = parse_documents(
            "a.yml",
            b"a: 1\n---\nspring.config.activate.on-profile: prod & eu | us\n",
        )
        .unwrap_err();
        assert!(e.message.contains("malformed profile expression"), "{e}");
        assert_eq!(e.line, Some(3), "the line of the expression");
    }

    #[test]
    fn yaml_flat_and_nested_keys_are_one_key() {
        // YamlProcessor.buildFlattenedMap: both spell `spring.datasource.url`; the later wins.
        let p = parse_documents(
            "a.yml",
            b"spring.datasource.url: jdbc:flat\nspring:\n  datasource:\n    url: jdbc:nested\n    user: sa\nempty: []\nnone:\n",
        )
        .unwrap();
        assert_eq!(
            p.documents[0].entries,
            vec![
                ("spring.datasource.url".to_string(), json!("jdbc:nested")),
                ("spring.datasource.user".to_string(), json!("sa")),
                ("empty".to_string(), json!([])),
                ("none".to_string(), Value::Null),
            ]
        );
    }

    #[test]
    fn profile_expressions_follow_spring() {
        let m = |e: &str, active: &[&str]| {
            let active: Vec<String> = active.iter().map(|s| s.to_string()).collect();
            ProfileExpr::parse(e).unwrap().matches(&active)
        };
        assert!(m("prod", &["prod"]));
        assert!(m("!prod", &["dev"]));
        assert!(!m("!prod", &["prod"]));
        assert!(m("prod & eu", &["eu", "prod"]));
        assert!(!m("prod & eu", &["prod"]));
        assert!(m("prod | eu", &["eu"]));
        assert!(m("(prod & eu) | dev", &["dev"]));
        assert!(m("!(prod & eu)", &["prod"]));
        for bad in ["prod & eu | us", "", "(prod", "prod &", "& prod", "()"] {
            assert!(ProfileExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locates_nested_yaml_keys() {
        let text = "a:\n  b:\n    c: 1\n  d: 2\nlist:\n  - name: x\n    port: 1\n";
        assert_eq!(locate_yaml_key(text, "a.b.c"), Some(3));
        assert_eq!(locate_yaml_key(text, "a.d"), Some(4));
        assert_eq!(locate_yaml_key(text, "list[0].port"), Some(7));
        assert_eq!(locate_yaml_key(text, "zzz"), None);
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
