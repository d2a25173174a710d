//! Memory does not grow with the number of commits served (issue 11, item 12).
//!
//! RSS is measured by `bench/memory_per_commit.sh` (BENCHMARKS.md); these tests check,
//! deterministically, that what used to grow is no longer kept. The growth was
//! libgit2's object cache: every repository handle the server pools kept each commit
//! and tree it ever read. From outside, the way to tell whether a server still holds an
//! old commit is to take that commit away from the disk and ask for it.

mod common;

use std::time::Duration;

use common::{wait_until, TestRepo, TestServer, DEADLINE};
use confhub_server::Settings;

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    // Loose objects stay loose, so one commit's objects can be taken away on their own.
    repo.git(&["config", "gc.auto", "0"]);
    repo.write("application.yml", "greeting: hello\n")
        .write("application-prod.yml", "tier: prod\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n");
    repo.commit("baseline");
    repo
}

fn fast_settings(repo: impl Into<String>) -> Settings {
    let mut settings = Settings::new(repo);
    settings.live.debounce = Duration::from_millis(10);
    settings
}

async fn served_version(server: &TestServer) -> String {
    let status: serde_json::Value = server.get_json("/v1/status").await;
    status["version"].as_str().unwrap_or_default().to_string()
}

/// Commit a one-line change to `orders.yml` and wait until the server serves it.
async fn commit_and_wait(repo: &TestRepo, server: &TestServer, n: usize) -> String {
    repo.write("orders.yml", &format!("db:\n  pool: 10\nrevision: {n}\n"));
    let sha = repo.commit(&format!("revision {n}"));
    wait_until(DEADLINE, &format!("commit {n} ({sha}) served"), || async {
        served_version(server).await == sha
    })
    .await;
    sha
}

/// The loose object file of `oid` in `repo`.
fn loose(repo: &TestRepo, oid: &str) -> std::path::PathBuf {
    repo.path()
        .join(".git/objects")
        .join(&oid[..2])
        .join(&oid[2..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_served_before_are_not_kept_in_memory() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    let mut old = Vec::new();
    for n in 1..=60 {
        old.push(commit_and_wait(&repo, &server, n).await);
    }
    commit_and_wait(&repo, &server, 61).await;

    // Each old commit was read by the server to build its snapshot. Its commit and tree
    // objects go; its blobs stay (they were never cached), so a server that still held
    // the commit and tree could resolve the pair at that label in full.
    let mut objects = std::collections::BTreeSet::new();
    for sha in &old {
        objects.insert(sha.clone());
        objects.insert(repo.git(&["rev-parse", &format!("{sha}^{{tree}}")]));
    }
    for oid in &objects {
        let path = loose(&repo, oid);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    let mut still_served = Vec::new();
    for sha in &old {
        let resp = server
            .get(&format!("/v1/config/orders/prod?label={sha}"))
            .await;
        if resp.status() == 200 {
            still_served.push(sha.clone());
        }
    }
    assert!(
        still_served.is_empty(),
        "{} of {} old commits whose objects are gone from disk were still served from memory: {:?}",
        still_served.len(),
        old.len(),
        &still_served[..still_served.len().min(5)]
    );
    // The current version is unaffected.
    let resp = server.get("/v1/config/orders/prod").await;
    assert_eq!(resp.status(), 200);
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_server_keeps_stays_at_the_size_of_one_version() {
    let repo = repo();
    let mut settings = fast_settings(repo.path_str());
    settings.cache_capacity = 8;
    let server = TestServer::start(settings).await;
    let mut last = String::new();
    for n in 1..=40 {
        last = commit_and_wait(&repo, &server, n).await;
        // Every version also asked for by label: the label cache fills, and stops.
        let resp = server
            .get(&format!("/v1/config/orders/prod?label={last}"))
            .await;
        assert_eq!(resp.status(), 200);
    }
    let text = server.get_text("/metrics").await;
    let commit_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("confhub_commit_info{"))
        .collect();
    assert_eq!(commit_series.len(), 1, "{text}");
    assert!(commit_series[0].contains(&last), "{}", commit_series[0]);
    // The four config files of the version, whatever the number of versions before it.
    assert_eq!(sample(&text, "confhub_parsed_files"), Some(4.0), "{text}");
    assert_eq!(
        sample(&text, "confhub_label_cache_entries"),
        Some(8.0),
        "{text}"
    );
    let bytes = sample(&text, "confhub_label_cache_bytes").unwrap_or_default();
    assert!(bytes > 0.0, "{text}");
}
