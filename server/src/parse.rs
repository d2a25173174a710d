//! Turning one config file (`.yml`, `.yaml`, `.json`, `.properties`) into a JSON map.
//! All YAML parsing in the crate goes through here.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::errors::{ConfigError, ErrorKind};

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

/// Parse `bytes` (the contents of `file`) into a map.
pub fn parse_file(file: &str, bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
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
    match format {
        Format::Yaml => parse_yaml(text).map_err(|(m, l)| fail(m, l)),
        Format::Json => parse_json(text).map_err(|(m, l)| fail(m, l)),
        Format::Properties => parse_properties(text).map_err(|(m, l)| fail(m, l)),
    }
}

type ParseResult = Result<Map<String, Value>, (String, Option<u64>)>;

fn parse_yaml(text: &str) -> ParseResult {
    if let Some(line) = flow_depth_over(text, 2 * MAX_DEPTH) {
        return Err((
            format!("`[` and `{{` nest too deeply (the limit is {MAX_DEPTH} levels)"),
            Some(line),
        ));
    }
    let mut merged = Map::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        // Deserializing into a mapping (not any value) makes a non-map top level an
        // error that carries the document's position.
        let mapping = Option::<serde_yaml::Mapping>::deserialize(doc).map_err(|e| {
            let line = e.location().map(|l| l.line() as u64);
            let message = yaml_message(&e);
            // The library points a duplicate key at the start of its map; point at the
            // repeated key instead.
            let line = duplicate_key_name(&message)
                .and_then(|key| locate_duplicate(text, line.unwrap_or(1), key))
                .or(line);
            (message, line)
        })?;
        let Some(mapping) = mapping else { continue };
        let mut value = serde_yaml::Value::Mapping(mapping);
        value
            .apply_merge()
            .map_err(|e| (yaml_message(&e), e.location().map(|l| l.line() as u64)))?;
        let json = yaml_to_json(value, "").map_err(|(msg, key)| {
            let line = locate_yaml_key(text, &key);
            (format!("key `{key}`: {msg}"), line)
        })?;
        if let Value::Object(map) = json {
            deep_merge(&mut merged, map);
        }
    }
    Ok(merged)
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

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn yaml_to_json(value: serde_yaml::Value, path: &str) -> Result<Value, (String, String)> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
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
                            format!("`{n}` (NaN or infinity) cannot be represented; quote it"),
                            path.to_string(),
                        )
                    })?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
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
                let child = join_key(path, &key);
                let v = yaml_to_json(v, &child)?;
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, path)?,
    })
}

fn parse_json(text: &str) -> ParseResult {
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

/// Java `.properties`: `key=value`, `key: value` or `key value`; `#`/`!` comments;
/// `\` line continuations and escapes. `a.b=1` nests, `a[0]=x` makes a list.
fn parse_properties(text: &str) -> ParseResult {
    let mut flat: Vec<(String, String, u64)> = Vec::new();
    // Line of each key's first definition: finding duplicates must not be quadratic.
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let line_no = idx as u64 + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = trimmed.to_string();
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_property(&logical);
        let key = unescape_property(&key).map_err(|m| (m, Some(line_no)))?;
        let value = unescape_property(&value).map_err(|m| (m, Some(line_no)))?;
        if key.is_empty() {
            return Err(("empty key".into(), Some(line_no)));
        }
        if let Some(first) = seen.get(&key) {
            return Err((
                format!("duplicate key `{key}` (first set on line {first})"),
                Some(line_no),
            ));
        }
        seen.insert(key.clone(), line_no);
        flat.push((key, value, line_no));
    }
    let mut root = Value::Object(Map::new());
    for (key, value, line) in flat {
        insert_flat(&mut root, &key, Value::String(value))
            .map_err(|m| (format!("key `{key}`: {m}"), Some(line)))?;
    }
    match root {
        Value::Object(map) => {
            let mut map = Value::Object(map);
            compact_lists(&mut map).map_err(|m| (m, None))?;
            match map {
                Value::Object(m) => Ok(m),
                _ => Ok(Map::new()),
            }
        }
        _ => Ok(Map::new()),
    }
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

/// A flat key split into map keys and list indices: `a.b[0].c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Split `a.b[0].c` into segments; `None` if the key is malformed.
pub(crate) fn split_key(key: &str) -> Option<Vec<Seg<'_>>> {
    let mut segs = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && (segs.is_empty() || rest.is_empty()) {
            return None;
        }
        if !name.is_empty() {
            segs.push(Seg::Key(name));
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let idx: usize = rest[1..close].parse().ok()?;
            segs.push(Seg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(segs)
}

/// Lists are built as maps keyed by index while parsing; marker key prefix for them.
const LIST_MARK: &str = "\u{0}list";

fn insert_flat(root: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let segs = split_key(key).ok_or_else(|| "malformed key".to_string())?;
    // YAML and JSON stop at 128 levels; a key must not nest deeper than they may.
    if segs.len() > MAX_DEPTH {
        return Err(format!("nests deeper than {MAX_DEPTH} levels"));
    }
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let map = match cur {
            Value::Object(m) => m,
            _ => return Err("is both a value and a map".into()),
        };
        let name = match seg {
            Seg::Key(k) => (*k).to_string(),
            Seg::Index(n) => {
                map.insert(LIST_MARK.into(), Value::Bool(true));
                format!("{n:010}")
            }
        };
        if last {
            if map.contains_key(&name) {
                return Err("is both a value and a map".into());
            }
            map.insert(name, value);
            return Ok(());
        }
        cur = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

fn compact_lists(v: &mut Value) -> Result<(), String> {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            compact_lists(child)?;
        }
        if m.remove(LIST_MARK).is_some() {
            let mut items = Vec::with_capacity(m.len());
            for (i, (k, val)) in std::mem::take(m).into_iter().enumerate() {
                if k.parse::<usize>().ok() != Some(i) {
                    return Err(format!(
                        "list index {} is missing (indices must be 0, 1, 2, …)",
                        i
                    ));
                }
                items.push(val);
            }
            *v = Value::Array(items);
        }
    }
    Ok(())
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
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        if path == want {
            return Some(idx as u64 + 1);
        }
    }
    None
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
    fn properties_errors_name_the_line() {
        let e = err("a.properties", "a=1\na.b=2\n");
        assert_eq!(e.line, Some(2));
        let e = err("a.properties", "a=1\n\na=2\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("duplicate"));
        assert!(err("a.properties", "l[1]=x\n")
            .message
            .contains("index 0 is missing"));
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
