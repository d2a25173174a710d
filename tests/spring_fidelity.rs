//! A repository written the way Spring teams write them, served over HTTP and compared
//! with what Spring Cloud Config (on Spring Boot's config data) answers for it. Each
//! expectation cites the Spring source or test that says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{header, node_load, settings, TestRepo, TestServer};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The repository

/// Profile documents (`spring.config.activate.on-profile` in both nested and flat
/// spelling, `!`, `&`, legacy `spring.profiles`), a key written flat and nested, an
/// emptied list, YAML 1.1 traps kept as strings by quoting, a `null`.
const APPLICATION: &str = "\
# Defaults for every service
server:
  port: 8080
spring.datasource.url: jdbc:h2:mem:flat
spring:
  datasource:
    url: jdbc:postgresql://localhost/app
    username: app
app:
  country: 'NO'
  legacy-flag: 'on'
  launch-date: '2024-03-01'
  jdbc: ${spring.datasource.url}
  regions: [us-east-1, eu-west-1]
  nothing:
---
spring:
  config:
    activate:
      on-profile: prod
server:
  port: 80
app:
  regions: []
---
spring.config.activate.on-profile: '!prod'
app:
  banner: not-prod
---
spring:
  config:
    activate:
      on-profile: prod & eu
app:
  region: eu-west-1
---
spring:
  profiles: dev
app:
  debug: true
";

const ORDERS: &str = "\
orders:
  page-size: 20
  currency: USD
---
spring.config.activate.on-profile: eu | uk
orders:
  currency: EUR
---
spring:
  config:
    activate:
      on-profile: [staging, prod]
orders:
  page-size: 50
";

/// Hibernate-style logging keys (a key that is both a value and a prefix), a key set
/// twice, and a `#---` profile document.
const ORDERS_PROD: &str = "\
# Hibernate logging, as Spring Boot teams write it
logging.level.org.hibernate=INFO
logging.level.org.hibernate.SQL=DEBUG
logging.level.root=WARN
orders.retries=3
orders.retries=5
#---
spring.config.activate.on-profile=eu
logging.level.org.hibernate.SQL=TRACE
";

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", APPLICATION)
        .write("orders.yml", ORDERS)
        .write("orders-prod.properties", ORDERS_PROD);
    repo.commit("spring config");
    repo
}

async fn start(repo: &TestRepo) -> TestServer {
    TestServer::start(settings(repo.path_str())).await
}

// ---------------------------------------------------------------------------
// Reading JSON with its key order (serde_json's map sorts)

/// A JSON object's entries in the order they were written.
#[derive(Debug, Clone, PartialEq)]
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Env {
    name: String,
    profiles: Vec<String>,
    property_sources: Vec<Source>,
}

#[derive(Debug, Deserialize)]
struct Source {
    name: String,
    source: Ordered,
}

