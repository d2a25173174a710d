//! Java `.properties` files as Spring Boot reads them: documents, continuations,
//! escapes, `key[]` lists, and finding a key's line.

use std::collections::HashMap;

use serde_json::Value;

use super::{ParseResult, RawDocs, MAX_DEPTH};
use crate::resolve::keys;

/// Java `.properties`, read as Spring Boot's `OriginTrackedPropertiesLoader` reads it:
/// `key=value`, `key: value` or `key value`; `#`/`!` comments; `\` line continuations
/// and escapes; `#---` or `!---` alone on a line starts a new document (unless the line
/// before is a comment with the same prefix); `key[]=a,b` is `key[0]=a`, `key[1]=b`; a
/// key set twice keeps its last value.
pub(super) fn parse(text: &str, warnings: &mut Vec<(String, Option<u64>)>) -> ParseResult {
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
    use crate::resolve::parse::parse_documents;
    use crate::resolve::parse::tests::ok;
    use serde_json::{json, Map, Value};

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
}
