//! Instances and gray release (README "Instances", "Gray release"; ARCHITECTURE.md
//! §2.4, §6.2, §6.3), end to end: a real server on a real git repository with real
//! commits, and several real `confhub-client` instances watching one pair over the
//! WebSocket, each with its own id and labels. Rollouts are declared, widened, halted,
//! abandoned and promoted by commits; the instances' answers (`applied`, `rejected`) show
//! in `/v1/instances` and `/v1/rollouts`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fast_settings, wait_until, TestRepo, TestServer};
use confhub_client::wire::{InstancesResponse, RolloutsResponse};
use confhub_client::{Client, Watched};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long a pushed change may take to reach every instance on a loaded machine.
const LIVE: Duration = Duration::from_secs(30);

const ROLLOUT: &str = "bigger-pool";
const CANDIDATE: &str = "rollout/bigger-pool";

/// main: `orders` prod pool 20; branch `rollout/bigger-pool`: pool 40.
fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("application.yml", "greeting: hello\n")
        .write("orders.yml", "db:\n  pool: 10\n")
        .write("orders-prod.yml", "db:\n  pool: 20\n")
        .write("confhub.yml", "environments: [dev, prod]\n");
    repo.commit("initial config");
    repo.checkout_new(CANDIDATE);
    repo.write("orders-prod.yml", "db:\n  pool: 40\n");
    repo.commit("a bigger pool");
    repo.checkout("main");
    repo
}

/// `confhub.yml` declaring the rollout with selector `to` (YAML flow).
fn declare(repo: &TestRepo, to: &str, halt: bool) -> String {
    repo.write(
        "confhub.yml",
        &format!(
            "environments: [dev, prod]\nrollouts:\n  - name: {ROLLOUT}\n    service: orders\n    envs: [prod]\n    label: {CANDIDATE}\n    to: {to}\n    halt_on_reject: {halt}\n"
        ),
    );
    repo.commit(&format!("roll out to {to}"))
}

/// The documented assignment: the first 8 bytes of sha256("<rollout>/<instance id>"),
/// big-endian, modulo 10,000, below percent × 100.
fn in_percent(id: &str, percent: u64) -> bool {
    let digest = Sha256::digest(format!("{ROLLOUT}/{id}").as_bytes());
    let bucket = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
    bucket < percent * 100
}

/// One instance of the app: a real client watching `orders/prod`.
struct Instance {
    id: String,
    _client: Client,
    watched: Watched<Value>,
    changes: Arc<AtomicUsize>,
}

