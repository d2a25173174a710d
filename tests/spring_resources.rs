//! Spring's plain-text and binary resources (`ResourceController`) and the placeholder
//! rules of its file forms (`EnvironmentController`), over HTTP against a real git
//! repository, compared with what Spring Cloud Config's source and tests say it answers
//! (spring-cloud/spring-cloud-config at ec731ee, spring-cloud-config-server/src/…; `File:line`
//! below is `main/…/server/` or `test/…/server/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{header, settings, TestRepo, TestServer};
use confhub_server::auth::TokenConfig;
use serde_json::{json, Value};

const ORDERS: &str = "\
nginx:
  port: 8081
  server-name: orders.example.com
";

const ORDERS_PROD: &str = "\
nginx:
  port: 80
";

/// A template as Spring users write them: placeholders from the app's config, one with a
/// default, one nothing sets, and an escaped one.
const NGINX: &str = "\
server {
  listen ${nginx.port};
  server_name ${nginx.server-name};
  root ${nginx.root:/var/www};
  # ${not.set} stays as written
  set $x \\${literal};
}
";

const NGINX_PROD: &str = "listen ${nginx.port}; # prod\n";

/// Not UTF-8, and holding bytes that read like a placeholder.
const LOGO: &[u8] = b"\x89PNG\r\n\x1a\n\xff\xfe${nginx.port}\x00\x01";

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "server:\n  port: 8080\n")
        .write("application-prod.yml", "server:\n  port: 80\n")
        .write("orders.yml", ORDERS)
        .write("orders-prod.yml", ORDERS_PROD)
        .write("payments.yml", "payments:\n  key: pay-secret\n")
        .write("payments/nginx.conf", "payments only: ${payments.key}\n")
        .write("nginx.conf", "old ${nginx.port}\n")
        .write("greeter.yml", GREETER)
        .write("loop.yml", "a: ${b}\nb: x-${a}\n")
        .write("loop.txt", "value: ${a}\n");
    repo.commit("first");
    repo.tag("v1");
    repo.write("nginx.conf", NGINX)
        .write("nginx-prod.conf", NGINX_PROD)
        .write("templates/shared.txt", "shared ${server.port}\n")
        .write("big.txt", &"x".repeat((4 << 20) + 1));
    std::fs::write(repo.path().join("logo.png"), LOGO).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("passwd.conf")).unwrap();
    std::os::unix::fs::symlink("nginx.conf", repo.path().join("inner-link.conf")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", repo.path().join("templates/up.conf")).unwrap();
    std::os::unix::fs::symlink("spin-b", repo.path().join("spin-a")).unwrap();
    std::os::unix::fs::symlink("spin-a", repo.path().join("spin-b")).unwrap();
    std::fs::create_dir_all(repo.path().join("orders")).unwrap();
    std::os::unix::fs::symlink(
        "../payments/nginx.conf",
        repo.path().join("orders/pay.conf"),
    )
    .unwrap();
    repo.commit("templates");
    repo
}

async fn get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut req = server.client().get(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

async fn text(server: &TestServer, path: &str) -> (u16, String, String) {
    let resp = get(server, path, None, None).await;
    let status = resp.status().as_u16();
    let ct = header(&resp, "content-type");
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn text_resources_resolve_placeholders_as_spring_does() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;

    // `ResourceControllerTests.templateReplacement` (:86, placeholders from the app's
    // Environment) and `.escapedPlaceholder` (:110, `\${foo}` → `${foo}`); an unresolvable
    // one is left as written (`EnvironmentPropertySource.resolvePlaceholders`, :60, uses
    // the non-strict helper).
    let (status, ct, body) = text(&server, "/orders/default/main/nginx.conf").await;
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(
        body,
        "server {\n  listen 8081;\n  server_name orders.example.com;\n  root /var/www;\n  # ${not.set} stays as written\n  set $x ${literal};\n}\n"
    );

    // `GenericResourceRepository.getProfilePaths` (:98): `nginx-prod.conf` before `nginx.conf`,
    // its placeholders from the prod config.
    let (status, _, body) = text(&server, "/orders/prod/main/nginx.conf").await;
    assert_eq!((status, body.as_str()), (200, "listen 80; # prod\n"));
    // No `nginx-staging.conf`: the file itself.
    let (_, _, body) = text(&server, "/orders/staging/main/nginx.conf").await;
    assert!(body.contains("listen 8081;"), "{body}");

    // `ResourceControllerTests.templateReplacementNotForResolvePlaceholdersFalse` (:94).
    let (status, _, body) = text(
        &server,
        "/orders/default/main/nginx.conf?resolvePlaceholders=false",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, NGINX));

    // `ResourceController.retrieveDefault` (:129): `?useDefaultLabel`, no label segment.
    let (status, _, body) = text(&server, "/orders/default/nginx.conf?useDefaultLabel").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listen 8081;"), "{body}");

    // Nested paths (`ResourceControllerTests.resourceWithSlash`, :223), and a label (a tag
    // here) serves the file as it was there.
    let (status, _, body) = text(&server, "/orders/default/main/templates/shared.txt").await;
    assert_eq!((status, body.as_str()), (200, "shared 8080\n"));
    let (status, _, body) = text(&server, "/orders/default/v1/nginx.conf").await;
    assert_eq!((status, body.as_str()), (200, "old 8081\n"));
    // Asked again: served from the cache, the same.
    let (_, _, again) = text(&server, "/orders/default/v1/nginx.conf").await;
    assert_eq!(again, "old 8081\n");
}

