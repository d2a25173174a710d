//! `/ui/search?q=`: a key or a value across every pair the viewer may read, with where
//! each comes from. Served from the snapshot's own entries and their cached provenance
//! ([`crate::resolve::Resolved::explained`]): no git and no parsing per keystroke.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;

use super::{page, Viewer};
use crate::http::AppState;

/// Longest query, in bytes; longer ones are cut.
const MAX_QUERY: usize = 200;
/// Most matches listed; the page says when there were more.
const MAX_MATCHES: usize = 500;

#[derive(serde::Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
}

/// One match: where, which key, its value (or the mask), where it was set.
struct Match<'a> {
    service: &'a str,
    env: &'a str,
    key: &'a str,
    value: String,
    origin: String,
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(search): Query<Search>,
) -> Response {
    let Some(store) = state.core.store.get() else {
        return super::overview::not_ready();
    };
    let mut q = search.q.trim().to_string();
    if q.len() > MAX_QUERY {
        let mut end = MAX_QUERY;
        while !q.is_char_boundary(end) {
            end -= 1;
        }
        q.truncate(end);
    }
    let needle = q.to_lowercase();
    let snap = store.snapshot();
    let mut matches: Vec<Match<'_>> = Vec::new();
    let mut more = false;
    if !needle.is_empty() {
        'pairs: for (service, envs) in &snap.pairs {
            for (env, slot) in envs {
                let Some(entry) = &slot.entry else { continue };
                if snap.may_read(&viewer.principal, service, env).is_err() {
                    continue;
                }
                for e in entry.resolved.explained().iter() {
                    let value = e.value.as_ref().map(super::pair::scalar);
                    // A masked value is found by its key only: searching its text would
                    // tell what it is.
                    let hit = e.key.to_lowercase().contains(&needle)
                        || value
                            .as_ref()
                            .is_some_and(|v| v.to_lowercase().contains(&needle));
                    if !hit {
                        continue;
                    }
                    if matches.len() == MAX_MATCHES {
                        more = true;
                        break 'pairs;
                    }
                    matches.push(Match {
                        service,
                        env,
                        key: &e.key,
                        value: value.unwrap_or_else(|| super::pair::MASK.to_string()),
                        origin: e
                            .from
                            .as_ref()
                            .map(super::pair::origin_text)
                            .unwrap_or_default(),
                    });
                }
            }
        }
    }
    let body = html! {
        h1 { "Search" }
        form.search method="get" action="/ui/search" role="search" {
            label for="q" { "Key or value" }
            input #q type="search" name="q" value=(q) placeholder="kafka.bootstrap-servers" autofocus;
            button type="submit" { "Search" }
        }
        @if !needle.is_empty() {
            p { (matches.len()) @if more { "+" } " matches" @if more { " (the first " (MAX_MATCHES) " are shown; narrow the search)" } }
            @if !matches.is_empty() {
                table.results {
                    thead { tr { th scope="col" { "Pair" } th scope="col" { "Key" } th scope="col" { "Value" } th scope="col" { "Set in" } } }
                    tbody {
                        @for m in &matches {
                            tr {
                                td { a href=(format!("/ui/{}/{}", m.service, m.env)) { (m.service) "/" (m.env) } }
                                td { code { (m.key) } }
                                td.value { (m.value) }
                                td.origin { (m.origin) }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Search", Some(&viewer), body)
}
