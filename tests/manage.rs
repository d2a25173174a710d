//! Managing config in git: JSON Schemas from `confhub.yml`, history of a pair's resolved
//! config, and key-level diffs — against a real server and real commits.
#![allow(clippy::unwrap_used)]

mod common;

use common::{wait_until, TestRepo, TestServer};
use confhub_client::wire::{ConfigResponse, DiffResponse, HistoryResponse};
use serde_json::json;

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["db"],
  "properties": {
    "db": {
      "type": "object",
      "properties": {"pool": {"type": "integer", "minimum": 1, "maximum": 100}},
      "required": ["pool"]
    }
  }
}"#;

fn schema_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "confhub.yml",
        "environments: [dev, prod]\nservices:\n  orders:\n    schema: schemas/orders.json\n",
    )
    .write("schemas/orders.json", SCHEMA)
    .write("application.yml", "region: eu\n")
    .write("application-dev.yml", "debug: true\n")
    .write("application-prod.yml", "debug: false\n")
    .write("orders.yml", "db:\n  pool: 10\n");
    repo.commit("initial config");
    repo
}

#[tokio::test]
async fn a_commit_violating_the_schema_is_reported_and_not_served() {
    let repo = schema_repo();
    let server = TestServer::start(common::settings(repo.path_str())).await;
    let good: ConfigResponse = server.get_json("/v1/config/orders/prod").await;
    assert_eq!(good.values["db"]["pool"], json!(10));

    repo.write("orders-prod.yml", "db:\n  pool: 500\n");
    let bad = repo.commit("pool too big");
    let report = confhub_server::check::check(repo.path(), None, None, None).unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "orders-prod.yml:2: key `db.pool` violates schema schemas/orders.json (rule `maximum`)"
        ),
        "{problems:?}"
    );

    // At that label the pair does not resolve: 422 naming the key path and rule.
    let err = server
        .get_error(&format!("/v1/config/orders/prod?label={bad}"), 422)
        .await;
    assert_eq!(err.key.as_deref(), Some("db.pool"));
    assert_eq!(err.file.as_deref(), Some("orders-prod.yml"));
    assert!(err.message.contains("maximum"), "{}", err.message);
    // The other env is untouched by the violating file and still resolves.
    let dev: ConfigResponse = server
        .get_json(&format!("/v1/config/orders/dev?label={bad}"))
        .await;
    assert_eq!(dev.values["db"]["pool"], json!(10));

    // Unknown env (not declared in confhub.yml) is a 404 on every API.
    assert_eq!(
        server.get_error("/v1/config/orders/qa", 404).await.error,
        "unknown_env"
    );
    assert_eq!(server.get("/orders/qa").await.status(), 404);

    repo.write("orders-prod.yml", "db:\n  pool: 50\n");
    let fixed = repo.commit("pool within limits");
    assert!(confhub_server::check::check(repo.path(), None, None, None)
        .unwrap()
        .problems
        .is_empty());
    let ok: ConfigResponse = server
        .get_json(&format!("/v1/config/orders/prod?label={fixed}"))
        .await;
    assert_eq!(ok.values["db"]["pool"], json!(50));
}

