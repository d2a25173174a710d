//! Paths into a config: `db.pool`, `features[0]`, `a.b[1].c`, or a JSON pointer (`/db/pool`).

use serde_json::Value;

/// The value at `path`, if any. The empty path is the whole value.
pub(crate) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return root.pointer(path);
    }
    let mut cur = root;
    if path.is_empty() {
        return Some(cur);
    }
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.as_object()?.get(key)?;
        } else if rest.is_empty() {
            return None; // `a..b` or a trailing dot
        }
        while let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let index: usize = after[..end].parse().ok()?;
            cur = cur.as_array()?.get(index)?;
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(cur)
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
