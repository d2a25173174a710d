//! `search_path` read as Spring Cloud Config reads `searchPaths`: several comma-separated
//! folders, each may hold `{application}` and `{profile}` placeholders.

use crate::errors::SourceError;

/// Most folders one `search_path` may list.
pub(crate) const MAX_SEARCH_PATHS: usize = 16;
/// Most `/`-separated parts of one folder.
pub(crate) const MAX_SEGMENTS: usize = 8;

/// How the repository's folders are searched for config files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SearchPath {
    /// No search path: the repository root, and `{service}/` folders for a service's own files.
    #[default]
    Root,
    /// One folder without placeholders: it is the config root (its files, and
    /// `{service}/` folders under it), the root of the repository is not read.
    Folder(String),
    /// Spring's layout: the repository root, then each folder (with its placeholders
    /// filled for each application and profile asked), later folders winning.
    Spring(Vec<Pattern>),
}

/// One folder of a Spring search path, as its `/`-separated parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub Vec<Segment>);

/// A part of a folder: literal, or with one placeholder (`{application}`, `cfg-{profile}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matched as written.
    Lit(String),
    /// `pre{var}post`.
    Var {
        /// Text before the placeholder.
        pre: String,
        /// The placeholder.
        var: Var,
        /// Text after it.
        post: String,
    },
}

/// A search path placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{application}`: each application name asked.
    Application,
    /// `{profile}`: each profile asked.
    Profile,
}

/// What a folder's placeholders stood for, when it matched a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captures {
    /// The `{application}` part.
    pub application: Option<String>,
    /// The `{profile}` part.
    pub profile: Option<String>,
}

