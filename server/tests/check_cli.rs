//! `confhub check` as a user runs it: the real binary on real git repositories.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestRepo;

use std::path::Path;
use std::process::{Command, Output};

fn repo(files: &[(&str, &str)]) -> TestRepo {
    let repo = TestRepo::new();
    commit(&repo, files, "init");
    repo
}

fn commit(repo: &TestRepo, files: &[(&str, &str)], msg: &str) {
    for (name, text) in files {
        repo.write(name, text);
    }
    repo.commit(msg);
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confhub"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_good_repository_passes() {
    let dir = repo(&[
        (
            "application.yml",
            "db:\n  host: localhost\nurl: pg://${db.host}\n",
        ),
        ("application-prod.yml", "db:\n  host: prod\n"),
        ("orders.yml", "pool: 5\n"),
    ]);
    let out = check(&[dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn every_problem_is_reported_with_file_and_line() {
    let dir = repo(&[
        ("application.yml", "a: 1\n"),
        ("application-prod.yml", "a: 2\n"),
        ("orders.yml", "db:\n  pool: 5\n  pool: 6\n"),
        ("payments-prod.yml", "url: x${db.nope}\n"),
        ("unused.yml", "a: [1, 2\n"),
    ]);
    let out = check(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("orders.yml:3: db: duplicate entry with key \"pool\""),
        "{text}"
    );
    assert!(
        text.contains("payments-prod.yml:1: placeholder `${db.nope}` in key `url`"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("unused.yml:")), "{text}");
    assert_eq!(
        text.lines().count(),
        3,
        "one line per distinct problem: {text}"
    );
}

#[test]
fn rev_checks_an_older_commit() {
    let dir = repo(&[("application.yml", "a: 1\n"), ("orders.yml", "b: 1\n")]);
    commit(&dir, &[("orders.yml", "b: [\n")], "break");
    let path = dir.path().to_str().unwrap();
    assert_eq!(check(&[path]).status.code(), Some(1));
    assert!(check(&[path, "--rev", "HEAD~1"]).status.success());
    // The broken file is read from git objects, not the working tree.
    std::fs::write(dir.path().join("orders.yml"), "b: 2\n").unwrap();
    assert_eq!(check(&[path]).status.code(), Some(1));
}

#[test]
fn the_bundled_example_repository_passes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config-repo");
    let out = check(&[example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn a_missing_repository_is_a_clear_error() {
    let out = check(&["/nonexistent/confhub-repo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/confhub-repo"), "{err}");
}

#[test]
fn a_spring_repository_passes_with_warnings_only() {
    // Profile documents, the legacy `spring.profiles`, a `.properties` key that is both
    // a value and a prefix and one set twice: all work on Spring, so `check` passes;
    // the deprecated key and the repeated key are warned about on stderr.
    let dir = repo(&[
        (
            "application.yml",
            "server:\n  port: 8080\n---\nspring:\n  profiles: dev\nserver:\n  port: 8081\n---\nspring.config.activate.on-profile: prod & eu\nregion: eu\n",
        ),
        (
            "orders-prod.properties",
            "logging.level.org.hibernate=INFO\nlogging.level.org.hibernate.SQL=DEBUG\nretries=3\nretries=5\n#---\nspring.config.activate.on-profile=eu\nretries=7\n",
        ),
        ("orders.yml", "pool: 5\n"),
    ]);
    let out = check(&[dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}{stderr}", stdout(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr.contains("warning: application.yml:5: `spring.profiles` is deprecated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: orders-prod.properties:4: key `retries` is set again"),
        "{stderr}"
    );

    // Mixing `&` and `|` without parentheses is malformed for Spring too.
    commit(
        &dir,
        &[(
            "orders.yml",
            "pool: 5\n---\nspring.config.activate.on-profile: prod & eu | us\npool: 6\n",
        )],
        "bad expression",
    );
    let out = check(&[dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("orders.yml:3: malformed profile expression `prod & eu | us`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn spring_cipher_values_are_checked_with_springs_encrypt_key() {
    // spring-cloud-commons, spring-cloud-context/src/test/java/org/springframework/cloud/
    // bootstrap/encrypt/EncryptionIntegrationTests.java:43-46: `encrypt.key:pie` reads this.
    let good = "{cipher}bf29452295df354e6153c5b31b03ef23c70e55fba24299aa85c63438f1c43c95";
    let dir = repo(&[
        ("application.yml", "a: 1\n"),
        ("orders.yml", &format!("foo:\n  password: '{good}'\n")),
    ]);
    let path = dir.path().to_str().unwrap();
    let run = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_confhub"))
            .args(["check", path])
            .env("ENCRYPT_KEY", key)
            .output()
            .unwrap()
    };
    let out = run("pie");
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    // The wrong passphrase: the key that fails, with file and line.
    let out = run("cake");
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("orders.yml:2"), "{text}");
    assert!(
        text.contains("foo.password") && text.contains("cannot be decrypted"),
        "{text}"
    );
    assert!(
        !text.contains("bf2945"),
        "the ciphertext is not echoed: {text}"
    );
}

#[test]
fn spring_placeholders_left_for_the_client_pass_with_spring() {
    // Spring Cloud Config serves `${DB_HOST}` as written when nothing in the repository
    // sets it (EnvironmentController: the Environment form never resolves; the file forms
    // ignore unresolvable placeholders), and the Spring Boot client resolves it from its
    // own environment. Such a repository works on Spring, so it passes `check --spring`
    // with a warning; for the native API the pair fails, so plain `check` fails it.
    let dir = repo(&[
        ("application.yml", "a: 1\n"),
        (
            "orders.yml",
            "db:\n  url: jdbc:postgresql://${DB_HOST}/orders\n",
        ),
    ]);
    let path = dir.path().to_str().unwrap();
    let out = check(&[path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("orders.yml:2"), "{}", stdout(&out));

    let out = check(&[path, "--spring"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}{stderr}", stdout(&out));
    assert!(
        stderr.contains("warning: orders.yml:2") && stderr.contains("DB_HOST"),
        "{stderr}"
    );

    // A cycle is a 400 on Spring's file forms too: a problem either way.
    commit(&dir, &[("orders.yml", "a: ${b}\nb: ${a}\n")], "cycle");
    let out = check(&[path, "--spring"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}
