//! The HTTP side of the client: its servers with their circuit breakers, and one fetch
//! of a config (timeouts, retries, failover, the last-known-good cache). Shared by
//! [`crate::Client`] and the watch task, which depend on it and not on each other.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, IF_NONE_MATCH};
use reqwest::Url;

use crate::breaker::{Breaker, BreakerPolicy};
use crate::cache;
use crate::config::{Config, Origin};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::trace::{self, TraceHeaders, TraceparentFn};
use crate::util::{lock, truncate};
use crate::wire::instance::{INSTANCE_HEADER, LABELS_HEADER};
use crate::wire::{ConfigResponse, ErrorBody};

/// Largest response body accepted from a server.
const MAX_BODY: usize = 32 * 1024 * 1024;

pub(crate) type Validator = Arc<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

#[derive(Debug, Default)]
pub(crate) struct StatusInner {
    pub(crate) origin: Option<Origin>,
    pub(crate) cache_error: Option<String>,
}

pub(crate) struct Server {
    /// The base URL as given (for logs, errors and status).
    pub(crate) url: String,
    pub(crate) config_url: Url,
    pub(crate) watch_url: Url,
    pub(crate) breaker: Mutex<Breaker>,
}

impl Server {
    pub(crate) fn new(
        raw: &str,
        service: &str,
        env: &str,
        label: Option<&str>,
        breaker: &BreakerPolicy,
    ) -> Result<Self, Error> {
        let bad = |why: &str| Error::Builder(format!("server URL `{raw}`: {why}"));
        let base = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment"));
        }
        let mut config_url = base.clone();
        config_url
            .path_segments_mut()
            .map_err(|()| bad("cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v1", "config", service, env]);
        if let Some(label) = label {
            config_url.query_pairs_mut().append_pair("label", label);
        }
        let mut watch_url = base.clone();
        watch_url
            .path_segments_mut()
            .map_err(|()| bad("cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v1", "watch"]);
        let scheme = if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        watch_url
            .set_scheme(scheme)
            .map_err(|()| bad("cannot make a WebSocket URL"))?;
        Ok(Server {
            url: raw.trim_end_matches('/').to_string(),
            config_url,
            watch_url,
            breaker: Mutex::new(Breaker::new(breaker.clone())),
        })
    }
}

/// Permission from a server's breaker to send it one request. Report the outcome with
/// [`success`](Self::success) or [`failure`](Self::failure); dropping it unreported (a
/// cancelled request) frees a half-open probe slot.
pub(crate) struct Permit<'a> {
    server: &'a Server,
    done: bool,
}

impl Permit<'_> {
    pub(crate) fn success(mut self) {
        self.done = true;
        lock(&self.server.breaker).success();
    }

    pub(crate) fn failure(mut self) {
        self.done = true;
        server_failed(self.server);
    }
}

fn server_failed(server: &Server) {
    if lock(&server.breaker).failure(Instant::now()) {
        tracing::warn!(server = %server.url, "circuit breaker opened: skipping this server until its cool-down ends");
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.server.breaker).abandon();
        }
    }
}

/// The result of one successful HTTP exchange.
pub(crate) enum Fetched {
    Fresh(Box<Config>),
    /// 304: the server (base URL) holds the same digest.
    NotModified {
        server: String,
    },
}

pub(crate) struct Inner {
    pub(crate) servers: Vec<Server>,
    pub(crate) service: String,
    pub(crate) env: String,
    pub(crate) label: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) cache_file: Option<PathBuf>,
    pub(crate) fail_fast: bool,
    pub(crate) validator: Option<Validator>,
    pub(crate) poll_interval: Duration,
    pub(crate) traceparent: Option<TraceparentFn>,
    pub(crate) watch_ping_interval: Duration,
    pub(crate) watch_silence_timeout: Duration,
    pub(crate) preferred: AtomicUsize,
    pub(crate) status: Mutex<StatusInner>,
    /// Who this client says it is, on every request and subscription.
    pub(crate) identity: crate::identity::Identity,
}

