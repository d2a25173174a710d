//! Config repositories of a given size, and commits made to them with a precise time of
//! the ref update.
//!
//! [`generate`] writes one history with `git fast-import` (10,000 commits take about a
//! second): the first commit holds every file, each later one changes the `revision`
//! of one `{service}-{env}.yml`. [`Committer`] makes the measured commits with libgit2:
//! it writes the objects first and updates `refs/heads/main` last, so the time taken
//! just before [`Committer::publish`] is the moment the server can first see the commit.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Environment names, in order; a repo with `envs = k` uses the first k.
pub const ENVS: [&str; 8] = [
    "dev", "qa", "staging", "prod", "perf", "eu", "us", "sandbox",
];

/// The branch every generated repo tracks.
pub const BRANCH: &str = "main";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Services (`svc000`, `svc001`, …).
    pub services: usize,
    /// Environments (the first `envs` of [`ENVS`]).
    pub envs: usize,
    /// Commits in the history (at least 1).
    pub commits: usize,
}

impl Spec {
    /// Environment names in use.
    pub fn env_names(&self) -> &'static [&'static str] {
        &ENVS[..self.envs.clamp(1, ENVS.len())]
    }

    /// How many files the tree holds: `confhub.yml`, `application.yml`, one
    /// `application-{env}.yml` per env, and per service `{svc}.yml`, one
    /// `{svc}-{env}.yml` per env and one `{svc}/{svc}-{env}.properties` per env but the first.
    pub fn file_count(&self) -> usize {
        let e = self.env_names().len();
        2 + e + self.services * (1 + e + e.saturating_sub(1))
    }
}

/// Name of service `i`.
pub fn service(i: usize) -> String {
    format!("svc{i:03}")
}

/// `application.yml`, with `marker` (changed by "global" commits that touch every pair).
pub fn application_yml(marker: &str) -> String {
    format!(
        r#"# Defaults for every service.
server:
  port: 8080
  shutdown: graceful
  compression:
    enabled: true
    min-response-size: 2048
logging:
  level:
    root: INFO
    com.acme: DEBUG
    org.hibernate: WARN
management:
  endpoints:
    web:
      exposure:
        include: [health, info, prometheus]
db:
  host: db.internal
  port: 5432
  pool: 10
  timeout-ms: 3000
  url: "jdbc:postgresql://${{db.host}}:${{db.port}}/${{app.name:app}}"
cache:
  ttl-seconds: 300
  max-entries: 10000
http:
  client:
    connect-timeout-ms: 1000
    read-timeout-ms: 5000
    retries: 3
features: [audit, metrics, tracing]
tracing:
  sample-rate: 0.01
  exporter: otlp
  endpoint: http://otel-collector:4317
global:
  marker: "{marker}"
"#
    )
}

fn application_env_yml(env: &str) -> String {
    format!(
        r#"db:
  host: db-{env}.internal
logging:
  level:
    root: {level}
tracing:
  sample-rate: {rate}
region: {env}-1
"#,
        level = if env == "prod" { "WARN" } else { "INFO" },
        rate = if env == "prod" { "0.001" } else { "0.1" },
    )
}

fn service_yml(i: usize) -> String {
    let name = service(i);
    let mut s = format!(
        r#"app:
  name: {name}
  owner: team-{team}
  description: "Service {i} of the benchmark repository"
db:
  pool: 20
  schema: {name}
kafka:
  topic: {name}-events
  group: {name}
  partitions: 12
limits:
  rps: 1000
  burst: 200
  concurrency: 64
endpoints:
  self: http://{name}.internal:8080
  upstream: "http://${{app.name}}-upstream:8080"
features: [audit, metrics, tracing, {name}-beta]
tuning:
"#,
        team = i % 17,
    );
    for k in 0..20 {
        let _ = writeln!(s, "  k{k:02}: {}", (i * 31 + k * 7) % 1000);
    }
    s
}

/// `{service}-{env}.yml` at `revision` (commits change the revision, or the marker).
pub fn pair_yml(i: usize, env: &str, revision: u64, marker: &str) -> String {
    let name = service(i);
    format!(
        r#"revision: {revision}
marker: "{marker}"
db:
  pool: {pool}
  host: {name}-db.{env}.internal
replicas: {replicas}
limits:
  rps: {rps}
"#,
        pool = 10 + (i % 5) * 10,
        replicas = 2 + i % 4,
        rps = 500 + (i % 10) * 100,
    )
}

fn nested_properties(i: usize, env: &str) -> String {
    format!(
        "# {env} overrides kept in the service folder\ncache.ttl-seconds={}\nhttp.client.retries={}\nfeature.flags.new-checkout={}\n",
        60 + i % 60,
        2 + i % 3,
        i & 1 == 0
    )
}

