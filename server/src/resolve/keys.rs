//! Spring's model of config: flat keys (`a.b.c`, `a.b[0]`) in file order. Every file is
//! read into flat entries ([`crate::resolve::parse::Document::entries`]); merging happens on them,
//! and nested maps are built only at the end ([`nest`]), so a key that is both a value
//! and a prefix (`logging.level.org.hibernate` and `logging.level.org.hibernate.SQL`) or
//! one written both flat and nested in YAML never fails a pair.

use std::collections::{BTreeMap, HashMap, HashSet};

use indexmap::IndexMap;
use serde_json::{Map, Value};

// The grammar of a key (`a.b[0]`) is the one the client reads keys with.
pub use confhub_client::wire::keys::{child, index, is_under, join, segment_ends, split, Seg};

/// Flat entries, in order.
pub type Entries = Vec<(String, Value)>;

/// Insert `key` into `entries`, keeping the first place of a key set twice and its last
/// value (a Java `LinkedHashMap.put`, which is what Spring's loaders use).
pub fn put(entries: &mut Entries, index: &mut HashMap<String, usize>, key: String, value: Value) {
    match index.get(&key) {
        Some(&i) => entries[i].1 = value,
        None => {
            index.insert(key.clone(), entries.len());
            entries.push((key, value));
        }
    }
}

/// The native merge of flat sources: each higher source's value for a key replaces the
/// lower ones; a scalar, `null` or a list from a higher source replaces whatever lower
/// sources had at and under that key (a list is replaced whole, never merged by index);
/// maps merge key by key. Keys of one source never clear each other, so a source may
/// hold both `a=1` and `a.b=2`.
#[derive(Default)]
pub struct Merge {
    /// key → (first-insertion order, source number, value).
    map: BTreeMap<String, (u64, usize, Value)>,
    seq: u64,
    sources: usize,
    /// Whether any `{}` was set: only then can a new key make one go away.
    empty_maps: bool,
}

impl Merge {
    /// Apply one source above everything applied so far.
    pub fn apply(&mut self, entries: &[(String, Value)]) {
        let src = self.sources;
        self.sources += 1;
        // Lists this source writes: the first write replaces the lower sources' list.
        let mut lists: HashSet<&str> = HashSet::new();
        for (key, value) in entries {
            // The first source has nothing below it to replace.
            let lower = src > 0;
            for (i, b) in key.bytes().enumerate() {
                if b == b'[' && i > 0 && lists.insert(&key[..i]) && lower {
                    self.clear_lower(&key[..i], src);
                }
            }
            match value {
                Value::Object(m) if m.is_empty() => {
                    // An empty map merges into what is there: it adds nothing.
                    if !self.has_under(key) {
                        self.empty_maps = true;
                        self.set(key, src, value.clone());
                    }
                }
                _ => {
                    if value.as_array().is_some_and(Vec::is_empty) {
                        lists.insert(key);
                    }
                    if lower {
                        self.clear_lower(key, src);
                    }
                    self.set(key, src, value.clone());
                }
            }
        }
    }

    fn set(&mut self, key: &str, src: usize, value: Value) {
        let seq = self.seq;
        self.seq += 1;
        match self.map.get_mut(key) {
            Some(slot) => {
                slot.1 = src;
                slot.2 = value;
            }
            None => {
                self.map.insert(key.to_string(), (seq, src, value));
            }
        }
        if !self.empty_maps {
            return;
        }
        // An empty map placeholder under a key that now has content goes away.
        for (i, b) in key.bytes().enumerate() {
            if (b == b'.' || b == b'[') && i > 0 {
                if let Some((_, _, Value::Object(m))) = self.map.get(&key[..i]) {
                    if m.is_empty() {
                        self.map.remove(&key[..i]);
                    }
                }
            }
        }
    }

    fn has_under(&self, key: &str) -> bool {
        self.range_under(key).next().is_some()
    }

