//! End-to-end tests of the Spring Cloud Config compatible API (ARCHITECTURE.md §5), including a
//! real third-party client: the npm package `cloud-config-client`, run with node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{
    expect_error, flatten, header, scalar_text, settings, workspace_root, TestRepo, TestServer,
};
use confhub_client::wire::{ConfigResponse, SpringEnvironment, SPRING_V2_MEDIA_TYPE};
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// The fixture repository

const APPLICATION: &str = "\
server:
  port: 8080
db:
  pool: 10
  host: localhost
features: [base-a, base-b, base-c]
message: 'served on port ${server.port}'
";

const APPLICATION_PROD: &str = "\
db:
  host: db.prod.internal
features: [prod-a]
";

const APPLICATION_EU: &str = "\
region: eu-west-1
";

const ORDERS: &str = "\
db:
  name: orders
  url: 'jdbc:postgresql://${db.host}:${db.port:5432}/${db.name}'
servers:
  - host: a.internal
    port: 1
  - host: b.internal
    port: 2
enabled: true
";

fn orders_prod(pool: u32) -> String {
    format!("db:\n  pool: {pool}\nfeatures: [orders-x, orders-y]\n")
}

const ORDERS_EU: &str = "\
db:
  pool: 80
";

const RAW_URL: &str = "jdbc:postgresql://${db.host}:${db.port:5432}/${db.name}";
const RAW_MESSAGE: &str = "served on port ${server.port}";

struct Fixture {
    repo: TestRepo,
    /// First commit, tagged `v1.0` (orders-prod pool 50).
    c1: String,
    /// `main` (pool 60).
    c2: String,
    /// `feature/x` (pool 70).
    feature: String,
}

fn fixture() -> Fixture {
    let repo = TestRepo::new();
    repo.write("application.yml", APPLICATION)
        .write("application-prod.yml", APPLICATION_PROD)
        .write("application-eu.yml", APPLICATION_EU)
        .write("orders.yml", ORDERS)
        .write("orders-prod.yml", &orders_prod(50))
        .write("orders-eu.yml", ORDERS_EU);
    let c1 = repo.commit("initial config");
    repo.tag("v1.0");
    repo.write("orders-prod.yml", &orders_prod(60));
    let c2 = repo.commit("raise the pool");
    repo.checkout_new("feature/x");
    repo.write("orders-prod.yml", &orders_prod(70));
    let feature = repo.commit("bigger pool");
    repo.checkout("main");
    Fixture {
        repo,
        c1,
        c2,
        feature,
    }
}

/// The resolved `orders/prod` config (what `/v1/config/orders/prod` and
/// `/orders-prod.json` give), for a given pool size.
fn orders_prod_resolved(pool: u32) -> Value {
    json!({
        "server": {"port": 8080},
        "db": {
            "pool": pool,
            "host": "db.prod.internal",
            "name": "orders",
            "url": "jdbc:postgresql://db.prod.internal:5432/orders",
        },
        "features": ["orders-x", "orders-y"],
        "message": "served on port 8080",
        "servers": [{"host": "a.internal", "port": 1}, {"host": "b.internal", "port": 2}],
        "enabled": true,
    })
}

/// The same with placeholders left as written.
fn orders_prod_unresolved(pool: u32) -> Value {
    let mut v = orders_prod_resolved(pool);
    v["db"]["url"] = json!(RAW_URL);
    v["message"] = json!(RAW_MESSAGE);
    v
}

fn source(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a map: {other}"),
    }
}

fn application_source() -> Map<String, Value> {
    source(json!({
        "server.port": 8080,
        "db.pool": 10,
        "db.host": "localhost",
        "features[0]": "base-a",
        "features[1]": "base-b",
        "features[2]": "base-c",
        "message": RAW_MESSAGE,
    }))
}

fn application_prod_source() -> Map<String, Value> {
    source(json!({"db.host": "db.prod.internal", "features[0]": "prod-a"}))
}

