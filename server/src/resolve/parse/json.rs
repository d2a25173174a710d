//! JSON files: parsed refusing duplicate keys, flattened into Spring's flat keys.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ParseResult;
use crate::resolve::keys;

/// A JSON file: one document.
pub(super) fn parse(text: &str) -> ParseResult {
    let map = parse_json(text)?;
    let mut entries = Vec::new();
    let mut index = HashMap::new();
    flatten_json_into(&Value::Object(map), "", &mut entries, &mut index);
    Ok(vec![((1, text.lines().count().max(1) as u64), entries)])
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

#[cfg(test)]
mod tests {
    use crate::resolve::parse::tests::{err, ok};
    use serde_json::json;

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
}
