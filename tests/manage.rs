//! Managing config in git: JSON Schemas from `confhub.yml`, history of a pair's resolved
//! config, and key-level diffs — against a real server and real commits.
#![allow(clippy::unwrap_used)]

mod common;

use common::{wait_for, wait_until, TestRepo, TestServer};
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
    let report = confhub_server::tools::check::check(repo.path(), None, None, None).unwrap();
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
    assert!(
        confhub_server::tools::check::check(repo.path(), None, None, None)
            .unwrap()
            .problems
            .is_empty()
    );
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
    let report = confhub_server::tools::check::check(repo.path(), Some(&sha), None, None).unwrap();
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

/// `confhub_history_commits_scanned_total` from `/metrics`.
async fn commits_scanned(server: &TestServer) -> u64 {
    let text = server.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("confhub_history_commits_scanned_total "))
        .unwrap_or_else(|| panic!("no confhub_history_commits_scanned_total in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// A repository whose `orders.yml` changes `pool` at each of `n` commits after the first.
fn many_commits(n: usize) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\n")
        .write("orders.yml", "pool: 0\n");
    repo.commit("initial");
    repo.commit_many(n, |i| {
        vec![("orders.yml".to_string(), format!("pool: {}\n", i + 1))]
    });
    repo
}

#[tokio::test]
async fn a_repeated_history_scans_only_the_commits_pushed_since() {
    let repo = many_commits(300);
    let server = TestServer::start(common::settings(repo.path_str())).await;
    let before = commits_scanned(&server).await;
    let h: HistoryResponse = server.get_json("/v1/history/orders/prod?limit=1000").await;
    assert_eq!(h.entries.len(), 301);
    assert_eq!(h.entries[0].sha, repo.head());
    assert_eq!(h.entries[0].changed_keys, ["pool"]);
    let first = commits_scanned(&server).await - before;
    assert_eq!(first, 301, "the first request scans the whole branch");

    // Asked again with nothing new: nothing is scanned, the answer is the same.
    let again: HistoryResponse = server.get_json("/v1/history/orders/prod?limit=1000").await;
    assert_eq!(again, h);
    assert_eq!(commits_scanned(&server).await - before, 301);

    repo.write("orders.yml", "pool: 1000\n");
    let new = repo.commit("one more");
    let h: HistoryResponse = wait_for(
        common::DEADLINE,
        "the new commit in the history",
        || async {
            let h: HistoryResponse = server.get_json("/v1/history/orders/prod?limit=1000").await;
            (h.entries[0].sha == new).then_some(h)
        },
    )
    .await;
    assert_eq!(h.entries.len(), 302);
    assert_eq!(h.entries[0].message, "one more");
    assert_eq!(
        commits_scanned(&server).await - before,
        302,
        "the second request scans only the new commit"
    );
    // Another env of the same service is a pair of its own, scanned once too.
    let dev: HistoryResponse = server.get_json("/v1/history/orders/dev?limit=5").await;
    assert_eq!(dev.entries[0].sha, new);
    assert_eq!(commits_scanned(&server).await - before, 302 + 302);
}

#[tokio::test]
async fn a_force_push_rebuilds_the_history() {
    let repo = TestRepo::new();
    repo.write("application.yml", "region: eu\n")
        .write("orders.yml", "pool: 1\n");
    let c1 = repo.commit("one");
    repo.write("orders.yml", "pool: 2\n");
    let c2 = repo.commit("two");
    repo.write("orders.yml", "pool: 3\nextra: x\n");
    let c3 = repo.commit("three");
    let server = TestServer::start(common::settings(repo.path_str())).await;
    let shas =
        |h: &HistoryResponse| -> Vec<String> { h.entries.iter().map(|e| e.sha.clone()).collect() };
    let h: HistoryResponse = server.get_json("/v1/history/orders/prod").await;
    assert_eq!(shas(&h), [c3.clone(), c2.clone(), c1.clone()]);
    let before = commits_scanned(&server).await;

    // Rewind to `one`, then a different second commit: the cached `two` and `three` are
    // not on the branch any more.
    repo.git(&["reset", "-q", "--hard", &c1]);
    repo.write("orders.yml", "pool: 1\nother: y\n");
    let c2b = repo.commit("two, rewritten");
    let h: HistoryResponse = wait_for(common::DEADLINE, "the rewritten branch", || async {
        let h: HistoryResponse = server.get_json("/v1/history/orders/prod").await;
        (h.entries[0].sha == c2b).then_some(h)
    })
    .await;
    assert_eq!(shas(&h), [c2b.clone(), c1.clone()]);
    // Relative to `one`, not to the dropped `three`.
    assert_eq!(h.entries[0].changed_keys, ["other"]);
    assert_eq!(
        commits_scanned(&server).await - before,
        2,
        "rebuilt from the root"
    );

    // Back to an ancestor of what was scanned: also a rebuild.
    repo.git(&["reset", "-q", "--hard", &c1]);
    wait_until(common::DEADLINE, "the rewound branch", || async {
        let h: HistoryResponse = server.get_json("/v1/history/orders/prod").await;
        h.entries.len() == 1 && h.entries[0].sha == c1
    })
    .await;
}

#[tokio::test]
async fn a_history_longer_than_the_request_timeout_is_unfinished_then_converges() {
    let repo = many_commits(3000);
    let mut settings = common::settings(repo.path_str());
    // Scans get 300 ms of it; the first takes seconds in a debug build.
    settings.limits.request_timeout = std::time::Duration::from_millis(400);
    let server = TestServer::start(settings).await;
    let before = commits_scanned(&server).await;
    let mut unfinished = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let h: HistoryResponse = loop {
        assert!(std::time::Instant::now() < deadline, "never finished");
        let resp = server.get("/v1/history/orders/prod?limit=1000").await;
        if resp.status() == 200 {
            break resp.json().await.unwrap();
        }
        assert_eq!(common::header(&resp, "retry-after"), "1");
        let err = common::expect_error("history", resp, 503).await;
        assert_eq!(err.error, "history_unfinished", "{}", err.message);
        assert!(err.message.contains("commits left"), "{}", err.message);
        unfinished += 1;
    };
    assert!(
        unfinished > 0,
        "3,001 commits in 300 ms: the test needs a bigger repository"
    );
    assert_eq!(h.entries.len(), 1000);
    assert_eq!(h.entries[0].sha, repo.head());
    assert_eq!(h.entries[999].changed_keys, ["pool"]);
    // Every request continued where the last stopped: each commit was scanned once.
    assert_eq!(commits_scanned(&server).await - before, 3001);
}
