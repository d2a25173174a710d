//! The naming rules for services, envs and labels (ARCHITECTURE.md §2), one definition
//! for both sides: the server refuses a request that breaks them, so nothing a client
//! sends can walk out of the config directory or reach git's revision syntax, and the
//! client's builder refuses the same names before any request is made.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{shown}`: {reason}")]
pub struct NameError {
    /// Which segment (`service`, `env`, `label`).
    pub what: &'static str,
    /// The name, with control characters escaped.
    pub shown: String,
    /// What rule it broke.
    pub reason: &'static str,
}

/// Most labels one Spring request may name (`main,feature,…`).
pub const MAX_LABELS: usize = 16;

/// Most applications one Spring request may name (`orders,common,…`).
pub const MAX_NAMES: usize = 16;

/// Most environments one request may name (`prod,eu,…`).
pub const MAX_ENVS: usize = 16;

/// Longest label, in bytes (git refuses longer ref names on common file systems).
pub const MAX_LABEL_BYTES: usize = 255;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '@' | '-')
}

/// At most `max` characters of client input, escaped, for echoing it in a message: a
/// 10 KB name is not echoed back whole, and control characters cannot forge log lines.
pub fn shown_at_most(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .collect::<String>()
        .escape_default()
        .to_string();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A refused name as its error shows it: at most 64 characters, escaped.
fn shown(name: &str) -> String {
    shown_at_most(name, 64)
}

fn check_segment(what: &'static str, whole: &str, seg: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        what,
        shown: shown(whole),
        reason,
    };
    let first = seg.chars().next().ok_or_else(|| err("empty name"))?;
    if !first.is_ascii_alphanumeric() {
        return Err(err("must start with a letter or digit"));
    }
    if !seg.chars().all(is_name_char) {
        return Err(err("only letters, digits and . _ + @ - are allowed"));
    }
    if seg.contains("..") {
        return Err(err("`..` is not allowed"));
    }
    Ok(())
}

/// A service or env name: `[A-Za-z0-9][A-Za-z0-9._+@-]*` without `..`.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    check_segment(what, name, name)
}

/// A comma-separated list of at most `max` names, each checked as `what`.
fn parse_list(
    list: &str,
    max: usize,
    list_what: &'static str,
    too_many: &'static str,
    what: &'static str,
) -> Result<Vec<String>, NameError> {
    // Each spelling of a list is resolved and cached on its own: a bound on its length
    // bounds what one caller can make the server compute.
    if list.split(',').count() > max {
        return Err(NameError {
            what: list_what,
            shown: shown(list),
            reason: too_many,
        });
    }
    list.split(',')
        .map(|n| check_name(what, n).map(|()| n.to_string()))
        .collect()
}

/// A comma-separated env list (`prod,eu`); returns the envs in order.
pub fn parse_envs(envs: &str) -> Result<Vec<String>, NameError> {
    parse_list(
        envs,
        MAX_ENVS,
        "env list",
        "names more than 16 environments",
        "env",
    )
}

/// A comma-separated application list (`orders,common`, Spring's form); the names in order.
pub fn parse_names(names: &str) -> Result<Vec<String>, NameError> {
    parse_list(
        names,
        MAX_NAMES,
        "application list",
        "names more than 16 applications",
        "application name",
    )
}

/// A comma-separated label list (`main,feature`, Spring 4.2+); empty parts are skipped,
/// as Spring's `AbstractScmEnvironmentRepository.splitAndReorder` skips them.
pub fn parse_labels(labels: &str) -> Result<Vec<String>, NameError> {
    if labels.split(',').count() > MAX_LABELS {
        return Err(NameError {
            what: "label list",
            shown: shown(labels),
            reason: "names more than 16 labels",
        });
    }
    let parts: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    if parts.is_empty() {
        return parse_label(labels).map(|l| vec![l]);
    }
    parts.into_iter().map(parse_label).collect()
}

/// A label as a request spells it; `(_)` stands for `/` (Spring's convention). Returns
/// the label with `/`, checked by [`check_label`].
pub fn parse_label(label: &str) -> Result<String, NameError> {
    let label = label.replace("(_)", "/");
    check_label(&label)?;
    Ok(label)
}

/// A label written with `/` (`feature/x`): each `/`-separated part is a name, at most
/// [`MAX_LABEL_BYTES`] in all, not ending in `.lock` (git's own ref-name rules).
pub fn check_label(label: &str) -> Result<(), NameError> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(NameError {
            what: "label",
            shown: shown(label),
            reason: "longer than 255 bytes",
        });
    }
    for part in label.split('/') {
        check_segment("label", label, part)?;
    }
    if label.ends_with(".lock") {
        return Err(NameError {
            what: "label",
            shown: shown(label),
            reason: "cannot end in .lock",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_truncates_and_escapes() {
        assert_eq!(shown_at_most("abc", 10), "abc");
        assert_eq!(shown_at_most("a\nb", 10), "a\\nb");
        assert_eq!(shown_at_most("abcdef", 3), "abc…");
    }

    #[test]
    fn accepts_design_names() {
        for n in ["orders", "orders-api", "a.b_c+d@e", "9lives"] {
            assert!(check_name("service", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_characters() {
        for n in [
            "", "..", "a..b", "-x", ".hidden", "a/b", "a\0b", "a b", "a%2Fb", "é",
        ] {
            assert!(check_name("service", n).is_err(), "{n:?}");
        }
    }

    #[test]
    fn labels_take_slashes_in_both_spellings() {
        assert_eq!(parse_label("feature(_)x").as_deref(), Ok("feature/x"));
        assert_eq!(parse_label("feature/x").as_deref(), Ok("feature/x"));
        assert!(parse_label("a/../b").is_err());
        assert!(parse_label("/a").is_err());
        assert!(parse_label("a//b").is_err());
        assert!(parse_label("HEAD~1").is_err());
        assert!(parse_label("main@{1}").is_err());
    }

    #[test]
    fn env_lists_split_on_commas() {
        assert_eq!(
            parse_envs("prod,eu").as_deref().ok(),
            Some(&["prod".to_string(), "eu".to_string()][..])
        );
        assert!(parse_envs("prod,").is_err());
    }
}
