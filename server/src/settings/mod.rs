//! Server settings: what `confhub serve` was asked to do.

pub mod file;

pub use crate::errors::EmptySetting;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to run. Built by the CLI from flags, environment and
/// the settings file; tests build it directly with [`Settings::new`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Local path of a git repository (or, with `dev`, a plain directory), or a remote URL
    /// (`file://`, `git://`, `https://`, `ssh://`) to clone into `data_dir`.
    pub repo: String,
    /// Branch to track; `None` means `main`, falling back to `master`.
    pub branch: Option<String>,
    /// Subfolder of the repository holding the config files, or Spring's `searchPaths`
    /// (several comma-separated folders, `{application}` and `{profile}` placeholders).
    pub search_path: Option<String>,
    /// Serve a plain directory from the filesystem (version = content hash).
    pub dev: bool,
    /// Where remote repositories are cloned.
    pub data_dir: PathBuf,
    /// How often remote repositories are fetched.
    pub poll: Duration,
    /// Token for `https://` remotes (sent as the password of HTTP Basic auth).
    pub git_token: Option<Secret>,
    /// Private key for `ssh://` remotes.
    pub ssh_key: Option<PathBuf>,
    /// How many resolved (label, service, env) results to keep for non-tracked labels.
    pub cache_capacity: usize,
    /// Bytes those results may hold together (estimated from their resolved size).
    pub cache_max_bytes: usize,
    /// Secret for `POST /v1/webhook` (HMAC key for GitHub, Gitea and Bitbucket, token for
    /// GitLab). Without one the webhook endpoint refuses every call.
    pub webhook_secret: Option<Secret>,
    /// Change detection and WebSocket push limits.
    pub live: LiveSettings,
    /// Keys for `{cipher}` values; without them an encrypted value fails its pair.
    pub keyring: Option<crate::crypto::Keyring>,
    /// Serve `{cipher}` values as they are, for clients that decrypt them (Spring's
    /// `spring.cloud.config.server.encrypt.enabled=false`); only without a keyring.
    pub pass_ciphers_through: bool,
    /// Access tokens; none means the server is open (and says so at start).
    pub tokens: Vec<crate::auth::TokenConfig>,
    /// HTTP limits.
    pub limits: HttpLimits,
    /// Serve HTTPS/WSS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Bounds of the clone checks and of the search for a pair's last good config.
    pub recovery: RecoverySettings,
}

/// Bounds of what the server does to recover from a damaged clone or a broken head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// First-parent commits walked back from the head, at start, to find the newest
    /// commit at which a pair failing at the head resolved.
    pub last_good_depth: usize,
    /// Time that walk may take in all; pairs not found by then stay unserved.
    pub last_good_timeout: Duration,
    /// Trees and blobs read when verifying that the served commit can be read in full.
    pub verify_max_objects: usize,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            last_good_depth: 100,
            last_good_timeout: Duration::from_secs(5),
            verify_max_objects: 10_000,
        }
    }
}

impl Settings {
    /// Refuse secrets and key files that are set but blank (or only whitespace).
    pub(crate) fn refuse_empty(&self) -> Result<(), EmptySetting> {
        let blank = |s: &str| s.trim().is_empty();
        let blank_path = |p: &std::path::Path| blank(&p.to_string_lossy());
        let fail = |key, why| Err(EmptySetting { key, why });
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|s| blank(s.expose()))
        {
            return fail(
                "webhook_secret",
                "anyone could sign webhooks with an empty secret; leave it unset to disable webhooks",
            );
        }
        if self.git_token.as_ref().is_some_and(|s| blank(s.expose())) {
            return fail("git_token", "leave it unset for remotes that need no token");
        }
        if self.ssh_key.as_deref().is_some_and(blank_path) {
            return fail("ssh_key", "name the private key file, or leave it unset");
        }
        if let Some(tls) = &self.tls {
            if blank_path(&tls.cert) {
                return fail(
                    "tls_cert",
                    "name the certificate file, or unset tls_cert and tls_key",
                );
            }
            if blank_path(&tls.key) {
                return fail(
                    "tls_key",
                    "name the private key file, or unset tls_cert and tls_key",
                );
            }
        }
        Ok(())
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Limits on HTTP requests, sized for production by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body accepted (webhooks have their own limit).
    pub max_body_bytes: usize,
    /// Largest webhook payload read.
    pub webhook_max_body_bytes: usize,
    /// Bytes that webhook payloads whose signature is not checked yet may hold together.
    pub webhook_body_budget_bytes: usize,
    /// Largest total size of request headers.
    pub max_header_bytes: usize,
    /// Every request must be answered within this.
    pub request_timeout: Duration,
    /// A client must send its complete request headers within this (slow-loris).
    pub header_read_timeout: Duration,
    /// Open TCP connections accepted at once.
    pub max_connections: usize,
    /// Sustained requests per second per token; 0 = unlimited. An open server (no tokens) is not limited.
    pub rate_per_second: u32,
    /// Burst allowance on top of the sustained rate.
    pub rate_burst: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 64 * 1024,
            // Push payloads are a few KiB (GitLab details 20 commits, GitHub lists the
            // pushed commits with their changed paths); 1 MiB holds hundreds of commits.
            webhook_max_body_bytes: 1024 * 1024,
            webhook_body_budget_bytes: 16 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            rate_per_second: 200,
            rate_burst: 400,
        }
    }
}