fn orders_source() -> Map<String, Value> {
    source(json!({
        "db.name": "orders",
        "db.url": RAW_URL,
        "servers[0].host": "a.internal",
        "servers[0].port": 1,
        "servers[1].host": "b.internal",
        "servers[1].port": 2,
        "enabled": true,
    }))
}

fn orders_prod_source(pool: u32) -> Map<String, Value> {
    source(json!({"db.pool": pool, "features[0]": "orders-x", "features[1]": "orders-y"}))
}

async fn start(repo: &TestRepo) -> TestServer {
    TestServer::start(settings(repo.path_str())).await
}

async fn get_env(server: &TestServer, path: &str) -> SpringEnvironment {
    let resp = server.get(path).await;
    let status = resp.status();
    let content_type = header(&resp, "content-type");
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "GET {path}: content-type {content_type:?}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Check that property source names are `{repo uri}/{file}` for `files` in that order,
/// with one common prefix naming the repository; return the prefix.
fn assert_source_names(env: &SpringEnvironment, repo: &Path, files: &[&str]) -> String {
    let names: Vec<&str> = env
        .property_sources
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names.len(), files.len(), "property sources {names:?}");
    let mut prefix = None;
    for (name, file) in names.iter().zip(files) {
        let p = name
            .strip_suffix(&format!("/{file}"))
            .unwrap_or_else(|| panic!("source {name:?} should end with /{file}; all: {names:?}"));
        assert_eq!(
            *prefix.get_or_insert(p),
            p,
            "one repo uri for all: {names:?}"
        );
    }
    let prefix = prefix.unwrap_or_default().to_string();
    let repo = repo.to_str().unwrap();
    assert!(
        prefix.ends_with(repo.trim_end_matches('/')),
        "source names start with the repo uri ({repo}): {names:?}"
    );
    prefix
}