#[tokio::test]
async fn binary_resources_are_the_bytes_as_stored() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    // `ResourceController.binary` (:216, `produces = application/octet-stream`) and
    // `ResourceControllerTests.templateReplacementNotForBinary` (:102): no placeholder
    // resolved.
    let resp = get(
        &server,
        "/orders/default/main/nginx.conf",
        None,
        Some("application/octet-stream"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), NGINX.as_bytes());

    let resp = get(
        &server,
        "/orders/default/main/logo.png",
        None,
        Some("application/octet-stream"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), LOGO);
    // Without asking for bytes, a file that is not text is still sent as its bytes
    // (Spring would decode it as text, `ResourceController`:179, and mangle it).
    let resp = get(&server, "/orders/default/main/logo.png", None, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), LOGO);
}

#[tokio::test]
async fn resource_paths_stay_in_the_tree() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    // `ResourceControllerTests.pathWithSlashAndDotDot` (:183):
    // `InvalidEnvironmentRequestException`, 400. (`%2F` keeps the client from normalizing the `..` away; the server decodes it.)
    for path in [
        "/orders/default/main/..%2F..%2Fetc%2Fpasswd",
        "/orders/default/main/%2Fetc%2Fpasswd",
        "/orders/default/main/.git%2Fconfig",
        "/orders/default/main/templates%2F..%2Fnginx.conf",
    ] {
        let (status, _, body) = text(&server, path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // A symlink is followed while it stays in the tree (Spring's checkout on disk would
    // follow it, and `PathUtils.checkResource`, `GenericResourceRepository`:84, keeps it
    // under the search location); one
    // leading out of it, or in a loop, is no file; a missing file is
    // `NoSuchResourceException`, 404 (`ResourceControllerAdvice.notFound`, :40).
    let (status, _, body) = text(&server, "/orders/default/main/inner-link.conf").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listen 8081;"), "{body}");
    for path in [
        "/orders/default/main/passwd.conf",
        "/orders/default/main/templates/up.conf",
        "/orders/default/main/spin-a",
        "/orders/default/main/missing.conf",
    ] {
        let (status, _, body) = text(&server, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{body}");
    }
    // A template reading placeholders that form a cycle: Spring's helper throws
    // (`IllegalArgumentException`), 400.
    let (status, _, body) = text(&server, "/loop/default/main/loop.txt").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cycle"), "{body}");
    // confhub's own paths are not an application named `v1`.
    let (status, _, body) = text(&server, "/v1/default/main/nginx.conf").await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("listen"), "{body}");
    // Over the size limit: refused, not read into memory.
    let (status, _, body) = text(&server, "/orders/default/main/big.txt").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("4194304"), "{body}");
}

fn tokens() -> Vec<TokenConfig> {
    let t = common::token;
    vec![
        t("orders-service", "tok-orders", "read:orders/*"),
        t("payments-service", "tok-payments", "read:payments/*"),
    ]
}

