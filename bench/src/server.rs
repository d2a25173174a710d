//! confhub as a child process: the release `confhub` binary as shipped, or this tool's
//! own `serve-lib` subcommand (the same library through `confhub_server::run`, with
//! settings the CLI does not expose, such as the notify debounce).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
