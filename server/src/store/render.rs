//! Text forms of a resolved config: YAML, `.properties`, dotenv and Spring's flat keys.
//! Called once per (commit, pair, format); responses then reuse the bytes.

use serde_json::Value;

use crate::resolve::flatten;
use crate::resolve::keys::{nest_ordered, Node};

/// Nested YAML.
pub(crate) fn yaml(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}\n".to_string(),
        // Serializing a JSON value to YAML cannot fail.
        _ => serde_yaml::to_string(v).unwrap_or_default(),
    }
}

/// Plain text of a scalar: strings raw, null empty (as Spring flattens it).
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn escape_properties(s: &str, is_key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '=' | ':' | '#' | '!' if is_key => {
                out.push('\\');
                out.push(c);
            }
            ' ' if is_key || i == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// Java `.properties` lines, `key{sep}value` (`=` natively, `: ` in Spring's form).
pub(crate) fn properties(v: &Value, sep: &str) -> String {
    let mut out = String::new();
    for (k, v) in flatten(v) {
        out.push_str(&escape_properties(&k, true));
        out.push_str(sep);
        out.push_str(&escape_properties(&scalar_text(v), false));
        out.push('\n');
    }
    out
}

/// `a.b-c[0]` → `A_B_C_0`.
pub(crate) fn env_key(flat: &str) -> String {
    let mut out = String::with_capacity(flat.len());
    for c in flat.chars() {
        match c {
            '.' | '-' | '[' => out.push('_'),
            ']' => {}
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c.to_ascii_uppercase()),
            _ => out.push('_'),
        }
    }
    out
}

/// dotenv lines: `DB_POOL=60`; values quoted when they hold anything a shell or a
/// dotenv parser would treat specially.
pub(crate) fn dotenv(v: &Value) -> String {
    let mut out = String::new();
    for (k, v) in flatten(v) {
        let text = scalar_text(v);
        out.push_str(&env_key(&k));
        out.push('=');
        let plain = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.,/:@+%".contains(c));
        if plain {
            out.push_str(&text);
        } else {
            out.push('"');
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '$' => out.push_str("\\$"),
                    '`' => out.push_str("\\`"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('\n');
    }
    out
}

/// Spring's `.properties` form (`EnvironmentController.getPropertiesString`): one
/// `key: value` line a key, written as they are, lines joined by `\n` with none after
/// the last.
pub(crate) fn spring_properties(entries: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (k, v) in entries {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(k);
        out.push_str(": ");
        out.push_str(&scalar_text(v));
    }
    out
}

/// Spring's `.json` form: the flat keys nested as Spring Cloud Config nests them, in order.
pub(crate) fn spring_json(entries: &[(String, Value)]) -> String {
    // A tree of JSON values always serializes.
    serde_json::to_string(&nest_ordered(entries)).unwrap_or_default()
}

/// Spring's `.yml` form: the flat keys nested as Spring Cloud Config nests them, in
/// order, block style. Strings a YAML 1.1 reader (SnakeYAML, which Spring uses) would
/// take for something else (`NO`, `on`, `2024-01-01`, `010`) are quoted.
pub(crate) fn spring_yaml(entries: &[(String, Value)]) -> String {
    let tree = nest_ordered(entries);
    let mut out = String::new();
    match &tree {
        Node::Map(m) if m.is_empty() => out.push_str("{}\n"),
        _ => emit_block(&tree, 0, &mut out),
    }
    out
}

fn emit_block(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&yaml_scalar(&Value::String(k.clone())));
                out.push(':');
                emit_value(v, indent, out);
            }
        }
        Node::List(l) => {
            for v in l {
                out.push_str(&pad);
                out.push('-');
                match v {
                    // A map in a list starts on the dash's line, as SnakeYAML writes it.
                    Node::Map(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        emit_block(v, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    Node::List(l) if !l.is_empty() => {
                        out.push('\n');
                        emit_block(v, indent + 2, out);
                    }
                    _ => emit_value(v, indent, out),
                }
            }
        }
        Node::Leaf(v) => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(v));
            out.push('\n');
        }
    }
}

