//! The console over real HTTP against a real server on a real git repository: sign-in
//! with a token in a session cookie, pages scoped like the API, values escaped and
//! secrets masked, a failing pair's error beside its last good config, and the page
//! headers (CSP) that keep repository text from ever running as script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestRepo, TestServer};
use confhub_server::crypto::{Key, Keyring};
use reqwest::header;
use reqwest::StatusCode;

const SCRIPT: &str = "<script>alert(1)</script>";

struct Console {
    server: TestServer,
    /// No redirects followed: the tests look at each one.
    http: reqwest::Client,
    keyring: Keyring,
}

impl Console {
    async fn start(repo: &TestRepo) -> Console {
        let keyring = Keyring::new(vec![Key::from_base64(&Key::generate()).unwrap()]).unwrap();
        let mut settings = common::settings(repo.path_str());
        settings.tokens = vec![
            common::token("orders-team", "tok-orders", "read:orders/*"),
            common::token("ops", "tok-admin", "admin"),
        ];
        settings.keyring = Some(keyring.clone());
        let server = TestServer::start(settings).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(common::DEADLINE)
            .build()
            .unwrap();
        Console {
            server,
            http,
            keyring,
        }
    }

    /// Sign in with `token`; the session cookie set.
    async fn sign_in(&self, token: &str) -> String {
        let resp = self
            .http
            .post(self.server.url("/ui/sign-in"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[header::LOCATION], "/ui/");
        let cookie = resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        cookie.split(';').next().unwrap().to_string()
    }

    async fn get(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(self.server.url(path))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
    /// The page at `path` once it shows `text` (a commit is served asynchronously).
    async fn page_showing(&self, path: &str, cookie: &str, text: &str) -> String {
        common::wait_for(
            common::DEADLINE,
            &format!("{path} to show {text}"),
            || async {
                let (_, page) = self.get(path, cookie).await;
                page.contains(text).then_some(page)
            },
        )
        .await
    }
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "db:\n  host: localhost\n  port: 5432\n")
        .write("application-prod.yml", "db:\n  host: db.prod.internal\n")
        .write(
            "orders.yml",
            &format!("db:\n  url: jdbc:postgresql://${{db.host}}:${{db.port}}/orders\nnote: \"{SCRIPT}\"\n"),
        )
        .write("payments.yml", "currency: EUR\n");
    repo.commit("first");
    repo
}

#[tokio::test]
async fn sign_in_scopes_every_page_and_escapes_every_value() {
    let repo = repo();
    let console = Console::start(&repo).await;

    // Without a session: the sign-in page, never a page of config.
    let (status, _) = console.get("/ui/", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let resp = console
        .http
        .get(console.server.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::LOCATION], "/ui/");

    // A wrong token is refused with a page that says so.
    let resp = console
        .http
        .post(console.server.url("/ui/sign-in"))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("no access token"));

