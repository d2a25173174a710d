//! `/ui/{service}/{env}`: one pair. Its resolved config as a tree, each value with the
//! file and line it came from and what it overrode; the same config in each format;
//! its current error; the instances that hold it. A pair the viewer may not read is the
//! same 404 as one that does not exist, so a scoped token learns no other names.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

use super::{live_page, page_with_status, short, Viewer};
use crate::http::AppState;
use crate::names::check_name;
use crate::resolve::explain::{Explained, Origin};
use crate::resolve::keys;
use crate::store::entry::PairEntry;
use crate::store::render;

/// Shown instead of a decrypted `{cipher}` value.
pub(super) const MASK: &str = "•••••• ({cipher} value)";

fn not_found(viewer: &Viewer) -> Response {
    page_with_status(
        StatusCode::NOT_FOUND,
        "Not found",
        Some(viewer),
        html! {
            h1 { "Not found" }
            p { "No such pair, or not one this token may read." }
            p { a href="/ui/" { "Back to the overview" } }
        },
    )
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((service, env)): Path<(String, String)>,
) -> Response {
    if check_name("service", &service).is_err() || check_name("env", &env).is_err() {
        return not_found(&viewer);
    }
    let Some(store) = state.core.store.get() else {
        return super::overview::not_ready();
    };
    let snap = store.snapshot();
    let Some(slot) = snap.pair(&service, &env) else {
        return not_found(&viewer);
    };
    if snap.may_read(&viewer.principal, &service, &env).is_err() {
        return not_found(&viewer);
    }
    let pair = (service.clone(), env.clone());
    let instances = state.core.instances.list(|p| *p == pair, false);
    let rollout = store
        .rollouts()
        .on(&service, &env)
        .map(|r| (r.name.clone(), r.state()));
    let body = html! {
        nav.crumbs { a href="/ui/" { "Overview" } " / " (service) " / " (env) }
        h1 { (service) " " span.env { (env) } }
        @if let Some((name, state)) = &rollout {
            p.state.rollout { "◐ rollout " strong { (name) } " (" (state) ")" }
        }
        @if let Some(failure) = &slot.failure {
            @let e = failure.error.to_body();
            section.error #error role="alert" {
                h2 { "✗ Fails to resolve at " code { (short(&failure.version)) } }
                p.message { (e.message) }
                dl.facts {
                    @if let Some(file) = &e.file { dt { "File" } dd { code { (file) @if let Some(line) = e.line { ":" (line) } } } }
                    @if let Some(key) = &e.key { dt { "Key" } dd { code { (key) } } }
                    dt { "Since" } dd { code { (short(&failure.version)) } }
                }
                @if let Some(entry) = &slot.entry {
                    p { "The last good config, at " code { (short(&entry.version)) } ", is still served; it is shown below." }
                }
            }
        }
        @match &slot.entry {
            Some(entry) => (entry_sections(entry)),
            None => p.empty { "No config of this pair has resolved yet." },
        }
        (instances_section(&instances))
    };
    live_page(
        &format!("{service}/{env}"),
        &viewer,
        &format!("{service}/{env}"),
        body,
    )
}

fn entry_sections(entry: &PairEntry) -> Markup {
    let explained = entry.resolved.explained();
    let by_key: HashMap<&str, &Explained> = explained.iter().map(|e| (e.key.as_str(), e)).collect();
    let masked = masked_values(&entry.resolved.values, explained);
    let formats = [
        (
            "json",
            "JSON",
            serde_json::to_string_pretty(&masked).unwrap_or_default(),
        ),
        ("yaml", "YAML", render::yaml(&masked)),
        ("properties", "Properties", render::properties(&masked, "=")),
        ("env", "env", render::dotenv(&masked)),
    ];
    html! {
        dl.facts {
            dt { "Version" } dd { code title=(entry.version) { (short(&entry.version)) } }
            dt { "Digest" } dd { code title=(entry.resolved.digest) { (short(&entry.resolved.digest)) } }
            dt { "Files" } dd {
                @for (i, file) in entry.resolved.layers.iter().enumerate() {
                    @if i > 0 { " › " }
                    code { (file.path) }
                }
                " (highest first)"
            }
        }
        section #config {
            h2 { "Config" }
            @if by_key.is_empty() {
                p.empty { "No keys." }
            } @else {
                div.tree { (tree("", &entry.resolved.values, &by_key)) }
            }
        }
        section #formats {
            h2 { "Formats" }
            @for (id, name, text) in &formats {
                details.format {
                    summary { (name) }
                    button.copy type="button" data-copy=(format!("format-{id}")) { "Copy" }
                    pre #(format!("format-{id}")) { (text) }
                }
            }
        }
    }
}

