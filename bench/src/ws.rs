//! Many `/v1/watch` WebSocket subscribers, each on its own TCP connection, spread over
//! several loopback source addresses (127.0.0.2, 127.0.0.3, …: the client socket is
//! bound before connecting) so that tens of thousands of connections never run out of
//! ephemeral ports.
//!
//! Each subscriber sends one `subscribe` frame, waits for the initial `config` frame,
//! then reports every later `config` frame as an [`Arrival`] stamped the moment it was
//! read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// A pushed frame, as seen by one subscriber.
#[derive(Debug)]
pub struct Arrival {
    /// Which subscriber.
    pub id: usize,
    /// When its last byte was read.
    pub at: Instant,
    /// The commit sha it carries (`"version"`).
    pub version: String,
}

/// The `i`-th loopback source address of `count` (127.0.0.2 …).
pub fn source_addr(i: usize, count: usize) -> IpAddr {
    let k = (i % count.max(1)) as u32 + 2;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + k))
}

/// Value of `"version":"…"` in a frame.
pub fn version_of(text: &str) -> Option<&str> {
    field_of(text, "version")
}

/// The string field `name` of a frame, without parsing the rest of it.
fn field_of<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}

/// A delay between 250 ms and 1 s (the client crate's `ACK_DELAY`), spread evenly over
/// the subscribers.
fn ack_delay(id: usize) -> Duration {
    Duration::from_micros(250_000 + (id as u64).wrapping_mul(7_919) % 750_000)
}

/// What the client crate answers a config frame of `digest` with, once the value is
/// swapped in.
fn applied(service: &str, env: &str, digest: &str) -> Message {
    let ack =
        serde_json::json!({"op": "applied", "service": service, "env": env, "digest": digest});
    Message::text(ack.to_string())
}