fn entries(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn env(server: &TestServer, path: &str, accept: Option<&str>) -> Env {
    let resp = match accept {
        Some(a) => server.get_with(path, "accept", a).await,
        None => server.get(path).await,
    };
    assert_eq!(resp.status(), 200, "{path}");
    let body = resp.text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn names(env: &Env, uri: &str) -> Vec<String> {
    env.property_sources
        .iter()
        .map(|s| {
            s.name
                .split_once(&format!("{uri}/"))
                .unwrap_or_else(|| panic!("{} does not name {uri}/", s.name))
                .1
                .to_string()
        })
        .collect()
}

fn source<'a>(env: &'a Env, name: &str) -> &'a [(String, Value)] {
    &env.property_sources
        .iter()
        .find(|s| s.name.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no source {name}"))
        .source
        .0
}

// ---------------------------------------------------------------------------
// Item 1: profile documents

/// Which documents apply, and their order: Spring Boot's `Activate.isActive`
/// (`Profiles.of(onProfile).matches(activeProfiles)`) picks them; each is its own
/// property source named `… (document #N)`, N counted from 0 among the file's
/// documents (`YamlPropertySourceLoader.load`, `PropertiesPropertySourceLoader.load`);
/// later documents of a file come first (`ConfigDataEnvironmentContributors.asContributors`
/// adds them `for (int i = size - 1; i >= 0; i--)`); profile files above the rest.
#[tokio::test]
async fn profile_documents_apply_only_for_their_profiles_in_springs_order() {
    let repo = repo();
    let server = start(&repo).await;
    let uri = repo.path_str();

    let prod = env(&server, "/orders/prod", None).await;
    assert_eq!(prod.name, "orders");
    assert_eq!(prod.profiles, vec!["prod"]);
    assert_eq!(
        names(&prod, &uri),
        vec![
            "orders-prod.properties (document #0)",
            "orders.yml (document #2)",
            "orders.yml (document #0)",
            "application.yml (document #1)",
            "application.yml (document #0)",
        ],
        "a prod app gets no eu, !prod or dev document"
    );

    let prod_eu = env(&server, "/orders/prod,eu", None).await;
    assert_eq!(
        names(&prod_eu, &uri),
        vec![
            "orders-prod.properties (document #1)",
            "orders-prod.properties (document #0)",
            "orders.yml (document #2)",
            "orders.yml (document #1)",
            "orders.yml (document #0)",
            "application.yml (document #3)",
            "application.yml (document #1)",
            "application.yml (document #0)",
        ],
        "`prod & eu` and `eu | uk` apply when both are asked for"
    );

    // The legacy `spring.profiles: dev` still activates (Spring Boot 2.3 and Spring
    // Cloud Config servers on it); `!prod` applies to every profile but prod.
    let dev = env(&server, "/orders/dev", None).await;
    assert_eq!(
        names(&dev, &uri),
        vec![
            "orders.yml (document #0)",
            "application.yml (document #4)",
            "application.yml (document #2)",
            "application.yml (document #0)",
        ]
    );

    // The Environment form keeps the activation keys, as Spring's property sources do.
    assert_eq!(
        source(&prod, "orders.yml (document #2)"),
        entries(&[
            ("spring.config.activate.on-profile[0]", json!("staging")),
            ("spring.config.activate.on-profile[1]", json!("prod")),
            ("orders.page-size", json!(50)),
        ])
    );

    // The native API follows the same rules.
    let native: Value = server.get_json("/v1/config/orders/prod,eu").await;
    assert_eq!(
        native["values"]["orders"],
        json!({"page-size": 50, "currency": "EUR", "retries": "5"})
    );
    assert_eq!(native["values"]["app"]["region"], json!("eu-west-1"));
    assert_eq!(native["values"]["server"]["port"], json!(80));
    assert!(native["values"]["app"].get("banner").is_none());
    assert!(
        native["values"]
            .get("spring")
            .unwrap()
            .get("config")
            .is_none(),
        "activation keys are not config"
    );
    assert_eq!(
        native["sources"],
        json!(["orders-prod.properties", "orders.yml", "application.yml"])
    );
    let dev: Value = server.get_json("/v1/config/orders/dev").await;
    assert_eq!(dev["values"]["app"]["debug"], json!(true));
    assert_eq!(dev["values"]["app"]["banner"], json!("not-prod"));
    assert_eq!(dev["values"]["server"]["port"], json!(8080));
}

/// The v2 form: each value with its origin; a key set twice in `.properties` has the
/// origin of the value that won (`OriginTrackedPropertiesLoader`: `Document.put`
/// replaces the value and its origin).
#[tokio::test]
async fn v2_form_gives_each_document_with_origins() {
    let repo = repo();
    let server = start(&repo).await;
    let v2 = env(
        &server,
        "/orders/prod",
        Some("application/vnd.spring-cloud.config-server.v2+json"),
    )
    .await;
    let props = source(&v2, "orders-prod.properties (document #0)");
    let retries = &props.iter().find(|(k, _)| k == "orders.retries").unwrap().1;
    assert_eq!(retries["value"], json!("5"));
    assert_eq!(retries["origin"], json!("orders-prod.properties:6"));
    let app1 = source(&v2, "application.yml (document #1)");
    let port = &app1.iter().find(|(k, _)| k == "server.port").unwrap().1;
    assert_eq!(port["value"], json!(80));
    assert_eq!(
        port["origin"],
        json!("application.yml:22"),
        "the line in the file, not in the document"
    );
}

// ---------------------------------------------------------------------------
// Item 3: flat keys

/// The Environment form is Spring's flat view, keys in file order: the dotted and the
/// nested `spring.datasource.url` are one key, the later one wins and keeps the first
/// place (`YamlProcessor.buildFlattenedMap` puts into a `LinkedHashMap`); a `null` is
/// `""` and an empty list is `""` (`OriginTrackedYamlLoader.constructObject`:
/// `getValue` and the empty `SequenceNode` case); `.properties` keys that are both a
/// value and a prefix are both there, and of a key set twice the last value counts
/// (`OriginTrackedPropertiesLoader.Document.put`).
#[tokio::test]
async fn flat_keys_are_served_as_spring_flattens_them() {
    let repo = repo();
    let server = start(&repo).await;
    let prod = env(&server, "/orders/prod", None).await;
    assert_eq!(
        source(&prod, "application.yml (document #0)"),
        entries(&[
            ("server.port", json!(8080)),
            (
                "spring.datasource.url",
                json!("jdbc:postgresql://localhost/app")
            ),
            ("spring.datasource.username", json!("app")),
            ("app.country", json!("NO")),
            ("app.legacy-flag", json!("on")),
            ("app.launch-date", json!("2024-03-01")),
            ("app.jdbc", json!("${spring.datasource.url}")),
            ("app.regions[0]", json!("us-east-1")),
            ("app.regions[1]", json!("eu-west-1")),
            ("app.nothing", json!("")),
        ])
    );
    // The emptied list is `""` in the higher document: Spring clients bind an empty list.
    assert_eq!(
        source(&prod, "application.yml (document #1)"),
        entries(&[
            ("spring.config.activate.on-profile", json!("prod")),
            ("server.port", json!(80)),
            ("app.regions", json!("")),
        ])
    );
    assert_eq!(
        source(&prod, "orders-prod.properties (document #0)"),
        entries(&[
            ("logging.level.org.hibernate", json!("INFO")),
            ("logging.level.org.hibernate.SQL", json!("DEBUG")),
            ("logging.level.root", json!("WARN")),
            ("orders.retries", json!("5")),
        ])
    );

    // The native API nests without loss (README, "flat and nested keys"): the value keeps
    // its key, the deeper key is written whole beside it; placeholders read the key
    // that won; an emptied list is empty; a null is null.
    let native: Value = server.get_json("/v1/config/orders/prod").await;
    assert_eq!(
        native["values"]["logging"],
        json!({"level": {"org": {"hibernate": "INFO", "hibernate.SQL": "DEBUG"}, "root": "WARN"}})
    );
    assert_eq!(
        native["values"]["spring"]["datasource"]["url"],
        json!("jdbc:postgresql://localhost/app")
    );
    assert_eq!(
        native["values"]["app"]["jdbc"],
        json!("jdbc:postgresql://localhost/app")
    );
    assert_eq!(native["values"]["app"]["regions"], json!([]));
    assert_eq!(native["values"]["app"]["nothing"], Value::Null);
    assert_eq!(native["values"]["app"]["country"], json!("NO"));
}

// ---------------------------------------------------------------------------
// Item 9: the file forms

/// The `.yml` form: Spring merges the Environment into flat keys
/// (`EnvironmentController.convertToProperties`: plain keys take the higher value and
/// keep their place; `[…]` keys come per prefix from the highest source, after them;
/// `spring.profiles` removed), nests them with `PropertyNavigator` (a key under a value
/// is written `hibernate.SQL` beside it), resolves placeholders, and dumps with
/// SnakeYAML, quoting what YAML 1.1 would misread; served as `text/plain` (`getSuccess`).
#[tokio::test]
async fn yml_form_is_springs() {
    let repo = repo();
    let server = start(&repo).await;
    let resp = server.get("/orders-prod.yml").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("text/plain"));
    let body = resp.text().await.unwrap();
    assert_eq!(
        body,
        "\
server:
  port: 80
spring:
  datasource:
    url: jdbc:postgresql://localhost/app
    username: app
app:
  country: 'NO'
  legacy-flag: 'on'
  launch-date: '2024-03-01'
  jdbc: jdbc:postgresql://localhost/app
  nothing: ''
  regions: ''
orders:
  page-size: 50
  currency: USD
  retries: '5'
logging:
  level:
    org:
      hibernate: INFO
      hibernate.SQL: DEBUG
    root: WARN
"
    );
    // A YAML 1.1 reader (SnakeYAML in a Spring client) reads the strings back as strings.
    let back: Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(back["app"]["country"], json!("NO"));
    // `?resolvePlaceholders=false` leaves them as written.
    let raw = server
        .get_text("/orders-prod.yml?resolvePlaceholders=false")
        .await;
    assert!(raw.contains("jdbc: ${spring.datasource.url}\n"), "{raw}");
}

