//! Client for the confhub configuration server: fetch a service's configuration at
//! startup and hot-reload it into typed values.
//!
//! ```no_run
//! use std::time::Duration;
//! use confhub_client::{Client, RetryPolicy};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Settings {
//!     db: Db,
//!     #[serde(default)]
//!     features: Vec<String>,
//! }
//!
//! #[derive(Debug, Deserialize)]
//! struct Db {
//!     url: String,
//!     pool: u32,
//! }
//!
//! # async fn run() -> Result<(), confhub_client::Error> {
//! let client = Client::builder()
//!     .servers(["http://config-a:8888", "http://config-b:8888"])
//!     .service("orders")
//!     .env("prod")
//!     .token(std::env::var("CONFHUB_TOKEN").unwrap_or_default())
//!     .cache_dir("/var/cache/orders")
//!     .retry(RetryPolicy::default().deadline(Duration::from_secs(15)))
//!     .build()?;
//!
//! // One-shot: fetch, read one key or the whole typed config.
//! let config = client.fetch().await?;
//! let pool: u32 = config.get("db.pool")?;
//! let settings: Settings = config.deserialize()?;
//! println!("{} at version {}: pool {pool}, {settings:?}", config.service(), config.version());
//!
//! // Hot reload: a lock-free handle that follows every accepted change.
//! let mut settings = client.watch::<Settings>().await?;
//! println!("pool is {}", settings.get().db.pool);
//! settings.on_change(|old, new| {
//!     if old.db.pool != new.db.pool {
//!         println!("pool {} -> {}", old.db.pool, new.db.pool);
//!     }
//! });
//! let latest = settings.changed().await;
//! println!("now {:?}", latest.features);
//! # Ok(()) }
//! ```
//!
//! # What happens when things go wrong
//!
//! - Every request has a connect and a request timeout
//!   ([`ClientBuilder::connect_timeout`], [`ClientBuilder::request_timeout`]).
//! - Failed requests (network errors, timeouts, 5xx, 408, 429, garbage bodies) fail
//!   over to the next server, and whole rounds are retried with exponential backoff and
//!   full jitter until a total deadline ([`RetryPolicy`]). Other 4xx answers are
//!   definite and returned at once as [`Error::Status`].
//! - Each server has a circuit breaker ([`BreakerPolicy`]): after consecutive failures
//!   it is skipped without a request until a cool-down ends, then one probe decides.
//!   [`Client::status`] shows every breaker.
//! - With [`ClientBuilder::cache_dir`], every accepted config is written atomically to
//!   a checksummed cache file. When no server answers within the deadline, the client
//!   starts from that file and says so ([`Config::is_from_cache`],
//!   [`Status::is_from_cache`], a warning in the log) — unless
//!   [`ClientBuilder::fail_fast`] was chosen. A corrupt file is reported
//!   ([`Status::cache_error`], the log, the returned error) and never trusted.
//! - A [`Watched`] value only changes to a config that passes the
//!   [validator](ClientBuilder::validator) and deserializes into its type; a bad update
//!   leaves the old value in place and sets [`Watched::last_error`]. Its background task
//!   reconnects with backoff and resumes by digest, and stops when the handle is
//!   dropped. It pings the server ([`ClientBuilder::watch_ping_interval`], 10 s); a
//!   stream silent for [`ClientBuilder::watch_silence_timeout`] (25 s) is stalled:
//!   that server's breaker counts a failure and the next server is tried first.
//!
//! Logs go through [`tracing`]; tokens never appear in them. Every request carries a
//! fresh `x-request-id` (logged at DEBUG here, echoed and logged by the server), and a
//! W3C `traceparent` when [`ClientBuilder::traceparent_from`] provides one.
//!
//! # Modules
//!
//! [`wire`] holds every type exchanged with the server, shared with `confhub-server`,
//! with the naming rules ([`wire::names`]) and the key grammar ([`wire::keys`]) both
//! sides follow. [`retry`] is the exponential backoff with jitter that the client's
//! retries and the server's fetch retries share.

#![warn(missing_docs)]

mod breaker;
mod cache;
mod client;
mod config;
mod error;
mod identity;
mod path;
pub mod retry;
mod trace;
mod transport;
mod util;
mod watch;
pub mod wire;

pub use breaker::{BreakerPolicy, BreakerState, ServerStatus};
pub use client::{Client, ClientBuilder, Status};
pub use config::{Config, Origin};
pub use error::{BoxError, Error};
pub use identity::{INSTANCE_ENV, LABELS_ENV};
pub use retry::RetryPolicy;
pub use watch::{Snapshot, Watched};
