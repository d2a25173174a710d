//! `confhub-bench`: the load tool behind BENCHMARKS.md (issue 8).
//!
//! - `gen-repo`: a config repository of a given size (`git fast-import`).
//! - `run`: every side-by-side measurement in one invocation, writing
//!   `results.json` and `results.md`: cold start; read throughput of
//!   `/v1/config/{service}/{env}` and of the Spring endpoint against nginx serving the
//!   same bytes (wrk); reads while the snapshot is rebuilt; push fan-out to N WebSocket
//!   subscribers (the release binary, and the library with a short notify debounce)
//!   against N etcd watchers (with `--features etcd`).
//! - `serve-lib`: the server library with settings the CLI does not expose (used by
//!   `run` as a child process, so its RSS is its own).
//!
//! Every server is a child process, stopped at the end (and on error); their pids are
//! listed in `OUT/pids` for `bench/run.sh` to clean up if this tool is killed.
//!
//! Modules: [`repo`] (generate, commit), [`procs`] (children, RSS), [`server`]
//! (confhub), [`wrk`] (wrk, nginx), [`ws`] (WebSocket subscribers), `etcd`, [`report`].

#[cfg(feature = "etcd")]
mod etcd;
mod procs;
mod repo;
mod report;
mod server;
mod wrk;
mod ws;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use report::{ColdStart, Dist, Fanout, Machine, Phase, ReadPair, Results};
use server::{Confhub, Flavor};

#[derive(Parser)]
#[command(name = "confhub-bench", about = "Benchmarks and load tool for confhub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a config repository.
    GenRepo {
        /// Where (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Services.
        #[arg(long, default_value_t = 100)]
        services: usize,
        /// Environments per service (at most 8).
        #[arg(long, default_value_t = 5)]
        envs: usize,
        /// Commits.
        #[arg(long, default_value_t = 10_000)]
        commits: usize,
    },
    /// Run the benchmarks side by side and write results.
    Run(RunArgs),
    /// Serve a repository with the confhub library (internal; used by `run`).
    ServeLib {
        /// Repository path.
        #[arg(long)]
        repo: String,
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// notify debounce, ms.
        #[arg(long, default_value_t = 5)]
        debounce_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Cold start on the large repository.
    Coldstart,
    /// wrk: native and Spring endpoints vs nginx.
    Read,
    /// wrk during continuous snapshot rebuilds.
    Churn,
    /// WebSocket fan-out, release binary.
    Fanout,
    /// WebSocket fan-out, library with a short debounce.
    FanoutTuned,
    /// etcd watch fan-out.
    Etcd,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Small and short (CI): 200 subscribers, a 20-service repository, 2 s wrk runs.
    #[arg(long)]
    smoke: bool,
    /// Output directory (results.json, results.md, logs).
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// The confhub binary (default: `confhub` next to this executable).
    #[arg(long)]
    confhub: Option<PathBuf>,
    /// WebSocket subscribers and etcd watchers [full 10000, smoke 200].
    #[arg(long)]
    subscribers: Option<usize>,
    /// Loopback source addresses to spread connections over (127.0.0.2 …).
    #[arg(long, default_value_t = 4)]
    source_addrs: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Commits (or puts) measured per fan-out run [full 3, smoke 2].
    #[arg(long)]
    commit_rounds: Option<usize>,
    /// Services in the repository [full 100, smoke 20].
    #[arg(long)]
    services: Option<usize>,
    /// Environments in the repository.
    #[arg(long, default_value_t = 5)]
    envs: usize,
    /// Commits in the repository's history [full 10000, smoke 300].
    #[arg(long)]
    commits: Option<usize>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    wrk_connections: u32,
    /// Seconds per wrk run [full 10, smoke 2].
    #[arg(long)]
    wrk_seconds: Option<u32>,
    /// wrk runs per endpoint and server [full 3, smoke 1].
    #[arg(long)]
    read_rounds: Option<usize>,
    /// Cold starts [full 3, smoke 1].
    #[arg(long)]
    cold_starts: Option<usize>,
    /// Interval between commits in the churn run, ms.
    #[arg(long, default_value_t = 200)]
    churn_every_ms: u64,
    /// notify debounce of the `fanout-tuned` server, ms.
    #[arg(long, default_value_t = 5)]
    tuned_debounce_ms: u64,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Skip these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Scenario>,
    /// Exit non-zero when a run went wrong (a subscriber never got the new value, a
    /// wrk request failed). Always on with --smoke, so CI notices a broken benchmark.
    #[arg(long)]
    strict: bool,
}

