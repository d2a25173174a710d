//! Results: distributions, the machine, and the JSON and Markdown written at the end.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::wrk::{Load, WrkResult};

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Dist {
    /// Samples that arrived.
    pub n: usize,
    /// Samples that never arrived (within the time limit).
    pub missing: usize,
    /// Fastest, ms.
    pub min_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Dist {
    /// The distribution of sorted `samples`, `missing` more never came.
    pub fn of(sorted: &[Duration], missing: usize) -> Dist {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Dist {
            n: sorted.len(),
            missing,
            min_ms: sorted.first().map(|d| ms(*d)).unwrap_or(0.0),
            p50_ms: ms(pct(sorted, 50.0)),
            p90_ms: ms(pct(sorted, 90.0)),
            p99_ms: ms(pct(sorted, 99.0)),
            max_ms: sorted.last().map(|d| ms(*d)).unwrap_or(0.0),
        }
    }
}

/// Median of values (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// What the machine is.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// MemTotal, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// OS (PRETTY_NAME).
    pub os: String,
    /// `nginx -v`, `wrk -v`, `etcd --version` (first lines).
    pub tools: Vec<String>,
    /// When the run started (UTC).
    pub date: String,
    /// /proc/loadavg when the run started (other work on the machine shows here).
    pub loadavg_start: String,
    /// /proc/loadavg when it ended.
    pub loadavg_end: String,
}

fn first_line_of(cmd: &str, args: &[&str]) -> String {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(_) => format!("{cmd}: not installed"),
    }
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    /// Read /proc and the tools' versions.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            os,
            tools: vec![
                first_line_of("nginx", &["-v"]),
                first_line_of("wrk", &["-v"]),
                first_line_of("etcd", &["--version"]),
                first_line_of("git", &["--version"]),
            ],
            date: first_line_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }
}

/// Read throughput, one endpoint against nginx serving its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct ReadPair {
    /// What was read.
    pub endpoint: String,
    /// Response body size, bytes.
    pub body_bytes: usize,
    /// confhub runs.
    pub confhub: Vec<WrkResult>,
    /// nginx runs.
    pub nginx: Vec<WrkResult>,
    /// median confhub req/s ÷ median nginx req/s.
    pub ratio: f64,
}

impl ReadPair {
    /// Median over rounds of (confhub req/s ÷ nginx req/s) of the same round: steadier
    /// than the ratio of medians when other load on the machine drifts.
    pub fn paired_ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .confhub
            .iter()
            .zip(&self.nginx)
            .map(|(c, n)| c.rps / n.rps.max(1.0))
            .collect();
        median(&ratios)
    }

    /// Median req/s of confhub.
    pub fn confhub_rps(&self) -> f64 {
        median(&self.confhub.iter().map(|r| r.rps).collect::<Vec<_>>())
    }
    /// Median req/s of nginx.
    pub fn nginx_rps(&self) -> f64 {
        median(&self.nginx.iter().map(|r| r.rps).collect::<Vec<_>>())
    }
    /// Median p99 (ms) of confhub.
    pub fn confhub_p99(&self) -> f64 {
        median(&self.confhub.iter().map(|r| r.p99_ms).collect::<Vec<_>>())
    }
    /// Median p99 (ms) of nginx.
    pub fn nginx_p99(&self) -> f64 {
        median(&self.nginx.iter().map(|r| r.p99_ms).collect::<Vec<_>>())
    }
}

/// Reads while the snapshot is being rebuilt over and over.
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    /// Commits to `application.yml` (every pair changes) made during the run.
    pub commits: usize,
    /// Interval between commits, ms.
    pub every_ms: u64,
    /// The run.
    pub during: WrkResult,
    /// Median quiet req/s (from the read runs).
    pub quiet_rps: f64,
    /// Median quiet p99, ms.
    pub quiet_p99_ms: f64,
    /// Rebuilds the server logged: `took_ms` each.
    pub rebuild_ms: Vec<u64>,
    /// Pairs changed per rebuild (as logged).
    pub changed: Vec<u64>,
}

/// One fan-out run.
#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    /// What served.
    pub system: String,
    /// Subscribers / watchers.
    pub subscribers: usize,
    /// Loopback source addresses used.
    pub source_addrs: usize,
    /// Bytes of the pushed value (confhub: the `config` frame; etcd: the put value).
    pub value_bytes: usize,
    /// Seconds to connect and subscribe all of them.
    pub setup_s: f64,
    /// Server RSS before the subscribers, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every subscriber connected and idle, KiB.
    pub rss_idle_kib: u64,
    /// Server RSS after the pushes, KiB.
    pub rss_after_kib: u64,
    /// (idle − before) ÷ subscribers, bytes.
    pub bytes_per_subscriber: f64,
    /// Delay from the ref update (confhub) or put (etcd) to each subscriber's frame, per round.
    pub rounds: Vec<Dist>,
    /// All rounds together.
    pub all: Dist,
    /// Server-side refresh time per round as logged (`took_ms`; confhub only).
    pub refresh_ms: Vec<u64>,
    /// Where the time of each round went (confhub only).
    pub phases: Vec<Phase>,
}

