//! Several application names in one Spring request (`/orders,common/prod`) and Spring's
//! search paths (`{application}` folders, several folders), compared with what Spring
//! Cloud Config answers; each expectation cites the Spring source or test that says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ws::Watcher;
use common::{settings, wait_for, TestRepo, TestServer};
use confhub_server::auth::{token_hash, TokenConfig};
use serde_json::{json, Value};

/// Property source names, without the `<uri>/` every one starts with.
fn names(env: &Value, repo: &TestRepo) -> Vec<String> {
    let uri = repo.path_str();
    env["propertySources"]
        .as_array()
        .unwrap_or_else(|| panic!("no propertySources: {env}"))
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap();
            name.split_once(&format!("{uri}/"))
                .unwrap_or_else(|| panic!("{name} does not name {uri}/"))
                .1
                .to_string()
        })
        .collect()
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = server.client().get(server.url(path));
    if let Some(t) = token {
        // As a Spring Boot client sends it (`spring.cloud.config.password`).
        req = req.basic_auth("spring", Some(t));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn env(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(server, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn names_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "who: application\nlevel: 0\n")
        .write("application-prod.yml", "who: application-prod\n")
        .write("orders.yml", "who: orders\norders-only: true\n")
        .write("orders-prod.yml", "who: orders-prod\n")
        .write("common.properties", "who=common\ncommon-only=true\n")
        .write("common-prod.properties", "who=common-prod\n")
        .write("billing.yml", "who: billing\n");
    repo.commit("orders, common, billing");
    repo
}

// ---------------------------------------------------------------------------
// Item 5: several application names

/// `NativeEnvironmentRepository.getEnvironment` sets `spring.config.name=application,
/// <names>`, and Spring Boot ranks a later name above an earlier one, every profile file
/// above every plain one: `AwsS3EnvironmentRepositoryTests.findWithMultipleApplicationAllFound`
/// expects `bar-profile1` before `foo-profile1` for `findOne("foo,bar", "profile1", …)`.
/// The Environment's `name` is the list as asked (`assertExpectedEnvironment(env, "foo,bar", …)`).
#[tokio::test]
async fn several_names_load_in_springs_order_in_every_form() {
    let repo = names_repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let expected = [
        "common-prod.properties",
        "orders-prod.yml",
        "application-prod.yml",
        "common.properties",
        "orders.yml",
        "application.yml",
    ];
    for path in ["/orders,common/prod", "/orders,common/prod/main"] {
        let e = env(&server, path).await;
        assert_eq!(e["name"], "orders,common", "{path}");
        assert_eq!(names(&e, &repo), expected, "{path}");
    }
    // The later name wins in the file forms too (`EnvironmentController` renders the
    // same Environment).
    let (status, yml) = get(&server, "/orders,common-prod.yml", None).await;
    assert_eq!(status, 200, "{yml}");
    let yml: Value = serde_yaml::from_str(&yml).unwrap();
    assert_eq!(yml["who"], "common-prod");
    assert_eq!(yml["orders-only"], true);
    assert_eq!(yml["common-only"], "true");
    assert_eq!(yml["level"], 0);
    let (status, props) = get(&server, "/main/orders,common-prod.properties", None).await;
    assert_eq!(status, 200, "{props}");
    assert!(props.contains("who: common-prod"), "{props}");
    let (status, json) = get(&server, "/orders,common-prod.json", None).await;
    assert_eq!(status, 200, "{json}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["who"], "common-prod");
    // The other order gives the other winner.
    let e = env(&server, "/common,orders/prod").await;
    assert_eq!(names(&e, &repo)[0], "orders-prod.yml");
    // A name with no files adds nothing (Spring ignores missing files:
    // `spring.config.on-not-found=IGNORE` in `NativeEnvironmentRepository.getEnvironment`).
    let e = env(&server, "/orders,nosuch/prod").await;
    assert_eq!(
        names(&e, &repo),
        [
            "orders-prod.yml",
            "application-prod.yml",
            "orders.yml",
            "application.yml"
        ]
    );
}

fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: token_hash(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// Spring has no scopes; confhub's rule holds for the list: every name needs the token's scope.
#[tokio::test]
async fn several_names_need_a_scope_for_each() {
    let repo = names_repo();
    let mut s = settings(repo.path_str());
    s.tokens = vec![
        token("orders", "tok-orders", &["read:orders/*"]),
        token("both", "tok-both", &["read:orders/*", "read:common/*"]),
    ];
    let server = TestServer::start(s).await;
    for path in [
        "/orders,common/prod",
        "/orders,common/prod/main",
        "/orders,common-prod.yml",
        "/main/orders,common-prod.properties",
        "/common,orders/prod",
        "/orders,billing/prod",
    ] {
        let (status, body) = get(&server, path, Some("tok-orders")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(!body.contains("who"), "no value leaks: {body}");
    }
    let (status, body) = get(&server, "/orders/prod", Some("tok-orders")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&server, "/orders,common/prod", Some("tok-both")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("common-prod.properties"), "{body}");
    // More names than the stated limit is a clear 400, not a slow answer.
    let many = (0..17)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, body) = get(&server, &format!("/{many}/prod"), Some("tok-both")).await;
    assert_eq!(status, 400, "{body}");
}

// ---------------------------------------------------------------------------
// Item 6: search paths

/// Spring's own `nested-repo` test repository.
fn nested_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "info:\n  foo: bar\n")
        .write("bar/application.properties", "foo:bar\n")
        .write("foo/application.properties", "foo:foo\n");
    repo.commit("nested-repo");
    repo
}

/// `JGitEnvironmentRepositoryIntegrationTests.nestedWithApplicationPlaceholders`:
/// `searchPaths={application}`, `findOne("foo,bar", "staging", "master")` has 3 property
/// sources. `AbstractScmAccessor.getSearchLocations` puts the root first and the folders
/// after it (`DEFAULT_LOCATIONS` + search paths, each app in turn), and Spring Boot ranks
/// a later location of the group above an earlier one: `bar/`, `foo/`, then the root.
#[tokio::test]
async fn application_folders_are_read_as_spring_reads_them() {
    let repo = nested_repo();
    let mut s = settings(repo.path_str());
    s.search_path = Some("{application}".into());
    let server = TestServer::start(s).await;

    let e = env(&server, "/foo,bar/staging/main").await;
    assert_eq!(
        names(&e, &repo),
        [
            "bar/application.properties",
            "foo/application.properties",
            "application.yml"
        ]
    );
    let e = env(&server, "/foo/staging").await;
    assert_eq!(
        names(&e, &repo),
        ["foo/application.properties", "application.yml"]
    );
    assert_eq!(e["propertySources"][0]["source"], json!({"foo": "foo"}));
    // The native API reads the same files.
    let (status, body) = get(&server, "/v1/config/foo/staging", None).await;
    assert_eq!(status, 200, "{body}");
    let native: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(native["values"]["foo"], "foo", "{native}");
    assert_eq!(native["values"]["info"]["foo"], "bar", "{native}");
    // Each folder is an application of the catalog.
    let (status, body) = get(&server, "/v1/services", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"foo\"") && body.contains("\"bar\""),
        "{body}"
    );
}

