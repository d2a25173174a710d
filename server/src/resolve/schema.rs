//! JSON Schema validation of resolved configs, declared per service in `confhub.yml`
//! (`services: {orders: {schema: schemas/orders.json}}`).

use std::sync::Arc;

use serde_json::Value;

use crate::errors::{ConfigError, ErrorKind};
use crate::resolve::catalog::{Catalog, MANIFEST};
use crate::resolve::keys;
use crate::resolve::{origin_of, Resolved};
use crate::source::View;

fn compile(view: &mut View<'_>, path: &str) -> Result<Arc<jsonschema::Validator>, ConfigError> {
    if let Some(done) = view.schemas.get(path) {
        return done.clone();
    }
    let shown = view.display(path);
    let result = match view.parsed(path) {
        None => Err(ConfigError::new(
            ErrorKind::Manifest,
            format!("schema `{shown}` named in {MANIFEST} does not exist"),
        )
        .in_file(view.display(MANIFEST))),
        Some(Err(e)) => Err(e),
        Some(Ok(file)) => jsonschema::validator_for(&Value::Object(file.values().clone()))
            .map(Arc::new)
            .map_err(|e| {
                ConfigError::new(ErrorKind::Manifest, format!("invalid JSON Schema: {e}"))
                    .in_file(&shown)
            }),
    };
    view.schemas.insert(path.to_string(), result.clone());
    result
}

/// JSON pointer `/db/pool/0` → `db.pool[0]`, reading `values` to tell lists from maps.
fn dotted(pointer: &str, values: &Value) -> String {
    let mut out = String::new();
    let mut cur = Some(values);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match cur {
            Some(Value::Array(a)) => {
                out.push_str(&format!("[{seg}]"));
                cur = seg.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                out = keys::join(&out, &seg);
                cur = other.and_then(|v| v.get(&seg));
            }
        }
    }
    out
}

/// Check `resolved` against the service's schema, if the manifest declares one.
pub fn validate(
    view: &mut View<'_>,
    catalog: &Catalog,
    service: &str,
    resolved: &Resolved,
) -> Result<(), ConfigError> {
    let Some(path) = catalog
        .manifest
        .services
        .get(service)
        .and_then(|s| s.schema.clone())
    else {
        return Ok(());
    };
    let validator = compile(view, &path)?;
    let Some(error) = validator.iter_errors(&resolved.values).next() else {
        return Ok(());
    };
    let key = dotted(error.instance_path().as_str(), &resolved.values);
    let rule = error
        .schema_path()
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let shown_key = if key.is_empty() {
        "(top level)".to_string()
    } else {
        format!("`{key}`")
    };
    // The validator's own message quotes the offending value: it is used only when that
    // value holds no decrypted secret, which is known by key, not by searching the text.
    let detail = if resolved.holds_secret(&key) {
        "the value is secret and not shown".to_string()
    } else {
        error.to_string()
    };
    let mut e = ConfigError::new(
        ErrorKind::Schema,
        format!(
            "key {shown_key} violates schema {} (rule `{rule}`): {detail}",
            view.display(&path)
        ),
    );
    if !key.is_empty() {
        e = e.with_key(&key);
    }
    // Point at the file that set the offending value; a missing required key has none,
    // so fall back to the highest file of the pair.
    let origin = (!key.is_empty())
        .then(|| origin_of(&resolved.layers, &key))
        .flatten();
    if let Some(file) = origin.or_else(|| resolved.layers.first().map(|l| l.as_ref())) {
        e = e.in_file(&file.path).at_line(file.line_of(&key));
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_become_dotted_keys() {
        let v = json!({"db": {"hosts": ["a", {"port": 1}]}, "a/b": 1});
        assert_eq!(dotted("/db/hosts/1/port", &v), "db.hosts[1].port");
        assert_eq!(dotted("/a~1b", &v), "a/b");
        assert_eq!(dotted("", &v), "");
    }
}