/// A secret string: its `Debug` never shows the value, so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for comparisons and HMAC keys only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

/// Change detection (refresh loop) and WebSocket (`/v1/watch`) settings.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// A fetch of a remote taking longer than this is reported as failed (and retried
    /// once the stuck attempt ends; libgit2 cannot be interrupted safely).
    pub fetch_timeout: Duration,
    /// First retry delay after a failed fetch; doubles per failure (with jitter), up to `poll`.
    pub fetch_retry: Duration,
    /// Quiet time after the last file-system event before a refresh (`notify` debounce).
    /// Short: a commit's ref writes land within a millisecond or two, and the refresh loop
    /// already folds changes that arrive during a refresh into one more.
    pub debounce: Duration,
    /// Largest WebSocket frame or message accepted from a client, in bytes.
    pub ws_max_message: usize,
    /// Subscriptions one WebSocket connection may hold.
    pub ws_max_subscriptions: usize,
    /// Frames that may wait for a connection beyond one per subscription; a connection
    /// that falls further behind is closed as a slow consumer (it resumes by digest).
    pub ws_send_buffer: usize,
    /// A single write to a WebSocket blocked longer than this closes it as a slow consumer.
    pub ws_write_timeout: Duration,
    /// How often the server pings each WebSocket peer.
    pub ws_ping_interval: Duration,
    /// A peer that sent nothing (not even a pong) for this long is dropped.
    pub ws_idle_timeout: Duration,
    /// Open WebSocket connections accepted at once.
    pub ws_max_connections: usize,
    /// Distinct watched pairs outside the snapshot (several envs, undeclared envs,
    /// unknown services), for all connections together: each is resolved again after
    /// every new version. Subscriptions to more are refused.
    pub ws_max_extra_pairs: usize,
    /// An instance that fetched over HTTP stays listed in `/v1/instances` this long.
    pub instance_ttl: Duration,
    /// Instances listed at once; past it a new one is served but not listed.
    pub max_instances: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            fetch_timeout: Duration::from_secs(60),
            fetch_retry: Duration::from_secs(1),
            debounce: Duration::from_millis(10),
            ws_max_message: 16 * 1024,
            ws_max_subscriptions: 256,
            ws_send_buffer: 32,
            ws_write_timeout: Duration::from_secs(30),
            ws_ping_interval: Duration::from_secs(20),
            ws_idle_timeout: Duration::from_secs(60),
            ws_max_connections: 10_000,
            ws_max_extra_pairs: 1024,
            instance_ttl: Duration::from_secs(600),
            max_instances: 20_000,
        }
    }
}

impl Settings {
    /// Settings with production defaults for serving `repo`.
    pub fn new(repo: impl Into<String>) -> Self {
        Settings {
            repo: repo.into(),
            branch: None,
            search_path: None,
            dev: false,
            data_dir: std::env::temp_dir().join("confhub-data"),
            poll: Duration::from_secs(30),
            git_token: None,
            ssh_key: None,
            cache_capacity: 1024,
            cache_max_bytes: 256 << 20,
            webhook_secret: None,
            live: LiveSettings::default(),
            keyring: None,
            pass_ciphers_through: false,
            tokens: Vec::new(),
            limits: HttpLimits::default(),
            tls: None,
            recovery: RecoverySettings::default(),
        }
    }
}
