//! `/ui/`: the tracked branch and commit, freshness, and the services × environments
//! matrix, failing pairs first. Only the pairs the viewer may read are shown: a scoped
//! token never sees another service's name.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::{live_page, page_with_status, short, Viewer};
use crate::http::AppState;
use crate::store::snapshot::PairState;
use crate::timefmt::rfc3339_of;

/// A cell's state, shown by a word and a symbol as well as a colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Failing,
    Halted,
    Rollout,
    Ok,
}

impl Cell {
    fn of(slot: &PairState, rollout: Option<&str>) -> Cell {
        if slot.failure.is_some() {
            return Cell::Failing;
        }
        match rollout {
            Some("halted") | Some("broken") => Cell::Halted,
            Some(_) => Cell::Rollout,
            None => Cell::Ok,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Cell::Failing => "failing",
            Cell::Halted => "halted",
            Cell::Rollout => "rollout",
            Cell::Ok => "ok",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Cell::Failing => "✗ failing",
            Cell::Halted => "⏸ rollout halted",
            Cell::Rollout => "◐ rollout",
            Cell::Ok => "✓ ok",
        }
    }
}

/// A cell the viewer may see: its state and how many instances hold the pair.
type Shown = (Cell, usize);

/// The page while no commit is served yet.
pub(super) fn not_ready() -> Response {
    page_with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        "Starting",
        None,
        html! { h1 { "Starting" } p { "No commit is served yet: the repository is being read. This page works once the server is ready." } },
    )
}

pub(super) async fn show(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let Some(store) = state.core.store.get() else {
        return not_ready();
    };
    let snap = store.snapshot();
    let rollouts = store.rollouts();
    let counts = state.core.instances.counts();
    let live = state.core.live_status.get();
    let envs: Vec<&String> = snap.services.environments.iter().collect();
    // Visible services, each with its cells; failing ones first.
    let mut rows: Vec<(Cell, &str, Vec<Option<Shown>>)> = Vec::new();
    for (service, pairs) in &snap.pairs {
        let cells: Vec<Option<Shown>> = envs
            .iter()
            .map(|env| {
                let slot = pairs.get(env.as_str())?;
                snap.may_read(&viewer.principal, service, env).ok()?;
                let rollout = rollouts.on(service, env).map(|r| r.state());
                let n = counts
                    .get(&(service.clone(), env.to_string()))
                    .copied()
                    .unwrap_or(0);
                Some((Cell::of(slot, rollout), n))
            })
            .collect();
        let worst = cells.iter().flatten().map(|(c, _)| *c).min();
        if let Some(worst) = worst {
            rows.push((worst, service, cells));
        }
    }
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let failing = rows
        .iter()
        .flat_map(|(_, _, cells)| cells.iter().flatten())
        .filter(|(c, _)| *c == Cell::Failing)
        .count();
    let body: Markup = html! {
        h1 { "Overview" }
        dl.facts {
            dt { "Branch" } dd { code { (snap.label) } }
            dt { "Commit" } dd { code title=(snap.version) { (short(&snap.version)) } }
            @if let Some(r) = &live.last_refresh {
                dt { "Last refresh" } dd { (rfc3339_of(r.at)) " (" (r.took.as_millis()) " ms)" }
            }
            @if let Some(f) = &live.last_fetch {
                dt { "Last fetch" } dd {
                    (rfc3339_of(f.at))
                    // What the remote answered names the repository: admins see it.
                    @if f.error.is_some() {
                        " " span.state.failing { "✗ failed" }
                        @if viewer.principal.is_admin() { @if let Some(e) = &f.error { ": " (e) } }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p.empty { "No pair this token may read." }
        } @else {
            p {
                (rows.len()) " services"
                @if failing > 0 { ", " span.state.failing { (failing) " failing (each keeps serving its last good config)" } }
            }
            div.matrix-wrap {
                table.matrix {
                    thead { tr { th scope="col" { "Service" } @for env in &envs { th scope="col" { (env) } } } }
                    tbody {
                        @for (_, service, cells) in &rows {
                            tr {
                                th scope="row" { (service) }
                                @for (env, cell) in envs.iter().zip(cells) {
                                    @match cell {
                                        Some((state, n)) => td.(state.class()) {
                                            a href=(format!("/ui/{service}/{env}")) {
                                                span.state { (state.label()) }
                                                span.count { (n) " instances" }
                                            }
                                        },
                                        None => td.none { "—" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    live_page("Overview", &viewer, "*", body)
}
