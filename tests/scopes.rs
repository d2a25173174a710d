//! The scope matrix: every token × every surface × every pair. An allowed call succeeds,
//! an out-of-scope one is 403 (an `error` frame on the WebSocket), and a call without a
//! token or with an unknown one is 401 — on every form of every API.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::ws;
use common::{TestRepo, TestServer};
use confhub_client::wire::{ServerFrame, ServicesResponse, StatusResponse};
use confhub_server::auth::TokenConfig;
use confhub_server::crypto::{Key, Keyring};

const PAIRS: [(&str, &str); 4] = [
    ("orders", "prod"),
    ("orders", "staging"),
    ("payments", "prod"),
    ("payments", "staging"),
];

struct Who {
    token: Option<&'static str>,
    /// None: 401 everywhere; Some(f): f(service, env) says whether reading is allowed.
    may_read: Option<fn(&str, &str) -> bool>,
    admin: bool,
}

const WHO: [Who; 5] = [
    Who {
        token: Some("tok-orders"),
        may_read: Some(|s, _| s == "orders"),
        admin: false,
    },
    Who {
        token: Some("tok-staging"),
        may_read: Some(|_, e| e == "staging"),
        admin: false,
    },
    Who {
        token: Some("tok-admin"),
        may_read: Some(|_, _| true),
        admin: true,
    },
    Who {
        token: None,
        may_read: None,
        admin: false,
    },
    Who {
        token: Some("tok-unknown"),
        may_read: None,
        admin: false,
    },
];

fn tokens() -> Vec<TokenConfig> {
    let t = common::token;
    vec![
        t("orders-service", "tok-orders", "read:orders/*"),
        t("staging-ci", "tok-staging", "read:*/staging"),
        t("ops", "tok-admin", "admin"),
    ]
}

async fn server(repo: &TestRepo) -> TestServer {
    let mut settings = common::settings(repo.path_str());
    settings.tokens = tokens();
    settings.keyring =
        Some(Keyring::new(vec![Key::from_base64(&Key::generate()).unwrap()]).unwrap());
    TestServer::start(settings).await
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\n")
        .write("application-prod.yml", "tier: prod\n")
        .write("application-staging.yml", "tier: staging\n")
        .write("orders.yml", "pool: 1\n")
        .write("payments.yml", "currency: EUR\n");
    repo.commit("initial");
    repo.tag("v1");
    repo.write("orders.yml", "pool: 2\n")
        .write("payments.yml", "currency: USD\n");
    repo.commit("second");
    repo
}

fn surfaces(s: &str, e: &str) -> Vec<String> {
    vec![
        format!("/v1/config/{s}/{e}"),
        format!("/v1/config/{s}/{e}?label=v1"),
        format!("/v1/config/{s}/{e}?format=properties"),
        format!("/{s}/{e}"),
        format!("/{s}/{e}/v1"),
        format!("/{s}-{e}.yml"),
        format!("/{s}-{e}.yaml"),
        format!("/{s}-{e}.properties"),
        format!("/{s}-{e}.json"),
        format!("/v1/{s}-{e}.yml"),
        format!("/main/{s}-{e}.json?resolvePlaceholders=false"),
        format!("/v1/history/{s}/{e}"),
        format!("/v1/diff/{s}/{e}?from=v1"),
    ]
}