/// The values with every `{cipher}` value replaced by the mask.
fn masked_values(values: &Value, explained: &[Explained]) -> Value {
    let mut out = values.clone();
    for e in explained.iter().filter(|e| e.value.is_none()) {
        if let Some(slot) = pointer_of(&mut out, &e.key) {
            *slot = Value::String(MASK.to_string());
        }
    }
    out
}

/// The value at flat key `key` (`a.b[0]`).
fn pointer_of<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    let mut at = v;
    for seg in keys::split(key)? {
        at = match seg {
            keys::Seg::Key(k) => at.as_object_mut()?.get_mut(k)?,
            keys::Seg::Index(i) => at.as_array_mut()?.get_mut(i)?,
        };
    }
    Some(at)
}

fn tree(prefix: &str, v: &Value, by_key: &HashMap<&str, &Explained>) -> Markup {
    match v {
        Value::Object(map) => html! {
            ul {
                @for (k, child) in map {
                    @let key = keys::join(prefix, k);
                    (node(k, &key, child, by_key))
                }
            }
        },
        Value::Array(items) => html! {
            ul {
                @for (i, child) in items.iter().enumerate() {
                    @let key = keys::index(prefix, i);
                    (node(&format!("[{i}]"), &key, child, by_key))
                }
            }
        },
        _ => html! {},
    }
}

fn node(name: &str, key: &str, v: &Value, by_key: &HashMap<&str, &Explained>) -> Markup {
    match v {
        Value::Object(_) | Value::Array(_) => html! {
            li.branch {
                details open {
                    summary { span.key { (name) } }
                    (tree(key, v, by_key))
                }
            }
        },
        leaf => {
            let e = by_key.get(key);
            html! {
                li.leaf data-key=(key) {
                    span.key { (name) }
                    " "
                    @match e.and_then(|e| e.value.as_ref()) {
                        Some(value) => span.value { (scalar(value)) },
                        None if e.is_some() => span.value.masked { (MASK) },
                        None => span.value { (scalar(leaf)) },
                    }
                    @if let Some(expr) = e.and_then(|e| e.expression.as_ref()) {
                        " " span.expr title="as written" { (expr) }
                    }
                    @if let Some(from) = e.and_then(|e| e.from.as_ref()) {
                        " " span.origin { (origin_text(from)) }
                    }
                    @if let Some(below) = e.and_then(|e| e.overrode.as_ref()) {
                        details.overrode {
                            summary { "overrides" }
                            span.value {
                                @match &below.written { Some(w) => (scalar(w)), None => (MASK) }
                            }
                            " from " span.origin { (origin_text(below)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn origin_text(o: &Origin) -> String {
    match o.line {
        Some(line) => format!("{}:{line}", o.source),
        None => o.source.clone(),
    }
}

pub(super) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn instances_section(instances: &[confhub_client::wire::InstanceInfo]) -> Markup {
    html! {
        section #instances {
            h2 { "Instances (" (instances.len()) ")" }
            @if instances.is_empty() {
                p.empty { "No instance holds this pair now." }
            } @else {
                table.instances {
                    thead { tr {
                        th scope="col" { "Instance" } th scope="col" { "Labels" } th scope="col" { "Version" }
                        th scope="col" { "State" } th scope="col" { "Rollout" } th scope="col" { "Transport" } th scope="col" { "Last seen" }
                    } }
                    tbody {
                        @for i in instances {
                            @for p in &i.pairs {
                                tr {
                                    td { code { (i.id) } @if i.anonymous { " (anonymous)" } }
                                    td { @for (k, v) in &i.labels { span.label { (k) "=" (v) } " " } }
                                    td { @if let Some(v) = &p.version { code title=(v) { (short(v)) } } }
                                    td {
                                        span.state.(p.state) { (match p.state.as_str() { "applied" => "✓ applied", "rejected" => "✗ rejected", _ => "… sent" }) }
                                        @if let Some(e) = &p.error { div.error-text { (e) } }
                                    }
                                    td { @if let Some(r) = &p.rollout { (r) } }
                                    td { (i.transport) }
                                    td { (i.last_seen) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
