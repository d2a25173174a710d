//! When a document applies: its activation keys (`spring.config.activate.on-profile`,
//! the legacy `spring.profiles`, `on-cloud-platform`) and Spring's profile expressions.

use serde_json::Value;

use super::MAX_DEPTH;
use crate::resolve::keys;

/// When a document applies, from its `spring.config.activate.on-profile` (or legacy
/// `spring.profiles`) key.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// No activation key: every profile.
    Always,
    /// `on-profile`: when any of the expressions matches the requested profiles.
    OnProfile {
        /// The expressions as written (a list, or a comma-separated string).
        written: Vec<String>,
        /// Parsed.
        expressions: Vec<ProfileExpr>,
        /// Set with the legacy `spring.profiles` key.
        legacy: bool,
    },
    /// `spring.config.activate.on-cloud-platform`: confhub runs on no cloud platform a
    /// document could name, so it never applies.
    Never,
}

impl Activation {
    /// Does a document with this activation apply when `profiles` are requested?
    pub fn applies(&self, profiles: &[String]) -> bool {
        match self {
            Activation::Always => true,
            Activation::Never => false,
            Activation::OnProfile { expressions, .. } => {
                expressions.iter().any(|e| e.matches(profiles))
            }
        }
    }
}

/// A Spring profile expression (`prod`, `!prod`, `prod & eu`, `prod | eu`, parentheses),
/// as `org.springframework.core.env.Profiles.of` parses it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileExpr {
    /// A profile name.
    Name(String),
    /// `!e`.
    Not(Box<ProfileExpr>),
    /// `a & b & …`.
    And(Vec<ProfileExpr>),
    /// `a | b | …`.
    Or(Vec<ProfileExpr>),
}

impl ProfileExpr {
    /// Does the expression match when `profiles` are active?
    pub fn matches(&self, profiles: &[String]) -> bool {
        match self {
            ProfileExpr::Name(n) => profiles.iter().any(|p| p == n),
            ProfileExpr::Not(e) => !e.matches(profiles),
            ProfileExpr::And(all) => all.iter().all(|e| e.matches(profiles)),
            ProfileExpr::Or(any) => any.iter().any(|e| e.matches(profiles)),
        }
    }

    /// Parse one expression. Like Spring's `ProfilesParser`, mixing `&` and `|` without
    /// parentheses is malformed.
    pub fn parse(text: &str) -> Result<ProfileExpr, String> {
        let malformed = || format!("malformed profile expression `{text}`");
        let mut tokens = Vec::new();
        let mut name = String::new();
        for c in text.chars() {
            if matches!(c, '(' | ')' | '&' | '|' | '!') || c.is_whitespace() {
                if !name.is_empty() {
                    tokens.push(std::mem::take(&mut name));
                }
                if !c.is_whitespace() {
                    tokens.push(c.to_string());
                }
            } else {
                name.push(c);
            }
        }
        if !name.is_empty() {
            tokens.push(name);
        }
        if tokens.is_empty() {
            return Err(malformed());
        }
        let mut at = 0;
        let expr = parse_or_and(&tokens, &mut at, 0).ok_or_else(malformed)?;
        if at != tokens.len() {
            return Err(malformed());
        }
        Ok(expr)
    }
}

fn parse_or_and(tokens: &[String], at: &mut usize, depth: usize) -> Option<ProfileExpr> {
    // Nesting is bounded by the file size limit; refuse absurd depths before recursing.
    if depth > MAX_DEPTH {
        return None;
    }
    let first = parse_unary(tokens, at, depth)?;
    let mut op: Option<&str> = None;
    let mut items = vec![first];
    while let Some(t) = tokens.get(*at).map(String::as_str) {
        if t != "&" && t != "|" {
            break;
        }
        if op.is_some_and(|o| o != t) {
            return None;
        }
        op = Some(if t == "&" { "&" } else { "|" });
        *at += 1;
        items.push(parse_unary(tokens, at, depth)?);
    }
    Some(match op {
        None => items.pop()?,
        Some("&") => ProfileExpr::And(items),
        Some(_) => ProfileExpr::Or(items),
    })
}