/// Several comma-separated folders (`searchPaths` is a list), with `{profile}`: later
/// folders above earlier ones, the root lowest (`AbstractScmAccessor.getSearchLocations`).
#[tokio::test]
async fn several_folders_and_profile_folders() {
    let repo = TestRepo::new();
    repo.write("application.yml", "a: root\nb: root\nc: root\nd: root\n")
        .write(
            "shared/application.yml",
            "a: shared\nb: shared\nc: shared\n",
        )
        .write("orders/application.yml", "a: orders\nb: orders\n")
        .write("env-prod/application.yml", "a: env-prod\n")
        .write("code/main.rs", "fn main() {}\n");
    repo.commit("folders");
    let mut s = settings(repo.path_str());
    s.search_path = Some("shared, {application} ,env-{profile}".into());
    let server = TestServer::start(s).await;
    let e = env(&server, "/orders/prod").await;
    assert_eq!(
        names(&e, &repo),
        [
            "env-prod/application.yml",
            "orders/application.yml",
            "shared/application.yml",
            "application.yml"
        ]
    );
    let (_, yml) = get(&server, "/orders-prod.yml", None).await;
    let yml: Value = serde_yaml::from_str(&yml).unwrap();
    assert_eq!(
        yml,
        json!({"a": "env-prod", "b": "orders", "c": "shared", "d": "root"})
    );
    // An application with no files still reads the shared folders.
    let e = env(&server, "/nosuch/prod").await;
    assert_eq!(
        names(&e, &repo),
        [
            "env-prod/application.yml",
            "shared/application.yml",
            "application.yml"
        ]
    );
    // Another profile's folder is not read.
    let e = env(&server, "/orders/dev").await;
    assert_eq!(names(&e, &repo)[0], "orders/application.yml");
}