/// One confhub push, split at the server's "new version" log line.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Ref update → refresh starts (notify event, debounce, scheduling), ms.
    pub detect_ms: f64,
    /// The refresh itself (`took_ms`).
    pub rebuild_ms: f64,
    /// Refresh done → median subscriber has the frame, ms.
    pub push_p50_ms: f64,
    /// Refresh done → 99th percentile subscriber has the frame, ms.
    pub push_p99_ms: f64,
}

/// Cold starts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ColdStart {
    /// Commits in the repository.
    pub commits: usize,
    /// Files in its tree.
    pub files: usize,
    /// Spawn → `/readyz` 200, ms, per start.
    pub ready_ms: Vec<f64>,
    /// RSS once ready, KiB (last start).
    pub rss_kib: u64,
}

/// Everything one `run` measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Results {
    /// Smoke (small, short) or full.
    pub mode: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// wrk settings.
    pub load: Option<Load>,
    /// Repository shape.
    pub repo: String,
    /// Seconds to generate it with git fast-import.
    pub repo_generate_s: f64,
    /// Cold start.
    pub cold_start: Option<ColdStart>,
    /// Read throughput.
    pub reads: Vec<ReadPair>,
    /// Reads during rebuilds.
    pub churn: Option<Churn>,
    /// Fan-out runs.
    pub fanout: Vec<Fanout>,
    /// Scenarios skipped, with why.
    pub skipped: Vec<String>,
}

impl Results {
    /// What went wrong in the runs (not slowness: failures that make numbers meaningless).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.reads {
            for (who, runs) in [("confhub", &r.confhub), ("nginx", &r.nginx)] {
                let errors: u64 = runs.iter().map(|w| w.errors).sum();
                if errors > 0 {
                    out.push(format!("{who} {}: {errors} failed requests", r.endpoint));
                }
            }
        }
        if let Some(c) = &self.churn {
            if c.during.errors > 0 {
                out.push(format!(
                    "reads during rebuilds: {} failed requests",
                    c.during.errors
                ));
            }
            if c.rebuild_ms.is_empty() {
                out.push("reads during rebuilds: the server logged no rebuild".to_string());
            }
        }
        for f in &self.fanout {
            if f.all.missing > 0 {
                out.push(format!(
                    "{}: {} of {} deliveries never arrived",
                    f.system,
                    f.all.missing,
                    f.all.missing + f.all.n
                ));
            }
        }
        out
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

