//! End-to-end tests of the native HTTP API (ARCHITECTURE.md §2, §4): a real server on a loopback
//! port, serving real git repositories built here with real commits, tags and branches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    expect_error, flatten, header, is_sha1_hex, is_sha256_hex, scalar_text, settings, GitDaemon,
    TestRepo, TestServer,
};
use confhub_client::wire::{ConfigResponse, ReadyResponse, ServicesResponse};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The fixture repository

const APPLICATION: &str = "\
# defaults for every service
server:
  host: 0.0.0.0
  port: 8080
  shutdown: graceful
logging:
  level:
    root: INFO
db:
  host: db.default.internal
  pool: 10
  options:
    ssl: false
    timeout: 30
features:
  - base-a
  - base-b
  - base-c
cache:
  ttl: 300
";

const APPLICATION_PROD: &str = "\
db:
  host: db.prod.internal
  options:
    ssl: true
logging:
  level:
    root: WARN
features:
  - prod-a
region: us-east-1
";

const APPLICATION_DEV: &str = "\
db:
  host: localhost
logging:
  level:
    root: DEBUG
";

const APPLICATION_STAGING: &str = "\
db:
  host: db.staging.internal
";

const APPLICATION_EU_JSON: &str = r#"{
  "region": "eu-west-1",
  "gdpr": { "enabled": true },
  "db": { "options": { "timeout": 45 } }
}
"#;

const ORDERS: &str = r"# the orders service
service:
  name: orders
  owner: team-orders
db:
  name: orders
  pool: 20
  url: 'jdbc:postgresql://${db.host}:${db.port:5432}/${db.name}'
  pool-copy: '${db.pool}'
  pool-text: 'pool=${db.pool}'
cache:
  ttl: 60
  legacy: enabled
placeholders:
  port: '${server.port}'
  port-with-default: '${server.port:9999}'
  missing-with-default: '${no.such.key:fallback}'
  url-default: '${no.such.url:jdbc:h2:mem:test}'
  listen: '${server.host}:${server.port}'
  ssl-text: 'ssl=${db.options.ssl}'
  escaped: '\${db.host}'
  hosts:
    - '${db.host}'
    - backup.internal
";

/// `orders-prod.yml` with a given pool size (50 at `v1.0`, 60 on `main`, 70 on `feature/x`).
fn orders_prod(pool: u32) -> String {
    format!(
        "\
db:
  pool: {pool}
  options:
    timeout: 5
cache:
  legacy: null
features:
  - orders-x
  - orders-y
"
    )
}

const ORDERS_EU_YAML: &str = "\
db:
  pool: 80
region-note: eu orders
";

const ORDERS_STAGING_MULTI_DOC: &str = "\
db:
  pool: 15
  name: orders_staging
---
db:
  pool: 25
---
features: [staging-a]
";

const PAYMENTS_PROPERTIES: &str = "\
# java properties: every value is a string
payments.provider=stripe
payments.retries=3
payments.currencies[0]=USD
payments.currencies[1]=EUR
db.pool=5
";

const PAYMENTS_PROD: &str = "\
payments:
  retries: 5
  webhook: https://payments.example.com/hook
";

const INVENTORY_JSON: &str = r#"{"inventory": {"warehouses": ["ams", "fra"], "reorder": {"threshold": 10}}}
"#;

const INVENTORY_DEV_YAML: &str = "\
inventory:
  reorder:
    threshold: 1
";

const ORDERS_API: &str = "\
api:
  version: 2
  rate-limit: 10
";

const ORDERS_API_PROD: &str = "\
api:
  rate-limit: 100
";

/// The fixture: shas of its commits. `main` is checked out at the end.
struct Fixture {
    repo: TestRepo,
    /// First commit; tags `v1.0` (lightweight) and `release-1` (annotated).
    c1: String,
    /// Second commit: `main`.
    c2: String,
    /// Tip of branch `feature/x`.
    feature: String,
}

