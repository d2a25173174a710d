//! Child processes (confhub, nginx, etcd) that are always cleaned up: stopped with
//! SIGTERM (then SIGKILL) when stopped explicitly or dropped, and their pids listed in a
//! file so `bench/run.sh` can end them by id if this tool itself is killed.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running child process.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: std::process::Child,
    /// Its pid.
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// When it was spawned.
    pub started: Instant,
}

/// Where pids of children are recorded (set once by `main`).
static PIDS_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Record children's pids in `path` (one a line).
pub fn record_pids_in(path: &Path) {
    let _ = PIDS_FILE.set(path.to_path_buf());
}

impl Proc {
    /// Spawn `program args…` with output to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id();
        if let Some(file) = PIDS_FILE.get() {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(file) {
                let _ = writeln!(f, "{pid}");
            }
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            pid,
            log: log.to_path_buf(),
            started,
        })
    }

    /// Fail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log: {}\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// Resident set size (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid)
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free loopback port (bound and released; the small race is acceptable here).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Wait until `addr` accepts TCP connections.
pub async fn wait_tcp(addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll `url` until it answers 200; returns when it did.
pub async fn wait_http_ok(
    client: &reqwest::Client,
    url: &str,
    proc_: &mut Proc,
    limit: Duration,
    every: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status().is_success() {
                return Ok(Instant::now());
            }
        }
        proc_.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{url} not ready after {limit:?}; log:\n{}",
                tail(&proc_.log, 20)
            );
        }
        tokio::time::sleep(every).await;
    }
}