/// The `.properties` form: `key: value` lines, unescaped, joined by `\n` with none at
/// the end (`EnvironmentController.getPropertiesString`); `text/plain`.
#[tokio::test]
async fn properties_form_is_springs() {
    let repo = repo();
    let server = start(&repo).await;
    let resp = server.get("/orders-prod,eu.properties").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("text/plain"));
    assert_eq!(
        resp.text().await.unwrap(),
        "\
server.port: 80
spring.datasource.url: jdbc:postgresql://localhost/app
spring.datasource.username: app
app.country: NO
app.legacy-flag: on
app.launch-date: 2024-03-01
app.jdbc: jdbc:postgresql://localhost/app
app.nothing: 
app.regions: 
app.region: eu-west-1
orders.page-size: 50
orders.currency: EUR
logging.level.org.hibernate: INFO
logging.level.org.hibernate.SQL: TRACE
logging.level.root: WARN
orders.retries: 5"
    );
}

/// The `.json` form: the same nesting as `.yml`, in order, values typed
/// (`labelledJsonProperties`: `convertToMap`, then Jackson).
#[tokio::test]
async fn json_form_is_springs() {
    let repo = repo();
    let server = start(&repo).await;
    let resp = server.get("/orders-prod.json").await;
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let body = resp.text().await.unwrap();
    let ordered: Ordered = serde_json::from_str(&body).unwrap();
    let top: Vec<&str> = ordered.0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(top, ["server", "spring", "app", "orders", "logging"]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["server"]["port"], json!(80));
    assert_eq!(v["app"]["regions"], json!(""));
    assert_eq!(
        v["logging"]["level"]["org"]["hibernate.SQL"],
        json!("DEBUG")
    );
    assert!(
        v["spring"].get("config").is_none(),
        "activation keys are stripped"
    );
}