/// Settings of one run, defaults filled in.
#[derive(Debug, Clone)]
struct Plan {
    args: RunArgs,
    subscribers: usize,
    commit_rounds: usize,
    services: usize,
    commits: usize,
    load: wrk::Load,
    read_rounds: usize,
    cold_starts: usize,
    confhub: PathBuf,
    out: PathBuf,
}

impl Plan {
    fn wants(&self, s: Scenario) -> bool {
        (self.args.only.is_empty() || self.args.only.contains(&s)) && !self.args.skip.contains(&s)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::GenRepo {
            out,
            services,
            envs,
            commits,
        } => {
            if out.exists() {
                bail!("{} exists", out.display());
            }
            let spec = repo::Spec {
                services,
                envs,
                commits,
            };
            let started = Instant::now();
            let files = repo::generate(&out, &spec)?;
            println!(
                "{}: {commits} commits, {files} files, in {:.2} s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::ServeLib {
            repo,
            listen,
            debounce_ms,
        } => runtime.block_on(server::serve_lib(repo, listen, debounce_ms)),
        Command::Run(args) => runtime.block_on(run(args)),
    }
}

fn raise_fd_limit(want: u64) -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    let target = want.min(hard).max(soft);
    if target > soft {
        rlimit::Resource::NOFILE.set(target, hard)?;
    }
    Ok(target)
}

