//! The accept loop: TCP (or TLS) connections served by hyper with our limits — header
//! size, header read timeout (slow-loris), an idle timeout for HTTP/1 and HTTP/2
//! connections alike, a cap on open connections — and a graceful shutdown that lets
//! in-flight requests finish within a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::errors::TlsError;
use crate::settings::{HttpLimits, TlsFiles};

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A rustls acceptor from PEM files.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |path: &Path, message: String| TlsError {
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(fail(&files.cert, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| fail(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(&files.key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener` until `shutdown` completes; then stop accepting and give
/// in-flight requests [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = Arc::new(hyper_builder(limits));
    // Not hyper-util's `GracefulShutdown`: it owns each connection, and the idle close
    // below must be able to start a graceful shutdown of its own. Every connection task
    // holds a receiver; `closed()` on the sender says they have all ended.
    let (stop_tx, _) = watch::channel(());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "refusing a connection: connection limit reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            builder: builder.clone(),
            app: app.clone(),
            peer,
            idle_timeout: limits.header_read_timeout,
            stopping: stop_tx.subscribe(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            conn.run(stream, tls).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

/// hyper's connection builder, HTTP/1 and HTTP/2, with the header limits and timeouts.
fn hyper_builder(limits: &HttpLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's minimum buffer is 8 KiB; the header block must fit in it.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One accepted connection, before its protocol is known.
struct Conn {
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    peer: SocketAddr,
    /// A connection with no request (HTTP/1) or stream (HTTP/2) open this long is closed.
    idle_timeout: Duration,
    /// Changes (or closes) when the server shuts down.
    stopping: watch::Receiver<()>,
}

impl Conn {
    /// Serve the accepted `stream`, after a TLS handshake when `tls` is set; errors end
    /// only this connection.
    async fn run(self, stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>) {
        let peer = self.peer;
        let header_timeout = self.idle_timeout;
        let result =
            match tls {
                None => self.serve(FirstBytes::new(stream, header_timeout)).await,
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    self.serve(FirstBytes::new(stream, header_timeout)).await
                }
            };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }

    /// Serve HTTP/1 or HTTP/2 on `io` until the peer leaves, the connection has been
    /// idle for `idle_timeout`, or the server shuts down.
    ///
    /// hyper closes an idle HTTP/1 connection itself (its header read timeout runs while
    /// it waits for the next request), but an HTTP/2 connection has no such timer: PINGs
    /// and SETTINGS keep it busy at the frame level, so without this every slot could be
    /// held by clients that merely answer PINGs. Idle is counted in requests, not bytes:
    /// a request (or stream) counts from the moment the service is called until its
    /// response body has been sent or dropped, so a slow upload or download is never idle.
    async fn serve<I>(self, io: I) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            app,
            peer,
            idle_timeout,
            mut stopping,
        } = self;
        let activity = Arc::new(Activity::default());
        let counted = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let open = counted.open();
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let call = app.clone().oneshot(req);
            async move {
                let response = call.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Counted { body, _open: open }),
                )
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = activity.idle_for(idle_timeout);
        tokio::pin!(idle);
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = stopping.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut idle => {
                    if closing {
                        tracing::debug!(%peer, "dropping an idle connection that did not close");
                        break Ok(());
                    }
                    tracing::debug!(%peer, timeout = ?idle_timeout, "closing an idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    // An HTTP/2 GOAWAY completes only once the client acknowledges a PING;
                    // one that never does must not keep the connection. A stream opened
                    // meanwhile still finishes: the grace starts once it has.
                    idle.set(activity.idle_for(idle_timeout));
                }
            }
        };
        // Held until here: the server's shutdown waits for every connection.
        drop(stopping);
        result
    }
}

/// How many requests (HTTP/1) or streams (HTTP/2) a connection has open.
#[derive(Debug)]
struct Activity {
    open: watch::Sender<usize>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: watch::Sender::new(0),
        }
    }
}

impl Activity {
    /// Count a request as open until the returned guard is dropped.
    fn open(self: &Arc<Self>) -> OpenRequest {
        self.open.send_modify(|n| *n += 1);
        OpenRequest(self.clone())
    }

    /// Completes once nothing has been open for `timeout` without a break.
    fn idle_for(&self, timeout: Duration) -> impl Future<Output = ()> + Send + 'static {
        let mut open = self.open.subscribe();
        async move {
            loop {
                // The sender lives as long as `self`, which outlives every caller.
                if open.wait_for(|n| *n == 0).await.is_err() {
                    return std::future::pending().await;
                }
                // Any change restarts the wait: a request came and maybe went.
                if tokio::time::timeout(timeout, open.changed()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A request counted by [`Activity`].
#[derive(Debug)]
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as open until hyper has sent (or
/// dropped) the last byte.
struct Counted {
    body: Body,
    _open: OpenRequest,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's first bytes must arrive within a deadline. hyper-util reads them (up
/// to a whole HTTP/2 preface) to choose HTTP/1 or HTTP/2 with no timeout of its own,
/// and hyper's header read timeout only starts after: without this, a client that
/// connects and sends nothing (or half a preface) holds its connection slot forever.
/// The deadline is lifted once the bytes cannot be the preface, or it is complete.
struct FirstBytes<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    seen: usize,
}

impl<S> FirstBytes<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        FirstBytes {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            seen: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let expected = &H2_PREFACE[this.seen.min(H2_PREFACE.len())..];
                let n = new.len().min(expected.len());
                this.seen += new.len();
                if new.is_empty() || new[..n] != expected[..n] || this.seen >= H2_PREFACE.len() {
                    this.deadline = None;
                }
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header read timeout",
                )));
            }
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