// ---------------------------------------------------------------------------
// The npm client and `check`

/// `cloud-config-client` (npm) merges the property sources itself, highest first: it
/// must see the prod documents' values and none of the eu document's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_sees_the_profile_documents() {
    let repo = repo();
    let server = start(&repo).await;
    let node = node_load(
        &server,
        "orders",
        "prod",
        None,
        &[
            "server.port",
            "orders.page-size",
            "orders.currency",
            "logging.level.org.hibernate.SQL",
            "app.region",
        ],
    )
    .await;
    assert_eq!(node["keys"]["server.port"], json!(80));
    assert_eq!(node["keys"]["orders.page-size"], json!(50));
    assert_eq!(node["keys"]["orders.currency"], json!("USD"));
    assert_eq!(
        node["keys"]["logging.level.org.hibernate.SQL"],
        json!("DEBUG")
    );
    assert_eq!(node["keys"]["app.region"], Value::Null);
    let sources: Vec<String> = serde_json::from_value(node["sources"].clone()).unwrap();
    assert_eq!(sources.len(), 5, "{sources:?}");
    // The client's own `toObject()` cannot nest a key that is both a value and a prefix:
    // it throws on Spring's answer the same way.
    assert!(
        node["objectError"]
            .as_str()
            .is_some_and(|e| e.contains("SQL")),
        "{node}"
    );
    let node = node_load(
        &server,
        "orders",
        "prod,eu",
        None,
        &["orders.currency", "app.region"],
    )
    .await;
    assert_eq!(node["keys"]["orders.currency"], json!("EUR"));
    assert_eq!(node["keys"]["app.region"], json!("eu-west-1"));
}

/// A repository that works on Spring passes `check`: every pair resolves, including the
/// profile combinations its expressions name (`prod & eu`); the legacy key and the key
/// set twice are warnings, not problems.
#[tokio::test]
async fn check_passes_a_spring_repository_and_warns() {
    let repo = repo();
    let report = confhub_server::tools::check::check(repo.path(), None, None, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.services, 1,
        "orders-prod.properties is orders in prod"
    );
    assert!(
        report.envs >= 4,
        "prod, eu, uk, staging, dev come from the documents"
    );
    let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("application.yml") && w.contains("spring.profiles")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("orders-prod.properties:6") && w.contains("orders.retries")),
        "{warnings:?}"
    );
    // A malformed expression is a problem, as Spring refuses it
    // (`ProfilesParser`: "Malformed profile expression").
    repo.write(
        "orders.yml",
        "a: 1\n---\nspring.config.activate.on-profile: prod & eu | uk\nb: 2\n",
    );
    repo.commit("mixed operators");
    let report = confhub_server::tools::check::check(repo.path(), None, None, None).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains("malformed profile expression")),
        "{:?}",
        report.problems
    );
}
