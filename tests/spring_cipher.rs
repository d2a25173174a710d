//! Spring Cloud Config's `{cipher}` values, end to end over HTTP: repositories encrypted
//! for a Spring server (symmetric passphrase + salt, `{key:…}` selection, RSA from PEM
//! and PKCS#12) are served decrypted; what cannot be decrypted is `invalid.<key>: <n/a>`
//! in Spring's forms and an error naming the key in the native API and `check`; the
//! encryption endpoints answer as Spring's do.
//!
//! The values are made by [`spring`] below, written from Spring's algorithm
//! (spring-security-crypto's `Encryptors.text` / `AesBytesEncryptor` and
//! `RsaSecretEncryptor`), not with confhub's code.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{TestRepo, TestServer};
use confhub_server::auth::TokenConfig;
use confhub_server::crypto::Keyring;
use confhub_server::settings::file as settings_file;
use serde_json::{json, Value};

/// A Spring-compatible encryptor, from Spring's algorithm.
mod spring {
    use aes::cipher::block_padding::Pkcs7;
    use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use rand::RngCore as _;
    use rsa::traits::PublicKeyParts as _;
    use rsa::{BigUint, Pkcs1v15Encrypt, RsaPublicKey};

    /// `AesBytesEncryptor(password, salt, secureRandom(16), CBC)`: the key is
    /// PBKDF2WithHmacSHA1(password, Hex.decode(salt), 1024 iterations, 256 bits).
    fn key(password: &str, salt_hex: &str) -> [u8; 32] {
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
            password.as_bytes(),
            &hex::decode(salt_hex).unwrap(),
            1024,
            &mut key,
        );
        key
    }

    /// `iv ‖ AES-256-CBC/PKCS5(plain)`.
    fn aes(password: &str, salt_hex: &str, plain: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        rand::rng().fill_bytes(&mut iv);
        let sealed =
            cbc::Encryptor::<aes::Aes256>::new(&key(password, salt_hex).into(), &iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plain);
        [iv.to_vec(), sealed].concat()
    }

    /// `Encryptors.text(password, salt).encrypt(plain)`: what Spring's `/encrypt` answers
    /// for `encrypt.key` = `password`.
    pub fn text(password: &str, salt_hex: &str, plain: &str) -> String {
        hex::encode(aes(password, salt_hex, plain.as_bytes()))
    }

    /// `Encryptors.text(password, salt).decrypt(hex)`.
    pub fn text_decrypt(password: &str, salt_hex: &str, hex_text: &str) -> String {
        let bytes = hex::decode(hex_text).unwrap();
        let (iv, body) = bytes.split_at(16);
        let iv: [u8; 16] = iv.try_into().unwrap();
        let plain = cbc::Decryptor::<aes::Aes256>::new(&key(password, salt_hex).into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(body)
            .unwrap();
        String::from_utf8(plain).unwrap()
    }

    /// `RsaSecretEncryptor(keyPair, RsaAlgorithm.DEFAULT, salt, false).encrypt(plain)`:
    /// `base64(len:u16 ‖ RSA/PKCS1(random 16) ‖ Encryptors.standard(hex(random), salt))`.
    pub fn rsa(public: &RsaPublicKey, salt_hex: &str, plain: &str) -> String {
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        let secret = public
            .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, &random)
            .unwrap();
        let mut out = (secret.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&secret);
        out.extend_from_slice(&aes(&hex::encode(random), salt_hex, plain.as_bytes()));
        B64.encode(out)
    }

    /// An `ssh-rsa BASE64 comment` public key, as Spring's `GET /key` answers it.
    pub fn parse_ssh(text: &str) -> RsaPublicKey {
        let mut parts = text.split(' ');
        assert_eq!(parts.next(), Some("ssh-rsa"), "{text}");
        let blob = B64.decode(parts.next().unwrap()).unwrap();
        let mut at = 0;
        let mut field = || {
            let len = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
            let v = blob[at + 4..at + 4 + len].to_vec();
            at += 4 + len;
            v
        };
        assert_eq!(field(), b"ssh-rsa");
        let e = BigUint::from_bytes_be(&field());
        let n = BigUint::from_bytes_be(&field());
        let key = RsaPublicKey::new(n, e).unwrap();
        assert!(key.size() >= 256);
        key
    }
}