async fn call(server: &TestServer, path: &str, token: Option<&str>, form: usize) -> u16 {
    let mut req = server.client().get(server.url(path));
    if let Some(t) = token {
        // Rotate through the three accepted forms.
        req = match form % 3 {
            0 => req.bearer_auth(t),
            1 => req.header("X-Config-Token", t),
            _ => req.basic_auth("spring", Some(t)),
        };
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_surface_enforces_scopes() {
    let repo = repo();
    let server = server(&repo).await;
    let mut failures = Vec::new();
    let mut form = 0;
    for who in &WHO {
        for (s, e) in PAIRS {
            for path in surfaces(s, e) {
                form += 1;
                let expected = match who.may_read {
                    None => 401,
                    Some(f) if f(s, e) => 200,
                    Some(_) => 403,
                };
                let got = call(&server, &path, who.token, form).await;
                if got != expected {
                    failures.push(format!(
                        "{:?} GET {path}: expected {expected}, got {got}",
                        who.token
                    ));
                }
            }
        }
        // Several envs at once need every one of them in scope.
        let path = "/v1/config/orders/prod,staging";
        let expected = match (who.may_read, who.admin, who.token) {
            (None, _, _) => 401,
            (_, true, _) | (_, _, Some("tok-orders")) => 200,
            _ => 403,
        };
        let got = call(&server, path, who.token, 0).await;
        if got != expected {
            failures.push(format!(
                "{:?} GET {path}: expected {expected}, got {got}",
                who.token
            ));
        }
        // Admin-only endpoints.
        for path in ["/encrypt", "/decrypt"] {
            let mut req = server.client().post(server.url(path)).body("x");
            if let Some(t) = who.token {
                req = req.bearer_auth(t);
            }
            let got = req.send().await.unwrap().status().as_u16();
            let ok = if path == "/encrypt" { 200 } else { 400 }; // "x" is not a cipher
            let expected = match (who.may_read, who.admin) {
                (None, _) => 401,
                (_, true) => ok,
                _ => 403,
            };
            if got != expected {
                failures.push(format!(
                    "{:?} POST {path}: expected {expected}, got {got}",
                    who.token
                ));
            }
        }
        for path in ["/v1/services", "/v1/status"] {
            let expected = if who.may_read.is_some() { 200 } else { 401 };
            let got = call(&server, path, who.token, 0).await;
            if got != expected {
                failures.push(format!(
                    "{:?} GET {path}: expected {expected}, got {got}",
                    who.token
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} scope failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Probes need no token.
    assert_eq!(call(&server, "/healthz", None, 0).await, 200);
    assert_eq!(call(&server, "/readyz", None, 0).await, 200);
}

#[tokio::test]
async fn listings_and_status_show_only_what_the_token_may_read() {
    let repo = repo();
    let server = server(&repo).await;
    let get = |path: &'static str, token: &'static str| {
        let req = server.client().get(server.url(path)).bearer_auth(token);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let services: ServicesResponse =
        serde_json::from_str(&get("/v1/services", "tok-orders").await).unwrap();
    let names: Vec<&str> = services.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orders"]);
    let services: ServicesResponse =
        serde_json::from_str(&get("/v1/services", "tok-staging").await).unwrap();
    assert!(
        services.services.iter().all(|s| s.envs == ["staging"]),
        "{services:?}"
    );
    let services: ServicesResponse =
        serde_json::from_str(&get("/v1/services", "tok-admin").await).unwrap();
    assert_eq!(services.services.len(), 2);

    // Break payments: its error shows to admin, not to the orders token.
    repo.write("payments.yml", "currency: [\n");
    repo.commit("break payments");
    common::wait_until(common::DEADLINE, "payments to fail", || async {
        let s: StatusResponse =
            serde_json::from_str(&get("/v1/status", "tok-admin").await).unwrap();
        !s.errors.is_empty()
    })
    .await;
    let s: StatusResponse = serde_json::from_str(&get("/v1/status", "tok-orders").await).unwrap();
    assert!(
        s.errors.is_empty(),
        "orders token must not see payments errors: {:?}",
        s.errors
    );
    let s: StatusResponse = serde_json::from_str(&get("/v1/status", "tok-admin").await).unwrap();
    assert!(
        s.errors.iter().all(|e| e.service == "payments"),
        "{:?}",
        s.errors
    );
    let ready: serde_json::Value = serde_json::from_str(&server.get_text("/readyz").await).unwrap();
    assert_eq!(
        ready["errors"],
        serde_json::json!([]),
        "anonymous probes see no error details"
    );
}

#[tokio::test]
async fn websocket_subscriptions_are_checked_one_by_one() {
    let repo = repo();
    let server = server(&repo).await;

    // No token: the upgrade itself is refused.
    let err = ws::open(&server.ws_url("/v1/watch"), None)
        .await
        .expect_err("an upgrade without a token is refused");
    assert!(err.to_string().contains("401"), "{err}");

    let mut ws = server
        .watch_as("Bearer tok-staging")
        .await
        .within(common::DEADLINE);
    ws.subscribe("orders", "prod", None).await;
    ws.subscribe("orders", "staging", None).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(ws.next("tok-staging's frames").await);
    }
    match &seen[0] {
        ServerFrame::Error {
            service,
            env,
            error,
            ..
        } => {
            assert_eq!(
                (service.as_deref(), env.as_deref(), error.as_str()),
                (Some("orders"), Some("prod"), "forbidden")
            );
        }
        other => panic!("expected a forbidden error frame, got {other:?}"),
    }
    assert!(
        matches!(&seen[1], ServerFrame::Config { service, env, .. } if service == "orders" && env == "staging"),
        "{seen:?}"
    );

    // HTTP Basic works for the upgrade too (Spring-style clients).
    let basic = base64::engine::general_purpose::STANDARD.encode("x:tok-orders");
    let mut ws = server
        .watch_as(&format!("Basic {basic}"))
        .await
        .within(common::DEADLINE);
    ws.subscribe("payments", "staging", None).await;
    let frame = ws.next("tok-orders over Basic").await;
    assert!(
        matches!(frame, ServerFrame::Error { ref error, .. } if error == "forbidden"),
        "{frame:?}"
    );
}

#[tokio::test]
async fn encrypt_round_trip_reaches_only_authorized_clients() {
    let repo = repo();
    let server = server(&repo).await;
    let cipher = server
        .client()
        .post(server.url("/encrypt"))
        .bearer_auth("tok-admin")
        .body("s3cret-pw")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Bare, as Spring answers: the value to commit is `{cipher}` + this.
    assert!(!cipher.starts_with("{cipher}"), "{cipher}");
    let cipher = format!("{{cipher}}{cipher}");
    let plain = server
        .client()
        .post(server.url("/decrypt"))
        .bearer_auth("tok-admin")
        .body(cipher.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(plain, "s3cret-pw");

    repo.write(
        "orders.yml",
        &format!("pool: 2\ndb:\n  password: '{cipher}'\n"),
    );
    let sha = repo.commit("add a secret");
    let url = format!("/v1/config/orders/prod?label={sha}");
    let body = server
        .client()
        .get(server.url(&url))
        .bearer_auth("tok-orders")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"password\":\"s3cret-pw\""), "{body}");
    for token in ["tok-staging", "tok-unknown"] {
        let resp = server
            .client()
            .get(server.url(&url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(resp.status() == 403 || resp.status() == 401);
        assert!(!resp.text().await.unwrap().contains("s3cret"));
    }
}

#[tokio::test]
async fn each_token_has_its_own_rate_limit() {
    let repo = repo();
    let mut settings = common::settings(repo.path_str());
    settings.tokens = tokens();
    settings.limits.rate_per_second = 1;
    settings.limits.rate_burst = 3;
    let server = TestServer::start(settings).await;
    let get = |token: &'static str| {
        let req = server
            .client()
            .get(server.url("/v1/config/orders/prod"))
            .bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(get("tok-orders").await.status(), 200);
    }
    // One token a second refills the bucket: within a few quick calls one is refused,
    // however slow this machine is.
    let mut limited = get("tok-orders").await;
    for _ in 0..10 {
        if limited.status() == 429 {
            break;
        }
        limited = get("tok-orders").await;
    }
    assert_eq!(limited.status(), 429);
    let retry: u64 = common::header(&limited, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        limited
            .json::<confhub_client::wire::ErrorBody>()
            .await
            .unwrap()
            .error,
        "rate_limited"
    );
    // Another token has its own bucket.
    assert_eq!(get("tok-admin").await.status(), 200);
}

/// A file name is read one way everywhere: `payments-prod.yml` is (`payments`, `prod`)'s
/// file, whichever pair a request names. Asking for service `payments-prod` in
/// `staging` (a `read:*/staging` token's own env) or for `orders` in an env that is not
/// one (`internal`, where `orders-internal.yml` is its own service's file) must not
/// reach those files on any surface.
#[tokio::test]
async fn names_with_dashes_cannot_reach_another_pairs_files() {
    let repo = TestRepo::new();
    let keyring = Keyring::new(vec![Key::from_base64(&Key::generate()).unwrap()]).unwrap();
    let secret = keyring.encrypt("pay-s3cret").unwrap();
    repo.write("application.yml", "region: eu\n")
        .write("application-prod.yml", "tier: prod\n")
        .write("application-staging.yml", "tier: staging\n")
        .write("orders.yml", "pool: 1\n")
        .write("orders-internal.yml", "internal: int-s3cret\n")
        .write("payments.yml", "currency: EUR\n")
        .write(
            "payments-prod.yml",
            &format!("db:\n  password: '{secret}'\n"),
        );
    repo.commit("initial");
    repo.tag("v1");
    repo.write(
        "payments-prod.yml",
        &format!("db:\n  password: '{secret}'\n  pool: 3\n"),
    );
    repo.commit("second");
    let mut settings = common::settings(repo.path_str());
    settings.tokens = tokens();
    settings.keyring = Some(keyring);
    let server = TestServer::start(settings).await;

    let mut failures = Vec::new();
    let cases = [
        ("tok-staging", "payments-prod", "staging", "pay-s3cret"),
        ("tok-orders", "orders", "internal", "int-s3cret"),
    ];
    for (token, s, e, secret) in cases {
        for path in surfaces(s, e) {
            let resp = server
                .client()
                .get(server.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            if status != 403 || body.contains(secret) {
                failures.push(format!("{token} GET {path}: {status} {body}"));
            }
        }
        // The admin reads the same pair as Spring would: the joined names.
        let body = server
            .client()
            .get(server.url(&format!("/{s}/{e}")))
            .bearer_auth("tok-admin")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains(secret), "admin reads {s}/{e}: {body}");

        let mut ws = server
            .watch_as(&format!("Bearer {token}"))
            .await
            .within(common::DEADLINE);
        ws.subscribe(s, e, None).await;
        let text = ws.next_text(&format!("{token} subscribe {s}/{e}")).await;
        let frame: ServerFrame = serde_json::from_str(&text).unwrap();
        if !matches!(frame, ServerFrame::Error { ref error, .. } if error == "forbidden")
            || text.contains(secret)
        {
            failures.push(format!("{token} subscribe {s}/{e}: {text}"));
        }
    }
    // What those tokens may read still works.
    for (token, path) in [
        ("tok-staging", "/v1/config/payments/staging"),
        ("tok-orders", "/v1/config/orders/prod"),
        ("tok-orders", "/orders-prod.yml"),
    ] {
        let status = call(&server, path, Some(token), 0).await;
        if status != 200 {
            failures.push(format!("{token} GET {path}: {status}, expected 200"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// How a file name is read depends on the environments of each version: while `prod`
/// was an environment, `payments-prod.yml` was (`payments`, `prod`)'s file, out of a
/// `read:*/staging` token's scope, even though at the head it is service
/// `payments-prod`'s own. Its history is refused as a whole: leaving that commit out
/// would still show which commits touched the file.
#[tokio::test]
async fn a_history_that_once_read_a_file_out_of_scope_is_refused() {
    let repo = TestRepo::new();
    repo.write("confhub.yml", "environments: [prod, staging]\n")
        .write("application.yml", "region: eu\n")
        .write("payments.yml", "currency: EUR\n")
        .write("payments-prod.yml", "prod_only: p1\n");
    let c1 = repo.commit("prod is an environment");
    repo.write("confhub.yml", "environments: [staging]\n")
        .write("payments-prod.yml", "prod_only: p2\n");
    let c2 = repo.commit("prod is not an environment any more");
    let mut settings = common::settings(repo.path_str());
    settings.tokens = tokens();
    let server = TestServer::start(settings).await;
    let get = |path: &str, token: &str| {
        server
            .client()
            .get(server.url(path))
            .bearer_auth(token)
            .send()
    };

    // At the head the pair is the token's own.
    let resp = get("/v1/config/payments-prod/staging", "tok-staging")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get("/v1/history/payments-prod/staging", "tok-staging")
        .await
        .unwrap();
    let err = common::expect_error("history", resp, 403).await;
    assert_eq!(err.error, "forbidden");
    assert!(err.message.contains("payments-prod.yml"), "{}", err.message);
    assert!(!err.message.contains(&c1), "{}", err.message);

    // Refused again from the cache, and the admin still reads the whole history.
    let resp = get("/v1/history/payments-prod/staging", "tok-staging")
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = get("/v1/history/payments-prod/staging", "tok-admin")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h: confhub_client::wire::HistoryResponse = resp.json().await.unwrap();
    let shas: Vec<&str> = h.entries.iter().map(|e| e.sha.as_str()).collect();
    assert_eq!(shas, [c2.as_str(), c1.as_str()]);

    // A pair that never read another's file keeps its history for the same token.
    let resp = get("/v1/history/payments/staging", "tok-staging")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