fn invalid(path: &str, reason: impl Into<String>) -> SourceError {
    SourceError::SearchPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl SearchPath {
    /// Read the `search_path` setting.
    pub fn parse(setting: Option<&str>) -> Result<SearchPath, SourceError> {
        let Some(setting) = setting else {
            return Ok(SearchPath::Root);
        };
        let folders: Vec<&str> = setting
            .split(',')
            .map(|f| f.trim().trim_matches('/'))
            .filter(|f| !f.is_empty())
            .collect();
        if folders.len() > MAX_SEARCH_PATHS {
            return Err(invalid(
                setting,
                format!("lists more than {MAX_SEARCH_PATHS} folders"),
            ));
        }
        let mut patterns = Vec::new();
        for folder in &folders {
            let parts: Vec<&str> = folder.split('/').collect();
            if parts.len() > MAX_SEGMENTS {
                return Err(invalid(
                    folder,
                    format!("has more than {MAX_SEGMENTS} parts"),
                ));
            }
            let mut segments = Vec::new();
            for part in parts {
                segments.push(parse_segment(folder, part)?);
            }
            patterns.push(Pattern(segments));
        }
        Ok(match patterns.as_slice() {
            [] => SearchPath::Root,
            [Pattern(segs)] if segs.iter().all(|s| matches!(s, Segment::Lit(_))) => {
                SearchPath::Folder(folders[0].to_string())
            }
            _ => SearchPath::Spring(patterns),
        })
    }

    /// The literal folder of [`SearchPath::Folder`].
    pub fn folder(&self) -> Option<&str> {
        match self {
            SearchPath::Folder(f) => Some(f),
            _ => None,
        }
    }

    /// The patterns of [`SearchPath::Spring`] (none otherwise).
    pub(crate) fn patterns(&self) -> &[Pattern] {
        match self {
            SearchPath::Spring(p) => p,
            _ => &[],
        }
    }

    /// What `dir` (a folder path relative to the repository root) stands for under the
    /// first pattern it matches; `None` when it matches none.
    pub(crate) fn captures(&self, dir: &str) -> Option<Captures> {
        let parts: Vec<&str> = dir.split('/').collect();
        self.patterns().iter().find_map(|p| p.captures(&parts))
    }

    /// The folders to read for `apps` in `profiles`, in Spring's order (lowest precedence
    /// first): the root (`""`), then each pattern for each profile and application,
    /// each folder once (`AbstractScmAccessor.getSearchLocations`).
    pub(crate) fn locations(&self, apps: &[&str], profiles: &[String]) -> Vec<String> {
        let mut out = vec![String::new()];
        // With no application (only `application*` is read), folders without
        // `{application}` are still read.
        let apps: Vec<Option<&str>> = if apps.is_empty() {
            vec![None]
        } else {
            apps.iter().copied().map(Some).collect()
        };
        for pattern in self.patterns() {
            for profile in profiles {
                for app in &apps {
                    if let Some(dir) = pattern.fill(*app, profile) {
                        if !out.contains(&dir) {
                            out.push(dir);
                        }
                    }
                }
            }
        }
        out
    }
}

fn parse_segment(folder: &str, part: &str) -> Result<Segment, SourceError> {
    if part == "." || part == ".." || part.is_empty() {
        return Err(invalid(folder, "has an empty, `.` or `..` part"));
    }
    if part.contains(['*', '?', '\\']) {
        return Err(invalid(
            folder,
            "has a wildcard (`*`, `?`): confhub reads the folders named, with `{application}` and `{profile}` placeholders, not patterns",
        ));
    }
    let Some(open) = part.find('{') else {
        if part.contains('}') {
            return Err(invalid(folder, "has a `}` without `{`"));
        }
        return Ok(Segment::Lit(part.to_string()));
    };
    let Some(close) = part[open..].find('}').map(|c| open + c) else {
        return Err(invalid(folder, "has a `{` without `}`"));
    };
    let var = match &part[open + 1..close] {
        "application" => Var::Application,
        "profile" => Var::Profile,
        "label" => {
            return Err(invalid(
                folder,
                "uses `{label}`, which confhub does not support in search paths (a label is a branch or tag of the repository)",
            ))
        }
        other => {
            return Err(invalid(
                folder,
                format!("has the unknown placeholder `{{{other}}}` (known: `{{application}}`, `{{profile}}`)"),
            ))
        }
    };
    let (pre, post) = (&part[..open], &part[close + 1..]);
    if post.contains(['{', '}']) || pre.contains('}') {
        return Err(invalid(
            folder,
            "has more than one placeholder in one folder name",
        ));
    }
    Ok(Segment::Var {
        pre: pre.to_string(),
        var,
        post: post.to_string(),
    })
}

impl Pattern {
    fn captures(&self, parts: &[&str]) -> Option<Captures> {
        if parts.len() != self.0.len() {
            return None;
        }
        let mut caps = Captures::default();
        for (seg, part) in self.0.iter().zip(parts) {
            match seg {
                Segment::Lit(l) if l == part => {}
                Segment::Lit(_) => return None,
                Segment::Var { pre, var, post } => {
                    let mid = part
                        .strip_prefix(pre.as_str())?
                        .strip_suffix(post.as_str())
                        .filter(|m| !m.is_empty())?;
                    let slot = match var {
                        Var::Application => &mut caps.application,
                        Var::Profile => &mut caps.profile,
                    };
                    // The same placeholder twice must stand for the same name.
                    if slot.as_deref().is_some_and(|s| s != mid) {
                        return None;
                    }
                    *slot = Some(mid.to_string());
                }
            }
        }
        Some(caps)
    }

    /// Whether a folder `depth` parts deep, named `part` there, can lie on this pattern.
    pub(crate) fn admits(&self, depth: usize, part: &str) -> bool {
        match self.0.get(depth) {
            Some(Segment::Lit(l)) => l == part,
            Some(Segment::Var { pre, post, .. }) => {
                part.len() > pre.len() + post.len()
                    && part.starts_with(pre.as_str())
                    && part.ends_with(post.as_str())
            }
            None => false,
        }
    }

    /// How many parts deep the pattern's folders are.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// The folder for `app` (none: the pattern must not need one) in `profile`.
    fn fill(&self, app: Option<&str>, profile: &str) -> Option<String> {
        let parts: Option<Vec<String>> = self
            .0
            .iter()
            .map(|s| match s {
                Segment::Lit(l) => Some(l.clone()),
                Segment::Var { pre, var, post } => {
                    let v = match var {
                        Var::Application => app?,
                        Var::Profile => profile,
                    };
                    Some(format!("{pre}{v}{post}"))
                }
            })
            .collect();
        // Only folders of the listing are read: a filled name cannot reach elsewhere.
        parts.map(|p| p.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_literal_folder_keeps_its_meaning() {
        assert_eq!(
            SearchPath::parse(Some("/config/")).unwrap(),
            SearchPath::Folder("config".into())
        );
        assert_eq!(SearchPath::parse(Some(" , ")).unwrap(), SearchPath::Root);
    }

    #[test]
    fn placeholders_and_lists_are_spring_patterns() {
        let sp = SearchPath::parse(Some("{application}, shared ,cfg/{profile}-x")).unwrap();
        assert_eq!(sp.patterns().len(), 3);
        let profiles = vec!["prod".to_string(), "eu".to_string()];
        assert_eq!(
            sp.locations(&["orders", "common"], &profiles),
            ["", "orders", "common", "shared", "cfg/prod-x", "cfg/eu-x"]
        );
        assert_eq!(
            sp.locations(&[], &profiles),
            ["", "shared", "cfg/prod-x", "cfg/eu-x"]
        );
        assert_eq!(
            sp.captures("cfg/prod-x"),
            Some(Captures {
                application: None,
                profile: Some("prod".into())
            })
        );
        assert_eq!(sp.captures("cfg/-x"), None);
        assert_eq!(
            sp.captures("orders").and_then(|c| c.application),
            Some("orders".into())
        );
    }

    #[test]
    fn unsupported_forms_are_refused_with_the_reason() {
        for bad in [
            "{label}/x",
            "a/*",
            "{app}",
            "a/../b",
            "{application}{profile}",
        ] {
            let err = SearchPath::parse(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("search_path"), "{bad}: {err}");
        }
    }
}
