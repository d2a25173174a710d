//! Rollouts as `confhub.yml` declares them (ARCHITECTURE.md §2.4), and the one function
//! that says whether an instance is in one. Pure: the candidate configs are resolved by
//! the store ([`crate::store::rollouts`]), which also keeps their state (halted or not).
//!
//! ```yaml
//! rollouts:
//!   - name: orders-bigger-pool          # unique, a name segment
//!     service: orders
//!     envs: [prod]
//!     label: rollout/orders-bigger-pool # branch, tag or sha holding the candidate
//!     to: {percent: 10, instances: [orders-7f9c], labels: {zone: eu-1a}}
//!     halt_on_reject: true              # the default
//! ```
//!
//! A declaration that cannot be read breaks that rollout alone: the tracked config is
//! served as before, and the error is reported under the rollout's name (or its place in
//! the list when it has none).

use std::collections::BTreeMap;

use confhub_client::wire::instance::{check_instance_id, check_label};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::errors::{ConfigError, ErrorKind};
use crate::names::{check_name, parse_label};

/// Rollouts one manifest may declare.
pub const MAX_ROLLOUTS: usize = 64;

/// Instances one selector may name.
pub const MAX_SELECTOR_INSTANCES: usize = 1024;

/// Buckets of the percent hash: a percent is honoured to two decimals.
pub const BUCKETS: u64 = 10_000;

/// One declared rollout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Unique among the manifest's rollouts; a name segment.
    pub name: String,
    /// The service whose config rolls out.
    pub service: String,
    /// The environments it rolls out in.
    pub envs: Vec<String>,
    /// The branch, tag or sha holding the candidate config.
    pub label: String,
    /// Who gets the candidate.
    #[serde(default)]
    pub to: Selector,
    /// Halt at the first instance in the rollout that rejects the candidate.
    #[serde(default = "yes")]
    pub halt_on_reject: bool,
    /// The line of `confhub.yml` it starts on, for errors; not part of what it declares.
    #[serde(skip)]
    pub line: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Who gets a rollout's candidate: the instances named in `instances`, and those that
/// carry every label of `labels` and fall within `percent`. Without `percent`, a selector
/// with `labels` takes every instance that matches them, and one without takes only the
/// named instances.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Share of the instances, 0 to 100, by a stable hash of (rollout name, instance id):
    /// raising it only adds instances.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Instance ids that are in, whatever their hash and labels.
    #[serde(default)]
    pub instances: Vec<String>,
    /// Labels an instance must all carry, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An instance's bucket in rollout `name`: the first eight bytes of
/// `sha256(name + "/" + id)`, big-endian, modulo [`BUCKETS`]. It is in a rollout of
/// `percent` when its bucket is below `percent × 100`, so raising the percent keeps
/// everyone who was in. The same on every server, for every restart.
pub fn bucket(name: &str, id: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"/")
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

impl RolloutSpec {
    /// Does `other` declare the same rollout (wherever in the file it is written)?
    pub fn same_declaration(&self, other: &RolloutSpec) -> bool {
        let unplaced = |s: &RolloutSpec| RolloutSpec {
            line: None,
            ..s.clone()
        };
        unplaced(self) == unplaced(other)
    }

    /// An error about this rollout, at its place in `confhub.yml`.
    pub fn error(&self, message: String) -> ConfigError {
        ConfigError {
            kind: ErrorKind::Manifest,
            file: Some(crate::resolve::catalog::MANIFEST.to_string()),
            line: self.line,
            key: None,
            message,
        }
    }

    /// Is the instance `id`, whose label values `label` gives, in this rollout?
    pub fn selects<'l>(&self, id: &str, label: impl Fn(&str) -> Option<&'l str>) -> bool {
        let to = &self.to;
        if to.instances.iter().any(|i| i == id) {
            return true;
        }
        let threshold = match to.percent {
            // Two decimals: 12.34 % is 1234 buckets of 10,000.
            Some(p) => (p * 100.0).round().clamp(0.0, BUCKETS as f64) as u64,
            None if !to.labels.is_empty() => BUCKETS,
            None => 0,
        };
        threshold > 0
            && to.labels.iter().all(|(k, v)| label(k) == Some(v.as_str()))
            && bucket(&self.name, id) < threshold
    }

    /// The rules a declaration must follow beyond its shape.
    fn check(&self) -> Result<(), String> {
        check_name("rollout name", &self.name).map_err(|e| e.to_string())?;
        check_name("service", &self.service).map_err(|e| e.to_string())?;
        if self.envs.is_empty() {
            return Err("`envs` names no environment".into());
        }
        for env in &self.envs {
            check_name("env", env).map_err(|e| e.to_string())?;
        }
        parse_label(&self.label).map_err(|e| e.to_string())?;
        if let Some(p) = self.to.percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("`to.percent` must be between 0 and 100, not {p}"));
            }
        }
        if self.to.instances.len() > MAX_SELECTOR_INSTANCES {
            return Err(format!(
                "`to.instances` names {} instances; at most {MAX_SELECTOR_INSTANCES}",
                self.to.instances.len()
            ));
        }
        for id in &self.to.instances {
            check_instance_id(id).map_err(|e| format!("`to.instances`: {e}"))?;
        }
        for (k, v) in &self.to.labels {
            check_label(k, v).map_err(|e| format!("`to.labels`: {e}"))?;
        }
        Ok(())
    }
}

