//! Paths into a config: a dotted key in the grammar of [`crate::wire::keys`] (`db.pool`,
//! `features[0]`, `a.b[1].c`), or a JSON pointer (`/db/pool`).

use serde_json::Value;

use crate::wire::keys::{self, Seg};

/// The value at `path`, if any. The empty path is the whole value.
pub(crate) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return root.pointer(path);
    }
    if path.is_empty() {
        return Some(root);
    }
    keys::split(path)?
        .into_iter()
        .try_fold(root, |cur, seg| match seg {
            Seg::Key(k) => cur.as_object()?.get(k),
            Seg::Index(i) => cur.as_array()?.get(i),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_and_indexed_paths() {
        let v = json!({"db": {"pool": 60, "hosts": ["a", {"name": "b"}]}, "m": [[1, 2]]});
        assert_eq!(lookup(&v, "db.pool"), Some(&json!(60)));
        assert_eq!(lookup(&v, "db.hosts[0]"), Some(&json!("a")));
        assert_eq!(lookup(&v, "db.hosts[1].name"), Some(&json!("b")));
        assert_eq!(lookup(&v, "m[0][1]"), Some(&json!(2)));
        assert_eq!(lookup(&v, ""), Some(&v));
        assert_eq!(lookup(&v, "/db/pool"), Some(&json!(60)));
    }

    #[test]
    fn missing_or_malformed_paths() {
        let v = json!({"db": {"pool": 60, "hosts": ["a"]}});
        for p in [
            "db.size",
            "db.hosts[1]",
            "db.hosts[x]",
            "db.hosts[0",
            "db.pool[0]",
            "db..pool",
            "db.",
            "nope",
            "db.hosts[0]x",
        ] {
            assert_eq!(lookup(&v, p), None, "{p}");
        }
    }
}