/// What follows `key:` (or `-`): an inline scalar or empty collection, or a block below.
fn emit_value(v: &Node, indent: usize, out: &mut String) {
    match v {
        Node::Map(m) if m.is_empty() => out.push_str(" {}\n"),
        Node::List(l) if l.is_empty() => out.push_str(" []\n"),
        Node::Map(_) => {
            out.push('\n');
            emit_block(v, indent + 2, out);
        }
        // SnakeYAML's block style puts a map's list at the key's own indentation.
        Node::List(_) => {
            out.push('\n');
            emit_block(v, indent, out);
        }
        Node::Leaf(s) => {
            out.push(' ');
            out.push_str(&yaml_scalar(s));
            out.push('\n');
        }
    }
}

/// A scalar as YAML text, quoted unless every YAML reader (1.1 or 1.2) reads it back as
/// the same string.
pub(crate) fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            if plain_is_safe(s) {
                s.clone()
            } else if s.chars().all(|c| !c.is_control()) {
                format!("'{}'", s.replace('\'', "''"))
            } else {
                // JSON string escapes are valid in a YAML double-quoted scalar.
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// YAML 1.1 words for booleans and null (SnakeYAML's resolver).
const YAML11_WORDS: [&str; 25] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if YAML11_WORDS.contains(&s) || s == "~" || s == "<<" || s == "=" {
        return false;
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(char::is_control) {
        return false;
    }
    // Numbers, dates, times and sexagesimals all start like a number: quote anything
    // that does and is made of number-ish characters only.
    let numberish_start = first.is_ascii_digit()
        || (matches!(first, '+' | '-' | '.')
            && s[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.'));
    let numberish_body = s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || "xXoO_.:+-tTzZ ".contains(c));
    if numberish_start && numberish_body {
        return false;
    }
    // `.inf`, `.nan` and friends.
    if s.starts_with('.') && matches!(s[1..].to_ascii_lowercase().as_str(), "inf" | "nan") {
        return false;
    }
    if matches!(
        s.to_ascii_lowercase().trim_start_matches(['+', '-']),
        ".inf"
    ) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_flatten_lists_and_escape() {
        let v = json!({"db": {"pool": 60, "url": "a=b"}, "features": ["x", "y"], "n": null, "k:e y": "  lead"});
        assert_eq!(
            properties(&v, "="),
            "db.pool=60\ndb.url=a=b\nfeatures[0]=x\nfeatures[1]=y\nk\\:e\\ y=\\  lead\nn=\n"
        );
        assert_eq!(properties(&json!({"a": {"b": 1}}), ": "), "a.b: 1\n");
    }

    #[test]
    fn dotenv_upper_cases_and_quotes() {
        let v = json!({"db": {"pool": 60, "url": "pg://h/x"}, "feature-flags": ["a b"], "msg": "say \"hi\" $HOME"});
        assert_eq!(
            dotenv(&v),
            "DB_POOL=60\nDB_URL=pg://h/x\nFEATURE_FLAGS_0=\"a b\"\nMSG=\"say \\\"hi\\\" \\$HOME\"\n"
        );
    }

    #[test]
    fn spring_yaml_quotes_what_yaml_1_1_misreads() {
        let entries: Vec<(String, Value)> = vec![
            ("country".into(), json!("NO")),
            ("flag".into(), json!("on")),
            ("day".into(), json!("2024-01-31")),
            ("octal".into(), json!("0755")),
            ("version".into(), json!("1.10")),
            ("name".into(), json!("orders")),
            ("empty".into(), json!("")),
            ("quote".into(), json!("it's")),
            ("colon".into(), json!("a: b")),
            ("n".into(), json!(5)),
            ("b".into(), json!(true)),
            ("list[0]".into(), json!("yes")),
            ("list[1].k".into(), json!("v")),
            ("logging.level.org.hibernate".into(), json!("INFO")),
            ("logging.level.org.hibernate.SQL".into(), json!("DEBUG")),
        ];
        assert_eq!(
            spring_yaml(&entries),
            "country: 'NO'\nflag: 'on'\nday: '2024-01-31'\noctal: '0755'\nversion: '1.10'\nname: orders\nempty: ''\nquote: it's\ncolon: 'a: b'\n'n': 5\nb: true\nlist:\n- 'yes'\n- k: v\nlogging:\n  level:\n    org:\n      hibernate: INFO\n      hibernate.SQL: DEBUG\n"
        );
        assert_eq!(spring_properties(&entries[..2]), "country: NO\nflag: on");
    }

    #[test]
    fn yaml_round_trips() {
        let v = json!({"a": {"b": [1, "x"]}, "c": true});
        let back: Value = serde_yaml::from_str(&yaml(&v)).unwrap();
        assert_eq!(back, v);
    }
}