// ---------------------------------------------------------------------------
// GET /{name}/{profiles}[/{label}]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_lists_property_sources_highest_first() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let env = get_env(&server, "/orders/prod").await;
    assert_eq!(env.name, "orders");
    assert_eq!(env.profiles, ["prod"]);
    assert_eq!(env.label.as_deref(), Some("main"));
    assert_eq!(env.version.as_deref(), Some(fx.c2.as_str()));
    assert_eq!(env.state.as_deref(), Some(""));
    assert_source_names(
        &env,
        fx.repo.path(),
        &[
            "orders-prod.yml",
            "application-prod.yml",
            "orders.yml",
            "application.yml",
        ],
    );
    // Flat keys, values typed as in the file, placeholders left as written.
    assert_eq!(env.property_sources[0].source, orders_prod_source(60));
    assert_eq!(env.property_sources[1].source, application_prod_source());
    assert_eq!(env.property_sources[2].source, orders_source());
    assert_eq!(env.property_sources[3].source, application_source());

    // The raw JSON uses Spring's field names.
    let raw: Value = server.get_json("/orders/prod").await;
    for field in [
        "name",
        "profiles",
        "label",
        "version",
        "state",
        "propertySources",
    ] {
        assert!(raw.get(field).is_some(), "field {field} in {raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_media_type_gives_value_and_origin() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let resp = server
        .get_with("/orders/prod", "accept", SPRING_V2_MEDIA_TYPE)
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let env: SpringEnvironment =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(env.version.as_deref(), Some(fx.c2.as_str()));
    let files = [
        "orders-prod.yml",
        "application-prod.yml",
        "orders.yml",
        "application.yml",
    ];
    assert_source_names(&env, fx.repo.path(), &files);
    let plain = [
        orders_prod_source(60),
        application_prod_source(),
        orders_source(),
        application_source(),
    ];
    for ((ps, file), expected) in env.property_sources.iter().zip(files).zip(plain) {
        assert_eq!(ps.source.len(), expected.len(), "{file}: {:?}", ps.source);
        for (key, want) in &expected {
            let got = ps
                .source
                .get(key)
                .unwrap_or_else(|| panic!("{file}: no {key} in {:?}", ps.source));
            let obj = got
                .as_object()
                .unwrap_or_else(|| panic!("{file}: {key} should be {{value, origin}}: {got}"));
            assert_eq!(obj.len(), 2, "{file}: {key}: {got}");
            assert_eq!(obj.get("value"), Some(want), "{file}: {key}");
            let origin = obj["origin"].as_str().unwrap_or_default();
            assert!(
                origin.contains(file),
                "{file}: {key}: origin {origin:?} should name the file"
            );
        }
    }

    // Without the header: plain values.
    let v1 = get_env(&server, "/orders/prod").await;
    assert_eq!(v1.property_sources[0].source, orders_prod_source(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_profiles_later_one_wins() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    for path in ["/orders/prod,eu", "/orders/prod%2Ceu"] {
        let env = get_env(&server, path).await;
        assert_eq!(env.profiles, ["prod", "eu"], "{path}");
        assert_source_names(
            &env,
            fx.repo.path(),
            &[
                "orders-eu.yml",
                "application-eu.yml",
                "orders-prod.yml",
                "application-prod.yml",
                "orders.yml",
                "application.yml",
            ],
        );
        assert_eq!(
            env.property_sources[0].source,
            source(json!({"db.pool": 80}))
        );
        assert_eq!(
            env.property_sources[1].source,
            source(json!({"region": "eu-west-1"}))
        );
        assert_eq!(env.property_sources[2].source, orders_prod_source(60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_application_gets_only_application_sources() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let env = get_env(&server, "/nosuch/prod").await;
    assert_eq!(env.name, "nosuch");
    assert_eq!(env.profiles, ["prod"]);
    assert_eq!(env.version.as_deref(), Some(fx.c2.as_str()));
    assert_source_names(
        &env,
        fx.repo.path(),
        &["application-prod.yml", "application.yml"],
    );
    assert_eq!(env.property_sources[0].source, application_prod_source());
    assert_eq!(env.property_sources[1].source, application_source());

    // The `default` profile (what Spring clients send without profiles): no env files.
    let env = get_env(&server, "/orders/default").await;
    assert_eq!(env.profiles, ["default"]);
    assert_source_names(&env, fx.repo.path(), &["orders.yml", "application.yml"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_in_the_path() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let env = get_env(&server, "/orders/prod/main").await;
    assert_eq!(env.label.as_deref(), Some("main"));
    assert_eq!(env.version.as_deref(), Some(fx.c2.as_str()));

    let env = get_env(&server, "/orders/prod/v1.0").await;
    assert_eq!(env.label.as_deref(), Some("v1.0"));
    assert_eq!(env.version.as_deref(), Some(fx.c1.as_str()));
    assert_eq!(env.property_sources[0].source, orders_prod_source(50));

    let env = get_env(&server, &format!("/orders/prod/{}", fx.c1)).await;
    assert_eq!(env.version.as_deref(), Some(fx.c1.as_str()));
    let env = get_env(&server, &format!("/orders/prod/{}", &fx.c1[..7])).await;
    assert_eq!(env.version.as_deref(), Some(fx.c1.as_str()));

    for encoded in ["feature(_)x", "feature%2Fx"] {
        let env = get_env(&server, &format!("/orders/prod/{encoded}")).await;
        assert_eq!(env.label.as_deref(), Some("feature/x"), "{encoded}");
        assert_eq!(env.version.as_deref(), Some(fx.feature.as_str()));
        assert_eq!(env.property_sources[0].source, orders_prod_source(70));
    }

    for label in ["nope", "feature(_)y", "0000000"] {
        let resp = server.get(&format!("/orders/prod/{label}")).await;
        assert_eq!(resp.status(), 404, "label {label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_label_falls_back_to_master() {
    let repo = TestRepo::with_initial_branch("master");
    repo.write("application.yml", "a: 1\n")
        .write("orders.yml", "b: 2\n");
    let sha = repo.commit("on master");
    let server = start(&repo).await;

    let env = get_env(&server, "/orders/prod").await;
    assert_eq!(env.label.as_deref(), Some("master"));
    assert_eq!(env.version.as_deref(), Some(sha.as_str()));
    assert_source_names(&env, repo.path(), &["orders.yml", "application.yml"]);
    assert_eq!(env.property_sources[0].source, source(json!({"b": 2})));

    let env = get_env(&server, "/orders/prod/master").await;
    assert_eq!(env.version.as_deref(), Some(sha.as_str()));
    // As in Spring (`tryMasterBranch`), asking for `main` by name falls back too.
    let env = get_env(&server, "/orders/prod/main").await;
    assert_eq!(env.version.as_deref(), Some(sha.as_str()));
    let resp = server.get("/orders/prod/develop").await;
    assert_eq!(resp.status(), 404);

    let body = server.get_text("/orders-prod.json").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"a": 1, "b": 2}));
}

// ---------------------------------------------------------------------------
// /{name}-{profiles}.{ext} and /{label}/{name}-{profiles}.{ext}

fn parse_spring_properties(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not a `key: value` line: {line:?}\n{body}"));
        assert!(
            out.insert(key.to_string(), value.to_string()).is_none(),
            "{key} twice"
        );
    }
    out
}

fn expected_properties(values: &Value) -> BTreeMap<String, String> {
    flatten(values)
        .iter()
        .map(|(k, v)| (k.clone(), scalar_text(v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_files_are_merged_and_resolved() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let native: ConfigResponse = server.get_json("/v1/config/orders/prod").await;
    assert_eq!(native.values, orders_prod_resolved(60));

    let json_body = server.get_text("/orders-prod.json").await;
    let v: Value = serde_json::from_str(&json_body).unwrap();
    assert_eq!(v, native.values);

    for ext in ["yml", "yaml"] {
        let body = server.get_text(&format!("/orders-prod.{ext}")).await;
        let v: Value = serde_yaml::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v, native.values, ".{ext}:\n{body}");
    }

    let body = server.get_text("/orders-prod.properties").await;
    assert_eq!(
        parse_spring_properties(&body),
        expected_properties(&native.values),
        "properties:\n{body}"
    );
    assert!(body.lines().any(|l| l == "db.pool: 60"), "{body}");
    assert!(body.lines().any(|l| l == "features[1]: orders-y"), "{body}");
    assert!(
        body.lines()
            .any(|l| l == "db.url: jdbc:postgresql://db.prod.internal:5432/orders"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_files_can_keep_placeholders() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let body = server
        .get_text("/orders-prod.json?resolvePlaceholders=false")
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, orders_prod_unresolved(60));

    let body = server
        .get_text("/orders-prod.yml?resolvePlaceholders=false")
        .await;
    let v: Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(v, orders_prod_unresolved(60));

    let body = server
        .get_text("/orders-prod.properties?resolvePlaceholders=false")
        .await;
    let props = parse_spring_properties(&body);
    assert_eq!(props["db.url"], RAW_URL);
    assert_eq!(props["message"], RAW_MESSAGE);

    // `true` is the default.
    let body = server
        .get_text("/orders-prod.json?resolvePlaceholders=true")
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, orders_prod_resolved(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_files_at_labels_and_several_profiles() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    let v: Value = serde_json::from_str(&server.get_text("/v1.0/orders-prod.json").await).unwrap();
    assert_eq!(v, orders_prod_resolved(50));
    let v: Value = serde_json::from_str(&server.get_text("/main/orders-prod.json").await).unwrap();
    assert_eq!(v, orders_prod_resolved(60));
    for label in ["feature(_)x", "feature%2Fx"] {
        let body = server.get_text(&format!("/{label}/orders-prod.yml")).await;
        let v: Value = serde_yaml::from_str(&body).unwrap();
        assert_eq!(v, orders_prod_resolved(70), "{label}");
    }
    let body = server.get_text("/v1.0/orders-prod.properties").await;
    assert_eq!(parse_spring_properties(&body)["db.pool"], "50");

    let native: ConfigResponse = server.get_json("/v1/config/orders/prod,eu").await;
    let v: Value = serde_json::from_str(&server.get_text("/orders-prod,eu.json").await).unwrap();
    assert_eq!(v, native.values);
    assert_eq!(v["db"]["pool"], json!(80));
    assert_eq!(v["region"], json!("eu-west-1"));

    let resp = server.get("/nope/orders-prod.json").await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_placeholder_in_a_rendered_file_is_served_as_written() {
    let fx = fixture();
    fx.repo.checkout_new("broken");
    fx.repo
        .write("orders-prod.yml", "db:\n  password: '${vault.password}'\n");
    fx.repo.commit("broken placeholder");
    fx.repo.checkout("main");
    let server = start(&fx.repo).await;

    // The Environment form does not resolve placeholders: it serves.
    let env = get_env(&server, "/orders/prod/broken").await;
    assert_eq!(
        env.property_sources[0].source,
        source(json!({"db.password": "${vault.password}"}))
    );
    // The rendered form leaves what it cannot resolve as written and serves it, as
    // Spring's `EnvironmentPropertySource.resolveStringValue` does (its placeholder helper
    // ignores unresolvable placeholders): 200, not an error a client exits on.
    let body = server.get_text("/broken/orders-prod.json").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["db"]["password"], json!("${vault.password}"));
    // The native API still refuses it, naming the key.
    let resp = server.get("/v1/config/orders/prod?label=broken").await;
    let err = expect_error("/v1/config/orders/prod?label=broken", resp, 422).await;
    assert!(err.message.contains("vault.password"), "{err:?}");
    // ...unless asked not to.
    let body = server
        .get_text("/broken/orders-prod.json?resolvePlaceholders=false")
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["db"]["password"], json!("${vault.password}"));
}

// ---------------------------------------------------------------------------
// The real npm client

/// The npm client's view of `name`/`profiles` (see `common::node_load`).
async fn node_load(server: &TestServer, name: &str, profiles: &str, label: Option<&str>) -> Value {
    common::node_load(
        server,
        name,
        profiles,
        label,
        &["db.pool", "db.url", "enabled", "features[0]"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cloud_config_client_sees_the_native_values() {
    let fx = fixture();
    let server = start(&fx.repo).await;

    for (profiles, label, native_path, version) in [
        ("prod", None, "/v1/config/orders/prod", &fx.c2),
        ("prod,eu", None, "/v1/config/orders/prod,eu", &fx.c2),
        (
            "prod",
            Some("v1.0"),
            "/v1/config/orders/prod?label=v1.0",
            &fx.c1,
        ),
        (
            "prod",
            Some("feature/x"),
            "/v1/config/orders/prod?label=feature%2Fx",
            &fx.feature,
        ),
    ] {
        let what = format!("orders {profiles} {label:?}");
        let node = node_load(&server, "orders", profiles, label).await;
        let native: ConfigResponse = server.get_json(native_path).await;
        assert_eq!(&native.version, version, "{what}");

        assert_eq!(node["name"], json!("orders"), "{what}");
        assert_eq!(
            node["profiles"],
            json!(profiles.split(',').collect::<Vec<_>>()),
            "{what}"
        );
        assert_eq!(node["label"], json!(label.unwrap_or("main")), "{what}");
        assert_eq!(node["version"], json!(native.version), "{what}");
        let sources: Vec<String> = serde_json::from_value(node["sources"].clone()).unwrap();
        let files: Vec<String> = sources
            .iter()
            .map(|s| s.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(files, native.sources, "{what}: same files, same order");

        // The Spring form leaves placeholders as written; everything else is identical.
        let mut expected = native.values.clone();
        expected["db"]["url"] = json!(RAW_URL);
        expected["message"] = json!(RAW_MESSAGE);
        assert_eq!(node["object"], expected, "{what}: client.toObject()");

        assert_eq!(
            node["keys"]["db.pool"], native.values["db"]["pool"],
            "{what}"
        );
        assert_eq!(node["keys"]["db.url"], json!(RAW_URL), "{what}");
        assert_eq!(node["keys"]["enabled"], json!(true), "{what}");
        assert_eq!(
            node["keys"]["features[0]"], native.values["features"][0],
            "{what}"
        );
    }

    // A label the server does not know: the client reports the 404.
    let script = workspace_root().join("tests/node/read-config.js");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args(["--endpoint", &server.base_url(), "--name", "orders"])
        .args(["--profiles", "prod", "--label", "nope"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");
}