    // A form posted from another site's page does not sign the browser in.
    let resp = console
        .http
        .post(console.server.url("/ui/sign-in"))
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("token", "tok-orders")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());

    // The scoped token sees its service and nothing of the other one.
    let cookie = console.sign_in("tok-orders").await;
    let (status, overview) = console.get("/ui/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(overview.contains("/ui/orders/prod"), "{overview}");
    assert!(!overview.contains("payments"), "{overview}");
    assert!(overview.contains("orders-team"), "who is signed in");
    let (status, page) = console.get("/ui/payments/prod", &cookie).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.contains("EUR"));
    let (status, unknown) = console.get("/ui/nosuch/prod", &cookie).await;
    assert_eq!(
        (status, unknown.contains("No such pair")),
        (StatusCode::NOT_FOUND, true)
    );

    // A pair page: each value with its file and line, the override and the expression.
    let resp = console
        .http
        .get(console.server.url("/ui/orders/prod"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let page = resp.text().await.unwrap();
    assert!(page.contains("db.prod.internal"), "{page}");
    assert!(
        page.contains("application-prod.yml:2"),
        "the value's file and line: {page}"
    );
    assert!(
        page.contains("application.yml:2"),
        "the value it overrode: {page}"
    );
    assert!(
        page.contains("jdbc:postgresql://db.prod.internal:5432/orders")
            && page.contains("${db.host}"),
        "the placeholder resolved, with its expression: {page}"
    );
    // Repository text is text: the `<script>` value is escaped, never markup.
    assert!(!page.contains(SCRIPT), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    // Only the console's own script is loaded.
    assert_eq!(page.matches("<script").count(), 1, "{page}");

    // Signing out ends the session in the browser.
    let resp = console
        .http
        .post(console.server.url("/ui/sign-out"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    console.server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn secrets_are_masked_and_a_failing_pair_shows_its_error_and_last_good_config() {
    let repo = repo();
    let console = Console::start(&repo).await;
    let cipher = console.keyring.encrypt("s3cret-pw").unwrap();
    repo.write(
        "orders-prod.yml",
        &format!("db:\n  password: '{cipher}'\n  pool: 7\n"),
    );
    let good = repo.commit("secret and pool");
    let cookie = console.sign_in("tok-admin").await;
    let page = console
        .page_showing("/ui/orders/prod", &cookie, &good[..12])
        .await;
    assert!(
        !page.contains("s3cret-pw"),
        "a decrypted secret is never shown: {page}"
    );
    assert!(page.contains("{cipher} value"), "{page}");
    assert!(page.contains("orders-prod.yml:2"), "{page}");

    // A broken commit: the error with its file, and the last good config still shown.
    repo.write("orders-prod.yml", "db:\n  pool: [unclosed\n");
    let bad = repo.commit("broken");
    let page = console
        .page_showing("/ui/orders/prod", &cookie, "Fails to resolve")
        .await;
    assert!(page.contains(&bad[..12]), "since which commit: {page}");
    assert!(page.contains("orders-prod.yml"), "{page}");
    assert!(page.contains(&good[..12]), "the last good version: {page}");
    assert!(page.contains("pool"), "its config: {page}");
    let (_, overview) = console.get("/ui/", &cookie).await;
    assert!(overview.contains("✗ failing"), "{overview}");
    console.server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn search_finds_keys_and_values_within_the_tokens_scopes() {
    let repo = repo();
    let console = Console::start(&repo).await;
    let cipher = console.keyring.encrypt("hunter2").unwrap();
    repo.write("orders-prod.yml", &format!("db:\n  password: '{cipher}'\n"));
    let sha = repo.commit("a secret");
    let admin = console.sign_in("tok-admin").await;
    console
        .page_showing("/ui/orders/prod", &admin, &sha[..12])
        .await;

    let cookie = console.sign_in("tok-orders").await;
    let (status, page) = console.get("/ui/search?q=db.host", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("/ui/orders/prod") && page.contains("db.prod.internal"),
        "{page}"
    );
    assert!(
        page.contains("application-prod.yml:2"),
        "where it is set: {page}"
    );
    // A value search, case-insensitive, finds where it is set.
    let (_, page) = console.get("/ui/search?q=DB.PROD", &cookie).await;
    assert!(page.contains("db.host"), "{page}");
    // Another service's keys and values are not this token's to find.
    let (_, page) = console.get("/ui/search?q=currency", &cookie).await;
    assert!(
        page.contains("0 matches") && !page.contains("EUR"),
        "{page}"
    );
    let (_, page) = console.get("/ui/search?q=currency", &admin).await;
    assert!(page.contains("EUR"), "{page}");
    // A secret is found by its key, never by its value, and never shown.
    let (_, page) = console.get("/ui/search?q=hunter2", &cookie).await;
    assert!(page.contains("0 matches"), "{page}");
    let (_, page) = console.get("/ui/search?q=db.password", &cookie).await;
    assert!(
        page.contains("{cipher} value") && !page.contains("hunter2"),
        "{page}"
    );
    // The query is text too.
    let (_, page) = console.get("/ui/search?q=%3Cscript%3E", &cookie).await;
    assert!(!page.contains("value=\"<script>"), "{page}");
    console.server.stop().await.expect("clean stop");
}

/// Read the event stream until an event whose data contains `want`, or the deadline.
async fn next_change(resp: &mut reqwest::Response, seen: &mut String, want: &str) -> String {
    tokio::time::timeout(common::DEADLINE, async {
        loop {
            if let Some(at) = seen.find("event: change\n") {
                let rest = &seen[at..];
                if let Some(end) = rest.find("\n\n") {
                    let event = rest[..end].to_string();
                    seen.replace_range(..at + end + 2, "");
                    if event.contains(want) {
                        return event;
                    }
                    continue;
                }
            }
            let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no change naming {want} within {:?}; got {seen}",
            common::DEADLINE
        )
    })
}

#[tokio::test]
async fn open_pages_hear_of_changes_to_the_pairs_their_token_may_read() {
    let repo = repo();
    let console = Console::start(&repo).await;
    let cookie = console.sign_in("tok-orders").await;
    let mut stream = console
        .http
        .get(console.server.url("/ui/events"))
        .header(header::COOKIE, &cookie)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut seen = String::new();

    // A commit to payments only, then one to orders: the page hears of orders, and
    // never of payments.
    repo.write("payments-prod.yml", "currency: USD\n");
    repo.commit("payments");
    repo.write("orders-prod.yml", "db:\n  pool: 9\n");
    repo.commit("orders");
    let event = next_change(&mut stream, &mut seen, "\"orders\",\"prod\"").await;
    assert!(
        !event.contains("payments") && !seen.contains("payments"),
        "{event}{seen}"
    );

    // The events need a session.
    let resp = console
        .http
        .get(console.server.url("/ui/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    drop(stream);
    console.server.stop().await.expect("clean stop");
}