/// A repository with every kind of file, two commits on `main`, two tags at the first,
/// a branch `feature/x`, and (with `broken`) one branch or tag per kind of broken config.
fn fixture() -> Fixture {
    let repo = TestRepo::new();
    repo.write("application.yml", APPLICATION)
        .write("application-prod.yml", APPLICATION_PROD)
        .write("application-dev.yml", APPLICATION_DEV)
        .write("application-staging.yml", APPLICATION_STAGING)
        .write("application-eu.json", APPLICATION_EU_JSON)
        .write("orders.yml", ORDERS)
        .write("orders-prod.yml", &orders_prod(50))
        .write("orders-eu.yaml", ORDERS_EU_YAML)
        .write("orders-staging.yml", ORDERS_STAGING_MULTI_DOC)
        .write("payments.properties", PAYMENTS_PROPERTIES)
        .write("payments-prod.yml", PAYMENTS_PROD)
        .write("inventory.json", INVENTORY_JSON)
        .write("inventory-dev.yaml", INVENTORY_DEV_YAML)
        .write("README.md", "not config: ignored\n");
    let c1 = repo.commit("initial config");
    repo.tag("v1.0");
    repo.tag_annotated("release-1", "first release");

    repo.write("orders-prod.yml", &orders_prod(60))
        .write("orders-api.yml", ORDERS_API)
        .write("orders-api-prod.yml", ORDERS_API_PROD);
    let c2 = repo.commit("raise the orders pool, add orders-api");

    repo.checkout_new("feature/x");
    repo.write("orders-prod.yml", &orders_prod(70));
    let feature = repo.commit("try a bigger pool");
    repo.checkout("main");

    Fixture {
        repo,
        c1,
        c2,
        feature,
    }
}

/// Commit broken files on a new branch off `main`; return the commit. `main` is checked
/// out again at the end.
fn broken_branch(repo: &TestRepo, branch: &str, files: &[(&str, &str)]) -> String {
    repo.checkout("main");
    repo.checkout_new(branch);
    for (path, contents) in files {
        repo.write(path, contents);
    }
    let sha = repo.commit(&format!("broken: {branch}"));
    repo.checkout("main");
    sha
}

async fn start(repo: &TestRepo) -> TestServer {
    TestServer::start(settings(repo.path_str())).await
}

/// `values` of `orders/prod` on `main` (pool = 60); other labels differ only in the pool.
fn orders_prod_values(pool: u32) -> Value {
    json!({
        "server": {"host": "0.0.0.0", "port": 8080, "shutdown": "graceful"},
        "logging": {"level": {"root": "WARN"}},
        "db": {
            "host": "db.prod.internal",
            "name": "orders",
            "pool": pool,
            "options": {"ssl": true, "timeout": 5},
            "url": "jdbc:postgresql://db.prod.internal:5432/orders",
            "pool-copy": pool,
            "pool-text": format!("pool={pool}"),
        },
        "features": ["orders-x", "orders-y"],
        "cache": {"ttl": 60, "legacy": null},
        "service": {"name": "orders", "owner": "team-orders"},
        "region": "us-east-1",
        "placeholders": {
            "port": 8080,
            "port-with-default": 8080,
            "missing-with-default": "fallback",
            "url-default": "jdbc:h2:mem:test",
            "listen": "0.0.0.0:8080",
            "ssl-text": "ssl=true",
            "escaped": "${db.host}",
            "hosts": ["db.prod.internal", "backup.internal"],
        },
    })
}

fn orders_dev_values() -> Value {
    json!({
        "server": {"host": "0.0.0.0", "port": 8080, "shutdown": "graceful"},
        "logging": {"level": {"root": "DEBUG"}},
        "db": {
            "host": "localhost",
            "name": "orders",
            "pool": 20,
            "options": {"ssl": false, "timeout": 30},
            "url": "jdbc:postgresql://localhost:5432/orders",
            "pool-copy": 20,
            "pool-text": "pool=20",
        },
        "features": ["base-a", "base-b", "base-c"],
        "cache": {"ttl": 60, "legacy": "enabled"},
        "service": {"name": "orders", "owner": "team-orders"},
        "placeholders": {
            "port": 8080,
            "port-with-default": 8080,
            "missing-with-default": "fallback",
            "url-default": "jdbc:h2:mem:test",
            "listen": "0.0.0.0:8080",
            "ssl-text": "ssl=false",
            "escaped": "${db.host}",
            "hosts": ["localhost", "backup.internal"],
        },
    })
}

const ORDERS_PROD_SOURCES: [&str; 4] = [
    "orders-prod.yml",
    "application-prod.yml",
    "orders.yml",
    "application.yml",
];

async fn get_config(server: &TestServer, path: &str) -> ConfigResponse {
    let resp = server.get(path).await;
    let status = resp.status();
    let content_type = header(&resp, "content-type");
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "GET {path}: content-type {content_type:?}"
    );
    let config: ConfigResponse =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
    assert!(is_sha256_hex(&config.digest), "digest {:?}", config.digest);
    config
}