fn fixture(name: &str) -> PathBuf {
    common::workspace_root()
        .join("tests/fixtures/spring")
        .join(name)
}

fn tokens() -> Vec<TokenConfig> {
    let t = common::token;
    vec![
        t("ops", "tok-admin", "admin"),
        t("app", "tok-read", "read:*/*"),
    ]
}

/// The keyring (and pass-through flag) the settings layer makes of Spring-style
/// settings: `env` holds environment variables, `toml` a settings file.
fn keys_from(env: &[(&str, &str)], toml: &str) -> (Option<Keyring>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("confhub.toml");
    std::fs::write(&file, format!("repo = \"unused\"\n{toml}")).unwrap();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = settings_file::load(Some(&file), &env, &[])
        .unwrap()
        .into_settings()
        .unwrap();
    (settings.keyring, settings.pass_ciphers_through)
}

async fn serve(repo: &TestRepo, keys: (Option<Keyring>, bool)) -> TestServer {
    let mut settings = common::settings(repo.path_str());
    settings.tokens = tokens();
    settings.keyring = keys.0;
    settings.pass_ciphers_through = keys.1;
    TestServer::start(settings).await
}

async fn get(server: &TestServer, path: &str, token: &str) -> (u16, String) {
    let resp = server
        .client()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn post(server: &TestServer, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = server
        .client()
        .post(server.url(path))
        .header("Content-Type", "text/plain")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Spring's Environment form, flattened into one map (first property source wins).
async fn spring_env(server: &TestServer, path: &str) -> BTreeMap<String, Value> {
    let (status, body) = get(server, path, "tok-read").await;
    assert_eq!(status, 200, "{path}: {body}");
    assert!(
        !body.contains("{cipher}"),
        "{path}: ciphertext served: {body}"
    );
    let env: Value = serde_json::from_str(&body).unwrap();
    let mut out = BTreeMap::new();
    for source in env["propertySources"].as_array().unwrap().iter().rev() {
        for (k, v) in source["source"].as_object().unwrap() {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// spring-cloud-commons, spring-cloud-context/src/test/java/org/springframework/cloud/
/// bootstrap/encrypt/EncryptionIntegrationTests.java:43-46: with `encrypt.key:pie` (and
/// Spring's default salt) this value reads "test". Given as Spring users give it: the
/// `ENCRYPT_KEY` variable.
const SPRING_PIE: &str = "bf29452295df354e6153c5b31b03ef23c70e55fba24299aa85c63438f1c43c95";

#[tokio::test]
async fn springs_own_test_vector_is_served_decrypted_with_encrypt_key() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hi\n").write(
        "orders.yml",
        &format!("foo:\n  password: '{{cipher}}{SPRING_PIE}'\n"),
    );
    repo.commit("spring vector");
    let server = serve(&repo, keys_from(&[("ENCRYPT_KEY", "pie")], "")).await;
    let env = spring_env(&server, "/orders/default").await;
    assert_eq!(env["foo.password"], json!("test"));
    let (status, body) = get(&server, "/v1/config/orders/default", "tok-read").await;
    assert_eq!(status, 200, "{body}");
    let native: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(native["values"]["foo"]["password"], json!("test"));
    // Without the key, the same repository is refused, not served as ciphertext.
    let bare = serve(&repo, (None, false)).await;
    let env = spring_env(&bare, "/orders/default").await;
    assert_eq!(env["invalid.foo.password"], json!("<n/a>"));
    assert!(!env.contains_key("foo.password"));
    assert_eq!(
        get(&bare, "/v1/config/orders/default", "tok-read").await.0,
        422
    );
}

#[tokio::test]
async fn passphrase_salt_and_named_keys_decrypt_and_a_bad_value_is_invalid_in_spring_only() {
    let salt = "0123abcd";
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hi\n")
        .write(
            "orders.yml",
            &format!(
                "plain: 1\ndb:\n  password: '{{cipher}}{}'\napi:\n  token: '{{cipher}}{{key:billing}}{}'\nbroken: '{{cipher}}{}'\nlist:\n  - '{{cipher}}{}'\n",
                spring::text("main-pass", salt, "db-s3cret"),
                spring::text("billing-pass", salt, "api-s3cret"),
                // The right format under the wrong passphrase.
                spring::text("not-the-pass", salt, "never-served"),
                spring::text("main-pass", salt, "first"),
            ),
        )
        .write(
            "payments.yml",
            &format!("secret: '{{cipher}}{}'\n", spring::text("main-pass", salt, "pay")),
        );
    repo.commit("spring values");
    let keys = keys_from(
        &[("CONFHUB_ENCRYPT_PASSPHRASE", "main-pass")],
        &format!(
            "encrypt_salt = \"{salt}\"\n[encrypt_named_passphrases]\nbilling = \"billing-pass\"\n"
        ),
    );
    let ring = keys.0.clone().unwrap();
    let server = serve(&repo, keys).await;

    // Spring's forms: every good value decrypted, the bad one `invalid.broken: <n/a>`.
    let env = spring_env(&server, "/orders/default").await;
    assert_eq!(env["db.password"], json!("db-s3cret"));
    assert_eq!(env["api.token"], json!("api-s3cret"));
    assert_eq!(env["list[0]"], json!("first"));
    assert_eq!(env["plain"], json!(1));
    assert_eq!(env["invalid.broken"], json!("<n/a>"));
    assert!(!env.contains_key("broken"));
    let (status, props) = get(&server, "/orders-default.properties", "tok-read").await;
    assert_eq!(status, 200, "{props}");
    assert!(props.contains("invalid.broken: <n/a>"), "{props}");
    assert!(props.contains("db.password: db-s3cret"), "{props}");
    assert!(
        !props.contains("never-served") && !props.contains("{cipher}"),
        "{props}"
    );

    // The native API: an error naming file and key, never the value.
    let (status, body) = get(&server, "/v1/config/orders/default", "tok-read").await;
    assert_eq!(status, 422, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["key"], json!("broken"), "{body}");
    assert_eq!(e["file"], json!("orders.yml"), "{body}");
    assert!(!body.contains("never-served"), "{body}");
    let (status, body) = get(&server, "/v1/config/payments/default", "tok-read").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""secret":"pay""#), "{body}");

    // `check` with the same keys reports the bad value, naming the key.
    let report = confhub_server::tools::check::check(repo.path(), None, None, Some(&ring)).unwrap();
    let problem = report
        .problems
        .iter()
        .find(|p| p.key.as_deref() == Some("broken"))
        .unwrap_or_else(|| panic!("{:?}", report.problems));
    assert_eq!(problem.file.as_deref(), Some("orders.yml"));
    assert!(
        problem.to_string().contains("cannot be decrypted"),
        "{problem}"
    );
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    // A wrong salt fails every value, each reported.
    let (wrong, _) = keys_from(
        &[("ENCRYPT_KEY", "main-pass"), ("ENCRYPT_SALT", "deadbeef")],
        "",
    );
    let report =
        confhub_server::tools::check::check(repo.path(), None, None, wrong.as_ref()).unwrap();
    let keys: Vec<_> = report
        .problems
        .iter()
        .filter_map(|p| p.key.clone())
        .collect();
    for key in ["db.password", "broken", "list[0]", "secret"] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
}

#[tokio::test]
async fn rsa_from_a_pem_file_and_a_pkcs12_keystore() {
    let pem = std::fs::read_to_string(fixture("rsa.pem")).unwrap();
    let public = {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs1_pem(&pem)
            .unwrap()
            .to_public_key()
    };
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hi\n").write(
        "orders.yml",
        &format!(
            "db:\n  password: '{{cipher}}{}'\n",
            spring::rsa(&public, "deadbeef", "pem-s3cret")
        ),
    );
    repo.commit("rsa");
    let location = fixture("rsa.pem").display().to_string();
    let server = serve(
        &repo,
        keys_from(&[("ENCRYPT_KEY_STORE_LOCATION", &location)], ""),
    )
    .await;
    assert_eq!(
        spring_env(&server, "/orders/default").await["db.password"],
        json!("pem-s3cret")
    );
    // `GET /key` is the same public key.
    let (status, key) = get(&server, "/key", "tok-admin").await;
    assert_eq!(status, 200, "{key}");
    assert!(key.ends_with(" application"), "{key}");
    assert_eq!(spring::parse_ssh(&key), public);

    // A PKCS#12 keystore made by keytool, with two keys: the default alias, and
    // `{key:billing}` choosing the other. Each public key comes from `GET /key` of a
    // server whose default it is, as a Spring client encrypting locally gets it.
    let store = fixture("server.p12").display().to_string();
    let toml = |alias: &str| {
        format!("[encrypt_key_store]\nlocation = \"{store}\"\npassword = \"letmein\"\nalias = \"{alias}\"\n")
    };
    let empty = TestRepo::new();
    empty.write("application.yml", "a: 1\n");
    empty.commit("empty");
    let billing_server = serve(&empty, keys_from(&[], &toml("billing"))).await;
    let billing = spring::parse_ssh(&get(&billing_server, "/key", "tok-admin").await.1);
    let server = serve(&empty, keys_from(&[], &toml("mytestkey"))).await;
    let default = spring::parse_ssh(&get(&server, "/key", "tok-admin").await.1);
    assert_ne!(billing, default);
    drop(server);

    repo.write(
        "orders.yml",
        &format!(
            "db:\n  password: '{{cipher}}{}'\napi:\n  key: '{{cipher}}{{key:billing}}{}'\nwrong:\n  secret: '{{cipher}}{{key:billing}}{{secret:guess}}{}'\nswapped: '{{cipher}}{}'\n",
            spring::rsa(&default, "deadbeef", "p12-s3cret"),
            spring::rsa(&billing, "deadbeef", "billing-s3cret"),
            spring::rsa(&billing, "deadbeef", "never-served"),
            // Encrypted for billing, read with the default key.
            spring::rsa(&billing, "deadbeef", "never-served"),
        ),
    );
    repo.commit("p12");
    let server = serve(&repo, keys_from(&[], &toml("mytestkey"))).await;
    let env = spring_env(&server, "/orders/default").await;
    assert_eq!(env["db.password"], json!("p12-s3cret"));
    assert_eq!(env["api.key"], json!("billing-s3cret"));
    assert_eq!(env["invalid.wrong.secret"], json!("<n/a>"));
    assert_eq!(env["invalid.swapped"], json!("<n/a>"));
    let (status, body) = get(&server, "/v1/config/orders/default", "tok-read").await;
    assert_eq!(status, 422, "{body}");
    assert!(!body.contains("never-served"), "{body}");
}

#[tokio::test]
async fn encryption_endpoints_answer_as_springs_do_and_only_to_admins() {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hi\n");
    repo.commit("start");
    let confhub_key = confhub_server::crypto::Key::generate();
    let server = serve(
        &repo,
        keys_from(
            &[
                ("CONFHUB_ENCRYPT_KEY", &confhub_key),
                ("ENCRYPT_KEY", "spring-pass"),
            ],
            "[encrypt_named_passphrases]\nbilling = \"billing-pass\"\n",
        ),
    )
    .await;

    // Bare ciphertext in confhub's format (the default for new values), which
    // `/decrypt` reads back and which serves once committed behind `{cipher}`.
    let (status, bare) = post(&server, "/encrypt", Some("tok-admin"), "pa55 word").await;
    assert_eq!(status, 200, "{bare}");
    assert!(!bare.starts_with('{'), "{bare}");
    assert_eq!(
        post(&server, "/decrypt", Some("tok-admin"), &bare).await,
        (200, "pa55 word".into())
    );
    let (status, for_app) = post(&server, "/encrypt/orders/prod", Some("tok-admin"), "x").await;
    assert_eq!(status, 200, "{for_app}");
    assert_eq!(
        post(&server, "/decrypt/orders/prod", Some("tok-admin"), &for_app)
            .await
            .1,
        "x"
    );
    // `{key:billing}` picks the named Spring key, and is kept in front, as Spring does;
    // the value is Spring's format, which Spring's own algorithm decrypts.
    let (status, named) = post(
        &server,
        "/encrypt",
        Some("tok-admin"),
        "{key:billing}b-s3cret",
    )
    .await;
    assert_eq!(status, 200, "{named}");
    let hex_part = named.strip_prefix("{key:billing}").unwrap();
    assert_eq!(
        spring::text_decrypt("billing-pass", "deadbeef", hex_part),
        "b-s3cret"
    );
    // Spring's values from elsewhere decrypt too.
    let foreign = spring::text("spring-pass", "deadbeef", "from-spring");
    assert_eq!(
        post(&server, "/decrypt", Some("tok-admin"), &foreign)
            .await
            .1,
        "from-spring"
    );
    let (status, body) = post(&server, "/decrypt", Some("tok-admin"), "deadbeefdeadbeef").await;
    assert_eq!(status, 400, "{body}");

    repo.write(
        "orders.yml",
        &format!("a: '{{cipher}}{bare}'\nb: '{{cipher}}{named}'\n"),
    );
    repo.commit("values from /encrypt");
    let env = common::wait_for(common::DEADLINE, "the new commit", || async {
        let (status, body) = get(&server, "/orders/default", "tok-read").await;
        (status == 200 && body.contains("pa55")).then_some(body)
    })
    .await;
    assert!(
        env.contains(r#""a":"pa55 word""#) && env.contains(r#""b":"b-s3cret""#),
        "{env}"
    );

    assert_eq!(
        get(&server, "/encrypt/status", "tok-admin").await,
        (200, r#"{"status":"OK"}"#.into())
    );
    // No RSA key: no public key, as Spring answers.
    assert_eq!(get(&server, "/key", "tok-admin").await.0, 404);
    assert_eq!(get(&server, "/key/orders/prod", "tok-admin").await.0, 404);

    // Admin only: 401 without a token, 403 with a reader's.
    for path in [
        "/encrypt",
        "/decrypt",
        "/encrypt/orders/prod",
        "/decrypt/orders/prod",
    ] {
        assert_eq!(post(&server, path, None, "x").await.0, 401, "{path}");
        assert_eq!(
            post(&server, path, Some("tok-read"), "x").await.0,
            403,
            "{path}"
        );
    }
    for path in ["/encrypt/status", "/key", "/key/orders/prod"] {
        assert_eq!(get(&server, path, "tok-read").await.0, 403, "{path}");
        assert_eq!(get(&server, path, "nope").await.0, 401, "{path}");
    }

    // A server without keys says so.
    let bare_server = serve(&repo, (None, false)).await;
    assert_eq!(
        get(&bare_server, "/encrypt/status", "tok-admin").await.0,
        404
    );
    assert_eq!(
        post(&bare_server, "/encrypt", Some("tok-admin"), "x")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn without_a_key_values_pass_through_when_told_to() {
    let value = format!(
        "{{cipher}}{}",
        spring::text("client-side", "deadbeef", "s3cret")
    );
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hi\n")
        .write("orders.yml", &format!("db:\n  password: '{value}'\n"));
    repo.commit("client-side decryption");
    // Spring's own switch, as an environment variable.
    let keys = keys_from(
        &[("SPRING_CLOUD_CONFIG_SERVER_ENCRYPT_ENABLED", "false")],
        "",
    );
    assert!(keys.0.is_none() && keys.1);
    let server = serve(&repo, keys).await;
    let (status, body) = get(&server, "/orders/default", "tok-read").await;
    assert_eq!(status, 200, "{body}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        env["propertySources"][0]["source"]["db.password"],
        json!(value)
    );
    let (status, body) = get(&server, "/v1/config/orders/default", "tok-read").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&value), "{body}");
    // The same in the settings file; a key configured as well means decrypting.
    assert!(keys_from(&[], "encrypt_enabled = false\n").1);
    let (ring, _) = keys_from(
        &[("ENCRYPT_KEY", "client-side")],
        "encrypt_enabled = false\n",
    );
    let server = serve(&repo, (ring, true)).await;
    assert_eq!(
        spring_env(&server, "/orders/default").await["db.password"],
        json!("s3cret")
    );
}
