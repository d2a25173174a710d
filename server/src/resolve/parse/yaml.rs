//! YAML files as Spring's `YamlProcessor` reads them: `---` sections, the depth pre-scan
//! that refuses flow-collection bombs before the parser sees them, duplicate keys
//! pointed at their line, flattening into Spring's flat keys, and finding a key's line.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ParseResult, MAX_DEPTH};
use crate::resolve::keys;

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

/// A YAML file: one document per `---` section (a section may hold several).
pub(super) fn parse(text: &str) -> ParseResult {
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
                let key = yaml_key(k).map_err(|m| (m.to_string(), path.to_string()))?;
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
            let v = yaml_scalar(scalar).map_err(|m| (m, path.to_string()))?;
            keys::put(out, index, path.to_string(), v);
        }
    }
    Ok(())
}

/// A map key as Spring reads it: strings, numbers and booleans as their text.
fn yaml_key(k: serde_yaml::Value) -> Result<String, &'static str> {
    use serde_yaml::Value as Y;
    const NOT_A_KEY: &str = "keys must be strings, numbers or booleans";
    match k {
        Y::String(s) => Ok(s),
        Y::Bool(b) => Ok(b.to_string()),
        Y::Number(n) => Ok(n.to_string()),
        Y::Tagged(t) => match t.value {
            Y::String(s) => Ok(s),
            _ => Err(NOT_A_KEY),
        },
        Y::Null => Err("null is not a valid key"),
        _ => Err(NOT_A_KEY),
    }
}

/// A YAML scalar as JSON; NaN and infinities have no JSON form.
fn yaml_scalar(scalar: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match scalar {
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
                        format!("`{n}` (NaN or infinity) cannot be represented; quote it")
                    })?
            }
        }
        _ => Value::Null,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::parse::tests::{err, ok};
    use crate::resolve::parse::{parse_documents, Activation};
    use serde_json::json;

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
    fn locates_nested_yaml_keys() {
        let text = "a:\n  b:\n    c: 1\n  d: 2\nlist:\n  - name: x\n    port: 1\n";
        assert_eq!(locate_yaml_key(text, "a.b.c"), Some(3));
        assert_eq!(locate_yaml_key(text, "a.d"), Some(4));
        assert_eq!(locate_yaml_key(text, "list[0].port"), Some(7));
        assert_eq!(locate_yaml_key(text, "zzz"), None);
    }
}