fn manifest(envs: &[&str]) -> String {
    format!("environments: [{}]\n", envs.join(", "))
}

/// Every file of the first commit, (path, content).
pub fn initial_files(spec: &Spec) -> Vec<(String, String)> {
    let envs = spec.env_names();
    let mut files = vec![
        ("confhub.yml".to_string(), manifest(envs)),
        ("application.yml".to_string(), application_yml("initial")),
    ];
    for env in envs {
        files.push((format!("application-{env}.yml"), application_env_yml(env)));
    }
    for i in 0..spec.services {
        let name = service(i);
        files.push((format!("{name}.yml"), service_yml(i)));
        for (k, env) in envs.iter().enumerate() {
            files.push((format!("{name}-{env}.yml"), pair_yml(i, env, 0, "initial")));
            if k > 0 {
                files.push((
                    format!("{name}/{name}-{env}.properties"),
                    nested_properties(i, env),
                ));
            }
        }
    }
    files
}

fn data(out: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    writeln!(out, "data {}", bytes.len())?;
    out.write_all(bytes)?;
    out.write_all(b"\n")
}

/// Create a git repository at `dir` (must not exist or be empty) holding `spec.commits`
/// commits on `main`. Returns the number of files in the tree.
pub fn generate(dir: &Path, spec: &Spec) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("git")
        .args(["init", "-q", "-b", BRANCH])
        .arg(dir)
        .status()
        .context("running git init (is git installed?)")?;
    if !status.success() {
        bail!("git init {} failed", dir.display());
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet", "--done"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running git fast-import")?;
    let stdin = child.stdin.take().context("fast-import stdin")?;
    debug_assert_eq!(initial_files(spec).len(), spec.file_count());
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let files = initial_files(spec);
    let envs = spec.env_names();
    let mut when: u64 = 1_700_000_000;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..spec.commits.max(1) {
        writeln!(out, "commit refs/heads/{BRANCH}")?;
        writeln!(out, "committer Bench <bench@confhub.invalid> {when} +0000")?;
        when += 60;
        if n == 0 {
            data(&mut out, b"initial config")?;
            for (path, content) in &files {
                writeln!(out, "M 100644 inline {path}")?;
                data(&mut out, content.as_bytes())?;
            }
        } else {
            // xorshift: a deterministic spread of changes over every pair file.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % spec.services.max(1) as u64) as usize;
            let env = envs[((rng >> 32) % envs.len() as u64) as usize];
            let path = format!("{}-{env}.yml", service(i));
            data(&mut out, format!("bump {path} to revision {n}").as_bytes())?;
            writeln!(out, "M 100644 inline {path}")?;
            data(&mut out, pair_yml(i, env, n as u64, "initial").as_bytes())?;
        }
    }
    out.write_all(b"done\n")?;
    out.flush()?;
    drop(out);
    let status = child.wait()?;
    if !status.success() {
        bail!("git fast-import failed in {}", dir.display());
    }
    Ok(files.len())
}

/// Makes commits on `main` with libgit2. Not `Sync`: keep it on one thread.
pub struct Committer {
    repo: git2::Repository,
    counter: u64,
}

impl Committer {
    /// Open the repository at `dir`.
    pub fn open(dir: &Path) -> Result<Committer> {
        let repo =
            git2::Repository::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        Ok(Committer { repo, counter: 0 })
    }

    /// Write a commit on top of `main` that sets the root file `name` to `content`,
    /// without moving `main`. Returns the commit id.
    pub fn prepare(&mut self, name: &str, content: &str) -> Result<git2::Oid> {
        let reference = format!("refs/heads/{BRANCH}");
        let parent = self
            .repo
            .find_reference(&reference)
            .and_then(|r| r.peel_to_commit())
            .context("reading main")?;
        let blob = self.repo.blob(content.as_bytes())?;
        let mut builder = self.repo.treebuilder(Some(&parent.tree()?))?;
        builder.insert(name, blob, 0o100_644)?;
        let tree = self.repo.find_tree(builder.write()?)?;
        self.counter += 1;
        let when = git2::Time::new(1_900_000_000 + self.counter as i64, 0);
        let sig = git2::Signature::new("Bench", "bench@confhub.invalid", &when)?;
        let message = format!("bench: change {name} ({})", self.counter);
        let oid = self
            .repo
            .commit(None, &sig, &sig, &message, &tree, &[&parent])?;
        Ok(oid)
    }

    /// Move `main` to `commit` (the moment a watcher of the refs can see it).
    pub fn publish(&self, commit: git2::Oid) -> Result<()> {
        self.repo
            .reference(&format!("refs/heads/{BRANCH}"), commit, true, "bench")?;
        Ok(())
    }
}