/// A folder of `{application}` is that application's: a token for `foo` reads `foo/`,
/// and neither `bar/` alone nor `foo,bar` together.
#[tokio::test]
async fn application_folders_keep_scopes() {
    let repo = nested_repo();
    let mut s = settings(repo.path_str());
    s.search_path = Some("{application}".into());
    s.tokens = vec![token("foo", "tok-foo", &["read:foo/*"])];
    let server = TestServer::start(s).await;
    let (status, body) = get(&server, "/foo/staging", Some("tok-foo")).await;
    assert_eq!(status, 200, "{body}");
    for path in ["/bar/staging", "/foo,bar/staging", "/v1/config/bar/staging"] {
        let (status, body) = get(&server, path, Some("tok-foo")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            !body.contains("propertySources") && !body.contains("values"),
            "{body}"
        );
    }
}

/// The values of the next config frame.
async fn next_values(ws: &mut Watcher) -> Value {
    loop {
        let v = ws.next_json("a config frame").await;
        if v.get("values").is_some() {
            return v["values"].clone();
        }
    }
}

/// A commit to `foo/application.properties` is pushed to `foo`'s WebSocket subscribers.
#[tokio::test]
async fn application_folder_changes_are_pushed() {
    let repo = nested_repo();
    let mut s = settings(repo.path_str());
    s.search_path = Some("{application}".into());
    s.poll = Duration::from_millis(100);
    let server = TestServer::start(s).await;
    let mut ws = server.watch().await;
    ws.subscribe("foo", "staging", None).await;
    assert_eq!(next_values(&mut ws).await["foo"], "foo");
    repo.write("foo/application.properties", "foo:changed\n");
    repo.commit("change foo");
    assert_eq!(next_values(&mut ws).await["foo"], "changed");
    // And the history of the pair sees that commit.
    let srv = &server;
    let history: Value = wait_for(Duration::from_secs(30), "history of foo", || async move {
        let (status, body) = get(srv, "/v1/history/foo/staging", None).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && body.contains("change foo")).then_some(v)
    })
    .await;
    assert!(history.to_string().contains("foo"), "{history}");
}