// ---------------------------------------------------------------------------
// Resolution

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_merges_four_layers_and_resolves_placeholders() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.service, "orders");
    assert_eq!(config.env, "prod");
    assert_eq!(config.label, "main");
    assert_eq!(config.version, fx.c2);
    assert!(is_sha1_hex(&config.version));
    assert_eq!(config.sources, ORDERS_PROD_SOURCES);
    assert_eq!(config.values, orders_prod_values(60));

    // An explicit null is kept as a null, not dropped.
    assert_eq!(
        config.values["cache"].as_object().unwrap().get("legacy"),
        Some(&Value::Null)
    );
    // Exactly one placeholder keeps the type; embedded placeholders are stringified.
    assert!(config.values["db"]["pool-copy"].is_u64());
    assert!(config.values["placeholders"]["port"].is_u64());
    assert!(config.values["db"]["pool-text"].is_string());

    // `format=json` is the default.
    let explicit = get_config(&server, "/v1/config/orders/prod?format=json").await;
    assert_eq!(explicit, config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_without_a_service_env_file_uses_three_layers() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let config = get_config(&server, "/v1/config/orders/dev").await;
    assert_eq!(config.env, "dev");
    assert_eq!(config.version, fx.c2);
    assert_eq!(
        config.sources,
        ["application-dev.yml", "orders.yml", "application.yml"]
    );
    assert_eq!(config.values, orders_dev_values());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_envs_later_env_wins() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let config = get_config(&server, "/v1/config/orders/prod,eu").await;
    assert_eq!(config.env, "prod,eu");
    assert_eq!(
        config.sources,
        [
            "orders-eu.yaml",
            "application-eu.json",
            "orders-prod.yml",
            "application-prod.yml",
            "orders.yml",
            "application.yml",
        ]
    );
    let mut expected = orders_prod_values(80);
    // application-eu.json (above orders-prod.yml) sets the timeout; ssl stays from prod.
    expected["db"]["options"] = json!({"ssl": true, "timeout": 45});
    expected["region"] = json!("eu-west-1");
    expected["gdpr"] = json!({"enabled": true});
    expected["region-note"] = json!("eu orders");
    assert_eq!(config.values, expected);

    // The order of envs matters: now prod wins over eu.
    let config = get_config(&server, "/v1/config/orders/eu,prod").await;
    assert_eq!(config.env, "eu,prod");
    assert_eq!(
        config.sources,
        [
            "orders-prod.yml",
            "application-prod.yml",
            "orders-eu.yaml",
            "application-eu.json",
            "orders.yml",
            "application.yml",
        ]
    );
    assert_eq!(config.values["db"]["pool"], json!(60));
    assert_eq!(
        config.values["db"]["options"],
        json!({"ssl": true, "timeout": 5})
    );
    assert_eq!(config.values["region"], json!("us-east-1"));
    assert_eq!(config.values["region-note"], json!("eu orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_document_yaml_is_merged_top_to_bottom() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let config = get_config(&server, "/v1/config/orders/staging").await;
    assert_eq!(
        config.sources,
        [
            "orders-staging.yml",
            "application-staging.yml",
            "orders.yml",
            "application.yml",
        ]
    );
    assert_eq!(
        config.values["db"],
        json!({
            "host": "db.staging.internal",
            "name": "orders_staging",
            "pool": 25,
            "options": {"ssl": false, "timeout": 30},
            "url": "jdbc:postgresql://db.staging.internal:5432/orders_staging",
            "pool-copy": 25,
            "pool-text": "pool=25",
        })
    );
    assert_eq!(config.values["features"], json!(["staging-a"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_json_and_yaml_extensions_are_read() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let payments = get_config(&server, "/v1/config/payments/prod").await;
    assert_eq!(
        payments.sources,
        [
            "payments-prod.yml",
            "application-prod.yml",
            "payments.properties",
            "application.yml",
        ]
    );
    assert_eq!(
        payments.values,
        json!({
            "server": {"host": "0.0.0.0", "port": 8080, "shutdown": "graceful"},
            "logging": {"level": {"root": "WARN"}},
            // `db.pool=5` from the properties file is a string, above application.yml's 10.
            "db": {"host": "db.prod.internal", "pool": "5", "options": {"ssl": true, "timeout": 30}},
            "features": ["prod-a"],
            "cache": {"ttl": 300},
            "region": "us-east-1",
            "payments": {
                "provider": "stripe",
                "retries": 5,
                "currencies": ["USD", "EUR"],
                "webhook": "https://payments.example.com/hook",
            },
        })
    );

    let inventory = get_config(&server, "/v1/config/inventory/dev").await;
    assert_eq!(
        inventory.sources,
        [
            "inventory-dev.yaml",
            "application-dev.yml",
            "inventory.json",
            "application.yml",
        ]
    );
    assert_eq!(
        inventory.values["inventory"],
        json!({"warehouses": ["ams", "fra"], "reorder": {"threshold": 1}})
    );
    assert_eq!(inventory.values["db"]["host"], json!("localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyphenated_service_names_are_read_as_written() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let api = get_config(&server, "/v1/config/orders-api/prod").await;
    assert_eq!(api.service, "orders-api");
    assert_eq!(
        api.sources,
        [
            "orders-api-prod.yml",
            "application-prod.yml",
            "orders-api.yml",
            "application.yml",
        ]
    );
    assert_eq!(api.values["api"], json!({"version": 2, "rate-limit": 100}));
    assert!(api.values.get("service").is_none(), "{}", api.values);

    // ...and `orders` never picks up `orders-api*` files.
    let orders = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(orders.sources, ORDERS_PROD_SOURCES);
    assert!(orders.values.get("api").is_none());
}

// ---------------------------------------------------------------------------
// Labels

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_select_branches_tags_and_commits() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let head = get_config(&server, "/v1/config/orders/prod").await;

    // The tracked branch named explicitly is the same config.
    let main = get_config(&server, "/v1/config/orders/prod?label=main").await;
    assert_eq!(main.label, "main");
    assert_eq!(main.version, fx.c2);
    assert_eq!(main.digest, head.digest);
    assert_eq!(main.values, head.values);

    // Tags: lightweight and annotated (peeled to the commit).
    for tag in ["v1.0", "release-1"] {
        let old = get_config(&server, &format!("/v1/config/orders/prod?label={tag}")).await;
        assert_eq!(old.label, tag);
        assert_eq!(old.version, fx.c1, "{tag}");
        assert_eq!(old.sources, ORDERS_PROD_SOURCES);
        assert_eq!(old.values, orders_prod_values(50), "{tag}");
        assert_ne!(old.digest, head.digest);
    }

    // A full sha, and short shas of 7 and 10 hex digits.
    for label in [
        fx.c1.clone(),
        fx.c1[..7].to_string(),
        fx.c1[..10].to_string(),
    ] {
        let old = get_config(&server, &format!("/v1/config/orders/prod?label={label}")).await;
        assert_eq!(old.label, label);
        assert_eq!(old.version, fx.c1, "label {label}: version is the full sha");
        assert_eq!(old.values, orders_prod_values(50));
    }
    // Same content, same digest, whatever the label.
    let by_tag = get_config(&server, "/v1/config/orders/prod?label=v1.0").await;
    let by_sha = get_config(&server, &format!("/v1/config/orders/prod?label={}", fx.c1)).await;
    assert_eq!(by_tag.digest, by_sha.digest);

    // A branch with `/`, sent as `(_)` and as `%2F`.
    for encoded in ["feature(_)x", "feature%2Fx"] {
        let feature = get_config(&server, &format!("/v1/config/orders/prod?label={encoded}")).await;
        assert_eq!(feature.label, "feature/x", "sent as {encoded}");
        assert_eq!(feature.version, fx.feature);
        assert_eq!(feature.values, orders_prod_values(70));
    }

    // A file added after the tag does not exist at the tag.
    let err = server
        .get_error("/v1/config/orders-api/prod?label=v1.0", 404)
        .await;
    assert_eq!(err.error, "unknown_service", "{err:?}");

    // Labels did not disturb the tracked branch.
    let again = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(again, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_labels_are_404() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    for label in [
        "nope",
        "feature(_)y",
        "v9.9",
        "0000000000000000000000000000000000000000",
        "0000000",
    ] {
        let err = server
            .get_error(&format!("/v1/config/orders/prod?label={label}"), 404)
            .await;
        assert_eq!(err.error, "unknown_label", "label {label}: {err:?}");
        assert!(
            err.message.contains(&label.replace("(_)", "/")) || err.message.contains(label),
            "label {label}: message should name it: {}",
            err.message
        );
    }
}

// ---------------------------------------------------------------------------
// Formats and ETag

/// Parse `key<sep>value` lines, skipping blank lines and `#` comments.
fn parse_lines(body: &str, sep: char) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(sep)
            .unwrap_or_else(|| panic!("line without {sep:?}: {line:?}"));
        let previous = out.insert(key.to_string(), value.to_string());
        assert!(previous.is_none(), "key {key:?} twice in:\n{body}");
    }
    out
}

/// A value simple enough that every text format must print it bare.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn env_key(flat: &str) -> String {
    flat.replace(['.', '-', '['], "_")
        .replace(']', "")
        .to_uppercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_format_has_the_same_values() {
    let fx = fixture();
    let server = start(&fx.repo).await;
    let native = get_config(&server, "/v1/config/orders/dev").await;

    let resp = server.get("/v1/config/orders/dev?format=yaml").await;
    assert_eq!(resp.status(), 200);
    let content_type = header(&resp, "content-type");
    assert!(
        content_type.starts_with("application/yaml") || content_type.starts_with("text/yaml"),
        "content-type {content_type:?}"
    );
    let body = resp.text().await.unwrap();
    let parsed: Value = serde_yaml::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(parsed, native.values, "yaml body:\n{body}");

    // At a label too.
    let body = server
        .get_text("/v1/config/orders/prod?label=v1.0&format=yaml")
        .await;
    let parsed: Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(parsed, orders_prod_values(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_format_flattens_keys() {
    let fx = fixture();
    let server = start(&fx.repo).await;
    let native = get_config(&server, "/v1/config/orders/dev").await;

    let body = server
        .get_text("/v1/config/orders/dev?format=properties")
        .await;
    let lines = parse_lines(&body, '=');
    for (key, value) in [
        ("db.pool", "20"),
        ("db.pool-copy", "20"),
        ("db.options.ssl", "false"),
        ("server.port", "8080"),
        ("server.host", "0.0.0.0"),
        ("logging.level.root", "DEBUG"),
        ("features[0]", "base-a"),
        ("features[1]", "base-b"),
        ("features[2]", "base-c"),
        ("placeholders.hosts[0]", "localhost"),
        ("placeholders.hosts[1]", "backup.internal"),
    ] {
        assert_eq!(
            lines.get(key).map(String::as_str),
            Some(value),
            "{key} in:\n{body}"
        );
    }
    let flat = flatten(&native.values);
    assert_eq!(
        lines.keys().cloned().collect::<BTreeSet<_>>(),
        flat.keys().cloned().collect::<BTreeSet<_>>(),
        "properties keys are the flattened keys:\n{body}"
    );
    for (key, value) in &flat {
        let text = scalar_text(value);
        if is_plain(&text) {
            assert_eq!(lines[key], text, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_format_is_dotenv_ready() {
    let fx = fixture();
    let server = start(&fx.repo).await;
    let native = get_config(&server, "/v1/config/orders/dev").await;

    let body = server.get_text("/v1/config/orders/dev?format=env").await;
    let lines = parse_lines(&body, '=');
    for (key, value) in [
        ("DB_POOL", "20"),
        ("DB_POOL_COPY", "20"),
        ("DB_OPTIONS_SSL", "false"),
        ("SERVER_PORT", "8080"),
        ("FEATURES_0", "base-a"),
        ("FEATURES_2", "base-c"),
        ("PLACEHOLDERS_HOSTS_0", "localhost"),
        ("PLACEHOLDERS_PORT_WITH_DEFAULT", "8080"),
    ] {
        assert_eq!(
            lines.get(key).map(String::as_str),
            Some(value),
            "{key} in:\n{body}"
        );
    }
    let flat = flatten(&native.values);
    let expected_keys: BTreeSet<String> = flat.keys().map(|k| env_key(k)).collect();
    assert_eq!(
        lines.keys().cloned().collect::<BTreeSet<_>>(),
        expected_keys,
        "env keys:\n{body}"
    );
    for (key, value) in &flat {
        let text = scalar_text(value);
        if is_plain(&text) {
            let got = &lines[&env_key(key)];
            let unquoted = got
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(got);
            assert_eq!(unquoted, text, "{key}");
        }
    }
    assert_eq!(lines["LOGGING_LEVEL_ROOT"].trim_matches('"'), "DEBUG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_is_the_quoted_digest_and_if_none_match_gives_304() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let resp = server.get("/v1/config/orders/prod").await;
    assert_eq!(resp.status(), 200);
    let etag = header(&resp, "etag");
    let config: ConfigResponse = resp.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", config.digest));

    // Stable across requests.
    let again = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(again.digest, config.digest);

    let resp = server
        .get_with("/v1/config/orders/prod", "if-none-match", &etag)
        .await;
    assert_eq!(resp.status(), 304);
    assert_eq!(header(&resp, "etag"), etag);
    assert!(resp.bytes().await.unwrap().is_empty(), "304 has no body");

    // A stale tag gets the full answer.
    let resp = server
        .get_with(
            "/v1/config/orders/prod",
            "if-none-match",
            &format!("\"{}\"", "0".repeat(64)),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: ConfigResponse = resp.json().await.unwrap();
    assert_eq!(body, config);

    // Another label has another digest; its own ETag works against it.
    let resp = server.get("/v1/config/orders/prod?label=v1.0").await;
    let old_etag = header(&resp, "etag");
    let old: ConfigResponse = resp.json().await.unwrap();
    assert_eq!(old_etag, format!("\"{}\"", old.digest));
    assert_ne!(old.digest, config.digest);
    let resp = server
        .get_with(
            "/v1/config/orders/prod?label=v1.0",
            "if-none-match",
            &old_etag,
        )
        .await;
    assert_eq!(resp.status(), 304);
    let resp = server
        .get_with("/v1/config/orders/prod?label=v1.0", "if-none-match", &etag)
        .await;
    assert_eq!(resp.status(), 200);

    // Different pairs have different digests.
    let dev = get_config(&server, "/v1/config/orders/dev").await;
    assert_ne!(dev.digest, config.digest);
}

// ---------------------------------------------------------------------------
// Listing, health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_lists_services_and_environments() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let services: ServicesResponse = server.get_json("/v1/services").await;
    assert_eq!(services.label, "main");
    assert_eq!(services.version, fx.c2);
    assert_eq!(services.environments, ["dev", "eu", "prod", "staging"]);
    let names: Vec<&str> = services.services.iter().map(|s| s.name.as_str()).collect();
    // `orders-api` is a service (`api` is no environment); `orders-prod` etc. are not.
    assert_eq!(names, ["inventory", "orders", "orders-api", "payments"]);

    let own_envs: BTreeMap<&str, &[&str]> = [
        ("inventory", &["dev"][..]),
        ("orders", &["eu", "prod", "staging"][..]),
        ("orders-api", &["prod"][..]),
        ("payments", &["prod"][..]),
    ]
    .into_iter()
    .collect();
    for service in &services.services {
        let mut sorted = service.envs.clone();
        sorted.sort();
        assert_eq!(sorted, service.envs, "{}: envs sorted", service.name);
        for env in &service.envs {
            assert!(
                services.environments.contains(env),
                "{}: unknown env {env}",
                service.name
            );
        }
        for env in own_envs[service.name.as_str()] {
            assert!(
                service.envs.iter().any(|e| e == env),
                "{} has a {env} file but envs are {:?}",
                service.name,
                service.envs
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let resp = server.get("/healthz").await;
    assert_eq!(resp.status(), 200);

    let ready: ReadyResponse = server.get_json("/readyz").await;
    assert_eq!(ready.status, "ready");
    assert_eq!(ready.version.as_deref(), Some(fx.c2.as_str()));
    assert!(ready.errors.is_empty(), "{:?}", ready.errors);
}

// ---------------------------------------------------------------------------
// Errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_400() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    for path in [
        "/v1/config/..%2Fetc/prod",
        "/v1/config/..%2F..%2Fetc%2Fpasswd/prod",
        "/v1/config/or%00ders/prod",
        "/v1/config/-x/prod",
        "/v1/config/.orders/prod",
        "/v1/config/orders..x/prod",
        "/v1/config/or%20ders/prod",
        "/v1/config/%C3%A9t%C3%A9/prod",
        "/v1/config/orders/-prod",
        "/v1/config/orders/pr%2Fod",
        "/v1/config/orders/prod?label=a..b",
        "/v1/config/orders/prod?label=..%2F..%2Fetc",
        "/v1/config/orders/prod?label=-x",
        "/v1/config/orders/prod?label=a%00b",
    ] {
        let err = server.get_error(path, 400).await;
        assert_eq!(err.error, "bad_name", "{path}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_404_not_defaults() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    for path in [
        "/v1/config/nosuch/prod",
        "/v1/config/nosuch/dev",
        "/v1/config/nosuch/prod?label=v1.0",
        "/v1/config/nosuch/prod?label=feature(_)x",
    ] {
        let err = server.get_error(path, 404).await;
        assert_eq!(err.error, "unknown_service", "{path}: {err:?}");
        assert!(err.message.contains("nosuch"), "{path}: {}", err.message);
    }
}

/// Start a server on a fixture with one broken branch; assert the 422 at that label,
/// and that `main` still serves.
async fn assert_broken(
    branch: &str,
    files: &[(&str, &str)],
    path: &str,
) -> confhub_client::wire::ErrorBody {
    let fx = fixture();
    let sha = broken_branch(&fx.repo, branch, files);
    fx.repo.git(&["tag", &format!("tag-{branch}"), &sha]);
    let server = start(&fx.repo).await;

    let mut first = None;
    for label in [branch.to_string(), format!("tag-{branch}")] {
        let url = format!("{path}?label={label}");
        let err = server.get_error(&url, 422).await;
        assert_eq!(err.error, "unresolvable", "{url}: {err:?}");
        first.get_or_insert(err);
    }

    // The tracked branch is unaffected.
    let good = get_config(&server, path).await;
    assert_eq!(good.version, fx.c2);
    let ready: ReadyResponse = server.get_json("/readyz").await;
    assert!(ready.errors.is_empty(), "{:?}", ready.errors);

    first.expect("one error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_yaml_is_422_with_file_and_line() {
    let err = assert_broken(
        "broken-yaml",
        &[(
            "orders.yml",
            "service:\n  name: orders\ndb: 20\n  pool: 3\n",
        )],
        "/v1/config/orders/prod",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("orders.yml"), "{err:?}");
    assert_eq!(err.line, Some(4), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_yaml_in_a_later_document_is_422() {
    let err = assert_broken(
        "broken-second-doc",
        &[("orders-prod.yml", "db:\n  pool: 1\n---\ndb: [\n")],
        "/v1/config/orders/prod",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("orders-prod.yml"), "{err:?}");
    assert!(err.line.is_some(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_422() {
    let err = assert_broken(
        "broken-json",
        &[("application-eu.json", "{\"region\": \"eu-west-1\",\n}\n")],
        "/v1/config/orders/eu",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("application-eu.json"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_key_is_422_naming_the_key() {
    let err = assert_broken(
        "broken-dup",
        &[(
            "orders.yml",
            "service:\n  name: orders\ndb:\n  pool: 20\n  dupkey: 1\n  dupkey: 2\n",
        )],
        "/v1/config/orders/prod",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("orders.yml"), "{err:?}");
    assert!(err.message.contains("dupkey"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_map_top_level_is_422() {
    let err = assert_broken(
        "broken-top",
        &[("orders.yml", "- just\n- a\n- list\n")],
        "/v1/config/orders/prod",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("orders.yml"), "{err:?}");

    let err = assert_broken(
        "broken-scalar",
        &[("orders-prod.yml", "just a string\n")],
        "/v1/config/orders/prod",
    )
    .await;
    assert_eq!(err.file.as_deref(), Some("orders-prod.yml"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_placeholder_is_422_naming_the_key() {
    let err = assert_broken(
        "broken-placeholder",
        &[(
            "orders-prod.yml",
            "db:\n  pool: 60\n  password: 'secret-${vault.db-password}'\n",
        )],
        "/v1/config/orders/prod",
    )
    .await;
    assert!(
        err.message.contains("vault.db-password"),
        "names the missing key: {err:?}"
    );
    assert!(
        err.file.as_deref() == Some("orders-prod.yml") || err.message.contains("orders-prod.yml"),
        "names the file: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclic_placeholder_is_422() {
    let err = assert_broken(
        "broken-cycle",
        &[(
            "orders-prod.yml",
            "cycle:\n  a: '${cycle.b}'\n  b: 'x-${cycle.c}'\n  c: '${cycle.a}'\n",
        )],
        "/v1/config/orders/prod",
    )
    .await;
    assert!(
        ["cycle.a", "cycle.b", "cycle.c"]
            .iter()
            .any(|k| err.message.contains(k)),
        "names a key of the cycle: {err:?}"
    );

    let err = assert_broken(
        "broken-self",
        &[("orders.yml", "selfref: '${selfref}'\n")],
        "/v1/config/orders/prod",
    )
    .await;
    assert!(err.message.contains("selfref"), "{err:?}");
}

// ---------------------------------------------------------------------------
// Repository kinds and settings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_serves_a_subfolder() {
    let repo = TestRepo::new();
    repo.write("orders.yml", "where: root\n")
        .write("application.yml", "where: root\nroot-only: true\n")
        .write("config/application.yml", "where: config-app\nshared: 1\n")
        .write("config/orders.yml", "where: config\nsvc: 2\n")
        .write("config/orders-prod.yml", "svc: 3\n");
    let sha = repo.commit("config in a subfolder");

    let mut s = settings(repo.path_str());
    s.search_path = Some("config".into());
    let server = TestServer::start(s).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.version, sha);
    assert_eq!(
        config.values,
        json!({"where": "config", "shared": 1, "svc": 3})
    );
    let expected = ["orders-prod.yml", "orders.yml", "application.yml"];
    assert_eq!(config.sources.len(), expected.len(), "{:?}", config.sources);
    for (got, want) in config.sources.iter().zip(expected) {
        assert!(
            got == want || *got == format!("config/{want}"),
            "sources {:?}",
            config.sources
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_file_url_is_cloned_and_served() {
    let fx = fixture();
    let remotes = tempfile::tempdir().unwrap();
    let bare = remotes.path().join("config.git");
    fx.repo.clone_bare(&bare);

    let url = format!("file://{}", bare.to_str().unwrap());
    let server = TestServer::start(settings(url)).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.label, "main");
    assert_eq!(config.version, fx.c2);
    assert_eq!(config.sources, ORDERS_PROD_SOURCES);
    assert_eq!(config.values, orders_prod_values(60));

    // Tags and other branches came along.
    let old = get_config(&server, "/v1/config/orders/prod?label=v1.0").await;
    assert_eq!(old.version, fx.c1);
    let feature = get_config(&server, "/v1/config/orders/prod?label=feature(_)x").await;
    assert_eq!(feature.version, fx.feature);
    assert_eq!(feature.values, orders_prod_values(70));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_git_daemon_is_cloned_and_served() {
    let fx = fixture();
    let remotes = tempfile::tempdir().unwrap();
    fx.repo.clone_bare(&remotes.path().join("config.git"));
    let daemon = GitDaemon::start(remotes.path());

    let server = TestServer::start(settings(daemon.url("config.git"))).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.label, "main");
    assert_eq!(config.version, fx.c2);
    assert_eq!(config.values, orders_prod_values(60));
    let old = get_config(&server, "/v1/config/orders/prod?label=release-1").await;
    assert_eq!(old.version, fx.c1);
    assert_eq!(old.values, orders_prod_values(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_only_repo_is_served_by_default() {
    let repo = TestRepo::with_initial_branch("master");
    repo.write("application.yml", "a: 1\nb: 1\n")
        .write("orders.yml", "b: 2\n");
    let sha = repo.commit("on master");

    let server = TestServer::start(settings(repo.path_str())).await;
    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.label, "master");
    assert_eq!(config.version, sha);
    assert_eq!(config.values, json!({"a": 1, "b": 2}));
    assert_eq!(config.sources, ["orders.yml", "application.yml"]);

    let services: ServicesResponse = server.get_json("/v1/services").await;
    assert_eq!(services.label, "master");

    // Over file:// too.
    let remotes = tempfile::tempdir().unwrap();
    let bare = remotes.path().join("master.git");
    repo.clone_bare(&bare);
    let remote = TestServer::start(settings(format!("file://{}", bare.to_str().unwrap()))).await;
    let config = get_config(&remote, "/v1/config/orders/prod").await;
    assert_eq!(config.label, "master");
    assert_eq!(config.version, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_branch_is_configurable() {
    let fx = fixture();
    let mut s = settings(fx.repo.path_str());
    s.branch = Some("feature/x".into());
    let server = TestServer::start(s).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(config.label, "feature/x");
    assert_eq!(config.version, fx.feature);
    assert_eq!(config.values, orders_prod_values(70));
    // Other labels still work.
    let main = get_config(&server, "/v1/config/orders/prod?label=main").await;
    assert_eq!(main.version, fx.c2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_serves_a_plain_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("application.yml"), APPLICATION).unwrap();
    std::fs::write(dir.path().join("application-prod.yml"), APPLICATION_PROD).unwrap();
    std::fs::write(dir.path().join("orders.yml"), ORDERS).unwrap();
    std::fs::write(dir.path().join("orders-prod.yml"), orders_prod(60)).unwrap();
    assert!(!dir.path().join(".git").exists());

    let mut s = settings(dir.path().to_str().unwrap());
    s.dev = true;
    let server = TestServer::start(s).await;

    let config = get_config(&server, "/v1/config/orders/prod").await;
    assert!(
        is_sha256_hex(&config.version),
        "dev version is a content hash: {:?}",
        config.version
    );
    assert_eq!(config.sources, ORDERS_PROD_SOURCES);
    assert_eq!(config.values, orders_prod_values(60));

    let again = get_config(&server, "/v1/config/orders/prod").await;
    assert_eq!(again.version, config.version);

    for label in ["main", "master", "HEAD"] {
        let err = server
            .get_error(&format!("/v1/config/orders/prod?label={label}"), 404)
            .await;
        assert_eq!(err.error, "unknown_label", "{label}: {err:?}");
    }

    let services: ServicesResponse = server.get_json("/v1/services").await;
    assert_eq!(services.version, config.version);
    assert_eq!(services.environments, ["prod"]);
    let names: Vec<&str> = services.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orders"]);

    let resp = server.get("/v1/config/nosuch/prod").await;
    expect_error("nosuch", resp, 404).await;
}
