//! The dotted-key grammar both sides use to name a value in a config: map keys joined
//! by `.`, list indices as `[n]` suffixes (`db.pool`, `features[0]`, `a.b[1].c`). The
//! server writes keys in it (Spring's flat keys, error locations, diffs) and the client
//! reads them back ([`Config::get`](crate::Config::get)), so both follow this one
//! definition.

/// One step of a key: a map key or a list index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A map key (`db` in `db.pool`).
    Key(&'a str),
    /// A list index (`0` in `hosts[0]`).
    Index(usize),
}

/// Split `a.b[0].c` into segments; `None` if the key is malformed (`a..b`, a trailing
/// `.`, `a[x]`, `a[0`, `a[0]x`, or a key starting with an index).
pub fn split(key: &str) -> Option<Vec<Seg<'_>>> {
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
            let idx: usize = rest.get(1..close)?.parse().ok()?;
            segs.push(Seg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(segs)
}

/// Byte offset in `key` where each of its segments (from [`split`]) ends, so that
/// `&key[..ends[i]]` is the key of the first `i + 1` segments.
pub fn segment_ends(key: &str, segs: &[Seg<'_>]) -> Vec<usize> {
    let mut ends = Vec::with_capacity(segs.len());
    let mut at = 0;
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if at > 0 && key.as_bytes().get(at) == Some(&b'.') {
                    at += 1;
                }
                at += k.len();
            }
            Seg::Index(_) => {
                at = key[at..].find(']').map_or(key.len(), |i| at + i + 1);
            }
        }
        ends.push(at);
    }
    ends
}

/// The key of map key `key` under `prefix`: `prefix.key`, or `key` at the top.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// [`join`] for a key as written in a file, where a key in brackets (`[a.b]`, Spring's
/// way of keeping dots in one key) attaches without a dot: `prefix[a.b]`.
pub fn child(prefix: &str, key: &str) -> String {
    if !prefix.is_empty() && key.starts_with('[') {
        format!("{prefix}{key}")
    } else {
        join(prefix, key)
    }
}

/// The key of element `i` of the list at `prefix`: `prefix[i]`.
pub fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// Is `key` `prefix` itself or a key under it (`prefix.x`, `prefix[0]`)?
pub fn is_under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keys_and_indices() {
        assert_eq!(
            split("a.b[0][2].c"),
            Some(vec![
                Seg::Key("a"),
                Seg::Key("b"),
                Seg::Index(0),
                Seg::Index(2),
                Seg::Key("c")
            ])
        );
        for bad in ["a..b", "a.", "[0]", "a[x]", "a[0", "a[0]x", ""] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_ends_give_each_prefix() {
        let key = "a.bc[1].d";
        let segs = split(key).unwrap_or_default();
        let ends = segment_ends(key, &segs);
        let prefixes: Vec<&str> = ends.iter().map(|&e| &key[..e]).collect();
        assert_eq!(prefixes, ["a", "a.bc", "a.bc[1]", "a.bc[1].d"]);
    }

    #[test]
    fn joins_round_trip_through_split() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "[b]"), "a.[b]");
        assert_eq!(child("a", "[b]"), "a[b]");
        assert_eq!(child("", "[b]"), "[b]");
        assert_eq!(index(&join("db", "hosts"), 3), "db.hosts[3]");
        assert_eq!(
            split(&index(&join("db", "hosts"), 3)),
            Some(vec![Seg::Key("db"), Seg::Key("hosts"), Seg::Index(3)])
        );
        assert!(is_under("a.b", "a") && is_under("a[0]", "a") && is_under("a", "a"));
        assert!(!is_under("ab", "a"));
    }
}