/// `confhub check` reads the same folders: a broken file in `foo/` is found.
#[tokio::test]
async fn check_reads_application_folders() {
    let repo = nested_repo();
    let report =
        confhub_server::tools::check::check(repo.path(), None, Some("{application}"), None)
            .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.services, 2);
    repo.write("foo/application.yml", "a: [unclosed\n");
    repo.commit("broken");
    let report =
        confhub_server::tools::check::check(repo.path(), None, Some("{application}"), None)
            .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains("foo/application.yml")),
        "{:?}",
        report.problems
    );
    // Forms confhub does not support are refused with the reason, not served empty.
    let err = match confhub_server::tools::check::check(repo.path(), None, Some("{label}/x"), None)
    {
        Ok(_) => panic!("{{label}} accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("{label}"), "{err}");
}

// ---------------------------------------------------------------------------
// Item 5: several labels

/// `AbstractScmEnvironmentRepository.findOne` reads each label of `main,feature` in
/// reverse (`splitAndReorder`) and appends its property sources, so the last label's come
/// first; the version is the labels' versions joined in the order asked (`concat`).
/// `JGitEnvironmentRepositoryTests.multipleLabels`: three labels give 3 × 2 sources;
/// `multipleLabelsWithFailure`: a label that does not exist fails the request
/// (`NoSuchLabelException`, a 404).
#[tokio::test]
async fn several_labels_are_all_read_the_last_first() {
    let repo = TestRepo::new();
    repo.write("application.yml", "where: main\n")
        .write("orders.yml", "orders: main\n");
    let main = repo.commit("main");
    repo.checkout_new("feature");
    repo.write("orders.yml", "orders: feature\n");
    let feature = repo.commit("feature");
    repo.checkout("main");
    let server = TestServer::start(settings(repo.path_str())).await;

    let e = env(&server, "/orders/prod/main,feature").await;
    assert_eq!(e["label"], "main,feature");
    assert_eq!(e["version"], format!("{main},{feature}"));
    assert_eq!(
        names(&e, &repo),
        [
            "orders.yml",
            "application.yml",
            "orders.yml",
            "application.yml"
        ]
    );
    assert_eq!(
        e["propertySources"][0]["source"],
        json!({"orders": "feature"})
    );
    assert_eq!(e["propertySources"][2]["source"], json!({"orders": "main"}));
    // The v2 media type is assembled the same way.
    let resp = server
        .get_with(
            "/orders/prod/main,feature",
            "accept",
            "application/vnd.spring-cloud.config-server.v2+json",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v2: Value = resp.json().await.unwrap();
    assert_eq!(
        v2["propertySources"][0]["source"]["orders"]["value"],
        "feature"
    );

    // The file forms take one label (README, "What differs from Spring").
    let (status, body) = get(&server, "/main,feature/orders-prod.yml", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&server, "/orders/prod/main,nosuch", None).await;
    assert_eq!(status, 404, "{body}");
    // Empty parts are skipped (`splitAndReorder` keeps only `hasText` labels).
    let e = env(&server, "/orders/prod/main,").await;
    assert_eq!(e["version"], main);
}

/// A pair of the tracked snapshot (a known env) is pushed too when only its
/// `{application}` folder changes, and a pair of another folder is not.
#[tokio::test]
async fn application_folder_changes_reach_snapshot_pairs_only() {
    let repo = TestRepo::new();
    repo.write("application-prod.yml", "env: prod\n")
        .write("orders/application.yml", "n: 1\n")
        .write("billing/application.yml", "b: 1\n");
    repo.commit("two apps");
    let mut s = settings(repo.path_str());
    s.search_path = Some("{application}".into());
    s.poll = Duration::from_millis(100);
    let server = TestServer::start(s).await;
    let mut ws = server.watch().await;
    for service in ["billing", "orders"] {
        ws.subscribe(service, "prod", None).await;
    }
    let first = next_values(&mut ws).await;
    let second = next_values(&mut ws).await;
    assert_eq!(first["b"], 1, "{first}");
    assert_eq!(second["n"], 1, "{second}");
    repo.write("orders/application.yml", "n: 2\n");
    repo.commit("orders n=2");
    // The next frame is orders' (billing's files did not change).
    let pushed = next_values(&mut ws).await;
    assert_eq!(pushed, json!({"env": "prod", "n": 2}));
}