async fn run(args: RunArgs) -> Result<()> {
    let smoke = args.smoke;
    let pick =
        |v: Option<usize>, full: usize, small: usize| v.unwrap_or(if smoke { small } else { full });
    let confhub = match &args.confhub {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .join("confhub"),
    };
    if !confhub.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p confhub-server` or pass --confhub",
            confhub.display()
        );
    }
    let plan = Plan {
        subscribers: pick(args.subscribers, 10_000, 200),
        commit_rounds: pick(args.commit_rounds, 3, 2),
        services: pick(args.services, 100, 20),
        commits: pick(args.commits, 10_000, 300),
        load: wrk::Load {
            threads: args.wrk_threads,
            connections: args.wrk_connections,
            seconds: args.wrk_seconds.unwrap_or(if smoke { 2 } else { 10 }),
        },
        read_rounds: pick(args.read_rounds, 3, 1),
        cold_starts: pick(args.cold_starts, 3, 1),
        confhub,
        out: args.out.clone(),
        args,
    };
    let out = plan.out.clone();
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    procs::record_pids_in(&out.join("pids"));
    // Each subscriber is one socket here and one in the server (a child: it inherits this).
    let fds = raise_fd_limit(plan.subscribers as u64 * 2 + 4096)?;
    if (fds as usize) < plan.subscribers + 1024 {
        bail!(
            "the open-file limit is {fds}: too low for {} subscribers (raise the hard limit, `ulimit -Hn`)",
            plan.subscribers
        );
    }

    let mut results = Results {
        mode: if smoke { "smoke" } else { "full" }.to_string(),
        machine: Machine::detect(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        load: Some(plan.load),
        ..Results::default()
    };

    // The repository: 100 services × 5 envs, ~1,000 files, 10,000 commits (full).
    let spec = repo::Spec {
        services: plan.services,
        envs: plan.args.envs,
        commits: plan.commits,
    };
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let repo_dir = work.join("repo");
    let started = Instant::now();
    let files = repo::generate(&repo_dir, &spec)?;
    results.repo_generate_s = started.elapsed().as_secs_f64();
    results.repo = format!(
        "{} services × {} envs = {} pairs, {files} files, {} commits",
        spec.services,
        spec.env_names().len(),
        spec.services * spec.env_names().len(),
        spec.commits
    );
    eprintln!(
        "repository: {} ({:.1} s)",
        results.repo, results.repo_generate_s
    );

    if plan.wants(Scenario::Coldstart) {
        results.cold_start = Some(cold_start(&plan, &repo_dir, files, &out).await?);
        eprintln!(
            "cold start: {:?} ms",
            results.cold_start.as_ref().map(|c| &c.ready_ms)
        );
    }
    if plan.wants(Scenario::Read) || plan.wants(Scenario::Churn) {
        reads(&plan, &repo_dir, &out, &mut results).await?;
    }
    if plan.wants(Scenario::Fanout) {
        let f = fanout_confhub(
            &plan,
            &Flavor::Binary(plan.confhub.clone()),
            &repo_dir,
            &out,
        )
        .await?;
        eprintln!("fan-out {}: p99 {:.1} ms", f.system, f.all.p99_ms);
        results.fanout.push(f);
    }
    if plan.wants(Scenario::FanoutTuned) {
        let flavor = Flavor::Library {
            debounce_ms: plan.args.tuned_debounce_ms,
        };
        let f = fanout_confhub(&plan, &flavor, &repo_dir, &out).await?;
        eprintln!("fan-out {}: p99 {:.1} ms", f.system, f.all.p99_ms);
        results.fanout.push(f);
    }
    if plan.wants(Scenario::Etcd) {
        let value_bytes = results
            .fanout
            .first()
            .map(|f| f.value_bytes)
            .unwrap_or(4096);
        match fanout_etcd(&plan, value_bytes, &out).await? {
            Some(f) => {
                eprintln!("fan-out {}: p99 {:.1} ms", f.system, f.all.p99_ms);
                results.fanout.push(f);
            }
            None => results.skipped.push(
                "etcd: this build has no etcd client (build with `--features etcd`, which needs protoc)"
                    .to_string(),
            ),
        }
    }

    results.machine.loadavg_end = report::loadavg();
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(out.join("results.json"), json)?;
    let md = results.markdown();
    std::fs::write(out.join("results.md"), &md)?;
    println!("{md}");
    eprintln!("results: {}", out.join("results.md").display());
    let problems = results.problems();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("problem: {p}");
        }
        if smoke || plan.args.strict {
            bail!(
                "{} problem(s): the benchmarks no longer measure what they should",
                problems.len()
            );
        }
    }
    Ok(())
}

async fn cold_start(plan: &Plan, repo_dir: &Path, files: usize, out: &Path) -> Result<ColdStart> {
    let mut c = ColdStart {
        commits: plan.commits,
        files,
        ..ColdStart::default()
    };
    for i in 0..plan.cold_starts {
        let log = out.join(format!("confhub-coldstart-{i}.log"));
        let mut s = Confhub::start(&Flavor::Binary(plan.confhub.clone()), repo_dir, &log).await?;
        c.ready_ms.push(server::ms(s.ready_after));
        c.rss_kib = s.proc_.rss_kib()?;
        s.proc_.stop();
    }
    Ok(c)
}

async fn get_bytes(client: &reqwest::Client, url: &str) -> Result<Vec<u8>> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    Ok(resp.bytes().await?.to_vec())
}

async fn reads(plan: &Plan, repo_dir: &Path, out: &Path, results: &mut Results) -> Result<()> {
    let log = out.join("confhub-reads.log");
    let server = Confhub::start(&Flavor::Binary(plan.confhub.clone()), repo_dir, &log).await?;
    let http = reqwest::Client::new();
    let endpoints = [
        ("/v1/config/svc000/prod", "config.json"),
        ("/svc000/prod", "spring.json"),
    ];
    let nginx = wrk::Nginx::start(&out.join("nginx"), 2).await?;
    let mut targets = Vec::new();
    for (path, file) in endpoints {
        let url = format!("{}{path}", server.base());
        let body = get_bytes(&http, &url).await?;
        let static_url = nginx.put(file, &body)?;
        if get_bytes(&http, &static_url).await? != body {
            bail!("nginx does not serve the same bytes as {url}");
        }
        targets.push((path.to_string(), url, static_url, body.len()));
    }
    let load = plan.load;
    let mut pairs: Vec<ReadPair> = targets
        .iter()
        .map(|(path, _, _, len)| ReadPair {
            endpoint: path.clone(),
            body_bytes: *len,
            confhub: Vec::new(),
            nginx: Vec::new(),
            ratio: 0.0,
        })
        .collect();
    if plan.wants(Scenario::Read) {
        if !plan.args.smoke {
            // Warm both servers (page cache, allocator, connection setup paths).
            let warm = wrk::Load { seconds: 2, ..load };
            for (_, url, static_url, _) in &targets {
                wrk::run(url, warm).await?;
                wrk::run(static_url, warm).await?;
            }
        }
        for round in 0..plan.read_rounds {
            for (k, (path, url, static_url, _)) in targets.iter().enumerate() {
                // Alternate which goes first so drift favours neither.
                let order: [(&str, bool); 2] = if round % 2 == 0 {
                    [(url, true), (static_url, false)]
                } else {
                    [(static_url, false), (url, true)]
                };
                for (u, is_confhub) in order {
                    let mut r = wrk::run(u, load).await?;
                    r.body_bytes = pairs[k].body_bytes;
                    eprintln!(
                        "read {path} {}: {:.0} req/s, p99 {:.2} ms",
                        if is_confhub { "confhub" } else { "nginx" },
                        r.rps,
                        r.p99_ms
                    );
                    if is_confhub {
                        pairs[k].confhub.push(r);
                    } else {
                        pairs[k].nginx.push(r);
                    }
                }
            }
        }
        for p in &mut pairs {
            p.ratio = p.confhub_rps() / p.nginx_rps().max(1.0);
        }
    }
    let mut nginx = nginx;
    nginx.proc_.stop();

    if plan.wants(Scenario::Churn) {
        let (quiet_rps, quiet_p99) = if pairs[0].confhub.is_empty() {
            let r = wrk::run(&targets[0].1, load).await?;
            (r.rps, r.p99_ms)
        } else {
            (pairs[0].confhub_rps(), pairs[0].confhub_p99())
        };
        let before = server::refreshes_in_log(&log).len();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = {
            let stop = stop.clone();
            let dir = repo_dir.to_path_buf();
            let every = Duration::from_millis(plan.args.churn_every_ms);
            std::thread::spawn(move || -> Result<usize> {
                let mut c = repo::Committer::open(&dir)?;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let oid = c.prepare(
                        "application.yml",
                        &repo::application_yml(&format!("churn-{n}")),
                    )?;
                    c.publish(oid)?;
                    n += 1;
                    std::thread::sleep(every);
                }
                Ok(n)
            })
        };
        let during = wrk::run(&targets[0].1, load).await;
        stop.store(true, std::sync::atomic::Ordering::Release);
        let commits = committer
            .join()
            .map_err(|_| anyhow::anyhow!("committer thread panicked"))??;
        let during = during?;
        // Let the last refresh finish and be logged.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let logged = server::refreshes_in_log(&log);
        let logged = &logged[before.min(logged.len())..];
        eprintln!(
            "churn: {:.0} req/s during {commits} commits (quiet {quiet_rps:.0})",
            during.rps
        );
        results.churn = Some(report::Churn {
            commits,
            every_ms: plan.args.churn_every_ms,
            during,
            quiet_rps,
            quiet_p99_ms: quiet_p99,
            rebuild_ms: logged.iter().map(|(t, _)| *t).collect(),
            changed: logged.iter().map(|(_, c)| *c).collect(),
        });
    }
    if plan.wants(Scenario::Read) {
        results.reads = pairs;
    }
    let mut server = server;
    server.proc_.stop();
    Ok(())
}

async fn fanout_confhub(
    plan: &Plan,
    flavor: &Flavor,
    repo_dir: &Path,
    out: &Path,
) -> Result<Fanout> {
    let tag = match flavor {
        Flavor::Binary(_) => "binary".to_string(),
        Flavor::Library { debounce_ms } => format!("lib-debounce-{debounce_ms}ms"),
    };
    let log = out.join(format!("confhub-fanout-{tag}.log"));
    let mut server = Confhub::start(flavor, repo_dir, &log).await?;
    let pair = ("svc000".to_string(), "prod".to_string());
    let fleet = ws::Fleet {
        count: plan.subscribers,
        source_addrs: plan.args.source_addrs,
        pairs: vec![pair.clone()],
        concurrency: plan.args.connect_concurrency,
    };
    // Warm the WebSocket path once, so RSS before counts code and allocator pools, not subscribers.
    let warm = ws::open(
        server.addr,
        &ws::Fleet {
            count: 8,
            ..fleet.clone()
        },
    )
    .await?;
    warm.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.proc_.rss_kib()?;
    eprintln!(
        "fan-out {}: opening {} subscribers",
        flavor.label(),
        fleet.count
    );
    let mut subs = ws::open(server.addr, &fleet).await?;
    let setup = subs.setup;
    tokio::time::sleep(Duration::from_secs(if plan.args.smoke { 1 } else { 3 })).await;
    let rss_idle = server.proc_.rss_kib()?;
    let value_bytes = subs.frame_bytes;

    let mut committer = repo::Committer::open(repo_dir)?;
    let before = server::refreshes_in_log(&log).len();
    let mut rounds = Vec::new();
    let mut phases = Vec::new();
    let mut all = Vec::new();
    let mut all_missing = 0;
    for r in 0..plan.commit_rounds {
        let content = repo::pair_yml(0, "prod", 0, &format!("{tag}-round-{r}"));
        let oid = committer.prepare("svc000-prod.yml", &content)?;
        let t0_wall = std::time::SystemTime::now();
        let t0 = Instant::now();
        committer.publish(oid)?;
        let (delays, missing) = ws::collect(
            &mut subs.arrivals,
            &oid.to_string(),
            t0,
            fleet.count,
            Duration::from_secs(30),
        )
        .await;
        let d = Dist::of(&delays, missing);
        // t0 as CLOCK_MONOTONIC, to cut a profile (`perf record -k mono`) to the push.
        eprintln!(
            "  round {r}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, missing {missing} (t0 {t0:?})",
            d.p50_ms, d.p99_ms, d.max_ms
        );
        if let Some(p) = server::published_in_log(&log, &oid.to_string()) {
            let at_ms = p.at.duration_since(t0_wall).map(server::ms).unwrap_or(0.0);
            phases.push(Phase {
                detect_ms: at_ms - p.took_ms as f64,
                rebuild_ms: p.took_ms as f64,
                push_p50_ms: d.p50_ms - at_ms,
                push_p99_ms: d.p99_ms - at_ms,
            });
        }
        rounds.push(d);
        all.extend(delays);
        all_missing += missing;
        server.proc_.check_alive()?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    all.sort();
    let rss_after = server.proc_.rss_kib()?;
    let logged = server::refreshes_in_log(&log);
    let refresh_ms = logged[before.min(logged.len())..]
        .iter()
        .map(|(t, _)| *t)
        .collect();
    subs.close().await;
    server.proc_.stop();
    Ok(Fanout {
        system: flavor.label(),
        subscribers: fleet.count,
        source_addrs: fleet.source_addrs,
        value_bytes,
        setup_s: setup.as_secs_f64(),
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        rss_after_kib: rss_after,
        bytes_per_subscriber: (rss_idle as f64 - rss_before as f64) * 1024.0 / fleet.count as f64,
        rounds,
        all: Dist::of(&all, all_missing),
        refresh_ms,
        phases,
    })
}

#[cfg(not(feature = "etcd"))]
async fn fanout_etcd(_plan: &Plan, _value_bytes: usize, _out: &Path) -> Result<Option<Fanout>> {
    Ok(None)
}

#[cfg(feature = "etcd")]
async fn fanout_etcd(plan: &Plan, value_bytes: usize, out: &Path) -> Result<Option<Fanout>> {
    let dir = out.join("etcd");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut etcd = etcd::Etcd::start(&dir).await?;
    let key = "config/svc000/prod";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = etcd.proc_.rss_kib()?;
    eprintln!("fan-out etcd: opening {} watchers", plan.subscribers);
    let mut w = etcd::open_watchers(
        etcd.addr,
        key,
        plan.subscribers,
        plan.args.source_addrs,
        plan.args.connect_concurrency,
    )
    .await?;
    let setup = w.setup;
    tokio::time::sleep(Duration::from_secs(if plan.args.smoke { 1 } else { 3 })).await;
    let rss_idle = etcd.proc_.rss_kib()?;
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    let mut all_missing = 0;
    for r in 0..plan.commit_rounds {
        let mut value = format!("{{\"round\":{r},\"values\":\"").into_bytes();
        value.resize(value_bytes.saturating_sub(2).max(value.len()), b'x');
        value.extend_from_slice(b"\"}");
        let (t0, revision) = etcd::put(etcd.addr, key, value).await?;
        let (delays, missing) = ws::collect(
            &mut w.arrivals,
            &revision.to_string(),
            t0,
            plan.subscribers,
            Duration::from_secs(30),
        )
        .await;
        let d = Dist::of(&delays, missing);
        eprintln!(
            "  round {r}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, missing {missing}",
            d.p50_ms, d.p99_ms, d.max_ms
        );
        rounds.push(d);
        all.extend(delays);
        all_missing += missing;
        etcd.proc_.check_alive()?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    all.sort();
    let rss_after = etcd.proc_.rss_kib()?;
    w.close().await;
    etcd.proc_.stop();
    Ok(Some(Fanout {
        system: format!("etcd {} watch", etcd_version()),
        subscribers: plan.subscribers,
        source_addrs: plan.args.source_addrs,
        value_bytes,
        setup_s: setup.as_secs_f64(),
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        rss_after_kib: rss_after,
        bytes_per_subscriber: (rss_idle as f64 - rss_before as f64) * 1024.0
            / plan.subscribers as f64,
        rounds,
        all: Dist::of(&all, all_missing),
        refresh_ms: Vec::new(),
        phases: Vec::new(),
    }))
}

#[cfg(feature = "etcd")]
fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("etcd Version: "))
                .map(str::to_string)
        })
        .unwrap_or_default()
}
