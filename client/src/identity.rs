//! Who this client says it is (ARCHITECTURE.md §6.2): the instance id and labels sent on
//! every `subscribe` frame and in the `X-Confhub-Instance` / `X-Confhub-Labels` headers
//! of every HTTP fetch, so the server can show which instance holds which config and
//! rollouts can pick instances.

use crate::wire::instance::{check_instance_id, parse_labels, Labels, MAX_INSTANCE_BYTES};
use crate::wire::names::NameError;

/// Environment variable naming the instance (beats `HOSTNAME`; the builder beats both).
pub const INSTANCE_ENV: &str = "CONFHUB_INSTANCE";

/// Environment variable with the instance's labels, `zone=eu-1a,canary=true`; labels set
/// on the builder win over the same keys here.
pub const LABELS_ENV: &str = "CONFHUB_LABELS";

/// An instance id and its labels, checked by the server's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) labels: Labels,
    /// `labels` in the header's form, made once.
    pub(crate) labels_header: String,
}

impl Identity {
    /// The id set on the builder, else `CONFHUB_INSTANCE`, else the default; labels from
    /// `CONFHUB_LABELS` with the builder's on top. A bad explicit id or label is an
    /// error naming where it came from; the default id is made valid.
    pub(crate) fn resolve(id: Option<String>, labels: Labels) -> Result<Identity, String> {
        let id = match id {
            Some(id) => check_instance_id(&id)
                .map(|()| id)
                .map_err(|e| format!("instance id: {e}"))?,
            None => match std::env::var(INSTANCE_ENV) {
                Ok(id) => check_instance_id(&id)
                    .map(|()| id)
                    .map_err(|e| format!("{INSTANCE_ENV}: {e}"))?,
                Err(_) => default_id(),
            },
        };
        let mut all = match std::env::var(LABELS_ENV) {
            Ok(text) => parse_labels(&text).map_err(|e| format!("{LABELS_ENV}: {e}"))?,
            Err(_) => Labels::new(),
        };
        all.extend(labels);
        crate::wire::instance::check_labels(&all).map_err(|e: NameError| e.to_string())?;
        let labels_header = crate::wire::instance::format_labels(&all);
        Ok(Identity {
            id,
            labels: all,
            labels_header,
        })
    }
}

/// The pod name (`HOSTNAME`, which Kubernetes sets to it), else the host name and the
/// process id: stable for a pod's life, distinct for two processes on one host.
fn default_id() -> String {
    if let Some(pod) = std::env::var("HOSTNAME")
        .ok()
        .map(|h| sanitized(&h))
        .filter(|h| check_instance_id(h).is_ok())
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| sanitized(h.trim()))
        .unwrap_or_default();
    let host = if host.is_empty() {
        "host".to_string()
    } else {
        host
    };
    let pid = std::process::id();
    let room = MAX_INSTANCE_BYTES - 11; // `-` and a u32
    format!("{}-{pid}", &host[..host.len().min(room)])
}

/// `name` with every character an id may not hold replaced by `-`, and a letter or digit
/// first.
fn sanitized(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.remove(0);
    }
    out.truncate(MAX_INSTANCE_BYTES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ids_are_checked_and_defaults_are_valid() {
        let id = Identity::resolve(Some("orders-7f9c".into()), Labels::new()).expect("valid");
        assert_eq!(id.id, "orders-7f9c");
        let e = Identity::resolve(Some("bad id".into()), Labels::new()).expect_err("space");
        assert!(e.contains("instance id"), "{e}");
        check_instance_id(&default_id()).expect("the default id is valid");
        assert_eq!(sanitized("-my host!"), "my-host-");
        let labels = Labels::from([("zone".to_string(), "eu 1".to_string())]);
        assert!(Identity::resolve(Some("a".into()), labels).is_err());
    }
}