#[tokio::test]
async fn a_missing_required_key_names_the_rule() {
    let repo = schema_repo();
    repo.write("orders.yml", "other: 1\n");
    let sha = repo.commit("drop db");
    let report = confhub_server::check::check(repo.path(), Some(&sha), None, None).unwrap();
    assert!(!report.problems.is_empty());
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.message.contains("rule `required`")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn history_lists_only_commits_that_changed_the_resolved_pair() {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\n")
        .write("application-prod.yml", "debug: false\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("payments.yml", "currency: EUR\n");
    let c1 = repo.commit("initial");
    repo.write("payments.yml", "currency: USD\n");
    let _c2 = repo.commit("payments only");
    repo.write(
        "orders.yml",
        "# a comment changes no value\ndb:\n  pool: 10\n",
    );
    let _c3 = repo.commit("cosmetic");
    repo.write("application.yml", "region: us\n");
    let c4 = repo.commit("move region");
    repo.write("orders-prod.yml", "db:\n  pool: 40\n");
    let c5 = repo.commit("more connections in prod");

    let server = TestServer::start(common::settings(repo.path_str())).await;
    let h: HistoryResponse = server.get_json("/v1/history/orders/prod").await;
    let shas: Vec<&str> = h.entries.iter().map(|e| e.sha.as_str()).collect();
    assert_eq!(shas, [c5.as_str(), c4.as_str(), c1.as_str()]);
    assert_eq!(h.label, "main");
    assert_eq!(h.entries[0].message, "more connections in prod");
    assert_eq!(h.entries[0].changed_keys, ["db.pool"]);
    assert_eq!(h.entries[1].changed_keys, ["region"]);
    assert_eq!(h.entries[2].changed_keys, ["db.pool", "debug", "region"]);
    assert!(h.entries[0].time.ends_with('Z') && h.entries[0].time.len() == 20);
    assert_eq!(h.entries[0].author, "Confhub Tests");

    // application.yml's change shows for every pair it changed.
    let p: HistoryResponse = server.get_json("/v1/history/payments/prod?limit=10").await;
    assert_eq!(p.entries.len(), 3, "{p:?}");
    assert_eq!(p.entries[0].sha, c4);
    let limited: HistoryResponse = server.get_json("/v1/history/orders/prod?limit=1").await;
    assert_eq!(limited.entries.len(), 1);
    assert_eq!(
        server.get_error("/v1/history/nope/prod", 404).await.error,
        "unknown_service"
    );
    assert_eq!(
        server
            .get_error("/v1/history/orders/prod?limit=0", 400)
            .await
            .error,
        "bad_request"
    );
}

#[tokio::test]
async fn diff_reports_exactly_the_changed_keys() {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\nfeatures: [a, b]\n")
        .write("application-prod.yml", "debug: false\n")
        .write("orders.yml", "db:\n  pool: 10\n  host: a\nold: x\n");
    let c1 = repo.commit("initial");
    repo.tag("v1");
    repo.write("orders.yml", "db:\n  pool: 20\n  host: a\nnew: y\n")
        .write("application.yml", "region: eu\nfeatures: [a]\n");
    let c2 = repo.commit("change");

    let server = TestServer::start(common::settings(repo.path_str())).await;
    let d: DiffResponse = server
        .get_json(&format!("/v1/diff/orders/prod?from=v1&to={c2}"))
        .await;
    assert_eq!(d.from_version, c1);
    assert_eq!(d.to_version, c2);
    assert_eq!(serde_json::to_value(&d.added).unwrap(), json!({"new": "y"}));
    assert_eq!(
        serde_json::to_value(&d.removed).unwrap(),
        json!({"old": "x", "features[1]": "b"})
    );
    assert_eq!(
        serde_json::to_value(&d.changed).unwrap(),
        json!({"db.pool": {"old": 10, "new": 20}})
    );

    // `to` defaults to the tracked branch; reversing swaps added and removed.
    let back: DiffResponse = server
        .get_json(&format!("/v1/diff/orders/prod?from={c2}&to=v1"))
        .await;
    assert_eq!(
        serde_json::to_value(&back.added).unwrap(),
        json!({"old": "x", "features[1]": "b"})
    );
    let head: DiffResponse = server.get_json("/v1/diff/orders/prod?from=v1").await;
    assert_eq!(head.to, "main");
    assert_eq!(head.changed, d.changed);
    assert_eq!(
        server.get_error("/v1/diff/orders/prod", 400).await.error,
        "bad_request"
    );
    assert_eq!(
        server
            .get_error("/v1/diff/orders/prod?from=nope", 404)
            .await
            .error,
        "unknown_label"
    );
}

#[tokio::test]
async fn rollback_is_a_git_revert() {
    let repo = TestRepo::new();
    repo.write("application.yml", "a: 1\n")
        .write("orders.yml", "pool: 10\n");
    repo.commit("initial");
    repo.write("orders.yml", "pool: 99\n");
    repo.commit("bad change");
    let server = TestServer::start(common::settings(repo.path_str())).await;
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let reverted = repo.head();
    // The server picks the revert up like any commit (through its change detection).
    wait_until(common::DEADLINE * 3, "the revert to be served", || async {
        let c: ConfigResponse = server.get_json("/v1/config/orders/default").await;
        c.version == reverted && c.values["pool"] == json!(10)
    })
    .await;
    let h: HistoryResponse = server.get_json("/v1/history/orders/default").await;
    assert_eq!(h.entries.len(), 3);
    assert!(
        h.entries[0].message.starts_with("Revert"),
        "{:?}",
        h.entries[0]
    );
}
