//! confhub as a child process: the release `confhub` binary as shipped, or this tool's
//! own `serve-lib` subcommand (the same library through `confhub_server::run`, with
//! settings the CLI does not expose, such as the notify debounce).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::procs::{self, Proc};

/// Which server to start.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// `confhub serve --repo … --listen …` (this binary path).
    Binary(PathBuf),
    /// `confhub-bench serve-lib --debounce-ms N` (this tool, in a child process).
    Library {
        /// notify debounce in milliseconds.
        debounce_ms: u64,
    },
}

impl Flavor {
    /// A label for reports.
    pub fn label(&self) -> String {
        match self {
            Flavor::Binary(_) => "confhub (release binary, default settings)".to_string(),
            Flavor::Library { debounce_ms } => {
                format!("confhub library, notify debounce {debounce_ms} ms")
            }
        }
    }
}

/// A running confhub.
pub struct Confhub {
    /// The process.
    pub proc_: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From spawn to `/readyz` answering 200.
    pub ready_after: Duration,
}

impl Confhub {
    /// Start confhub on `repo` with its log at `log`, and wait until `/readyz` is 200
    /// (polled every 2 ms).
    pub async fn start(flavor: &Flavor, repo: &Path, log: &Path) -> Result<Confhub> {
        let port = procs::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let (program, mut args) = match flavor {
            Flavor::Binary(bin) => (bin.clone(), vec!["serve".to_string()]),
            Flavor::Library { debounce_ms } => (
                std::env::current_exe()?,
                vec![
                    "serve-lib".to_string(),
                    "--debounce-ms".to_string(),
                    debounce_ms.to_string(),
                ],
            ),
        };
        args.extend([
            "--repo".to_string(),
            repo.display().to_string(),
            "--listen".to_string(),
            addr.to_string(),
        ]);
        let mut proc_ = Proc::spawn(
            "confhub",
            &program,
            &args,
            &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
            log,
        )?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let ready = procs::wait_http_ok(
            &client,
            &format!("http://{addr}/readyz"),
            &mut proc_,
            Duration::from_secs(120),
            Duration::from_millis(2),
        )
        .await
        .context("waiting for confhub to be ready")?;
        let ready_after = ready.saturating_duration_since(proc_.started);
        Ok(Confhub {
            proc_,
            addr,
            ready_after,
        })
    }

    /// `http://addr`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Numbers the server logged for each new version it published: (`took_ms`, `changed`).
pub fn refreshes_in_log(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("new version"))
        .filter_map(|l| Some((field(l, "took_ms")?, field(l, "changed")?)))
        .collect()
}

fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `confhub-bench serve-lib`: the server library with a chosen debounce.
pub async fn serve_lib(repo: String, listen: String, debounce_ms: u64) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut settings = confhub_server::Settings::new(repo);
    settings.live.debounce = Duration::from_millis(debounce_ms);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending::<()>().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    confhub_server::run(listener, settings, shutdown).await?;
    Ok(())
}

/// Time between two instants in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The server's "new version" log line for one commit.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// The line's timestamp: the refresh finished and the push starts.
    pub at: SystemTime,
    /// `took_ms`: the refresh (read the tree, resolve every pair, render, swap).
    pub took_ms: u64,
}

/// Find the "new version … to=`version` … took_ms=N" line in the server's log.
pub fn published_in_log(log: &Path, version: &str) -> Option<Published> {
    let text = std::fs::read_to_string(log).ok()?;
    let needle = format!("to={version}");
    let line = text
        .lines()
        .find(|l| l.contains("new version") && l.contains(&needle))?;
    Some(Published {
        at: parse_utc(line.split_whitespace().next()?)?,
        took_ms: field(line, "took_ms")?,
    })
}

/// `2026-11-22T02:46:19.447615Z` → SystemTime.
pub fn parse_utc(ts: &str) -> Option<SystemTime> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(secs).ok()?)
            + Duration::from_nanos(nanos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_timestamps() {
        let t = parse_utc("2026-11-22T02:46:19.447615Z").unwrap_or(SystemTime::UNIX_EPOCH);
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        // date -u -d 2026-11-22T02:46:19Z +%s
        assert_eq!(d.as_secs(), 1_795_315_579);
        assert_eq!(d.subsec_micros(), 447_615);
        assert!(parse_utc("2000-02-29T00:00:00Z").is_some());
    }
}
