//! Encrypted `{cipher}` values: decrypted by the server, never served as ciphertext,
//! never shown in errors or diffs.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestRepo, TestServer};
use confhub_client::wire::{ConfigResponse, DiffResponse, SpringEnvironment, SPRING_V2_MEDIA_TYPE};
use confhub_server::crypto::{Key, Keyring};
use serde_json::json;

fn keyring(keys: &[&str]) -> Keyring {
    Keyring::new(keys.iter().map(|k| Key::from_base64(k).unwrap()).collect()).unwrap()
}

#[tokio::test]
async fn encrypted_values_are_served_decrypted_and_masked_in_diffs() {
    let key = Key::generate();
    let ring = keyring(&[&key]);
    let repo = TestRepo::new();
    repo.write("application.yml", "db:\n  user: app\n").write(
        "orders.yml",
        &format!(
            "db:\n  password: '{}'\nurl: pg://${{db.user}}:${{db.password}}@h\n",
            ring.encrypt("hunter2").unwrap()
        ),
    );
    repo.commit("secret");
    repo.tag("v1");
    repo.write(
        "orders.yml",
        &format!(
            "db:\n  password: '{}'\nurl: pg://${{db.user}}:${{db.password}}@h\n",
            ring.encrypt("correct horse").unwrap()
        ),
    );
    repo.commit("rotate the password");

    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(ring.clone());
    let server = TestServer::start(settings).await;

    let c: ConfigResponse = server.get_json("/v1/config/orders/default").await;
    assert_eq!(c.values["db"]["password"], json!("correct horse"));
    assert_eq!(c.values["url"], json!("pg://app:correct horse@h"));

    let env: SpringEnvironment = server.get_json("/orders/default").await;
    let orders = &env.property_sources[0];
    assert!(orders.name.ends_with("/orders.yml"));
    assert_eq!(orders.source["db.password"], json!("correct horse"));
    let v2: SpringEnvironment = serde_json::from_str(
        &server
            .get_with("/orders/default", "Accept", SPRING_V2_MEDIA_TYPE)
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v2.property_sources[0].source["db.password"],
        json!({"value": "correct horse", "origin": "orders.yml:2"})
    );
    let yml = server.get_text("/orders-default.yml").await;
    assert!(
        yml.contains("password: correct horse") && !yml.contains("{cipher}"),
        "{yml}"
    );

    let d: DiffResponse = server.get_json("/v1/diff/orders/default?from=v1").await;
    let text = serde_json::to_string(&d).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("correct horse"),
        "{text}"
    );
    assert_eq!(d.changed["db.password"].new, json!("******"));
    assert_eq!(d.changed["url"].old, json!("******"));
}