/// A declaration that could not be used, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarationError {
    /// The rollout's name, when the declaration has a readable one.
    pub name: Option<String>,
    /// The pairs it names, when readable (its errors are shown with theirs).
    pub pairs: Vec<(String, String)>,
    /// What is wrong, with file and line.
    pub error: ConfigError,
}

/// The line each item of the block list under the top-level `rollouts:` key starts on,
/// in the manifest's text (a flow list has none: its errors point at the key).
pub fn item_lines(text: &str) -> (Option<u64>, Vec<u64>) {
    let mut key_line = None;
    let mut items = Vec::new();
    let mut item_indent = None;
    for (n, line) in text.lines().enumerate() {
        let number = n as u64 + 1;
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if key_line.is_none() {
            if indent == 0 && content.starts_with("rollouts:") {
                key_line = Some(number);
            }
            continue;
        }
        if indent == 0 && !content.starts_with("- ") && content != "-" {
            break; // the next top-level key
        }
        let item = content.starts_with("- ") || content == "-";
        if item && *item_indent.get_or_insert(indent) == indent {
            items.push(number);
        }
    }
    (key_line, items)
}

/// The rollouts a manifest declares: those that can be used, and the errors of the
/// others. Two rollouts on one pair are both refused: which one an instance should get
/// cannot be known. `text` is the manifest's, to point errors at lines.
pub fn parse_rollouts(
    raw: Option<&Value>,
    text: &str,
    file: &str,
) -> (Vec<RolloutSpec>, Vec<DeclarationError>) {
    let mut specs: Vec<RolloutSpec> = Vec::new();
    let mut errors = Vec::new();
    let (key_line, item_lines) = item_lines(text);
    let line_of = |place: &str| {
        let index: Option<usize> = place
            .strip_prefix("rollouts[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|i| i.parse().ok());
        index.and_then(|i| item_lines.get(i).copied()).or(key_line)
    };
    let fail = |name: Option<String>, pairs, place: String, message: String| DeclarationError {
        name,
        pairs,
        error: ConfigError {
            kind: ErrorKind::Manifest,
            file: Some(file.to_string()),
            line: line_of(&place),
            key: Some(place),
            message,
        },
    };
    let items = match raw {
        None | Some(Value::Null) => return (specs, errors),
        Some(Value::Array(items)) => items,
        Some(_) => {
            let e = fail(
                None,
                Vec::new(),
                "rollouts".into(),
                "`rollouts` must be a list".into(),
            );
            return (specs, vec![e]);
        }
    };
    for (i, item) in items.iter().enumerate() {
        let place = format!("rollouts[{i}]");
        let name = item.get("name").and_then(Value::as_str).map(str::to_string);
        let pairs = declared_pairs(item);
        if i >= MAX_ROLLOUTS {
            let message = format!("at most {MAX_ROLLOUTS} rollouts may be declared");
            errors.push(fail(name, pairs, place, message));
            continue;
        }
        let spec = RolloutSpec::deserialize(item)
            .map_err(|e| e.to_string())
            .and_then(|spec| spec.check().map(|()| spec));
        let spec = spec.map(|spec| RolloutSpec {
            line: line_of(&place),
            ..spec
        });
        match spec {
            Ok(spec) if specs.iter().any(|s| s.name == spec.name) => {
                let message = format!("a rollout named `{}` is declared twice", spec.name);
                errors.push(fail(name, pairs, place, message));
            }
            Ok(spec) => specs.push(spec),
            Err(message) => errors.push(fail(name, pairs, place, format!("rollout: {message}"))),
        }
    }
    let (specs, clashes) = refuse_shared_pairs(specs);
    errors.extend(clashes.into_iter().map(|(spec, other)| {
        let message = format!(
            "rollouts `{}` and `{other}` both roll out `{}` in an env they share: an instance could be in both",
            spec.name, spec.service
        );
        let place = format!("rollouts[{}]", items.iter().position(|i| i.get("name").and_then(Value::as_str) == Some(spec.name.as_str())).unwrap_or(0));
        fail(Some(spec.name.clone()), pairs_of(&spec), place, message)
    }));
    (specs, errors)
}

fn pairs_of(spec: &RolloutSpec) -> Vec<(String, String)> {
    spec.envs
        .iter()
        .map(|e| (spec.service.clone(), e.clone()))
        .collect()
}

/// The (service, env) pairs a declaration names, read leniently (for errors).
fn declared_pairs(item: &Value) -> Vec<(String, String)> {
    let Some(service) = item.get("service").and_then(Value::as_str) else {
        return Vec::new();
    };
    item.get("envs")
        .and_then(Value::as_array)
        .map(|envs| {
            envs.iter()
                .filter_map(Value::as_str)
                .take(crate::names::MAX_ENVS)
                .map(|e| (service.to_string(), e.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Keep the rollouts no other rollout shares a pair with; the others, each with the name
/// of one it clashes with.
fn refuse_shared_pairs(specs: Vec<RolloutSpec>) -> (Vec<RolloutSpec>, Vec<(RolloutSpec, String)>) {
    let clash = |a: &RolloutSpec, b: &RolloutSpec| {
        a.name != b.name && a.service == b.service && a.envs.iter().any(|e| b.envs.contains(e))
    };
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for spec in &specs {
        match specs.iter().find(|other| clash(spec, other)) {
            Some(other) => refused.push((spec.clone(), other.name.clone())),
            None => ok.push(spec.clone()),
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(to: Value) -> RolloutSpec {
        let raw = json!([{"name": "r", "service": "orders", "envs": ["prod"], "label": "rollout/r", "to": to}]);
        let (mut specs, errors) = parse_rollouts(Some(&raw), "", "confhub.yml");
        assert!(errors.is_empty(), "{errors:?}");
        specs.remove(0)
    }

    #[test]
    fn the_bucket_is_the_documented_hash() {
        // sha256("r/orders-1"), first 8 bytes big-endian, mod 10,000.
        let digest = Sha256::digest(b"r/orders-1");
        let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 10_000;
        assert_eq!(bucket("r", "orders-1"), n);
    }

    #[test]
    fn raising_the_percent_only_adds_instances() {
        let ids: Vec<String> = (0..2000).map(|i| format!("orders-{i}")).collect();
        let none = |_: &str| None;
        let mut before: Vec<&String> = Vec::new();
        for percent in [0.0, 5.0, 10.0, 50.0, 100.0] {
            let s = spec(json!({"percent": percent}));
            let now: Vec<&String> = ids.iter().filter(|id| s.selects(id, none)).collect();
            assert!(before.iter().all(|id| now.contains(id)), "{percent}");
            let share = now.len() as f64 / ids.len() as f64 * 100.0;
            assert!((share - percent).abs() < 4.0, "{percent}% took {share}%");
            before = now;
        }
    }

    #[test]
    fn labels_instances_and_their_combination() {
        let eu = |k: &str| (k == "zone").then_some("eu-1a");
        let us = |k: &str| (k == "zone").then_some("us-1");
        let s = spec(json!({"labels": {"zone": "eu-1a"}}));
        assert!(s.selects("a", eu) && !s.selects("a", us));
        let s = spec(json!({"instances": ["orders-7f9c"]}));
        assert!(s.selects("orders-7f9c", us) && !s.selects("other", eu));
        let s = spec(json!({}));
        assert!(!s.selects("a", eu), "an empty selector takes nobody");
        let s = spec(json!({"labels": {"zone": "eu-1a"}, "percent": 0}));
        assert!(!s.selects("a", eu));
    }

    #[test]
    fn bad_declarations_are_refused_one_by_one() {
        let raw = json!([
            {"name": "ok", "service": "orders", "envs": ["prod"], "label": "rollout/ok"},
            {"name": "bad-percent", "service": "billing", "envs": ["prod"], "label": "x", "to": {"percent": 150}},
            {"service": "billing", "envs": ["dev"], "label": "x"},
            {"name": "typo", "service": "billing", "envs": ["qa"], "label": "x", "too": {}},
            {"name": "a", "service": "pay", "envs": ["prod", "eu"], "label": "x"},
            {"name": "b", "service": "pay", "envs": ["eu"], "label": "y"},
            {"name": "bad-label", "service": "x", "envs": ["prod"], "label": "a..b"},
            {"name": "ok", "service": "ship", "envs": ["prod"], "label": "z"},
        ]);
        let text = "environments: [prod]\nrollouts:\n  - name: ok\n    service: orders\n  # a comment\n  - name: bad-percent\n    to:\n      - nested: list\n  - service: billing\nother: 1\n";
        let (specs, errors) = parse_rollouts(Some(&raw), text, "confhub.yml");
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["ok"]
        );
        let names: Vec<Option<&str>> = errors.iter().map(|e| e.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("bad-percent"),
                None,
                Some("typo"),
                Some("bad-label"),
                Some("ok"),
                Some("a"),
                Some("b")
            ]
        );
        assert_eq!(errors[0].error.line, Some(6));
        assert_eq!(errors[1].error.line, Some(9));
        assert_eq!(
            errors[2].error.line,
            Some(2),
            "past the items written: the key"
        );
        assert!(
            errors[0].error.message.contains("between 0 and 100"),
            "{:?}",
            errors[0]
        );
        assert!(errors[1].error.message.contains("name"), "{:?}", errors[1]);
        assert_eq!(
            errors[1].pairs,
            [("billing".to_string(), "dev".to_string())]
        );
        assert!(errors[2].error.message.contains("too"), "{:?}", errors[2]);
        assert!(errors[4].error.message.contains("declared twice"));
        assert!(errors[5].error.message.contains("`b`"));
        let (_, errors) = parse_rollouts(Some(&json!({"a": 1})), "", "confhub.yml");
        assert!(errors[0].error.message.contains("must be a list"));
    }
}