#[tokio::test]
async fn resources_are_read_within_the_tokens_scopes() {
    let repo = repo();
    let mut s = settings(repo.path_str());
    s.tokens = tokens();
    let server = TestServer::start(s).await;

    let ok = get(
        &server,
        "/orders/prod/main/nginx.conf",
        Some("tok-orders"),
        None,
    )
    .await;
    assert_eq!(ok.status(), 200);
    // No token: 401, as for config.
    let resp = get(&server, "/orders/prod/main/nginx.conf", None, None).await;
    assert_eq!(resp.status(), 401);

    // Through payments' config (its placeholders are payments' values), or a file only
    // payments reads (its folder, its config file), in either form: 403, nothing shown.
    for (path, accept) in [
        ("/payments/default/main/nginx.conf", None),
        ("/orders/default/main/payments/nginx.conf", None),
        (
            "/orders/default/main/payments/nginx.conf",
            Some("application/octet-stream"),
        ),
        ("/orders/default/main/payments.yml", None),
        // A link in orders' folder to payments' file reads payments' file.
        ("/orders/default/main/orders/pay.conf", None),
        ("/payments/default/nginx.conf?useDefaultLabel", None),
    ] {
        let resp = get(&server, path, Some("tok-orders"), accept).await;
        assert_eq!(resp.status(), 403, "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("pay-secret"), "{path}: {body}");
    }
    // The owner reads it, its placeholders resolved from its own config.
    let resp = get(
        &server,
        "/payments/default/main/payments/nginx.conf",
        Some("tok-payments"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "payments only: pay-secret\n");
    // The files every service shares stay readable.
    let resp = get(
        &server,
        "/orders/default/main/application.yml",
        Some("tok-orders"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    // A cached read is checked again for each token.
    let resp = get(
        &server,
        "/orders/default/main/payments/nginx.conf",
        Some("tok-orders"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 403);
}

// ---------------------------------------------------------------------------
// Placeholders in the file forms

/// `greeting` names a key nothing sets (a Spring app would fill it from its own
/// environment); `url` mixes one that resolves with a default.
const GREETER: &str = "\
greeter:
  host: greeter.internal
  greeting: hello ${user.name}
  url: http://${greeter.host}:${greeter.port:9000}/
";

#[tokio::test]
async fn file_forms_leave_unresolvable_placeholders_as_written() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    // `EnvironmentPropertySource.resolveStringValue` (:102): `PropertyPlaceholderHelper(…,
    // ignoreUnresolvablePlaceholders = true)` (:36), so `EnvironmentController.labelledYaml` /
    // `labelledJsonProperties` / `labelledProperties` answer 200 with the placeholder as
    // written (`EnvironmentControllerTests.placeholdersNotResolvedInYamlFromSystemProperties`,
    // :146).
    // `prod` is an env of the snapshot (served from it), `default` is not (resolved on
    // demand): both ways answer alike.
    for path in [
        "/greeter-default.yml",
        "/main/greeter-default.yml",
        "/greeter-prod.yml",
        "/main/greeter-prod.yml",
    ] {
        let (status, ct, body) = text(&server, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(ct.starts_with("text/plain"), "{ct}");
        let yaml: Value = serde_yaml_ng_or_json(&body);
        assert_eq!(yaml["greeter"]["greeting"], json!("hello ${user.name}"));
        assert_eq!(
            yaml["greeter"]["url"],
            json!("http://greeter.internal:9000/")
        );
    }
    let (status, _, body) = text(&server, "/greeter-default.properties").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.lines()
            .any(|l| l == "greeter.greeting: hello ${user.name}"),
        "{body}"
    );
    let (status, _, body) = text(&server, "/greeter-default.json").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["greeter"]["greeting"], json!("hello ${user.name}"));
    assert_eq!(v["greeter"]["url"], json!("http://greeter.internal:9000/"));

    // A cycle: Spring's helper throws `PlaceholderResolutionException` (an
    // `IllegalArgumentException`), `EnvironmentController.illegalArgument` (:277): 400.
    for path in [
        "/loop-default.yml",
        "/loop-default.properties",
        "/loop-default.json",
        "/loop-prod.yml",
        "/main/loop-prod.json",
    ] {
        let (status, _, body) = text(&server, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("cycle"), "{body}");
    }
    // As written, it serves.
    let (status, _, _) = text(&server, "/loop-default.yml?resolvePlaceholders=false").await;
    assert_eq!(status, 200);

    // The native API keeps refusing both.
    for pair in [
        "greeter/default",
        "greeter/prod",
        "loop/default",
        "loop/prod",
    ] {
        let resp = server.get(&format!("/v1/config/{pair}")).await;
        assert_eq!(resp.status(), 422, "{pair}");
    }
}

/// The `.yml` form is YAML; read it as a YAML reader does (JSON is YAML, the reverse
/// is not needed here: the server's block YAML is read by Python in the next test).
fn serde_yaml_ng_or_json(body: &str) -> Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run python3 with PyYAML");
    assert!(out.status.success(), "python3 could not read:\n{body}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Python service reads its `.yml` the way Python config clients do
/// (`requests.get(…).raise_for_status()`, then `yaml.safe_load`) and exits on a non-2xx:
/// an unresolvable placeholder must not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_a_yml_form_with_an_unresolvable_placeholder() {
    let repo = repo();
    let server = TestServer::start(settings(repo.path_str())).await;
    let script = "\
import sys, json, urllib.request, yaml
with urllib.request.urlopen(sys.argv[1]) as r:
    if not 200 <= r.status < 300:
        sys.exit(1)
    print(json.dumps(yaml.safe_load(r.read().decode())))
";
    let url = server.url("/greeter-default.yml");
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &url])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["greeter"]["greeting"], json!("hello ${user.name}"));
}

/// `--dev` serves a plain directory: the same rules hold on disk, where a link could
/// lead anywhere.
#[tokio::test]
async fn dev_directories_serve_resources_within_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("orders.yml"), ORDERS).unwrap();
    std::fs::write(root.join("nginx.conf"), NGINX).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
    std::os::unix::fs::symlink("nginx.conf", root.join("link.conf")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd.conf")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    let mut s = settings(root.to_str().unwrap());
    s.dev = true;
    let server = TestServer::start(s).await;
    let (status, _, body) = text(&server, "/orders/default/nginx.conf?useDefaultLabel").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listen 8081;"), "{body}");
    let (status, _, body) = text(&server, "/orders/default/dev/link.conf").await;
    assert_eq!(status, 200, "{body}");
    for (path, want) in [
        ("/orders/default/passwd.conf?useDefaultLabel", 404),
        ("/orders/default/dev/etc/passwd", 404),
        ("/orders/default/dev/.git%2Fconfig", 400),
    ] {
        let (status, _, body) = text(&server, path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.contains("root:"), "{body}");
    }
}
