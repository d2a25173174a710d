//! `confhub rollout promote|abandon` with the real binary on a real repository: without
//! `--commit` it prints the commit and writes nothing; with it, the commit ends the
//! rollout (promotion merges the candidate), and `confhub check` is clean after it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{confhub, TestRepo};

const MANIFEST: &str = "\
environments: [dev, prod]
rollouts:
  - name: bigger-pool
    service: orders
    envs: [prod]
    label: rollout/bigger-pool
    to: {percent: 10}
";

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n")
        .write("confhub.yml", "environments: [dev, prod]\n");
    repo.commit("initial");
    repo.checkout_new("rollout/bigger-pool");
    repo.write("orders-prod.yml", "db:\n  pool: 40\n");
    repo.commit("a bigger pool");
    repo.checkout("main");
    repo.write("confhub.yml", MANIFEST);
    repo.commit("roll out bigger-pool");
    repo
}

fn run(repo: &TestRepo, args: &[&str]) -> (bool, String, String) {
    let out = confhub()
        .arg("rollout")
        .args(args)
        .args(["--repo", &repo.path_str()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn promote_prints_then_makes_the_merge_that_ends_the_rollout() {
    let repo = repo();
    let head = repo.head();
    let candidate = repo.rev_parse("rollout/bigger-pool");
    let (ok, stdout, stderr) = run(&repo, &["promote", "bigger-pool"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("parents: {head} {candidate}")),
        "{stdout}"
    );
    assert!(stdout.contains("merges:  orders-prod.yml"), "{stdout}");
    assert!(stdout.contains("-  - name: bigger-pool"), "{stdout}");
    assert!(stdout.contains("--commit"), "{stdout}");
    assert_eq!(repo.head(), head, "nothing written without --commit");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");

    let (ok, stdout, stderr) = run(&repo, &["promote", "bigger-pool", "--commit"]);
    assert!(ok, "{stderr}");
    let new = repo.head();
    assert!(stdout.contains(&format!("committed {new}")), "{stdout}");
    assert_eq!(repo.git(&["rev-parse", "HEAD^1"]).trim(), head);
    assert_eq!(repo.git(&["rev-parse", "HEAD^2"]).trim(), candidate);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("orders-prod.yml")).unwrap(),
        "db:\n  pool: 40\n",
        "the work tree follows the checked-out branch"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("confhub.yml")).unwrap(),
        "environments: [dev, prod]\n"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "index and work tree agree"
    );
    let check = confhub()
        .args(["check", &repo.path_str()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn abandon_removes_the_rollout_and_refuses_what_it_cannot_do() {
    let repo = repo();
    let head = repo.head();
    let (ok, _, stderr) = run(&repo, &["abandon", "bigger-pool", "--commit"]);
    assert!(ok, "{stderr}");
    assert_eq!(repo.git(&["rev-parse", "HEAD^1"]).trim(), head);
    let parents = repo.git(&["rev-list", "--parents", "-n", "1", "HEAD"]);
    assert_eq!(
        parents.split_whitespace().count(),
        2,
        "one parent: {parents}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("orders-prod.yml")).unwrap(),
        "db:\n  pool: 20\n"
    );
    let (ok, _, stderr) = run(&repo, &["abandon", "bigger-pool"]);
    assert!(!ok);
    assert!(stderr.contains("declares no rollouts"), "{stderr}");

    // A dirty checked-out branch is not committed over.
    let repo = self::repo();
    repo.write("orders.yml", "db:\n  pool: 11\n");
    let (ok, _, stderr) = run(&repo, &["abandon", "bigger-pool", "--commit"]);
    assert!(!ok);
    assert!(stderr.contains("uncommitted changes"), "{stderr}");
}

/// `confhub instances` against a running `confhub serve`: an instance in the rollout,
/// subscribed over the WebSocket, is listed with its pair, state and rollout.
#[tokio::test]
async fn instances_lists_who_holds_what() {
    use std::time::{Duration, Instant};
    let repo = repo();
    let served = common::serve_repo(repo.path());
    let mut ws = served.watch().await;
    // bigger-pool takes 10 %: name the instance so that it is in.
    let id = (0..)
        .map(|i| format!("orders-{i}"))
        .find(|id| confhub_server::resolve::rollout::bucket("bigger-pool", id) < 1000)
        .unwrap();
    ws.send_json(
        serde_json::json!({"op": "subscribe", "service": "orders", "env": "prod", "instance": id}),
    )
    .await;
    let frame = ws.next_json("the candidate").await;
    assert_eq!(frame["values"]["db"]["pool"], 40, "{frame}");
    ws.send_json(serde_json::json!({"op": "applied", "service": "orders", "env": "prod", "digest": frame["digest"]}))
        .await;
    let server = format!("http://127.0.0.1:{}", served.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = confhub()
            .args(["instances", "orders", "prod", "--server", &server])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("applied") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(served);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{listed}"));
    for cell in ["orders/prod", "applied", "bigger-pool", "websocket"] {
        assert!(row.contains(cell), "{cell}: {listed}");
    }
    assert!(listed.starts_with("INSTANCE"), "{listed}");
}
