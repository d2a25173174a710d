//! The etcd side of the fan-out comparison: a single-member etcd (Debian
//! `etcd-server`) started as a child, N watchers on one key, each with its own client
//! and TCP connection from the same spread of loopback source addresses as the confhub
//! subscribers, then a put of a value as large as confhub's `config` frame.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::procs::{self, Proc};
use crate::ws::{self, Arrival};

/// A running etcd.
pub struct Etcd {
    /// The process.
    pub proc_: Proc,
    /// `127.0.0.1:port` of the client API.
    pub addr: SocketAddr,
}

impl Etcd {
    /// Start a single-member etcd with its data under `dir`.
    pub async fn start(dir: &Path) -> Result<Etcd> {
        std::fs::create_dir_all(dir)?;
        let client = procs::free_port()?;
        let peer = procs::free_port()?;
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let args: Vec<String> = [
            "--name",
            "bench",
            "--data-dir",
            &dir.join("data").display().to_string(),
            "--listen-client-urls",
            &c,
            "--advertise-client-urls",
            &c,
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
            "--initial-cluster",
            &format!("bench={p}"),
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut proc_ = Proc::spawn("etcd", Path::new("etcd"), &args, &[], &dir.join("etcd.log"))?;
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse()?;
        if let Err(e) = procs::wait_tcp(addr, Duration::from_secs(20)).await {
            proc_.check_alive()?;
            return Err(e);
        }
        // Wait until it serves requests (leader elected).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match etcd_client::Client::connect([c.as_str()], None).await {
                Ok(mut cl) => {
                    if cl.put("bench/ping", "1", None).await.is_ok() {
                        break;
                    }
                }
                Err(_) if Instant::now() > deadline => bail!("etcd did not become ready"),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!("etcd did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Etcd { proc_, addr })
    }
}

/// Watchers on one key, each with its own connection.
pub struct Watchers {
    /// Events, as arrivals (`version` = the event's mod revision).
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// How long connecting and creating every watch took.
    pub setup: Duration,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    /// Cancel everything.
    pub async fn close(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Open `count` watchers of `key`.
pub async fn open_watchers(
    etcd: SocketAddr,
    key: &str,
    count: usize,
    source_addrs: usize,
    concurrency: usize,
) -> Result<Watchers> {
    let started = Instant::now();
    let (tx, arrivals) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, Result<()>)>();
    let mut tasks = Vec::with_capacity(count);
    for id in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let local = ws::source_addr(id, source_addrs);
        let (tx, ready_tx, mut stop_rx, key) = (
            tx.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
            key.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{etcd}"))?
                    .local_address(Some(local))
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                let mut client = etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?;
                let mut stream = client.watch(key.as_bytes(), None).await?;
                match stream.message().await? {
                    Some(r) if r.created() => {}
                    other => bail!("watch not created: {other:?}"),
                }
                Ok::<_, anyhow::Error>((client, stream))
            }
            .await;
            drop(permit);
            let (_client, mut stream) = match opened {
                Ok(v) => {
                    let _ = ready_tx.send((id, Ok(())));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send((id, Err(e)));
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => break,
                    msg = stream.message() => match msg {
                        Ok(Some(resp)) => {
                            let at = Instant::now();
                            for ev in resp.events() {
                                if let Some(kv) = ev.kv() {
                                    let _ = tx.send(Arrival { id, at, version: kv.mod_revision().to_string() });
                                }
                            }
                        }
                        _ => return,
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    let mut ok = 0;
    let mut failed: Vec<String> = Vec::new();
    while let Some((id, r)) = ready_rx.recv().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => failed.push(format!("watcher {id}: {e:#}")),
        }
        if ok + failed.len() == count {
            break;
        }
    }
    if !failed.is_empty() {
        stop.send_replace(true);
        bail!(
            "{} of {count} etcd watchers failed; first: {}",
            failed.len(),
            failed[0]
        );
    }
    Ok(Watchers {
        arrivals,
        setup: started.elapsed(),
        stop,
        tasks,
    })
}

/// Put `value` at `key`; returns (time just before the put, revision of the put).
pub async fn put(etcd: SocketAddr, key: &str, value: Vec<u8>) -> Result<(Instant, i64)> {
    let mut client = etcd_client::Client::connect([format!("http://{etcd}")], None)
        .await
        .context("connecting to etcd")?;
    // Warm the connection so the timed put is one round trip.
    client.get("bench/ping", None).await?;
    let t0 = Instant::now();
    let resp = client.put(key, value, None).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((t0, revision))
}
