//! The operator endpoints Spring users rely on: `/actuator/health`, `POST /monitor`
//! (spring-cloud-config-monitor's webhook), and confhub's own paths never read as a
//! Spring application name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{baseline_repo, wait_until, TestRepo, TestServer};
use confhub_server::github_signature;
use confhub_server::settings::Secret;
use confhub_server::Settings;
use serde_json::{json, Value};

const SECRET: &str = "monitor-secret-for-tests";

/// A server on a `file://` remote it polls once an hour, so only a webhook makes it fetch.
async fn remote_server(work: &TestRepo, bare_dir: &tempfile::TempDir) -> TestServer {
    let bare = bare_dir.path().join("origin.git");
    work.clone_bare(&bare);
    work.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    let mut settings = Settings::new(format!("file://{}", bare.display()));
    settings.poll = Duration::from_secs(3600);
    settings.webhook_secret = Some(Secret::new(SECRET));
    settings.live.debounce = Duration::from_millis(50);
    TestServer::start(settings).await
}

async fn pool(server: &TestServer) -> Value {
    let v: Value = server.get_json("/orders/prod").await;
    v["propertySources"][0]["source"]["db.pool"].clone()
}

fn push(work: &TestRepo, pool: u32) {
    work.write("orders-prod.yml", &format!("db:\n  pool: {pool}\n"));
    work.commit(&format!("pool {pool}"));
    work.git(&["push", "-q", "origin", "main"]);
}

/// `POST /monitor` with `headers` and `body`: the status and the JSON answer (`null`
/// when there is none).
async fn monitor(server: &TestServer, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut req = server.client().post(server.url("/monitor"));
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn json_headers(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut headers = vec![(JSON.0, JSON.1.to_string())];
    headers.extend(extra.iter().cloned());
    headers
}

fn signed(body: &str) -> String {
    github_signature(SECRET, body.as_bytes())
}

/// Wait until the served `db.pool` is `want` (the monitor call's fetch landed).
async fn served(server: &TestServer, want: u32, what: &str) {
    wait_until(Duration::from_secs(20), what, || async {
        pool(server).await == json!(want)
    })
    .await;
}

/// `POST /monitor` with each host's push payload answers, as Spring's
/// `PropertyPathEndpoint.notifyByPath` does, the services the changed paths name
/// (`guessServiceName`: the stem and each `-` prefix, `application` read as `*`), and
/// fetches at once. Unproved calls are refused as on `/v1/webhook`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_accepts_spring_monitor_payloads_and_fetches() {
    let work = baseline_repo(&[]);
    let bare_dir = tempfile::tempdir().unwrap();
    let server = remote_server(&work, &bare_dir).await;
    assert_eq!(pool(&server).await, json!(20));

    // GitHub: GithubPropertyPathNotificationExtractor (X-Github-Event: push), the paths of
    // every commit's added/removed/modified files. PropertyPathEndpointTests expects
    // `foo-local-dev.yml` to name foo-local-dev, foo-local and foo.
    push(&work, 30);
    let body = json!({
        "ref": "refs/heads/main",
        "commits": [{"added": [], "removed": [], "modified": ["orders-prod.yml"]},
                    {"added": ["foo-local-dev.yml"], "removed": [], "modified": []}]
    })
    .to_string();
    let github = |sig: Option<String>| {
        let mut h = json_headers(&[("x-github-event", "push".into())]);
        h.extend(sig.map(|s| ("x-hub-signature-256", s)));
        h
    };
    assert_eq!(
        monitor(&server, &github(Some(signed(&body))), &body).await,
        (
            200,
            json!(["orders-prod", "orders", "foo-local-dev", "foo-local", "foo"])
        )
    );
    served(&server, 30, "the GitHub monitor call's fetch").await;

    // The same body unsigned, or signed with another secret: 401, as /v1/webhook.
    push(&work, 40);
    let forged = github_signature("not-the-secret", body.as_bytes());
    for sig in [None, Some(forged)] {
        assert_eq!(monitor(&server, &github(sig), &body).await.0, 401);
    }
    // A GitHub ping names no path: Spring answers an empty set and refreshes nothing.
    let ping = r#"{"zen":"Keep it logically awesome."}"#;
    let headers = json_headers(&[
        ("x-github-event", "ping".into()),
        ("x-hub-signature-256", signed(ping)),
    ]);
    assert_eq!(monitor(&server, &headers, ping).await, (200, json!([])));
    assert_eq!(pool(&server).await, json!(30), "nothing fetched yet");

    // The form `path=orders` (PropertyPathEndpoint.notifyByForm), proved by GitLab's token.
    let headers = [
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("x-gitlab-token", SECRET.to_string()),
    ];
    assert_eq!(
        monitor(&server, &headers, "path=orders").await,
        (200, json!(["orders"]))
    );
    served(&server, 40, "the form monitor call's fetch").await;

    // GitLab's push hook (GitlabPropertyPathNotificationExtractor: X-Gitlab-Event).
    push(&work, 50);
    let body = json!({"commits": [{"modified": ["application.yml"]}]}).to_string();
    let headers = json_headers(&[
        ("x-gitlab-event", "Push Hook".into()),
        ("x-gitlab-token", SECRET.into()),
    ]);
    assert_eq!(monitor(&server, &headers, &body).await, (200, json!(["*"])));
    served(&server, 50, "the GitLab monitor call's fetch").await;

    // Bitbucket Cloud names no files (BitbucketPropertyPathNotificationExtractor): a
    // broadcast, `application.yml`, so `*`.
    push(&work, 60);
    let body = json!({"push": {"changes": [{"new": {"name": "main"}}]}}).to_string();
    let headers = json_headers(&[
        ("x-event-key", "repo:push".into()),
        ("x-hook-uuid", "1f2e".into()),
        ("x-hub-signature", signed(&body)),
    ]);
    assert_eq!(monitor(&server, &headers, &body).await, (200, json!(["*"])));
    served(&server, 60, "the Bitbucket monitor call's fetch").await;

    // Gitea lists no files either (GiteaPropertyPathNotificationExtractor.addPaths).
    push(&work, 70);
    let body = json!({"commits": [{"id": "x"}]}).to_string();
    let sig = signed(&body).trim_start_matches("sha256=").to_string();
    let headers = json_headers(&[("x-gitea-event", "push".into()), ("x-gitea-signature", sig)]);
    assert_eq!(monitor(&server, &headers, &body).await, (200, json!(["*"])));
    served(&server, 70, "the Gitea monitor call's fetch").await;

    // A body that is neither JSON nor a form is a 400 naming what was expected.
    let junk = "not json";
    let headers = json_headers(&[("x-hub-signature-256", signed(junk))]);
    assert_eq!(monitor(&server, &headers, junk).await.0, 400);
    server.stop().await.expect("clean stop");
}