impl Results {
    /// Markdown tables of everything.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "## Run of {} ({} mode)\n", m.date, self.mode);
        let _ = writeln!(
            s,
            "- machine: {} × {}, {:.1} GiB, {}, kernel {}",
            m.cores, m.cpu, m.memory_gib, m.os, m.kernel
        );
        let _ = writeln!(s, "- tools: {}", m.tools.join("; "));
        let _ = writeln!(
            s,
            "- load average (1, 5, 15 min) at start: {}; at end: {}",
            m.loadavg_start, m.loadavg_end
        );
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- repository: {} (generated in {:.1} s with git fast-import)",
            self.repo, self.repo_generate_s
        );
        if let Some(l) = &self.load {
            let _ = writeln!(
                s,
                "- wrk: {} threads, {} keep-alive connections, {} s per run; nginx: worker_processes 2, access_log off, sendfile on",
                l.threads, l.connections, l.seconds
            );
        }
        for sk in &self.skipped {
            let _ = writeln!(s, "- skipped: {sk}");
        }
        if let Some(c) = &self.cold_start {
            let _ = writeln!(s, "\n### Cold start (spawn → `/readyz` 200)\n");
            let _ = writeln!(s, "| repo | starts (ms) | median ms | RSS when ready |");
            let _ = writeln!(s, "|---|---|---|---|");
            let _ = writeln!(
                s,
                "| {} commits, {} files | {} | {} | {} MiB |",
                c.commits,
                c.files,
                c.ready_ms
                    .iter()
                    .map(|v| f1(*v))
                    .collect::<Vec<_>>()
                    .join(", "),
                f1(median(&c.ready_ms)),
                f1(c.rss_kib as f64 / 1024.0)
            );
        }
        if !self.reads.is_empty() {
            let _ = writeln!(s, "\n### Read throughput (wrk, keep-alive, loopback)\n");
            let _ = writeln!(s, "| endpoint | body | confhub req/s | nginx req/s | ratio of medians | median of per-round ratios | confhub p99 | nginx p99 | runs (confhub / nginx req/s) |");
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
            for r in &self.reads {
                let runs = |v: &[WrkResult]| {
                    v.iter()
                        .map(|x| format!("{:.0}", x.rps))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "| `{}` | {} B | {:.0} | {:.0} | **{:.2}×** | {:.2}× | {:.2} ms | {:.2} ms | {} / {} |",
                    r.endpoint,
                    r.body_bytes,
                    r.confhub_rps(),
                    r.nginx_rps(),
                    r.ratio,
                    r.paired_ratio(),
                    r.confhub_p99(),
                    r.nginx_p99(),
                    runs(&r.confhub),
                    runs(&r.nginx)
                );
            }
            let errors: u64 = self
                .reads
                .iter()
                .flat_map(|r| r.confhub.iter().chain(&r.nginx))
                .map(|w| w.errors)
                .sum();
            let _ = writeln!(
                s,
                "\nwrk errors (socket errors + non-2xx) over all runs: {errors}"
            );
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(s, "\n### Reads during snapshot rebuilds\n");
            let _ = writeln!(
                s,
                "{} commits to `application.yml` (every pair changes), one per {} ms, during one wrk run on `/v1/config/svc000/prod`.\n",
                c.commits, c.every_ms
            );
            let _ = writeln!(s, "| | req/s | p99 |");
            let _ = writeln!(s, "|---|---|---|");
            let _ = writeln!(
                s,
                "| quiet (median of the read runs) | {:.0} | {:.2} ms |",
                c.quiet_rps, c.quiet_p99_ms
            );
            let _ = writeln!(
                s,
                "| during rebuilds | {:.0} ({:.2}× quiet) | {:.2} ms |",
                c.during.rps,
                c.during.rps / c.quiet_rps.max(1.0),
                c.during.p99_ms
            );
            let mut sorted = c.rebuild_ms.clone();
            sorted.sort();
            let _ = writeln!(
                s,
                "\nServer-logged refresh time (`took_ms`: read tree, parse, resolve every pair, render, swap) per rebuild: median {} ms, max {} ms over {} rebuilds (pairs changed each: {}).",
                sorted.get(sorted.len() / 2).copied().unwrap_or(0),
                sorted.last().copied().unwrap_or(0),
                sorted.len(),
                c.changed.first().copied().unwrap_or(0)
            );
        }
        if !self.fanout.is_empty() {
            let _ = writeln!(
                s,
                "\n### Push fan-out (commit or put → every subscriber has the frame)\n"
            );
            let _ = writeln!(s, "| system | subscribers | value | setup | p50 | p90 | p99 | max | min | missing | RSS before → idle | per subscriber | server refresh (logged) |");
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            for f in &self.fanout {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} B | {:.1} s | {:.1} ms | {:.1} ms | **{:.1} ms** | {:.1} ms | {:.1} ms | {} | {:.1} → {:.1} MiB | **{:.2} KiB** | {} |",
                    f.system,
                    f.subscribers,
                    f.value_bytes,
                    f.setup_s,
                    f.all.p50_ms,
                    f.all.p90_ms,
                    f.all.p99_ms,
                    f.all.max_ms,
                    f.all.min_ms,
                    f.all.missing,
                    f.rss_before_kib as f64 / 1024.0,
                    f.rss_idle_kib as f64 / 1024.0,
                    f.bytes_per_subscriber / 1024.0,
                    if f.refresh_ms.is_empty() {
                        "-".to_string()
                    } else {
                        format!(
                            "{} ms",
                            f.refresh_ms
                                .iter()
                                .map(u64::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
            }
            let _ = writeln!(s, "\nPer round (p50 / p99 / max, ms):\n");
            for f in &self.fanout {
                let rounds: Vec<String> = f
                    .rounds
                    .iter()
                    .map(|d| format!("{:.1} / {:.1} / {:.1}", d.p50_ms, d.p99_ms, d.max_ms))
                    .collect();
                let _ = writeln!(s, "- {}: {}", f.system, rounds.join("; "));
            }
            let with_phases: Vec<&Fanout> = self
                .fanout
                .iter()
                .filter(|f| !f.phases.is_empty())
                .collect();
            if !with_phases.is_empty() {
                let _ = writeln!(s, "\nWhere confhub's time goes, per round (from the server's `new version` log line: its timestamp and `took_ms`):\n");
                let _ = writeln!(s, "| system | round | ref update → refresh starts (notify + debounce) | refresh (rebuild snapshot) | refresh done → p50 subscriber | → p99 subscriber |");
                let _ = writeln!(s, "|---|---|---|---|---|---|");
                for f in with_phases {
                    for (i, p) in f.phases.iter().enumerate() {
                        let _ = writeln!(
                            s,
                            "| {} | {i} | {:.1} ms | {:.0} ms | {:.1} ms | {:.1} ms |",
                            f.system, p.detect_ms, p.rebuild_ms, p.push_p50_ms, p.push_p99_ms
                        );
                    }
                }
            }
            let confhub = self.fanout.iter().find(|f| f.system.starts_with("confhub"));
            let etcd = self.fanout.iter().find(|f| f.system.starts_with("etcd"));
            if let (Some(c), Some(e)) = (confhub, etcd) {
                let _ = writeln!(
                    s,
                    "\nconfhub ÷ etcd: p50 {:.2}×, p99 {:.2}×, memory per subscriber {:.2}× (lower is better for confhub).",
                    c.all.p50_ms / e.all.p50_ms.max(1e-9),
                    c.all.p99_ms / e.all.p99_ms.max(1e-9),
                    c.bytes_per_subscriber / e.bytes_per_subscriber.max(1e-9)
                );
            }
        }
        s
    }
}