    /// Keys at or under `key`: `key` itself, then the `key.…` and `key[…` ranges (each
    /// one contiguous in the sorted map, so sibling keys that merely share the prefix
    /// text, `key2`, are never scanned).
    fn range_under<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let exact = self.map.get_key_value(key).map(|(k, _)| k);
        let under = |sep: char| {
            let start = format!("{key}{sep}");
            self.map
                .range::<str, _>((
                    std::ops::Bound::Included(start.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(k, _)| k)
                .take_while(move |k| k.starts_with(&start))
        };
        exact.into_iter().chain(under('.')).chain(under('['))
    }

    fn clear_lower(&mut self, key: &str, src: usize) {
        let doomed: Vec<String> = self
            .range_under(key)
            .filter(|k| self.map.get(*k).is_some_and(|(_, s, _)| *s != src))
            .cloned()
            .collect();
        for k in doomed {
            self.map.remove(&k);
        }
    }

    /// Drop `key` and everything under it.
    pub fn remove_under(&mut self, key: &str) {
        let doomed: Vec<String> = self.range_under(key).cloned().collect();
        for k in doomed {
            self.map.remove(&k);
        }
    }

    /// The merged entries, in the order keys were first set.
    pub fn into_entries(self) -> Entries {
        let mut all: Vec<(u64, String, Value)> = self
            .map
            .into_iter()
            .map(|(k, (seq, _, v))| (seq, k, v))
            .collect();
        all.sort_by_key(|(seq, _, _)| *seq);
        all.into_iter().map(|(_, k, v)| (k, v)).collect()
    }
}

/// A nested config that keeps key order: what [`nest`] builds.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar or `null`.
    Leaf(Value),
    /// A map, in insertion order.
    Map(IndexMap<String, Node>),
    /// A list.
    List(Vec<Node>),
}

impl Node {
    /// As a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Node::Leaf(v) => v.clone(),
            Node::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
            Node::List(l) => Value::Array(l.iter().map(Node::to_value).collect()),
        }
    }

    /// As a JSON value, without copying.
    pub fn into_value(self) -> Value {
        match self {
            Node::Leaf(v) => v,
            Node::Map(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
            Node::List(l) => Value::Array(l.into_iter().map(Node::into_value).collect()),
        }
    }

    fn is_empty_container(&self) -> bool {
        match self {
            Node::Map(m) => m.is_empty(),
            Node::List(l) => l.is_empty(),
            Node::Leaf(_) => false,
        }
    }
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Node::Leaf(v) => v.serialize(s),
            Node::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Node::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
        }
    }
}

fn node_of(value: &Value) -> Node {
    match value {
        Value::Object(m) if m.is_empty() => Node::Map(IndexMap::new()),
        Value::Array(a) if a.is_empty() => Node::List(Vec::new()),
        other => Node::Leaf(other.clone()),
    }
}