/// Open TCP to `server` from `local`.
pub async fn connect_from(local: IpAddr, server: SocketAddr) -> Result<tokio::net::TcpStream> {
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Ports of earlier runs may still be in TIME_WAIT on this address.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(local, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Options of a subscriber fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Subscribers (one connection each).
    pub count: usize,
    /// Loopback source addresses to spread them over.
    pub source_addrs: usize,
    /// Pairs to subscribe to, round-robin.
    pub pairs: Vec<(String, String)>,
    /// Connections being set up at once.
    pub concurrency: usize,
}

/// Running subscribers.
pub struct Subscribers {
    /// Frames after the initial one.
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// Bytes of the initial frame of subscriber 0.
    pub frame_bytes: usize,
    /// How long connecting and subscribing all of them took.
    pub setup: Duration,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Subscribers {
    /// Close every connection (with a close frame) and wait for the tasks.
    pub async fn close(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Connect and subscribe every subscriber; returns once each holds its initial config.
pub async fn open(server: SocketAddr, fleet: &Fleet) -> Result<Subscribers> {
    let started = Instant::now();
    let (tx, arrivals) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(fleet.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, Result<usize>)>();
    let mut tasks = Vec::with_capacity(fleet.count);
    for id in 0..fleet.count {
        let (service, env) = fleet.pairs[id % fleet.pairs.len()].clone();
        let local = source_addr(id, fleet.source_addrs);
        let permit = gate.clone().acquire_owned().await?;
        let tx = tx.clone();
        let ready_tx = ready_tx.clone();
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            subscriber(
                id, local, server, service, env, permit, ready_tx, tx, stop_rx,
            )
            .await;
        }));
    }
    drop(ready_tx);
    let mut frame_bytes = 0;
    let mut failed = Vec::new();
    let mut ok = 0;
    while let Some((id, r)) = ready_rx.recv().await {
        match r {
            Ok(bytes) => {
                ok += 1;
                if id == 0 {
                    frame_bytes = bytes;
                }
            }
            Err(e) => failed.push(format!("subscriber {id}: {e:#}")),
        }
        if ok + failed.len() == fleet.count {
            break;
        }
    }
    if !failed.is_empty() {
        stop.send_replace(true);
        bail!(
            "{} of {} subscribers failed; first: {}",
            failed.len(),
            fleet.count,
            failed[0]
        );
    }
    Ok(Subscribers {
        arrivals,
        frame_bytes,
        setup: started.elapsed(),
        stop,
        tasks,
    })
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    id: usize,
    local: IpAddr,
    server: SocketAddr,
    service: String,
    env: String,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: mpsc::UnboundedSender<(usize, Result<usize>)>,
    tx: mpsc::UnboundedSender<Arrival>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt = 0;
    let (mut ws, bytes) = loop {
        attempt += 1;
        match handshake(local, server, &service, &env, id).await {
            Ok(done) => break done,
            Err(e) if attempt >= 5 => {
                let _ = ready.send((id, Err(e)));
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50 * attempt)).await,
        }
    };
    drop(permit);
    let _ = ready.send((id, Ok(bytes)));
    // The answer to the newest config, sent after a delay as the client crate does (a
    // random one within its `ACK_DELAY`, 250 ms to 1 s; here spread by the subscriber's
    // number). Only the digest is kept when a config arrives: the answer is written when
    // it is due, so building it does not slow the receiving of the push being measured.
    let mut answer: Option<(tokio::time::Instant, String)> = None;
    loop {
        let due = answer.as_ref().map(|(at, _)| *at);
        let send_now = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => true,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let at = Instant::now();
                    if text.as_str().contains("\"op\":\"config\"") {
                        let version = version_of(text.as_str()).unwrap_or_default().to_string();
                        let _ = tx.send(Arrival { id, at, version });
                        if let Some(digest) = field_of(text.as_str(), "digest") {
                            let at = due.unwrap_or_else(|| tokio::time::Instant::now() + ack_delay(id));
                            answer = Some((at, digest.to_string()));
                        }
                    }
                    false
                }
                Some(Ok(_)) => false,
                Some(Err(_)) | None => return,
            }
        };
        if send_now {
            if let Some((_, digest)) = answer.take() {
                if ws.send(applied(&service, &env, &digest)).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn handshake(
    local: IpAddr,
    server: SocketAddr,
    service: &str,
    env: &str,
    id: usize,
) -> Result<(Ws, usize)> {
    let stream = connect_from(local, server).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = format!("ws://{server}/v1/watch");
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
    )
    .await
    .context("WebSocket handshake timed out")??;
    // Each subscriber is an instance with an id and labels, as the client crate sends.
    let subscribe = serde_json::json!({
        "op": "subscribe", "service": service, "env": env, "digest": null,
        "instance": format!("bench-{id}"), "labels": {"zone": format!("zone-{}", id % 3)},
    });
    ws.send(Message::text(subscribe.to_string())).await?;
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Text(t) if t.as_str().contains("\"op\":\"config\"") => {
                    if let Some(digest) = field_of(t.as_str(), "digest") {
                        ws.send(applied(service, env, digest)).await?;
                    }
                    return Ok(t.len());
                }
                Message::Text(t) => return Err(anyhow!("unexpected frame: {}", t.as_str())),
                _ => {}
            }
        }
        Err(anyhow!("closed before the initial config"))
    })
    .await
    .context("no initial config frame within 30 s")??;
    Ok((ws, first))
}

/// Collect, for a commit `version` published at `t0`, each subscriber's delay, until
/// `expected` arrived or `limit` passed. Returns the delays (sorted) and how many are missing.
pub async fn collect(
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    version: &str,
    t0: Instant,
    expected: usize,
    limit: Duration,
) -> (Vec<Duration>, usize) {
    let mut seen = vec![false; expected];
    let mut delays = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::from_std(t0 + limit);
    while delays.len() < expected {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some(a)) => {
                if a.version == version && a.id < expected && !seen[a.id] {
                    seen[a.id] = true;
                    delays.push(a.at.saturating_duration_since(t0));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    delays.sort();
    let missing = expected - delays.len();
    (delays, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_start_at_2() {
        assert_eq!(source_addr(0, 4).to_string(), "127.0.0.2");
        assert_eq!(source_addr(5, 4).to_string(), "127.0.0.3");
    }

    #[test]
    fn finds_the_version() {
        let f = r#"{"op":"config","service":"a","env":"b","version":"abc123","digest":"d"}"#;
        assert_eq!(version_of(f), Some("abc123"));
    }
}
