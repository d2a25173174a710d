//! A small web app whose behaviour follows its configuration live.
//!
//! `GET /checkout?items=N&currency=EUR` accepts or refuses an order using
//! `orders.max-items` and `orders.currencies` from confhub. Commit a new value to the
//! config repository and the very next request uses it — no restart, no lock on the
//! request path (`Watched::get` is an atomic pointer load). A commit that does not fit
//! the `Limits` type, or fails the validator (max-items must be positive), is refused:
//! the app keeps its last good limits and `GET /health` shows why.
//!
//! ```sh
//! cargo run -p confhub-server --bin confhub -- serve --repo /path/to/config-repo
//! cargo run --example hot_reload -- --server http://127.0.0.1:8888 --listen 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/checkout?items=120&currency=EUR'
//! ```
//!
//! Flags: `--server URL` (repeatable), `--service` (default `orders`), `--env` (default
//! `prod`), `--token`, `--cache-dir`, `--listen` (default `127.0.0.1:3000`).

mod common;

use clap::Parser;
use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use confhub_client::Watched;
use serde::Deserialize;
use serde_json::json;

/// The part of the config this app uses: `orders.max-items` and `orders.currencies`.
#[derive(Debug, Deserialize)]
struct Limits {
    #[serde(rename = "max-items")]
    max_items: u32,
    #[serde(default)]
    currencies: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging("info");
    let args = Args::parse();
    let builder =
        args.server
            .builder()
            .validator(|config| match config.get::<u32>("orders.max-items") {
                Ok(0) => Err("orders.max-items must be positive".to_string()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            });
    let client = builder.build()?;

    // Only `orders` is watched: changes elsewhere in the config do not wake us.
    let limits: Watched<Limits> = client.watch_path("orders").await?;
    limits.on_change(|old, new| {
        tracing::info!(
            "limits changed: max-items {} -> {}, currencies {:?} -> {:?}",
            old.max_items,
            new.max_items,
            old.currencies,
            new.currencies
        );
    });

    let app = Router::new()
        .route("/checkout", get(checkout))
        .route("/health", get(health))
        .with_state(limits);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn checkout(
    State(limits): State<Watched<Limits>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let limits = limits.get();
    let items: u32 = q.get("items").and_then(|n| n.parse().ok()).unwrap_or(1);
    let currency = q.get("currency").map(String::as_str).unwrap_or("EUR");
    if items > limits.max_items {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"accepted": false, "reason": format!("at most {} items per order", limits.max_items)}),
            ),
        );
    }
    if !limits.currencies.is_empty() && !limits.currencies.iter().any(|c| c == currency) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"accepted": false, "reason": format!("{currency} is not accepted; use one of {:?}", limits.currencies)}),
            ),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"accepted": true, "items": items, "currency": currency})),
    )
}

async fn health(State(limits): State<Watched<Limits>>) -> impl IntoResponse {
    let snap = limits.snapshot();
    Json(json!({
        "version": snap.version,
        "origin": snap.origin.to_string(),
        "from_cache": limits.is_from_cache(),
        "max_items": snap.value.max_items,
        "last_rejected_update": limits.last_error().map(|e| e.to_string()),
    }))
}

/// Flags: the server flags of every example, plus where this app listens.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Where this demo app listens.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
}