impl Instance {
    async fn start(
        server: &TestServer,
        id: &str,
        labels: &[(&str, &str)],
        max_pool: Option<u64>,
    ) -> Instance {
        let mut builder = Client::builder()
            .server(server.base_url())
            .service("orders")
            .env("prod")
            .instance(id);
        for (k, v) in labels {
            builder = builder.instance_label(*k, *v);
        }
        if let Some(max) = max_pool {
            builder = builder.validator(move |c| match c.get::<u64>("db.pool") {
                Ok(n) if n <= max => Ok(()),
                _ => Err(format!("db.pool must be at most {max}")),
            });
        }
        let client = builder.build().unwrap();
        let watched = client.watch::<Value>().await.unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let counter = changes.clone();
        watched.on_change(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        Instance {
            id: id.to_string(),
            _client: client,
            watched,
            changes,
        }
    }

    fn pool(&self) -> u64 {
        self.watched.get()["db"]["pool"].as_u64().unwrap()
    }
}

async fn start_instances(server: &TestServer, ids: &[String]) -> Vec<Instance> {
    let mut out = Vec::new();
    for id in ids {
        out.push(Instance::start(server, id, &[], None).await);
    }
    out
}

/// Wait until every instance holds the pool `expected` says for it.
async fn wait_pools(instances: &[Instance], what: &str, expected: impl Fn(&Instance) -> u64) {
    wait_until(LIVE, what, || async {
        instances.iter().all(|i| i.pool() == expected(i))
    })
    .await;
}

/// Wait until the (first) rollout is in `state`.
async fn wait_state(server: &TestServer, state: &str, what: &str) {
    wait_until(LIVE, what, || async {
        let listed = rollouts(server).await;
        listed.rollouts.first().is_some_and(|r| r.state == state)
    })
    .await;
}

async fn rollouts(server: &TestServer) -> RolloutsResponse {
    server.get_json("/v1/rollouts").await
}

async fn instances(server: &TestServer, query: &str) -> InstancesResponse {
    server.get_json(&format!("/v1/instances{query}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_rollout_goes_to_the_hashed_instances_and_grows_then_is_abandoned() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    let ids: Vec<String> = (0..8).map(|i| format!("orders-{i}")).collect();
    let in_half: Vec<&String> = ids.iter().filter(|id| in_percent(id, 50)).collect();
    assert!(
        (2..=6).contains(&in_half.len()),
        "the fixture needs instances on both sides: {in_half:?}"
    );
    let fleet = start_instances(&server, &ids).await;
    wait_pools(&fleet, "every instance on the tracked config", |_| 20).await;

    declare(&repo, "{percent: 50}", true);
    let candidate = repo.rev_parse(CANDIDATE);
    let expect_half = |i: &Instance| if in_percent(&i.id, 50) { 40 } else { 20 };
    wait_pools(&fleet, "the candidate at the hashed half", expect_half).await;
    // Every instance answered: the listing shows who holds what, and in which rollout.
    wait_until(LIVE, "every instance to have applied", || async {
        let listed = instances(&server, "?service=orders&env=prod").await;
        listed.instances.len() == ids.len()
            && listed
                .instances
                .iter()
                .all(|i| i.pairs.len() == 1 && i.pairs[0].state == "applied")
    })
    .await;
    let listed = instances(&server, "").await;
    for i in &listed.instances {
        let pair = &i.pairs[0];
        assert_eq!(i.transport, "websocket");
        assert!(!i.anonymous);
        assert!(i.connected_since.is_some());
        if in_percent(&i.id, 50) {
            assert_eq!(pair.rollout.as_deref(), Some(ROLLOUT), "{i:?}");
            assert_eq!(pair.version.as_deref(), Some(candidate.as_str()), "{i:?}");
        } else {
            assert_eq!(pair.rollout, None, "{i:?}");
        }
    }
    let listed = rollouts(&server).await;
    let r = &listed.rollouts[0];
    assert_eq!((r.name.as_str(), r.state.as_str()), (ROLLOUT, "active"));
    assert_eq!(r.candidate_version.as_deref(), Some(candidate.as_str()));
    let mut picked: Vec<&String> = in_half.clone();
    picked.sort();
    assert_eq!(r.instances.iter().collect::<Vec<_>>(), picked);
    assert_eq!(r.applied as usize, in_half.len());
    assert_eq!(r.rejected, 0);

    // Raising the percent only adds instances: those already in get nothing new.
    let before: Vec<usize> = fleet
        .iter()
        .map(|i| i.changes.load(Ordering::SeqCst))
        .collect();
    declare(&repo, "{percent: 100}", true);
    wait_pools(&fleet, "the candidate everywhere", |_| 40).await;
    for (i, n) in fleet.iter().zip(&before) {
        let now = i.changes.load(Ordering::SeqCst);
        let expected = if in_percent(&i.id, 50) { *n } else { n + 1 };
        assert_eq!(now, expected, "{}: changes", i.id);
    }

    // Lowering it moves the instances past the new share back, and only those.
    let before: Vec<usize> = fleet
        .iter()
        .map(|i| i.changes.load(Ordering::SeqCst))
        .collect();
    declare(&repo, "{percent: 50}", true);
    wait_pools(&fleet, "the candidate back to the hashed half", expect_half).await;
    for (i, n) in fleet.iter().zip(&before) {
        let expected = if in_percent(&i.id, 50) { *n } else { n + 1 };
        assert_eq!(
            i.changes.load(Ordering::SeqCst),
            expected,
            "{}: changes",
            i.id
        );
    }

    // Abandoning it (a commit removing the rollout) gives everyone the tracked config.
    repo.write("confhub.yml", "environments: [dev, prod]\n");
    repo.commit("abandon the rollout");
    wait_pools(&fleet, "the tracked config back everywhere", |_| 20).await;
    assert!(rollouts(&server).await.rollouts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selector_and_promotion_by_merge() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    let mut fleet = Vec::new();
    for (id, zone) in [("eu-a", "eu-1a"), ("eu-b", "eu-1a"), ("us-a", "us-1")] {
        fleet.push(Instance::start(&server, id, &[("zone", zone)], None).await);
    }
    wait_pools(&fleet, "the tracked config", |_| 20).await;
    // One more eu instance on a raw WebSocket, to see every frame it is sent.
    let mut raw = server.watch().await;
    raw.send_json(
        json!({"op": "subscribe", "service": "orders", "env": "prod",
        "instance": "eu-raw", "labels": {"zone": "eu-1a"}}),
    )
    .await;
    assert_eq!(
        raw.next_config("tracked").await.values["db"]["pool"],
        json!(20)
    );
    declare(&repo, "{labels: {zone: eu-1a}}", true);
    let in_eu = |i: &Instance| if i.id.starts_with("eu") { 40 } else { 20 };
    wait_pools(&fleet, "the candidate in eu-1a only", in_eu).await;
    let frame = raw.next_config("the candidate").await;
    assert_eq!(frame.values["db"]["pool"], json!(40));
    assert_eq!(frame.rollout.as_deref(), Some(ROLLOUT));
    raw.send_json(
        json!({"op": "applied", "service": "orders", "env": "prod", "digest": frame.digest}),
    )
    .await;
    let listed = instances(&server, "").await;
    let eu = listed.instances.iter().find(|i| i.id == "eu-a").unwrap();
    assert_eq!(eu.labels["zone"], "eu-1a");

    // Promotion: merge the candidate and remove the rollout in one commit. The instances
    // that held the candidate already hold that digest: they get no frame.
    let before: Vec<usize> = fleet
        .iter()
        .map(|i| i.changes.load(Ordering::SeqCst))
        .collect();
    repo.git(&["merge", "--no-ff", "--no-commit", CANDIDATE]);
    repo.write("confhub.yml", "environments: [dev, prod]\n");
    repo.commit("promote bigger-pool");
    wait_pools(&fleet, "the promoted config everywhere", |_| 40).await;
    // The raw eu instance was sent nothing for the promotion: the next frame it sees is
    // the next commit's.
    repo.write("orders-prod.yml", "db:\n  pool: 41\n");
    repo.commit("after the promotion");
    let next = raw.next_config("the commit after the promotion").await;
    assert_eq!(next.values["db"]["pool"], json!(41), "{next:?}");
    wait_pools(&fleet, "the commit after the promotion", |_| 41).await;
    for (i, n) in fleet.iter().zip(&before) {
        let expected = if i.id.starts_with("eu") { n + 1 } else { n + 2 };
        assert_eq!(i.changes.load(Ordering::SeqCst), expected, "{}", i.id);
    }
    let listed = instances(&server, "").await;
    for i in &listed.instances {
        assert_eq!(
            i.pairs[0].version.as_deref(),
            Some(repo.head().as_str()),
            "{i:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_halts_the_rollout_and_gives_the_others_the_tracked_config_back() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    // `picky` refuses a pool over 30: the candidate's 40.
    let picky = Instance::start(&server, "picky", &[], Some(30)).await;
    let fine = Instance::start(&server, "fine", &[], None).await;
    let outside = Instance::start(&server, "outside", &[], None).await;
    declare(&repo, "{instances: [picky, fine]}", true);
    wait_state(&server, "halted", "the rollout to halt").await;
    let r = rollouts(&server).await.rollouts.remove(0);
    let halt = r.halt.expect("why it halted");
    assert_eq!(halt.instance, "picky");
    assert!(halt.error.contains("at most 30"), "{}", halt.error);
    assert!(r.rejected >= 1);
    // Nobody holds the candidate any more; picky never swapped it in.
    let all = [picky, fine, outside];
    wait_pools(&all, "the tracked config everywhere", |_| 20).await;
    assert!(all[0].watched.last_error().is_some());
    // Its answer to the tracked config it was pushed back comes within the answer delay.
    wait_until(LIVE, "picky to answer the tracked config", || async {
        let listed = instances(&server, "?service=orders&env=prod").await;
        let picky = listed.instances.iter().find(|i| i.id == "picky");
        picky.is_some_and(|i| i.pairs[0].state == "applied")
    })
    .await;
    // A new commit that changes the rollout starts it again, for `fine` only.
    declare(&repo, "{instances: [fine]}", true);
    wait_state(&server, "active", "the changed rollout to be active").await;
    wait_pools(&all, "the candidate for fine only", |i| {
        if i.id == "fine" {
            40
        } else {
            20
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_recorded_when_the_rollout_does_not_halt() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    let picky = Instance::start(&server, "picky", &[], Some(30)).await;
    declare(&repo, "{instances: [picky]}", false);
    wait_until(LIVE, "picky's rejection", || async {
        let listed = instances(&server, "").await;
        listed
            .instances
            .first()
            .is_some_and(|i| i.pairs[0].state == "rejected")
    })
    .await;
    let listed = instances(&server, "").await;
    let pair = &listed.instances[0].pairs[0];
    assert!(
        pair.error.as_deref().unwrap().contains("at most 30"),
        "{pair:?}"
    );
    assert_eq!(pair.rollout.as_deref(), Some(ROLLOUT));
    assert_eq!(rollouts(&server).await.rollouts[0].state, "active");
    assert_eq!(picky.pool(), 20);
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("confhub_config_rejected_total{service=\"orders\",env=\"prod\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("confhub_instances{service=\"orders\",env=\"prod\",digest="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_and_npm_clients_name_themselves_with_headers() {
    let repo = repo();
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    declare(&repo, "{instances: [spring-1, node-1]}", true);
    let candidate = repo.rev_parse(CANDIDATE);
    wait_state(&server, "active", "the rollout to be active").await;
    // Spring Boot sends `spring.cloud.config.headers.*` on every request.
    let spring_headers: [(&str, &[u8]); 2] = [
        ("X-Confhub-Instance", b"spring-1"),
        ("X-Confhub-Labels", b"zone=eu-1a"),
    ];
    let env = json_as(&server, "/orders/prod", &spring_headers).await;
    assert_eq!(env["version"], json!(candidate));
    assert_eq!(env["label"], json!(CANDIDATE));
    assert_eq!(env["propertySources"][0]["source"]["db.pool"], json!(40));
    let listed = instances(&server, "").await;
    let spring = listed
        .instances
        .iter()
        .find(|i| i.id == "spring-1")
        .unwrap();
    assert_eq!(spring.transport, "http");
    assert_eq!(spring.labels["zone"], "eu-1a");
    assert_eq!(spring.pairs[0].rollout.as_deref(), Some(ROLLOUT));
    // Without the header: the tracked config.
    let plain: Value = server.get_json("/orders/prod").await;
    assert_eq!(plain["propertySources"][0]["source"]["db.pool"], json!(20));
    // The native API names the rollout; a pinned request is never in one.
    let native = json_as(&server, "/v1/config/orders/prod", &spring_headers).await;
    assert_eq!(native["rollout"], json!(ROLLOUT));
    let pinned = json_as(
        &server,
        "/v1/config/orders/prod?label=main",
        &spring_headers,
    )
    .await;
    assert_eq!(pinned["values"]["db"]["pool"], json!(20));
    assert!(pinned.get("rollout").is_none());

    let node = common::node_load_with(
        &server,
        "orders",
        "prod",
        None,
        &["db.pool"],
        &[("X-Confhub-Instance", "node-1")],
    )
    .await;
    assert_eq!(node["keys"]["db.pool"], json!(40));
    assert_eq!(node["version"], json!(candidate));

    let listed = instances(&server, "").await;
    assert!(listed.instances.iter().any(|i| i.id == "node-1"));
    // Anonymous callers are listed by their address.
    assert!(listed
        .instances
        .iter()
        .any(|i| i.anonymous && i.id == "127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_candidate_is_served_to_nobody_and_reported() {
    let repo = repo();
    repo.checkout(CANDIDATE);
    repo.write("orders-prod.yml", "db:\n  pool: ${nowhere}\n");
    repo.commit("a candidate that does not resolve");
    repo.checkout("main");
    let server = TestServer::start(fast_settings(repo.path_str())).await;
    let fleet = start_instances(&server, &["a".to_string()]).await;
    declare(&repo, "{percent: 100}", true);
    wait_state(&server, "broken", "the rollout to be reported broken").await;
    let r = rollouts(&server).await.rollouts.remove(0);
    assert!(r.errors[0].message.contains("nowhere"), "{:?}", r.errors);
    let ready: Value = server.get_json("/readyz").await;
    let errors = ready["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["error"] == "rollout_broken" && e["service"] == "orders"),
        "{ready}"
    );
    let status: Value = server.get_json("/v1/status").await;
    assert!(
        status["errors"].to_string().contains("rollout_broken"),
        "{status}"
    );
    assert_eq!(fleet[0].pool(), 20);
    let native: Value = server.get_json("/v1/config/orders/prod").await;
    assert_eq!(native["values"]["db"]["pool"], json!(20));

    // A new commit on the candidate branch fixes it: pushed to the instances in it.
    repo.checkout(CANDIDATE);
    repo.write("orders-prod.yml", "db:\n  pool: 45\n");
    repo.commit("fix the candidate");
    repo.checkout("main");
    wait_pools(&fleet, "the fixed candidate", |_| 45).await;
}

/// A GET with the given headers, as `authorization` (a bearer token) when set.
async fn get_as(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &[u8])],
) -> reqwest::Response {
    let mut req = server.client().get(server.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (name, value) in headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    req.send().await.unwrap()
}

/// The JSON answer (which must be a 200) of a GET with `headers`.
async fn json_as(server: &TestServer, path: &str, headers: &[(&str, &[u8])]) -> Value {
    let resp = get_as(server, path, None, headers).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_rollouts_are_scoped_like_config() {
    let repo = repo();
    repo.write("billing.yml", "rate: 1\n");
    repo.write(
        "confhub.yml",
        &format!("environments: [dev, prod]\nrollouts:\n  - name: {ROLLOUT}\n    service: orders\n    envs: [prod]\n    label: {CANDIDATE}\n    to: {{percent: 100}}\n"),
    );
    repo.commit("billing, and the rollout");
    let mut settings = fast_settings(repo.path_str());
    settings.tokens = vec![
        common::token("admin", "admin-secret", "admin"),
        common::token("billing", "billing-secret", "read:billing/*"),
    ];
    let server = TestServer::start(settings).await;
    let as_admin = Some("admin-secret");
    let as_billing = Some("billing-secret");
    let instance = |id: &'static str| [("X-Confhub-Instance", id.as_bytes())];
    let orders = get_as(
        &server,
        "/v1/config/orders/prod",
        as_admin,
        &instance("orders-1"),
    )
    .await;
    assert_eq!(orders.status(), 200);
    let billing = get_as(
        &server,
        "/v1/config/billing/prod",
        as_billing,
        &instance("billing-1"),
    )
    .await;
    assert_eq!(billing.status(), 200);

    let server = &server;
    let seen = |token| async move {
        let resp = get_as(server, "/v1/instances", token, &[]).await;
        assert_eq!(resp.status(), 200);
        let listed: InstancesResponse = resp.json().await.unwrap();
        listed
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(seen(as_admin).await, ["billing-1", "orders-1"]);
    assert_eq!(seen(as_billing).await, ["billing-1"]);
    let resp = get_as(server, "/v1/instances?service=orders", as_billing, &[]).await;
    let listed: InstancesResponse = resp.json().await.unwrap();
    assert!(listed.instances.is_empty(), "{listed:?}");

    let rollouts_as = |token| async move {
        let resp = get_as(server, "/v1/rollouts", token, &[]).await;
        assert_eq!(resp.status(), 200);
        resp.json::<RolloutsResponse>().await.unwrap().rollouts
    };
    assert_eq!(rollouts_as(as_admin).await.len(), 1);
    assert!(rollouts_as(as_billing).await.is_empty());
    assert_eq!(
        get_as(server, "/v1/rollouts", None, &[]).await.status(),
        401
    );
    assert_eq!(
        get_as(server, "/v1/instances", None, &[]).await.status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identities_are_refused_and_the_table_stays_bounded() {
    let repo = repo();
    let mut settings = fast_settings(repo.path_str());
    settings.live.max_instances = 10;
    let server = TestServer::start(settings).await;
    let long = "a".repeat(300);
    let bad: [(&str, &[u8]); 5] = [
        ("X-Confhub-Instance", long.as_bytes()),
        ("X-Confhub-Instance", "orders 1".as_bytes()),
        ("X-Confhub-Instance", "ördérs".as_bytes()),
        ("X-Confhub-Labels", b"zone=eu\xff"),
        ("X-Confhub-Labels", b"zone"),
    ];
    for header in bad {
        let resp = get_as(&server, "/v1/config/orders/prod", None, &[header]).await;
        let what = format!("{}: {}", header.0, String::from_utf8_lossy(header.1));
        let body = common::expect_error(&what, resp, 400).await;
        assert_eq!(body.error, "bad_instance", "{what}: {body:?}");
        assert!(
            body.message.len() < 400,
            "{what}: the message echoes a bounded part"
        );
    }
    let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    let many = many.join(",");
    let resp = get_as(
        &server,
        "/v1/config/orders/prod",
        None,
        &[("X-Confhub-Labels", many.as_bytes())],
    )
    .await;
    let body = common::expect_error("40 labels", resp, 400).await;
    assert!(body.message.contains("at most 32"), "{body:?}");
    let thousands: Vec<String> = (0..5000).map(|i| format!("k{i}=v")).collect();
    let resp = get_as(
        &server,
        "/v1/config/orders/prod",
        None,
        &[("X-Confhub-Labels", thousands.join(",").as_bytes())],
    )
    .await;
    assert_eq!(resp.status(), 431, "a header over the header limit");

    // Many ids: all served, at most `max_instances` listed.
    for i in 0..50 {
        let id = format!("orders-{i}");
        let resp = get_as(
            &server,
            "/v1/config/orders/prod",
            None,
            &[("X-Confhub-Instance", id.as_bytes())],
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(instances(&server, "").await.instances.len(), 10);

    // Over the WebSocket: a bad id or label set is an error frame, and one connection
    // is one instance.
    let mut ws = server.watch().await;
    let labels: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("k{i}"), json!("v"))).collect();
    ws.send_json(json!({"op": "subscribe", "service": "orders", "env": "prod", "labels": labels}))
        .await;
    let (code, message) = ws.next_error("a thousand labels").await;
    assert_eq!(code, "bad_instance");
    assert!(message.contains("at most 32"), "{message}");
    ws.send_json(
        json!({"op": "subscribe", "service": "orders", "env": "prod", "instance": "a\u{1b}[2J"}),
    )
    .await;
    let (code, message) = ws.next_error("a control byte").await;
    assert_eq!(code, "bad_instance");
    assert!(!message.contains('\u{1b}'), "{message}");
    ws.send_json(
        json!({"op": "subscribe", "service": "orders", "env": "prod", "instance": "ws-1"}),
    )
    .await;
    ws.next_config("subscribed as ws-1").await;
    ws.send_json(json!({"op": "subscribe", "service": "orders", "env": "dev", "instance": "ws-2"}))
        .await;
    let (code, message) = ws.next_error("a second id").await;
    assert_eq!(code, "bad_instance");
    assert!(message.contains("ws-1"), "{message}");
    // Answers for pairs it does not watch change nothing.
    ws.send_json(json!({"op": "rejected", "service": "billing", "env": "prod", "digest": "x", "error": "no"}))
        .await;
    ws.send_json(
        json!({"op": "applied", "service": "orders", "env": "prod", "digest": "not-sent"}),
    )
    .await;
    let metrics = server.get_text("/metrics").await;
    assert!(
        !metrics.contains("confhub_config_rejected_total{"),
        "{metrics}"
    );
}

#[test]
fn check_validates_rollouts() {
    let repo = repo();
    repo.write("billing.yml", "rate: 1\n");
    repo.write(
        "confhub.yml",
        "environments: [dev, prod]\nrollouts:\n  - name: good\n    service: orders\n    envs: [prod]\n    label: rollout/bigger-pool\n    to: {percent: 10}\n  - name: unknown-service\n    service: shipping\n    envs: [prod]\n    label: main\n  - name: no-label\n    service: billing\n    envs: [prod]\n    label: nowhere\n  - name: bad-selector\n    service: billing\n    envs: [dev]\n    label: main\n    to: {percent: 101}\n  - name: same-pair\n    service: orders\n    envs: [prod, dev]\n    label: main\n",
    );
    repo.commit("rollouts to check");
    let report = confhub_server::tools::check::check(repo.path(), None, None, None).unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("unknown service `shipping`"), "{problems:#?}");
    assert!(has("label `nowhere` names no branch"), "{problems:#?}");
    assert!(has("between 0 and 100"), "{problems:#?}");
    assert!(
        has("`good` and `same-pair`") || has("`same-pair` and `good`"),
        "{problems:#?}"
    );
    assert!(
        problems.iter().all(|p| p.contains("confhub.yml")),
        "{problems:#?}"
    );
    let selector_line = report
        .problems
        .iter()
        .find(|p| p.message.contains("between 0 and 100"))
        .and_then(|p| p.line);
    assert_eq!(selector_line, Some(16), "{problems:#?}");

    // A candidate that does not resolve at its label is a problem too.
    repo.checkout("rollout/bigger-pool");
    repo.write("orders-prod.yml", "db:\n  pool: ${nowhere}\n");
    repo.commit("broken candidate");
    repo.checkout("main");
    repo.write(
        "confhub.yml",
        "environments: [dev, prod]\nrollouts:\n  - name: good\n    service: orders\n    envs: [prod]\n    label: rollout/bigger-pool\n",
    );
    repo.commit("one rollout");
    let report = confhub_server::tools::check::check(repo.path(), None, None, None).unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("rollout `good`") && p.contains("nowhere")),
        "{problems:#?}"
    );
}
