//! Who a client is (ARCHITECTURE.md §6.2): an instance id and labels, sent on every
//! `subscribe` frame and, over HTTP, in two headers. One grammar for both sides: the
//! client crate refuses a bad id or label when it is built, the server refuses the same
//! ones (with this error) on every request, so nothing a client sends can grow the
//! server's instance table past its bounds or forge a line in its logs.

use std::collections::BTreeMap;

use super::names::{shown_at_most, NameError};

/// Header naming the instance on HTTP requests.
pub const INSTANCE_HEADER: &str = "x-confhub-instance";

/// Header carrying the instance's labels on HTTP requests: `zone=eu-1a,canary=true`.
pub const LABELS_HEADER: &str = "x-confhub-labels";

/// Longest instance id, in bytes (a DNS name: Kubernetes pod names fit).
pub const MAX_INSTANCE_BYTES: usize = 253;

/// Most labels one instance may carry.
pub const MAX_INSTANCE_LABELS: usize = 32;

/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 63;

/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// An instance's labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

fn refused(what: &'static str, value: &str, reason: &'static str) -> NameError {
    NameError {
        what,
        shown: shown_at_most(value, 64),
        reason,
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')
}

/// An instance id: 1 to 253 bytes of `[A-Za-z0-9._:-]`, starting with a letter or digit
/// (a pod name, a host name, `host-1234`).
pub fn check_instance_id(id: &str) -> Result<(), NameError> {
    let err = |reason| refused("instance id", id, reason);
    let first = id.chars().next().ok_or_else(|| err("empty"))?;
    if id.len() > MAX_INSTANCE_BYTES {
        return Err(err("longer than 253 bytes"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(err("must start with a letter or digit"));
    }
    if !id.chars().all(is_id_char) {
        return Err(err("only letters, digits and . _ : - are allowed"));
    }
    Ok(())
}

/// One label: a key of 1 to 63 bytes of `[A-Za-z0-9._/-]` starting with a letter or
/// digit, and a value of at most 128 bytes of `[A-Za-z0-9._:/@+-]` (empty allowed).
pub fn check_label(key: &str, value: &str) -> Result<(), NameError> {
    let key_err = |reason| refused("label key", key, reason);
    let first = key.chars().next().ok_or_else(|| key_err("empty"))?;
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(key_err("longer than 63 bytes"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(key_err("must start with a letter or digit"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
    {
        return Err(key_err("only letters, digits and . _ / - are allowed"));
    }
    let value_err = |reason| refused("label value", value, reason);
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(value_err("longer than 128 bytes"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '+' | '-'))
    {
        return Err(value_err(
            "only letters, digits and . _ : / @ + - are allowed",
        ));
    }
    Ok(())
}

/// Every label of a set, and their number.
pub fn check_labels(labels: &Labels) -> Result<(), NameError> {
    if labels.len() > MAX_INSTANCE_LABELS {
        return Err(too_many_labels(labels.len()));
    }
    labels.iter().try_for_each(|(k, v)| check_label(k, v))
}

fn too_many_labels(n: usize) -> NameError {
    NameError {
        what: "labels",
        shown: format!("{n} labels"),
        reason: "an instance may carry at most 32 labels",
    }
}

/// Labels written as `zone=eu-1a,canary=true` (the header's form, and
/// `CONFHUB_LABELS`); spaces around items are ignored; empty means none. A key given twice
/// is refused: which one was meant cannot be known.
pub fn parse_labels(text: &str) -> Result<Labels, NameError> {
    let mut labels = Labels::new();
    let items = text.split(',').map(str::trim).filter(|i| !i.is_empty());
    for (n, item) in items.enumerate() {
        if n >= MAX_INSTANCE_LABELS {
            return Err(too_many_labels(text.split(',').count()));
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| refused("label", item, "must be written key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        check_label(key, value)?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(refused("label key", key, "given twice"));
        }
    }
    Ok(labels)
}

/// Labels in the form [`parse_labels`] reads.
pub fn format_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["orders-7f9c", "host.example.com-1234", "a", "pod:1"] {
            check_instance_id(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = "a".repeat(254);
        for bad in ["", "-x", "a b", "a\nb", "ü", long.as_str(), "a/b"] {
            assert!(check_instance_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_round_trip_and_bounds() {
        let labels = parse_labels(" zone=eu-1a , canary=true,version=1.4.2 ").expect("parses");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["zone"], "eu-1a");
        assert_eq!(
            parse_labels(&format_labels(&labels)).expect("again"),
            labels
        );
        assert!(parse_labels("").expect("empty").is_empty());
        assert!(parse_labels("zone").is_err());
        assert!(parse_labels("zone=a,zone=b").is_err());
        assert!(parse_labels("zone=a b").is_err());
        assert!(parse_labels("zo ne=a").is_err());
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let e = parse_labels(&many.join(",")).expect_err("33 labels");
        assert!(e.to_string().contains("at most 32"), "{e}");
        assert!(check_label("k", &"v".repeat(129)).is_err());
        assert!(check_label(&"k".repeat(64), "v").is_err());
        let bad = parse_labels("k=\u{1b}[2J").expect_err("escape");
        assert!(!bad.to_string().contains('\u{1b}'), "{bad}");
    }
}