impl Inner {
    /// Server indices in the order to try them: the last one that worked first.
    pub(crate) fn server_order(&self) -> impl Iterator<Item = usize> {
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| (first + k) % n)
    }

    pub(crate) fn set_preferred(&self, i: usize) {
        self.preferred.store(i, Ordering::Relaxed);
    }

    /// Server `i` failed after it had been let through (a watch stream that stalled):
    /// count it against its breaker, and make the next server the first to try.
    pub(crate) fn server_stalled(&self, i: usize) {
        server_failed(&self.servers[i]);
        self.set_preferred((i + 1) % self.servers.len());
    }

    /// Ask server `i`'s breaker for a permit.
    pub(crate) fn permit(&self, i: usize) -> Option<Permit<'_>> {
        let server = &self.servers[i];
        if lock(&server.breaker).allow(Instant::now()) {
            Some(Permit {
                server,
                done: false,
            })
        } else {
            None
        }
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A fresh `x-request-id`, and the application's `traceparent` if it gives one.
    pub(crate) fn trace_headers(&self) -> TraceHeaders {
        TraceHeaders::new(self.traceparent.as_ref())
    }

    pub(crate) fn set_origin(&self, origin: Origin) {
        lock(&self.status).origin = Some(origin);
    }

    fn set_cache_error(&self, e: &Error) {
        lock(&self.status).cache_error = Some(e.to_string());
    }

    /// Run the user validator.
    pub(crate) fn validate(&self, config: &Config) -> Result<(), Error> {
        match &self.validator {
            Some(v) => v(config).map_err(|message| Error::Rejected {
                version: config.version().to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Fetch, validate, cache; fall back to the cache when every server is down.
    pub(crate) async fn fetch_accepted(&self) -> Result<Config, Error> {
        match self.fetch_remote(None, &self.retry).await {
            Ok(Fetched::Fresh(config)) => {
                self.validate(&config)?;
                self.write_cache(&config).await;
                self.set_origin(config.origin().clone());
                Ok(*config)
            }
            Ok(Fetched::NotModified { .. }) => Err(Error::Protocol {
                server: String::new(),
                message: "304 Not Modified to an unconditional request".into(),
            }),
            Err(e) if e.is_unavailable() => self.start_from_cache(e).await,
            Err(e) => Err(e),
        }
    }

    async fn start_from_cache(&self, unavailable: Error) -> Result<Config, Error> {
        let Some(path) = self.cache_file.clone() else {
            return Err(unavailable);
        };
        let why = unavailable.to_string();
        let cache_failed = |reason: Error| with_cache_reason(unavailable, reason);
        if self.fail_fast {
            return Err(cache_failed(Error::Cache {
                path,
                message: "not used: fail-fast was chosen".into(),
            }));
        }
        let response = match self.read_cache(&path).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(cache_failed(Error::Cache {
                    path,
                    message: "no cached config yet".into(),
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, "the last-known-good cache is unusable and was ignored");
                self.set_cache_error(&e);
                return Err(cache_failed(e));
            }
        };
        let config = Config::new(response, Origin::Cache { path: path.clone() });
        if let Err(e) = self.validate(&config) {
            let e = Error::Cache {
                path,
                message: format!("not used: {e}"),
            };
            tracing::error!(error = %e, "the cached config fails the validator");
            self.set_cache_error(&e);
            return Err(cache_failed(e));
        }
        tracing::warn!(
            service = %self.service,
            env = %self.env,
            version = %config.version(),
            cache = %path.display(),
            error = %why,
            "every confhub server is unreachable: starting from the last-known-good cache"
        );
        self.set_origin(config.origin().clone());
        Ok(config)
    }

    /// Read and verify the cache file at `path`, off the async workers.
    async fn read_cache(&self, path: &std::path::Path) -> Result<Option<ConfigResponse>, Error> {
        let (service, env, label) = (self.service.clone(), self.env.clone(), self.label.clone());
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || cache::load(&p, &service, &env, label.as_deref()))
            .await
            .unwrap_or_else(|e| {
                Err(Error::Cache {
                    path: path.to_path_buf(),
                    message: format!("reading task failed: {e}"),
                })
            })
    }

    /// Write an accepted config to the cache, if one is configured. Failures are logged
    /// and recorded in the status, never fatal.
    pub(crate) async fn write_cache(&self, config: &Config) {
        let Some(path) = self.cache_file.clone() else {
            return;
        };
        if config.is_from_cache() {
            return;
        }
        let response = config.as_response().clone();
        let result = tokio::task::spawn_blocking(move || cache::store(&path, &response)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not write the last-known-good cache");
                self.set_cache_error(&e);
            }
            Err(e) => tracing::warn!(error = %e, "cache writing task failed"),
        }
    }

    /// GET the config from the servers with retries, backoff, breakers and failover.
    /// `etag` makes the request conditional.
    pub(crate) async fn fetch_remote(
        &self,
        etag: Option<&str>,
        policy: &RetryPolicy,
    ) -> Result<Fetched, Error> {
        let start = Instant::now();
        let deadline = start + policy.get_deadline();
        let mut attempts = 0u32;
        let mut last: Option<Error> = None;
        loop {
            attempts += 1;
            let tried = match self.fetch_round(etag, deadline, &mut last).await {
                ControlFlow::Break(answer) => return answer,
                ControlFlow::Continue(tried) => tried,
            };
            if policy.get_max_attempts().is_some_and(|max| attempts >= max) {
                break;
            }
            let delay = self.retry_delay(policy, attempts, tried);
            if Instant::now() + delay >= deadline {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        Err(Error::Unavailable {
            attempts,
            elapsed: start.elapsed(),
            last: last.map(Box::new),
            cache: None,
        })
    }

    /// One pass over the servers, preferred first, skipping open breakers: `Break` with
    /// a config or a definite error, else `Continue` saying whether any server was tried
    /// (`last` keeps the last failure).
    async fn fetch_round(
        &self,
        etag: Option<&str>,
        deadline: Instant,
        last: &mut Option<Error>,
    ) -> ControlFlow<Result<Fetched, Error>, bool> {
        let mut tried = false;
        for i in self.server_order() {
            let server = &self.servers[i];
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let Some(permit) = self.permit(i) else {
                tracing::debug!(server = %server.url, "circuit breaker open: skipped");
                if last.is_none() {
                    *last = Some(Error::Transport {
                        server: server.url.clone(),
                        source: "circuit breaker open".into(),
                    });
                }
                continue;
            };
            tried = true;
            match self
                .get_once(server, self.request_timeout.min(remaining), etag)
                .await
            {
                Ok(fetched) => {
                    permit.success();
                    self.set_preferred(i);
                    return ControlFlow::Break(Ok(fetched));
                }
                Err(e) if e.is_retryable() => {
                    permit.failure();
                    tracing::warn!(server = %server.url, error = %e, "confhub server failed; trying the next");
                    *last = Some(e);
                }
                Err(e) => {
                    permit.success();
                    return ControlFlow::Break(Err(e));
                }
            }
        }
        ControlFlow::Continue(tried)
    }

    /// The sleep before round `attempts + 1`; when no server could be `tried` (every
    /// breaker open), nothing can happen before the first cool-down ends.
    fn retry_delay(&self, policy: &RetryPolicy, attempts: u32, tried: bool) -> Duration {
        let delay = policy.delay(attempts);
        if tried {
            return delay;
        }
        let reopen = self
            .servers
            .iter()
            .filter_map(|s| lock(&s.breaker).open_until())
            .min();
        match reopen {
            Some(at) => delay.max(at.saturating_duration_since(Instant::now())),
            None => delay,
        }
    }

    /// One GET against one server.
    async fn get_once(
        &self,
        server: &Server,
        timeout: Duration,
        etag: Option<&str>,
    ) -> Result<Fetched, Error> {
        let transport = |e: reqwest::Error| Error::Transport {
            server: server.url.clone(),
            source: Box::new(e.without_url()),
        };
        // Keep the token out of any Debug output of the request.
        let mut resp = self
            .config_request(server, timeout, etag)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(Fetched::NotModified {
                server: server.url.clone(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::Protocol {
                    server: server.url.clone(),
                    message: format!("response body larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        read_answer(server, status, &body)
    }

    /// The GET of the config from `server`: token, conditional on `etag`, who this
    /// instance is, trace headers.
    fn config_request(
        &self,
        server: &Server,
        timeout: Duration,
        etag: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .get(server.config_url.clone())
            .timeout(timeout)
            .header(ACCEPT, "application/json")
            .header(INSTANCE_HEADER, &self.identity.id);
        if !self.identity.labels.is_empty() {
            req = req.header(LABELS_HEADER, &self.identity.labels_header);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(etag) = etag {
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                req = req.header(IF_NONE_MATCH, v);
            }
        }
        let trace = self.trace_headers();
        req = req.header(trace::REQUEST_ID, &trace.request_id);
        if let Some(tp) = &trace.traceparent {
            req = req.header(trace::TRACEPARENT, tp);
        }
        tracing::debug!(server = %server.url, request_id = %trace.request_id, "requesting config");
        req
    }
}

/// `unavailable` (no server answered) with why the cache could not stand in either.
fn with_cache_reason(unavailable: Error, reason: Error) -> Error {
    match unavailable {
        Error::Unavailable {
            attempts,
            elapsed,
            last,
            ..
        } => Error::Unavailable {
            attempts,
            elapsed,
            last,
            cache: Some(Box::new(reason)),
        },
        other => other,
    }
}

/// A config answer from `server` (status other than 304, body read in full): the config,
/// or the status as an error with the server's error body when it sent one.
fn read_answer(server: &Server, status: u16, body: &[u8]) -> Result<Fetched, Error> {
    if status != 200 {
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok().map(Box::new);
        let message = if parsed.is_some() {
            String::new()
        } else {
            truncate(&String::from_utf8_lossy(body), 200)
        };
        return Err(Error::Status {
            server: server.url.clone(),
            status,
            body: parsed,
            message,
        });
    }
    let response: ConfigResponse = serde_json::from_slice(body).map_err(|e| Error::Protocol {
        server: server.url.clone(),
        message: format!("not a config response: {e}"),
    })?;
    Ok(Fetched::Fresh(Box::new(Config::new(
        response,
        Origin::Server {
            url: server.url.clone(),
        },
    ))))
}
