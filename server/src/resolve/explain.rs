//! Where each value of a resolved pair comes from, for the console's pair page
//! (ARCHITECTURE.md §10): per flat key, the value served, the file and line that set it,
//! the placeholder it was written as, and what it overrode in a lower file. Built from
//! the resolution's own property sources, so it cannot disagree with what is served.

use serde_json::Value;

use super::{flatten, Resolved};

/// One document's say on a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    /// The file, with its document number when it has several (Spring's source name).
    pub(crate) source: String,
    pub(crate) line: Option<u64>,
    /// As written there (placeholders unresolved); `None` when it was a `{cipher}` value.
    pub(crate) written: Option<Value>,
}

/// One flat key of a resolved pair.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Explained {
    /// `a.b.c`, `list[0]`.
    pub(crate) key: String,
    /// What is served; `None` for a decrypted `{cipher}` value, which is never shown.
    pub(crate) value: Option<Value>,
    /// The expression it was written as, when that differs (`${db.host}:5432`).
    pub(crate) expression: Option<String>,
    /// The document that set it: the highest one with the key.
    pub(crate) from: Option<Origin>,
    /// The next one down with the key: the value this one overrode.
    pub(crate) overrode: Option<Origin>,
}

/// Every leaf of `resolved`, in key order (cached: [`Resolved::explained`]).
pub(crate) fn explain(resolved: &Resolved) -> Vec<Explained> {
    let written: std::collections::HashMap<String, &Value> =
        flatten(&resolved.merged).into_iter().collect();
    flatten(&resolved.values)
        .into_iter()
        .map(|(key, value)| {
            let mut said = resolved.sources.iter().filter_map(|(file, doc)| {
                let document = file.documents.get(*doc)?;
                let (_, v) = document.entries.iter().find(|(k, _)| *k == key)?;
                let secret = file.secret_keys.contains(&key);
                Some((
                    Origin {
                        source: file.source_name(*doc),
                        line: file.line_in(*doc, &key),
                        written: (!secret).then(|| v.clone()),
                    },
                    secret,
                ))
            });
            let first = said.next();
            // The resolution's own set: a value built from a secret by a placeholder
            // (`url: ${db.password}@…`) is as secret as the `{cipher}` value itself.
            let secret = resolved.secret_keys.contains(&key)
                || first.as_ref().is_some_and(|(_, secret)| *secret);
            let overrode = said.next().map(|(origin, _)| origin);
            let expression = match written.get(&key) {
                Some(w) if !secret && *w != value => w.as_str().map(str::to_string),
                _ => None,
            };
            Explained {
                value: (!secret).then(|| value.clone()),
                expression,
                from: first.map(|(origin, _)| origin),
                overrode,
                key,
            }
        })
        .collect()
}
