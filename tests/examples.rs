//! The sample repository in `examples/config-repo/` (served with
//! `confhub serve --repo examples/config-repo --dev`) resolves for every service and
//! environment, with every placeholder resolved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{settings, workspace_root, TestServer};
use confhub_client::wire::{ConfigResponse, ServicesResponse};
use serde_json::{json, Value};

async fn serve_example() -> TestServer {
    let dir = workspace_root().join("examples/config-repo");
    let mut s = settings(dir.to_str().unwrap());
    s.dev = true;
    TestServer::start(s).await
}

/// Every string in `value`, with its dotted path.
fn strings(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                strings(&key, v, out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_of_the_example_repo_resolves() {
    let server = serve_example().await;

    let services: ServicesResponse = server.get_json("/v1/services").await;
    assert_eq!(services.environments, ["dev", "prod", "staging"]);
    let names: Vec<&str> = services.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["inventory", "orders", "payments"]);

    for service in &names {
        for env in &services.environments {
            let config: ConfigResponse = server
                .get_json(&format!("/v1/config/{service}/{env}"))
                .await;
            assert_eq!(
                config.sources.last().map(String::as_str),
                Some("application.yml")
            );
            let mut all = Vec::new();
            strings("", &config.values, &mut all);
            for (key, value) in all {
                if key == "orders.receipt-template" {
                    // An escaped placeholder: served as a literal.
                    assert_eq!(value, "Order ${orderId} confirmed");
                    continue;
                }
                assert!(
                    !value.contains("${"),
                    "{service}/{env}: {key} = {value:?} is unresolved"
                );
            }
            assert_eq!(config.values["management"]["port"], json!(8080));
            assert_eq!(
                config.values["management"]["tracing"]["endpoint"],
                json!("http://otel-collector.observability:4317")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_orders_prod() {
    let server = serve_example().await;
    let config: ConfigResponse = server.get_json("/v1/config/orders/prod").await;
    assert_eq!(
        config.sources,
        [
            "orders-prod.yml",
            "application-prod.yml",
            "orders.yml",
            "application.yml"
        ]
    );
    assert_eq!(
        config.values,
        json!({
            "server": {
                "port": 8080,
                "shutdown": "graceful",
                "compression": {"enabled": true, "min-response-size": 2048},
            },
            "logging": {"format": "json", "level": {"root": "WARN", "http": "WARN"}},
            "management": {
                "port": 8080,
                "endpoints": ["health", "info", "metrics"],
                "tracing": {
                    "sampling-rate": 0.05,
                    "endpoint": "http://otel-collector.observability:4317",
                },
            },
            "db": {
                "host": "db.prod.internal",
                "port": 5432,
                "pool": {"min": 10, "max": 80},
                "timeout": "10s",
                "name": "orders",
                "username": "orders_app",
                "url": "jdbc:postgresql://db.prod.internal:5432/orders",
            },
            "http-client": {"connect-timeout": "2s", "read-timeout": "10s", "retries": 5},
            "service": {"name": "orders", "owner": "team-checkout"},
            "kafka": {
                "bootstrap-servers": [
                    "kafka-1.prod.internal:9092",
                    "kafka-2.prod.internal:9092",
                    "kafka-3.prod.internal:9092",
                ],
                "topics": {
                    "order-created": "orders.created.v1",
                    "order-cancelled": "orders.cancelled.v1",
                },
            },
            "orders": {
                "max-items": 100,
                "currencies": ["EUR", "USD", "GBP", "CHF"],
                "payments-url": "http://payments:8080/v1/charges",
                "receipt-template": "Order ${orderId} confirmed",
                "fraud-check": {"enabled": true, "threshold": 5000},
            },
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_payments_prod_and_inventory_dev() {
    let server = serve_example().await;

    let payments: ConfigResponse = server.get_json("/v1/config/payments/prod").await;
    assert_eq!(
        payments.sources,
        [
            "payments-prod.properties",
            "application-prod.yml",
            "payments.yml",
            "application.yml",
        ]
    );
    assert_eq!(
        payments.values["payments"],
        json!({
            "provider": "acquirer",
            "retries": 5,
            "webhook-path": "/v1/webhooks/acquirer",
            "methods": ["card", "sepa"],
            "gateway": {
                "url": "https://gateway.example.com/api",
                "merchant-id": "confhub-demo",
            },
        })
    );
    assert_eq!(
        payments.values["db"]["url"],
        json!("jdbc:postgresql://db.prod.internal:5432/payments")
    );

    // The second YAML document of payments.yml adds paypal outside prod.
    let staging: ConfigResponse = server.get_json("/v1/config/payments/staging").await;
    assert_eq!(
        staging.values["payments"]["methods"],
        json!(["card", "sepa", "paypal"])
    );
    assert_eq!(staging.values["payments"]["retries"], json!(3));
    assert_eq!(
        staging.values["payments"]["webhook-path"],
        json!("/v1/webhooks/sandbox")
    );

    let inventory: ConfigResponse = server.get_json("/v1/config/inventory/dev").await;
    assert_eq!(
        inventory.values["inventory"],
        json!({
            "warehouses": [{"code": "LOCAL", "capacity": 100}],
            "reorder": {"threshold": 1, "batch-size": 500},
            "sync-interval": "10s",
            "label": "inventory@localhost",
        })
    );
    assert_eq!(inventory.values["db"]["pool"], json!({"min": 2, "max": 4}));
}