/// `GET /actuator/health` answers Spring Boot's `{"status":"UP"}` (it used to fall into the
/// Environment route and answer an environment of an app named `actuator`), without a
/// token, also on a server whose config needs one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuator_health_is_springs_and_needs_no_token() {
    let repo = baseline_repo(&[]);
    let mut settings = Settings::new(repo.path_str());
    settings.tokens = vec![common::token("reader", "reader-token", "read:*/*")];
    let server = TestServer::start(settings).await;
    let resp = server.get("/actuator/health").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        common::header(&resp, "content-type"),
        "application/vnd.spring-boot.actuator.v3+json"
    );
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "UP"}));
    // Config itself still needs the token.
    assert_eq!(server.get("/orders/prod").await.status(), 401);
    server.stop().await.expect("clean stop");
}

/// confhub's own first path segments are never a Spring application name: an unknown path
/// under them is a 404, where it used to be answered as the Environment of an app `v1`
/// with profile `consoles`. Spring application names next to them still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_paths_are_not_spring_application_names() {
    let repo = baseline_repo(&[]);
    let server = TestServer::start(Settings::new(repo.path_str())).await;
    for path in [
        "/v1",
        "/v1/consoles",
        "/v1/instances/orders",
        "/v1/anything/at/all/deep",
        "/ui/app.js",
        "/ui/orders/prod/main",
        "/actuator",
        "/actuator/info",
        "/actuator/env/prod",
        "/metrics/prod",
        "/healthz/prod",
        "/readyz/prod/main",
        "/monitor/prod",
        "/encrypt/prod",
        "/decrypt/prod",
        "/key/prod",
    ] {
        let e = server.get_error(path, 404).await;
        assert_eq!(e.error, "not_found", "{path}");
    }
    // Real routes under the reserved segments and Spring names beside them still answer.
    assert_eq!(server.get("/v1/services").await.status(), 200);
    let console = server.get_text("/ui").await;
    assert!(
        console.contains("<title>Overview · confhub</title>"),
        "{console}"
    );
    assert_eq!(server.get("/metrics").await.status(), 200);
    assert_eq!(server.get("/healthz").await.status(), 200);
    let env: Value = server.get_json("/orders/prod").await;
    assert_eq!(env["name"], "orders");
    let env: Value = server.get_json("/v1-legacy/prod").await;
    assert_eq!(env["name"], "v1-legacy");
    // A label may be called `v1`: the file form at tag v1, as Spring serves it.
    repo.tag("v1");
    let text = server.get_text("/v1/orders-prod.yml").await;
    assert!(text.contains("pool: 20"), "{text}");
    server.stop().await.expect("clean stop");
}
