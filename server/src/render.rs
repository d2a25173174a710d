//! Text forms of a resolved config: YAML, `.properties`, dotenv and Spring's flat keys.
//! Called once per (commit, pair, format); responses then reuse the bytes.

use serde_json::Value;

use crate::resolve::flatten;

/// Nested YAML.
pub fn yaml(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}\n".to_string(),
        // Serializing a JSON value to YAML cannot fail.
        _ => serde_yaml::to_string(v).unwrap_or_default(),
    }
}

/// Plain text of a scalar: strings raw, null empty (as Spring flattens it).
pub fn scalar_text(v: &Value) -> String {
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
pub fn properties(v: &Value, sep: &str) -> String {
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
pub fn env_key(flat: &str) -> String {
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
pub fn dotenv(v: &Value) -> String {
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
    fn yaml_round_trips() {
        let v = json!({"a": {"b": [1, "x"]}, "c": true});
        let back: Value = serde_yaml::from_str(&yaml(&v)).unwrap();
        assert_eq!(back, v);
    }
}