#[tokio::test]
async fn a_value_that_cannot_be_decrypted_fails_its_pair_naming_the_key() {
    let repo = TestRepo::new();
    let foreign = keyring(&[&Key::generate()]);
    repo.write("application.yml", "a: 1\n")
        .write(
            "orders.yml",
            &format!(
                "x: 1\ndb:\n  password: '{}'\n",
                foreign.encrypt("pw").unwrap()
            ),
        )
        .write(
            "payments.yml",
            "db:\n  password: '{cipher}bm90IGEgcmVhbCBjaXBoZXJ0ZXh0IGF0IGFsbA=='\n",
        )
        .write("billing.yml", "ok: true\n");
    repo.commit("secrets");

    // A server with a different key.
    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(keyring(&[&Key::generate()]));
    let server = TestServer::start(settings).await;
    let e = server.get_error("/v1/config/orders/default", 422).await;
    assert_eq!(e.key.as_deref(), Some("db.password"));
    assert_eq!(e.file.as_deref(), Some("orders.yml"));
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("not configured here"), "{}", e.message);
    let e = server.get_error("/v1/config/payments/default", 422).await;
    assert!(e.message.contains("cannot be decrypted"), "{}", e.message);
    assert!(
        !e.message.contains("bm90"),
        "ciphertext must not be echoed: {}",
        e.message
    );
    // Spring's form serves the rest, the key as `invalid.db.password: <n/a>`, as Spring does.
    let spring = server.get("/orders/default").await;
    assert_eq!(spring.status(), 200);
    let spring = spring.text().await.unwrap();
    assert!(
        spring.contains(r#""invalid.db.password":"<n/a>""#),
        "{spring}"
    );
    assert!(
        spring.contains(r#""x":1"#) && !spring.contains("{cipher}"),
        "{spring}"
    );
    // Other pairs are unaffected.
    let b: ConfigResponse = server.get_json("/v1/config/billing/default").await;
    assert_eq!(b.values["ok"], json!(true));

    // A server with no key at all refuses encrypted values rather than serving ciphertext.
    let bare = TestServer::start(common::settings(repo.path_str())).await;
    let e = bare.get_error("/v1/config/orders/default", 422).await;
    assert!(e.message.contains("no encryption key"), "{}", e.message);
    let yml = bare.get("/orders-default.properties").await;
    assert_eq!(yml.status(), 200);
    let yml = yml.text().await.unwrap();
    assert!(yml.contains("invalid.db.password: <n/a>"), "{yml}");
    assert!(
        !yml.contains("{cipher}"),
        "never served as ciphertext: {yml}"
    );
}

#[tokio::test]
async fn old_keys_still_decrypt_after_rotation() {
    let (old, new) = (Key::generate(), Key::generate());
    let repo = TestRepo::new();
    repo.write(
        "orders.yml",
        &format!(
            "a: '{}'\nb: '{}'\n",
            keyring(&[&old]).encrypt("from-old").unwrap(),
            keyring(&[&new]).encrypt("from-new").unwrap()
        ),
    );
    repo.commit("both keys");
    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(keyring(&[&new, &old]));
    let server = TestServer::start(settings).await;
    let c: ConfigResponse = server.get_json("/v1/config/orders/default").await;
    assert_eq!(c.values, json!({"a": "from-old", "b": "from-new"}));
}

/// A schema violation by a decrypted value, or by a value built from one through a
/// placeholder, or by a map holding one, names the key and never the value: not raw,
/// not JSON-escaped (a PEM key with newlines, quotes and backslashes), on every surface.
#[tokio::test]
async fn schema_errors_never_quote_a_secret() {
    let ring = keyring(&[&Key::generate()]);
    let pem = "-----BEGIN KEY-----\nMIIsecretbody\n\"q\" \\x\n";
    let repo = TestRepo::new();
    repo.write(
        "confhub.yml",
        "environments: [default]\nservices:\n  leaf: {schema: s/leaf.json}\n  derived: {schema: s/derived.json}\n  whole: {schema: s/whole.json}\n",
    )
    .write("s/leaf.json", r#"{"properties": {"key": {"maxLength": 4}}}"#)
    .write("s/derived.json", r#"{"properties": {"url": {"pattern": "^https://"}}}"#)
    .write("s/whole.json", r#"{"required": ["missing"]}"#);
    for service in ["leaf", "derived", "whole"] {
        repo.write(
            &format!("{service}.yml"),
            &format!(
                "key: '{}'\nurl: 'pg://${{key}}@db'\n",
                ring.encrypt(pem).unwrap()
            ),
        );
    }
    repo.commit("secrets that break schemas");
    let mut settings = common::settings(repo.path_str());
    settings.keyring = Some(ring);
    let server = TestServer::start(settings).await;
    let escaped = serde_json::to_string(pem).unwrap();
    for (service, key) in [("leaf", "key"), ("derived", "url"), ("whole", "")] {
        let e = server
            .get_error(&format!("/v1/config/{service}/default"), 422)
            .await;
        assert_eq!(e.key.as_deref().unwrap_or(""), key, "{e:?}");
        assert!(e.message.contains("not shown"), "{service}: {}", e.message);
    }
    for path in [
        "/v1/status",
        "/readyz",
        "/v1/config/leaf/default",
        "/v1/config/whole/default",
    ] {
        let body = server.get(path).await.text().await.unwrap();
        assert!(body.contains("not shown"), "{path}: {body}");
        for leak in ["MIIsecretbody", &escaped[1..escaped.len() - 1]] {
            assert!(!body.contains(leak), "{path} shows the secret: {body}");
        }
    }
}
