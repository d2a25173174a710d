//! Read throughput with `wrk` (keep-alive, loopback), and nginx serving the same bytes
//! as static files for comparison.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::procs::{self, Proc};

/// How to load a URL.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    /// wrk threads.
    pub threads: u32,
    /// Open keep-alive connections.
    pub connections: u32,
    /// Seconds per run.
    pub seconds: u32,
}

/// One wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers.
    pub errors: u64,
    /// Body bytes of one response (checked before the run).
    pub body_bytes: usize,
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60_000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|n| n * factor)
}

/// Parse wrk's `--latency` output.
pub fn parse(out: &str) -> Result<WrkResult> {
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        requests: 0,
        errors: 0,
        body_bytes: 0,
    };
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().context("Requests/sec")?;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_latency(v).context("50% latency")?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_latency(v).context("99% latency")?;
        } else if t.contains(" requests in ") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    if r.rps == 0.0 {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(r)
}

/// Run wrk against `url`.
pub async fn run(url: &str, load: Load) -> Result<WrkResult> {
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--latency")
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text)
}

/// nginx serving static files from a directory of its own.
pub struct Nginx {
    /// The process (master; stopping it stops the workers).
    pub proc_: Proc,
    /// `http://127.0.0.1:port`.
    pub base: String,
    root: PathBuf,
}

impl Nginx {
    /// Start nginx with `workers` worker processes serving `www/` under `dir`.
    pub async fn start(dir: &Path, workers: u32) -> Result<Nginx> {
        let root = dir.join("www");
        for sub in ["www", "tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let port = procs::free_port()?;
        let is_root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
        let d = dir.display();
        let conf = format!(
            r#"{user}
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ application/json json; }}
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
            user = if is_root { "user root;" } else { "" },
            root = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let args = vec![
            "-p".to_string(),
            dir.display().to_string(),
            "-e".to_string(),
            dir.join("logs/error.log").display().to_string(),
            "-c".to_string(),
            conf_path.display().to_string(),
        ];
        let mut proc_ = Proc::spawn(
            "nginx",
            Path::new("nginx"),
            &args,
            &[],
            &dir.join("logs/stdout.log"),
        )?;
        let addr = format!("127.0.0.1:{port}").parse()?;
        if let Err(e) = procs::wait_tcp(addr, Duration::from_secs(10)).await {
            proc_.check_alive()?;
            return Err(e);
        }
        Ok(Nginx {
            proc_,
            base: format!("http://127.0.0.1:{port}"),
            root,
        })
    }

    /// Serve `bytes` at `/{name}`; returns the URL.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<String> {
        std::fs::write(self.root.join(name), bytes)?;
        Ok(format!("{}/{name}", self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() -> Result<()> {
        let out = "Running 2s test @ http://127.0.0.1:1/x\n  2 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   137.00us  100.00us   2.00ms   90.00%\n    Req/Sec    30.00k     1.00k   33.00k    70.00%\n  Latency Distribution\n     50%  120.00us\n     75%  150.00us\n     90%  200.00us\n     99%    1.50ms\n  120000 requests in 2.00s, 100.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  60000.50\nTransfer/sec:     50.00MB\n";
        let r = parse(out)?;
        assert_eq!(r.requests, 120_000);
        assert!((r.rps - 60000.5).abs() < 1e-6);
        assert!((r.p50_ms - 0.12).abs() < 1e-9);
        assert!((r.p99_ms - 1.5).abs() < 1e-9);
        assert_eq!(r.errors, 3);
        Ok(())
    }
}
