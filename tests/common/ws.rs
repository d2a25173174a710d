//! A `/v1/watch` WebSocket client for tests.
//!
//! [`Watcher`] reads its socket on a background task, so the server's pings get their
//! pongs while the test looks elsewhere, and hands the frames over in order, each within
//! a deadline. A test that must decide when (or whether) the socket is read, such as a
//! consumer that stops reading, takes the raw stream of [`open`] or [`open_on`] instead
//! and may wrap it in a [`Watcher`] later with [`Watcher::new`].
//!
//! Shared by two test crates: the end-to-end tests (`tests/common/mod.rs`) and the
//! server's binary-level tests (`server/tests/common/mod.rs`, through `#[path]`), so it
//! takes URLs, not either crate's server handle.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use confhub_client::wire::ServerFrame;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// What a test needs to build frames and a TLS client, so that it need not name the
// WebSocket crate itself.
pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::Connector;

/// A client WebSocket over TCP or TLS.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a [`Watcher`] waits for a frame unless told otherwise ([`Watcher::within`]):
/// generous, the tests must pass on a loaded 2-core machine.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// The upgrade request for `url`, with an `Authorization` header when one is given (the
/// whole value: `Bearer <token>`, `Basic <base64>`).
pub fn request(url: &str, authorization: Option<&str>) -> Request {
    let mut req = url.into_client_request().expect("a WebSocket URL");
    if let Some(value) = authorization {
        req.headers_mut()
            .insert("Authorization", value.parse().expect("a header value"));
    }
    req
}

/// Connect to `url` and return the raw stream, which nobody reads until the caller does.
/// An error when the connection or the upgrade is refused.
pub async fn open(url: &str, authorization: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let (ws, _) = tokio_tungstenite::connect_async(request(url, authorization)).await?;
    Ok(ws)
}

/// The WebSocket handshake over `tcp`, already connected (a socket with options of the
/// test's choosing); `tls` for a `wss://` URL. Returns the raw stream.
pub async fn open_on(url: &str, tcp: TcpStream, tls: Option<Connector>) -> Ws {
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(url, tcp, None, tls)
        .await
        .expect("WebSocket handshake");
    ws
}

/// A config frame's parts.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub service: String,
    pub env: String,
    pub version: String,
    pub digest: String,
    pub values: Value,
    /// The rollout it comes from, if any.
    pub rollout: Option<String>,
}

/// What the reader task saw: a text frame, or the end of the connection (with the close
/// code and reason, when the peer sent them).
#[derive(Debug)]
enum Event {
    Text(String),
    Closed(Option<(u16, String)>),
}

/// A `/v1/watch` client whose socket is read in the background (see the module docs).
pub struct Watcher {
    sink: SplitSink<Ws, Message>,
    events: mpsc::UnboundedReceiver<Event>,
    deadline: Duration,
}

impl Watcher {
    /// Connect to `url`; panics if that fails.
    pub async fn connect(url: &str) -> Watcher {
        Self::try_connect(url, None)
            .await
            .expect("WebSocket connect")
    }

    /// Connect to `url` with an `Authorization` header (see [`request`]); panics if that
    /// fails.
    pub async fn connect_as(url: &str, authorization: &str) -> Watcher {
        Self::try_connect(url, Some(authorization))
            .await
            .expect("WebSocket connect")
    }

    /// Connect to `url`; an error when the connection or the upgrade is refused.
    pub async fn try_connect(
        url: &str,
        authorization: Option<&str>,
    ) -> Result<Watcher, tungstenite::Error> {
        Ok(Self::new(open(url, authorization).await?))
    }

    /// Start reading `ws` in the background.
    pub fn new(ws: Ws) -> Watcher {
        let (sink, mut stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(text)) => {
                        let _ = tx.send(Event::Text(text.as_str().to_string()));
                    }
                    Ok(Message::Close(close)) => {
                        let _ = tx.send(Event::Closed(
                            close.map(|c| (u16::from(c.code), c.reason.to_string())),
                        ));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::Closed(None));
        });
        Watcher {
            sink,
            events,
            deadline: FRAME_DEADLINE,
        }
    }

    /// Wait at most `deadline` for each frame from now on.
    pub fn within(mut self, deadline: Duration) -> Watcher {
        self.deadline = deadline;
        self
    }

    /// Send a frame; an error once the connection is gone (for a test whose peer may well
    /// have closed it).
    pub async fn try_send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.sink.send(msg).await
    }

    /// Send a frame; panics if that fails.
    pub async fn send(&mut self, msg: Message) {
        self.try_send(msg).await.expect("send to server");
    }

    /// Send `v` as a text frame.
    pub async fn send_json(&mut self, v: Value) {
        self.send(Message::text(v.to_string())).await;
    }

    /// Subscribe to a pair; `digest` is the one the client holds, if any.
    pub async fn subscribe(&mut self, service: &str, env: &str, digest: Option<&str>) {
        self.send_json(
            json!({"op": "subscribe", "service": service, "env": env, "digest": digest}),
        )
        .await;
    }

    /// The next text frame, or how the connection ended if it ends first. Panics naming
    /// `what` when neither comes within the deadline.
    pub async fn next_or_close(&mut self, what: &str) -> Result<String, Option<(u16, String)>> {
        match tokio::time::timeout(self.deadline, self.events.recv()).await {
            Ok(Some(Event::Text(text))) => Ok(text),
            Ok(Some(Event::Closed(close))) => Err(close),
            Ok(None) => Err(None),
            Err(_) => panic!("{what}: no frame within {:?}", self.deadline),
        }
    }

    /// The next text frame; panics if the connection ends first.
    pub async fn next_text(&mut self, what: &str) -> String {
        match self.next_or_close(what).await {
            Ok(text) => text,
            Err(close) => panic!("{what}: connection closed ({close:?})"),
        }
    }

    /// The next frame as JSON; panics if the connection ends first.
    pub async fn next_json(&mut self, what: &str) -> Value {
        let text = self.next_text(what).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: bad frame {text}: {e}"))
    }

    /// The next frame, which must be a [`ServerFrame`]; panics if the connection ends first.
    pub async fn next(&mut self, what: &str) -> ServerFrame {
        let text = self.next_text(what).await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: bad server frame {text}: {e}"))
    }

    /// The next frame, which must be a config frame.
    pub async fn next_config(&mut self, what: &str) -> Cfg {
        match self.next(what).await {
            ServerFrame::Config {
                service,
                env,
                version,
                digest,
                values,
                rollout,
            } => Cfg {
                service,
                env,
                version,
                digest,
                values,
                rollout,
            },
            other => panic!("{what}: expected a config frame, got {other:?}"),
        }
    }

    /// The next frame, which must be an error frame; returns its code and message.
    pub async fn next_error(&mut self, what: &str) -> (String, String) {
        match self.next(what).await {
            ServerFrame::Error { error, message, .. } => (error, message),
            other => panic!("{what}: expected an error frame, got {other:?}"),
        }
    }

    /// Wait for the connection to end, skipping frames; returns the close code and
    /// reason, if the peer sent them.
    pub async fn closed(&mut self, what: &str) -> Option<(u16, String)> {
        loop {
            match self.next_or_close(what).await {
                Ok(_) => continue,
                Err(close) => return close,
            }
        }
    }

    /// Close the connection from this side (a close frame, then the end).
    pub async fn close(mut self) {
        self.sink.close().await.expect("close the WebSocket");
    }
}
