//! A Spring Boot application's exact request, reproduced: what
//! spring-cloud-config-client's `ConfigServerConfigDataLoader.getRemoteEnvironment` sends
//! (lines 281-349 of spring-cloud-config-client/src/main/java/org/springframework/cloud/
//! config/client/ConfigServerConfigDataLoader.java): `GET {uri}/{name}/{profile}[/{label}]`
//! with `Accept: application/vnd.spring-cloud.config-server.v2+json` (the default
//! `spring.cloud.config.media-type`, `EnvironmentMediaType.V2_JSON`), `Accept-Charset:
//! UTF-8`, HTTP Basic from `spring.cloud.config.username`/`password`
//! (`ConfigClientRequestTemplateFactory.addAuthorizationToken`) and `X-Config-Token` when
//! `spring.cloud.config.token` is set. The client treats every status but 200 and 404 as
//! fatal at startup, so each must be right.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{TestRepo, TestServer};
use confhub_server::Settings;
use serde_json::Value;

const V2: &str = "application/vnd.spring-cloud.config-server.v2+json";
const TOKEN: &str = "orders-app-secret";

async fn server(repo: &TestRepo) -> TestServer {
    let mut settings = Settings::new(repo.path_str());
    settings.tokens = vec![common::token("orders-app", TOKEN, "read:orders/*")];
    TestServer::start(settings).await
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n")
        .write("application-prod.yml", "tier: prod\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n")
        .write("payments.yml", "key: not-for-orders\n");
    repo.commit("baseline");
    repo
}

/// The request as Spring's `RestTemplate` builds it.
fn spring_request(
    server: &TestServer,
    path: &str,
    user: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    server
        .client()
        .get(server.url(path))
        .header("accept", V2)
        .header("accept-charset", "UTF-8")
        .header("authorization", format!("Basic {basic}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spring_boot_clients_request_gets_its_environment() {
    let repo = repo();
    let server = server(&repo).await;
    let uri = format!("file://{}", repo.path().display());

    // spring.application.name=orders, spring.profiles.active=prod, label main; the
    // username is whatever the app sets (Spring's default is `user`): only the password
    // is the token.
    let resp = spring_request(&server, "/orders/prod/main", "user", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(common::header(&resp, "content-type"), V2);
    let env: Value = resp.json().await.unwrap();
    assert_eq!(env["name"], "orders");
    assert_eq!(env["profiles"], serde_json::json!(["prod"]));
    assert_eq!(env["label"], "main");
    let names: Vec<&str> = env["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ps| ps["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("{uri}/orders-prod.yml"),
            format!("{uri}/application-prod.yml"),
            format!("{uri}/orders.yml"),
            format!("{uri}/application.yml"),
        ]
    );
    // v2: each value with its origin (`OriginTrackedValue`), as Spring's v2 answers.
    assert_eq!(
        env["propertySources"][0]["source"]["db.pool"]["value"], 20,
        "{env}"
    );

    // Without a label (no spring.cloud.config.label): the tracked branch.
    let resp = spring_request(&server, "/orders/prod", "user", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // spring.cloud.config.token instead of a password: X-Config-Token.
    let resp = server
        .client()
        .get(server.url("/orders/prod"))
        .header("accept", V2)
        .header("x-config-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A wrong password is a 401 that asks for Basic, so the app fails at startup with a
    // clear cause rather than running on defaults.
    let resp = spring_request(&server, "/orders/prod", "user", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        common::header(&resp, "www-authenticate").contains("Basic"),
        "{:?}",
        resp.headers()
    );
    // Another app's config is out of the token's scope: 403, never its values.
    let resp = spring_request(&server, "/payments/prod", "user", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(!resp.text().await.unwrap().contains("not-for-orders"));
    server.stop().await.expect("clean stop");
}