/// Nested maps from flat entries, losing nothing and never failing:
///
/// - `a.b.c` nests as `{"a": {"b": {"c": …}}}` and `a[0]` as a list; list indices that
///   are missing are filled with `null`.
/// - When a key is both a value and a prefix (`org.hibernate: INFO` beside
///   `org.hibernate.SQL: DEBUG`), the value keeps the plain key and every key under it is
///   written whole, dotted, in the map that holds the value:
///   `{"org": {"hibernate": "INFO", "hibernate.SQL": "DEBUG"}}` (the form Spring Cloud
///   Config's own `.yml` and `.json` use), whichever comes first.
/// - A key that is not a well-formed path (`a..b`, `a[x]`) is kept as written at the top.
pub fn nest(entries: &[(String, Value)]) -> Map<String, Value> {
    match nest_ordered(entries).into_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// [`nest`], keeping the order keys come in.
pub fn nest_ordered(entries: &[(String, Value)]) -> Node {
    // Keys holding a value (not an empty map or list, which children simply fill).
    let leaves: HashSet<&str> = entries
        .iter()
        .filter(|(_, v)| !is_empty_container(v))
        .map(|(k, _)| k.as_str())
        .collect();
    let mut root = Node::Map(IndexMap::new());
    for (key, value) in entries {
        let Some(segs) = split(key) else {
            insert_top(&mut root, key, value);
            continue;
        };
        let ends = segment_ends(key, &segs);
        // The shortest proper prefix that holds a value decides where this key goes.
        let clash = (0..segs.len().saturating_sub(1)).find(|&i| leaves.contains(&key[..ends[i]]));
        let placed = match clash {
            None => insert_at(&mut root, &segs, None, value),
            Some(i) => {
                // Written whole in the nearest map above the value.
                let mut parent = i;
                while parent > 0 && matches!(segs[parent], Seg::Index(_)) {
                    parent -= 1;
                }
                let start = if parent == 0 { 0 } else { ends[parent - 1] };
                let literal = key[start..].trim_start_matches('.');
                insert_at(&mut root, &segs[..parent], Some(literal), value)
            }
        };
        if !placed {
            insert_top(&mut root, key, value);
        }
    }
    root
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Largest list index nested into a list: an index is only a few bytes of key text, so
/// a key `l[999999999]` must not allocate a billion nulls.
pub const MAX_LIST_INDEX: usize = 100_000;

/// Walk `path` (creating maps and lists) and set the value there, or, with `literal`,
/// under that key in the map at `path`. False if something in the way is a value (only
/// for input `nest` does not produce) or an index is too large.
fn insert_at(root: &mut Node, path: &[Seg<'_>], literal: Option<&str>, value: &Value) -> bool {
    let mut cur = root;
    let target = path.len() - usize::from(literal.is_none());
    for (i, seg) in path.iter().enumerate().take(target) {
        let next_is_index = literal.is_none() && matches!(path.get(i + 1), Some(Seg::Index(_)));
        let fresh = || {
            if next_is_index {
                Node::List(Vec::new())
            } else {
                Node::Map(IndexMap::new())
            }
        };
        let slot = match (seg, cur) {
            (Seg::Key(k), Node::Map(m)) => m.entry((*k).to_string()).or_insert_with(fresh),
            (Seg::Index(n), Node::List(l)) => match list_slot(l, *n) {
                Some(slot) => slot,
                None => return false,
            },
            _ => return false,
        };
        if slot.is_empty_container() || matches!(slot, Node::Leaf(Value::Null)) {
            *slot = fresh();
        }
        cur = slot;
    }
    let new = node_of(value);
    let slot = match (literal, path.last(), cur) {
        (Some(lit), _, Node::Map(m)) => m.entry(lit.to_string()).or_insert(Node::Leaf(Value::Null)),
        (None, Some(Seg::Key(k)), Node::Map(m)) => {
            m.entry((*k).to_string()).or_insert(Node::Leaf(Value::Null))
        }
        (None, Some(Seg::Index(n)), Node::List(l)) => match list_slot(l, *n) {
            Some(slot) => slot,
            None => return false,
        },
        _ => return false,
    };
    // An empty map or list never erases content already there.
    if !new.is_empty_container() || matches!(slot, Node::Leaf(_)) {
        *slot = new;
    }
    true
}

fn insert_top(root: &mut Node, key: &str, value: &Value) {
    if let Node::Map(m) = root {
        m.insert(key.to_string(), node_of(value));
    }
}

/// Element `n` of `l`, growing it with nulls; `None` past [`MAX_LIST_INDEX`], so a key
/// like `a[999999999]` cannot allocate without bound.
fn list_slot(l: &mut Vec<Node>, n: usize) -> Option<&mut Node> {
    if n > MAX_LIST_INDEX {
        return None;
    }
    while l.len() <= n {
        l.push(Node::Leaf(Value::Null));
    }
    l.get_mut(n)
}
/// Spring Cloud Config's merge for its file forms (`EnvironmentController.convertToProperties`):
/// sources lowest first; a plain key takes the higher value and keeps its first place; the
/// `[…]` keys of one prefix (`list[0]`, `list[1].x`) come from the highest source that has
/// any, as a block, after all plain keys.
pub fn spring_combine<'a>(
    sources_lowest_first: impl Iterator<Item = &'a [(String, Value)]>,
) -> Entries {
    let mut plain: Entries = Vec::new();
    let mut plain_index = HashMap::new();
    let mut arrays: Vec<(String, Entries)> = Vec::new();
    let mut array_index: HashMap<String, usize> = HashMap::new();
    for source in sources_lowest_first {
        let mut current: Vec<(String, Entries)> = Vec::new();
        let mut current_index: HashMap<String, usize> = HashMap::new();
        for (key, value) in source {
            match key.find('[') {
                None => {
                    // A higher plain `p` (an emptied list, `p: ""`) replaces a lower
                    // `p[…]` block. Spring keeps both and then fails to nest them (a
                    // `ClassCastException` in `PropertyNavigator`, so a 500).
                    if let Some(&i) = array_index.get(key.as_str()) {
                        arrays[i].1.clear();
                    }
                    put(&mut plain, &mut plain_index, key.clone(), value.clone())
                }
                Some(i) => {
                    let prefix = &key[..i];
                    let at = *current_index.entry(prefix.to_string()).or_insert_with(|| {
                        current.push((prefix.to_string(), Vec::new()));
                        current.len() - 1
                    });
                    current[at].1.push((key.clone(), value.clone()));
                }
            }
        }
        for (prefix, block) in current {
            // Likewise a list replaces a lower plain value of the same key.
            if plain_index.contains_key(&prefix) && !source.iter().any(|(k, _)| *k == prefix) {
                plain_index.remove(&prefix);
                plain.retain(|(k, _)| *k != prefix);
                plain_index = plain
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), i))
                    .collect();
            }
            match array_index.get(&prefix) {
                Some(&i) => arrays[i].1 = block,
                None => {
                    array_index.insert(prefix.clone(), arrays.len());
                    arrays.push((prefix, block));
                }
            }
        }
    }
    let mut index = plain_index;
    for (_, block) in arrays {
        for (k, v) in block {
            put(&mut plain, &mut index, k, v);
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(pairs: &[(&str, Value)]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_value_and_a_prefix_nest_without_loss() {
        let m = nest(&e(&[
            ("logging.level.org.hibernate", json!("INFO")),
            ("logging.level.org.hibernate.SQL", json!("DEBUG")),
            ("logging.level.root", json!("WARN")),
        ]));
        assert_eq!(
            Value::Object(m),
            json!({"logging": {"level": {"org": {"hibernate": "INFO", "hibernate.SQL": "DEBUG"}, "root": "WARN"}}})
        );
        // The order they come in does not matter.
        let m = nest(&e(&[
            ("a.b.c", json!(1)),
            ("a.b", json!(0)),
            ("l[0]", json!("x")),
            ("l[0].y", json!(2)),
        ]));
        assert_eq!(
            Value::Object(m),
            json!({"a": {"b": 0, "b.c": 1}, "l": ["x"], "l[0].y": 2})
        );
    }

    #[test]
    fn lists_fill_gaps_and_bad_keys_stay_literal() {
        let m = nest(&e(&[
            ("l[1]", json!("b")),
            ("a..b", json!(1)),
            ("x[y]", json!(2)),
        ]));
        assert_eq!(
            Value::Object(m),
            json!({"l": [null, "b"], "a..b": 1, "x[y]": 2})
        );
    }

    #[test]
    fn merge_replaces_lists_whole_and_scalars_clear_lower_maps() {
        let mut m = Merge::default();
        m.apply(&e(&[
            ("features[0]", json!("a")),
            ("features[1]", json!("b")),
            ("db.host", json!("h")),
            ("db.pool", json!(5)),
            ("x.y", json!(1)),
        ]));
        m.apply(&e(&[
            ("features[0]", json!("c")),
            ("db.pool", json!(10)),
            ("x", json!(null)),
            ("db.extra", json!({})),
        ]));
        let out = Value::Object(nest(&m.into_entries()));
        assert_eq!(
            out,
            json!({"features": ["c"], "db": {"host": "h", "pool": 10, "extra": {}}, "x": null})
        );
        let mut m = Merge::default();
        m.apply(&e(&[("features[0]", json!("a"))]));
        m.apply(&e(&[("features", json!([]))]));
        assert_eq!(
            Value::Object(nest(&m.into_entries())),
            json!({"features": []})
        );
    }

    #[test]
    fn spring_combine_takes_arrays_by_prefix_from_the_highest_source() {
        let low = e(&[
            ("a", json!(1)),
            ("l[0]", json!("x")),
            ("l[1]", json!("y")),
            ("b", json!(2)),
        ]);
        let high = e(&[("b", json!(3)), ("l[0]", json!("z")), ("c", json!(4))]);
        let out = spring_combine([low.as_slice(), high.as_slice()].into_iter());
        assert_eq!(
            out,
            e(&[
                ("a", json!(1)),
                ("b", json!(3)),
                ("c", json!(4)),
                ("l[0]", json!("z"))
            ])
        );
    }
}