fn parse_unary(tokens: &[String], at: &mut usize, depth: usize) -> Option<ProfileExpr> {
    let t = tokens.get(*at)?.as_str();
    *at += 1;
    match t {
        "!" => Some(ProfileExpr::Not(Box::new(parse_unary(
            tokens,
            at,
            depth + 1,
        )?))),
        "(" => {
            let e = parse_or_and(tokens, at, depth + 1)?;
            (tokens.get(*at).map(String::as_str) == Some(")")).then(|| *at += 1)?;
            Some(e)
        }
        ")" | "&" | "|" => None,
        name => Some(ProfileExpr::Name(name.to_string())),
    }
}

/// Keys that say when a document applies: read, then left out of what is served
/// (Spring strips `spring.profiles` from its file forms; confhub strips these too, in
/// every form but Spring's Environment).
pub const ON_PROFILE: &str = "spring.config.activate.on-profile";
/// The legacy activation key (Spring Boot before 2.4).
pub const LEGACY_PROFILES: &str = "spring.profiles";
/// The cloud-platform activation key.
pub const ON_CLOUD_PLATFORM: &str = "spring.config.activate.on-cloud-platform";

/// Is `key` one of the activation keys (or an item of one)?
pub fn is_activation_key(key: &str) -> bool {
    keys::is_under(key, "spring.config.activate")
        || (keys::is_under(key, LEGACY_PROFILES) && !key.starts_with("spring.profiles."))
}

/// The values of `key` as a profile list: `a` / `a,b` / `key[0]…`.
fn profile_values(entries: &[(String, Value)], key: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut found = false;
    for (k, v) in entries {
        let item = k == key
            || k.strip_prefix(key).is_some_and(|r| {
                r.starts_with('[') && r.ends_with(']') && r[1..r.len() - 1].parse::<usize>().is_ok()
            });
        if !item {
            continue;
        }
        found = true;
        let text = crate::store::render::scalar_text(v);
        out.extend(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    found.then_some(out)
}

/// The activation of a document with `entries`; `line_of` finds a key's line.
pub(super) fn activation_of(
    entries: &[(String, Value)],
    line_of: &dyn Fn(&str) -> u64,
    warnings: &mut Vec<(String, Option<u64>)>,
) -> Result<Activation, (String, Option<u64>)> {
    if entries
        .iter()
        .any(|(k, _)| keys::is_under(k, ON_CLOUD_PLATFORM))
    {
        return Ok(Activation::Never);
    }
    let (written, legacy, line) = match profile_values(entries, ON_PROFILE) {
        Some(w) => (w, false, line_of(ON_PROFILE)),
        None => match profile_values(entries, LEGACY_PROFILES) {
            Some(w) => {
                let line = line_of(LEGACY_PROFILES);
                warnings.push((
                    format!("`{LEGACY_PROFILES}` is deprecated (Spring Boot 2.4 and later refuse it): write `{ON_PROFILE}`"),
                    Some(line),
                ));
                (w, true, line)
            }
            None => return Ok(Activation::Always),
        },
    };
    if written.is_empty() {
        return Ok(Activation::Always);
    }
    let expressions = written
        .iter()
        .map(|w| ProfileExpr::parse(w).map_err(|m| (m, Some(line))))
        .collect::<Result<_, _>>()?;
    Ok(Activation::OnProfile {
        written,
        expressions,
        legacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_expressions_follow_spring() {
        let m = |e: &str, active: &[&str]| {
            let active: Vec<String> = active.iter().map(|s| s.to_string()).collect();
            ProfileExpr::parse(e).unwrap().matches(&active)
        };
        assert!(m("prod", &["prod"]));
        assert!(m("!prod", &["dev"]));
        assert!(!m("!prod", &["prod"]));
        assert!(m("prod & eu", &["eu", "prod"]));
        assert!(!m("prod & eu", &["prod"]));
        assert!(m("prod | eu", &["eu"]));
        assert!(m("(prod & eu) | dev", &["dev"]));
        assert!(m("!(prod & eu)", &["prod"]));
        for bad in ["prod & eu | us", "", "(prod", "prod &", "& prod", "()"] {
            assert!(ProfileExpr::parse(bad).is_err(), "{bad}");
        }
    }
}
